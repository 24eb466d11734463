"""Writing the feature store (format in :mod:`avsc.features.store`): its files around the parts.

- :func:`init_store` creates ``store.json`` (or checks that an existing store has the same
  feature config);
- the parts themselves are written by :mod:`avsc.features.part_writer`;
- :func:`scan_parts` lists the clips already in a store's parts (with their fingerprints),
  which is how a re-run skips them; :func:`write_index` records a shard's clips with the
  labels and splits of the current manifest; :func:`merge_summaries` rebuilds
  ``summary.json`` (:class:`avsc.records.StoreSummary`);
- :class:`StoreWriter` does all of it for code that has arrays in hand (tests, benchmarks,
  :func:`convert_store`).

Example::

    with StoreWriter("features", config, shapes) as writer:
        writer.add("bus-lyon-1-1", "bus", "train", {"mel": mel, "frames": frames})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from avsc.config import FeatureConfig, config_hash, to_dict
from avsc.errors import ConfigError, DataError
from avsc.features.part_writer import PART_CLIPS, PartWriter, encode_clip
from avsc.features.store_format import (
    DIGEST_SUFFIX,
    META_FILE,
    REF_FILE,
    STORE_FORMAT,
    FeatureSpec,
    feature_specs,
    read_store_meta,
    shard_name,
)
from avsc.records.lineage import Lineage, hash_value
from avsc.records.store_summary import RejectedClip, StoreSummary
from avsc.storage import locations

log = logging.getLogger(__name__)

_INDEX_COLUMNS = ("clip_id", "label", "split", "part", "row", "source")


def check_frame_encoding(config: FeatureConfig) -> None:
    """Reject a frames encoding the store cannot write.

    Raises:
        ConfigError: naming the setting.
    """
    frames = config.frames
    if frames.encoding not in ("jpeg", "raw"):
        raise ConfigError(f"features.frames.encoding must be jpeg or raw, not {frames.encoding!r}")
    if not 1 <= frames.jpeg_quality <= 100:
        raise ConfigError(f"features.frames.jpeg_quality must be in 1..100, not {frames.jpeg_quality}")


def init_store(root: str | Path, config: FeatureConfig, shapes: Mapping[str, Sequence[int]]) -> dict[str, FeatureSpec]:
    """Create (or check) a store at ``root`` (a folder or an ``s3://`` prefix) for ``config``.

    Returns:
        feature name -> :class:`~avsc.features.store_format.FeatureSpec`.

    Raises:
        ConfigError: an impossible frames encoding.
        DataError: ``root`` holds a store made with another config, or of a previous format.
    """
    check_frame_encoding(config)
    root = str(root)
    specs = feature_specs(config, shapes)
    digest = config_hash(config)
    meta_location = locations.join(root, META_FILE)
    if locations.exists(meta_location):
        existing = read_store_meta(root)
        if existing.get("config_hash") != digest:
            raise DataError(
                root,
                f"feature store was made with config {existing.get('config_hash')}, not {digest}",
                "use a new output folder or the same config",
            )
        return specs
    locations.write_json(
        meta_location,
        {
            "format": STORE_FORMAT,
            "config": to_dict(config),
            "config_hash": digest,
            "features": {name: spec.to_json() for name, spec in specs.items()},
            "layout": "parts/<split>/<shard>-<run>-<seq>.parquet: one row a clip (clip_id, label, split, "
            "source, one column per feature and its <feature>_sha256); index/<shard>.parquet: "
            "clip_id, label, split, part, row, source, <feature>_sha256",
        },
    )
    return specs


def store_location(root: str | Path, config: FeatureConfig) -> str:
    """Where the features of ``config`` live under a run or project location:
    ``ROOT/features/<config hash>``, so every run with the same feature settings reuses them."""
    return locations.join(str(root), "features", config_hash(config))


def write_store_ref(folder: str | Path, store: str, config: FeatureConfig) -> None:
    """Make ``folder`` stand for ``store`` (see :data:`avsc.features.store_format.REF_FILE`)."""
    locations.write_json(
        locations.join(str(folder), REF_FILE),
        {"uri": store, "config_hash": config_hash(config), "format": STORE_FORMAT},
    )


def scan_parts(root: str | Path, *, workers: int = 8) -> list[dict]:
    """Index rows of every clip in every part of the store: clip_id, label and split as first
    written, part, row, source (fingerprint) and the digests (reads only those small columns).

    Raises:
        DataError: a part that is not readable (naming it).
    """
    from avsc.features.part_reader import read_part

    root = str(root)
    base = locations.join(root, "parts")
    files = locations.list_files(base, suffix=".parquet")
    digests = [name + DIGEST_SUFFIX for name in read_store_meta(root)["features"]]

    def one(location: str) -> list[dict]:
        table = read_part(location, ["clip_id", "label", "split", "source", *digests])
        relative = "parts/" + location[len(base) :].lstrip("/\\").replace("\\", "/")
        return [dict(row, part=relative, row=i) for i, row in enumerate(table.to_pylist())]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [row for rows in pool.map(one, files) for row in rows]


def write_index(
    root: str | Path, shard: tuple[int, int], rows: list[dict], *, lineage: Lineage, features: Sequence[str]
) -> str:
    """Record the clips of one shard: dicts with clip_id, label, split (the manifest's), part,
    row, source and each of ``features``' digest; ``lineage`` (of the manifest the labels and
    splits come from) goes into the file's metadata. Page checksums on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    digests = [name + DIGEST_SUFFIX for name in features]
    schema = pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("part", pa.string(), nullable=False),
            pa.field("row", pa.int32(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            *(pa.field(name, pa.string(), nullable=False) for name in digests),
        ],
        metadata={"avsc.lineage": lineage.to_json()},
    )
    table = pa.Table.from_pylist([{k: r[k] for k in (*_INDEX_COLUMNS, *digests)} for r in rows], schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    location = locations.join(str(root), "index", f"{shard_name(shard)}.parquet")
    locations.write_bytes(location, sink.getvalue().to_pybytes())
    return location


def arrays_lineage(dataset: str) -> Lineage:
    """The lineage recorded for clips written from arrays in hand, without a manifest: the
    dataset's name stands for the manifest (every shard of it agrees); the store's hash
    (:attr:`avsc.features.store.FeatureStore.lineage`) still covers every clip's id, label,
    split and content."""
    return Lineage(dataset=dataset, manifest_hash=hash_value(["arrays", dataset]))


def merge_summaries(root: str | Path) -> StoreSummary:
    """Rebuild ``summary.json`` of a store (:class:`~avsc.records.StoreSummary`) from its shard
    indexes and shard summaries; returns what it wrote.

    ``processed`` counts the clips that have features in the store (over every shard, as
    their latest run's manifest lists them); ``lineage`` is the store's
    (:attr:`avsc.features.store.FeatureStore.lineage`); ``rejected`` lists the clips the
    latest run of each shard could not process and that still have no features; ``shapes``
    are the store's feature shapes.
    """
    import pyarrow.parquet as pq

    from avsc.features.store import FeatureStore

    root = str(root)
    clip_ids: set[str] = set()
    for index_file in locations.list_files(locations.join(root, "index"), suffix=".parquet"):
        with locations.open_input(index_file) as handle:
            clip_ids.update(pq.read_table(handle, columns=["clip_id"]).column("clip_id").to_pylist())
    rejected: dict[str, str] = {}
    shards: list[tuple[int, int]] = []
    for summary_file in locations.list_files(root, suffix=".json"):
        if not locations.name_of(summary_file).startswith("summary-shard-"):
            continue
        part = locations.read_json(summary_file)
        shards.append((int(part["shard"][0]), int(part["shard"][1])))
        for item in part.get("rejected", []):
            if item["clip_id"] not in clip_ids:
                rejected[item["clip_id"]] = item["reason"]
    shapes = {name: tuple(spec["shape"]) for name, spec in read_store_meta(root)["features"].items()}
    try:  # the data the store holds now; None while its shards list different manifests
        lineage: Lineage | None = FeatureStore.open(root).lineage
    except DataError as exc:
        log.info("%s: no single lineage yet (%s)", root, exc)
        lineage = None
    summary = StoreSummary(
        processed=len(clip_ids),
        rejected=tuple(RejectedClip(key, rejected[key]) for key in sorted(rejected)),
        shapes=shapes,
        shards=tuple(shards),
        lineage=lineage,
    )
    summary.write(root)
    return summary


# --------------------------------------------------------------------------- arrays in hand


class StoreWriter:
    """Write clips given as arrays into a store; the shard's index is written on close.

    Example::

        with StoreWriter(root, config, {"mel": [128, 715, 2]}) as writer:
            writer.add("bus-lyon-1-1", "bus", "train", {"mel": mel})
    """

    def __init__(
        self,
        root: str | Path,
        config: FeatureConfig,
        shapes: Mapping[str, Sequence[int]],
        *,
        shard: tuple[int, int] = (0, 1),
        part_clips: int = PART_CLIPS,
        lineage: Lineage | None = None,
    ):
        self.root = str(root)
        self.specs = init_store(self.root, config, shapes)
        self.shard = shard
        self.lineage = lineage or arrays_lineage("arrays")
        self._parts = PartWriter(self.root, self.specs, shard, part_clips)

    def add(self, clip_id: str, label: str, split: str, arrays: dict[str, np.ndarray]) -> None:
        """Encode one clip's arrays (every feature of the store) and queue it for a part."""
        self._parts.add(encode_clip(clip_id, label, split, arrays, self.specs))

    def close(self) -> str:
        """Write pending parts and the shard's index; returns the index location."""
        self._parts.flush()
        return write_index(self.root, self.shard, self._parts.rows, lineage=self.lineage, features=list(self.specs))

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self.close()


def convert_store(old_root: str | Path, new_root: str | Path, *, part_clips: int = PART_CLIPS) -> int:
    """Copy a store of the previous format (``avsc-features/1``: one ``.npz`` per clip) into a
    current one; frames are encoded as the recorded config says (JPEG by default).

    Returns:
        The number of clips converted.

    Raises:
        DataError: ``old_root`` is not an ``avsc-features/1`` store.
    """
    import pyarrow.parquet as pq

    from avsc.config import feature_config_from_dict

    old = Path(old_root)
    meta_path = old / META_FILE
    meta = locations.read_json(meta_path) if meta_path.is_file() else {}
    if meta.get("format") != "avsc-features/1":
        raise DataError(old, "not an avsc-features/1 store (no store.json of that format)")
    recorded = dict(meta["config"])
    recorded["frames"] = {
        k: v for k, v in recorded.get("frames", {}).items() if k in ("fps", "size")
    }  # the old format had no encoding settings
    config = feature_config_from_dict(recorded)
    shapes = {name: spec["shape"] for name, spec in meta["features"].items()}
    count = 0
    with StoreWriter(new_root, config, shapes, part_clips=part_clips) as writer:
        for index_file in sorted((old / "index").glob("shard-*.parquet")):
            for row in pq.read_table(index_file).to_pylist():
                try:
                    with np.load(old / row["file"]) as data:
                        arrays = {name: data[name] for name in shapes}
                except (OSError, KeyError, ValueError) as exc:
                    raise DataError(old / row["file"], f"unreadable clip file ({exc})") from None
                writer.add(row["clip_id"], row["label"], row["split"], arrays)
                count += 1
    log.info("converted %d clips from %s to %s", count, old, new_root)
    return count

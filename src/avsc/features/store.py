"""The feature store: what ``avsc preprocess`` writes and training, embedding and evaluation stream.

A store is a folder or an ``s3://`` prefix (any number of them can be opened together, e.g.
one per preprocessing shard)::

    FEATURES/
      store.json                       format, full feature config and its hash, and for each
                                       feature its shape, dtype and encoding
      parts/<split>/<shard>-<run>-<seq>.parquet
                                       up to ``part_clips`` (32) clips of one split, one row a
                                       clip: clip_id, label, split, source (the clip's
                                       fingerprint), mel, gam, cqt, frames, and the SHA-256 of
                                       each feature's stored bytes (mel_sha256, ...)
      index/<shard>.parquet            clip_id, label, split, part (relative), row, source and
                                       the SHA-256 digests: the clips of one preprocessing
                                       shard as the manifest of its latest run lists them;
                                       its metadata holds that manifest's lineage
      summary-<shard>.json, summary.json

Why this layout (measured in docs/features.md):

- **One feature, read alone, sequentially, in large reads.** A part is one Parquet row group,
  so each feature of its clips is one contiguous column chunk (about 12 MB of ``mel`` for 32
  clips at the paper preset). A reader asks for one column (column projection): the
  ``aud-mel`` stream reads the ``mel`` chunks and never a byte of ``gam``, ``cqt`` or
  ``frames``; from ``s3://`` that is one ranged GET per part, plus its footer.
- **Splits in their own parts**, so the val pass of every epoch reads val clips only.
- **Spectrograms** as ``fixed_size_binary`` values: the C-ordered ``float16`` bytes of
  ``[shape=(n_bins, frames, channels)]`` (``np.frombuffer(value, "<f2").reshape(shape)``), so a
  part's column decodes to one array without per-element work. Delta and delta-delta are not
  stored: the audio models compute them (:class:`avsc.models.backbones.Deltas`).
- **Frames** as a list of JPEG images per clip (Pillow/libjpeg-turbo, quality
  ``features.frames.jpeg_quality``, no chroma subsampling), about 7x smaller than raw RGB;
  ``features.frames.encoding = "raw"`` stores the uint8 pixels instead.
- **Self-describing**: each part's schema carries the shapes, dtypes and encodings as field
  metadata, and ``store.json`` the full config; ``pandas.read_parquet(part, columns=[...])`` or
  DuckDB (``select clip_id, label from 'FEATURES/parts/*/*.parquet'``) read it without avsc.
- **Atomic per file and resumable**: each part is written whole (a temporary file renamed, or
  one object PUT), so a killed run leaves whole parts; a re-run skips the clips that are in
  a part already (:mod:`avsc.features.store_writer`).
- **Keyed by what a clip is, labelled by the current manifest.** A part row's ``source`` is
  the clip's fingerprint (its id, media path, the video's size and modification time or
  ETag, its segment offset): a clip whose source changed is processed again, whatever its
  id. Labels and splits are taken from the manifest of the latest preprocess run and kept
  in the index (the label and split in a part are those it was first written with and are
  not read): relabelling a clip or moving it between splits costs no decoding and reaches
  every reader. The index's lineage and a hash of its rows identify the data
  (:attr:`FeatureStore.lineage`), which every model, embedding file and report records.
- **Verified on read**: Parquet page checksums (CRC-32) are written and checked, and every
  clip's value of the feature read is checked against the SHA-256 recorded in its part
  and in the index; a mismatch is a :class:`~avsc.errors.DataError` naming the part and
  the clip. JPEG frames that do not decode cleanly are an error too.

How one clip's value of a feature is stored and verified is in
:mod:`avsc.features.store_format`; writing is in :mod:`avsc.features.store_writer` and
:mod:`avsc.features.part_writer`; reading one part is in :mod:`avsc.features.part_reader`;
this module opens a store and reads its index.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avsc.config import BACKBONE_FEATURE, FeatureConfig, feature_config_from_dict
from avsc.errors import DataError
from avsc.features.part_reader import Part, read_part_feature
from avsc.features.store_format import (
    DIGEST_SUFFIX,
    META_FILE,
    REF_FILE,
    FeatureSpec,
    read_store_meta,
)
from avsc.records.lineage import Lineage, hash_rows, hash_value
from avsc.storage import locations

log = logging.getLogger(__name__)


def required_feature(backbone: str, specs: dict, source: str | os.PathLike = "<feature store>") -> str:
    """The feature ``backbone`` reads, checked to be in ``specs`` (or shapes).

    The one check of "does this store hold what this backbone needs", used by training,
    embedding, the streams and the model builder.

    Raises:
        DataError: the feature is missing (naming the store and what to do).
    """
    from avsc.config import BACKBONES

    if backbone not in BACKBONE_FEATURE:
        raise DataError(source, f"unknown backbone {backbone!r}", f"choose one of {', '.join(BACKBONES)}")
    feature = BACKBONE_FEATURE[backbone]
    if feature not in specs:
        raise DataError(
            source,
            f"feature store has no {feature!r} feature, needed by {backbone}",
            "re-run preprocess with that feature",
        )
    return feature


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class FeatureStore:
    """One or more store folders (or ``s3://`` prefixes) opened together, e.g. one per shard.

    Attributes:
        roots: the store locations.
        config: the feature config they share; ``config_hash`` its hash.
        specs: feature name -> :class:`FeatureSpec`.
        index: pandas DataFrame with clip_id, label, split, part (full location), row, source
            (the clip's fingerprint) and each feature's SHA-256 (``mel_sha256``, ...), in
            store order (part by part, row by row); streams read clips in this order.
        lineage: the data the store holds: the dataset and manifest its index was written
            from, and ``store_hash``, a hash of the feature config and of every clip's id,
            label, split and fingerprint.
    """

    roots: tuple[str, ...]
    config: FeatureConfig
    config_hash: str
    specs: dict[str, FeatureSpec]
    index: Any = field(repr=False)  # pandas.DataFrame
    lineage: Lineage | None = None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Feature name -> shape of one clip's array."""
        return {name: spec.shape for name, spec in self.specs.items()}

    @classmethod
    def open(cls, roots: str | os.PathLike | Sequence[str | os.PathLike]) -> FeatureStore:
        """Open store folders or ``s3://`` prefixes; they must share one feature config.

        Reads ``store.json`` and the shard indexes only (no feature bytes).

        Raises:
            DataError: a location is not a store or one of a previous format (with what to
                do), the configs differ, or no clip is indexed.
            StoreError: the object store refused or could not be reached.
        """
        import pandas as pd

        given = [roots] if isinstance(roots, (str, os.PathLike)) else roots
        stores = tuple(dict.fromkeys(resolve_store(r) for r in given))  # shards may share one store
        if not stores:
            raise DataError("<none>", "no feature store given")
        meta = read_store_meta(stores[0])
        frames = []
        lineages: dict[str, Lineage] = {}
        for root in stores:
            this = meta if root == stores[0] else read_store_meta(root)
            if this["config_hash"] != meta["config_hash"]:
                raise DataError(
                    root, f"feature config {this['config_hash']} differs from {meta['config_hash']} of {stores[0]}"
                )
            for shard_file in locations.list_files(locations.join(root, "index"), suffix=".parquet"):
                part, lineage = _read_index(shard_file)
                _check_same_manifest(lineages, shard_file, lineage)
                part["part"] = [locations.join(root, *p.split("/")) for p in part["part"]]
                frames.append(part)
        if not frames:
            raise DataError(
                stores[0], "feature store has no indexed clips", "run `avsc preprocess` into it (every shard) first"
            )
        index = pd.concat(frames, ignore_index=True).drop_duplicates("clip_id", keep="last")
        index = index.sort_values(["part", "row"], kind="stable").reset_index(drop=True)
        specs = {name: FeatureSpec.from_json(name, spec) for name, spec in meta["features"].items()}
        lineage = next(iter(lineages.values()))
        store_hash = hash_value(
            [meta["config_hash"], hash_rows(index.to_dict("records"), ("clip_id", "label", "split", "source"))]
        )
        return cls(
            roots=stores,
            config=feature_config_from_dict(meta["config"]),
            config_hash=meta["config_hash"],
            specs=specs,
            index=index,
            lineage=dataclasses.replace(lineage, store_hash=store_hash),
        )

    def clips(self, split: str | None = None) -> Any:
        """Index rows of one split (``train``, ``val``, ``test``) or of all clips, in store order."""
        if split is None:
            return self.index
        return self.index[self.index["split"] == split].reset_index(drop=True)

    def parts(self, split: str | None = None) -> list[Part]:
        """The parts holding the clips of ``split`` (or all), each with the rows to take."""
        rows = self.clips(split)
        out = []
        for location, group in rows.groupby("part", sort=False):
            out.append(
                Part(
                    location=location,
                    rows=group["row"].to_numpy(np.int64),
                    clip_ids=tuple(group["clip_id"]),
                    labels=tuple(group["label"]),
                    digests={
                        name: tuple(group[name + DIGEST_SUFFIX]) for name in self.specs if name + DIGEST_SUFFIX in group
                    },
                )
            )
        return out

    def read_clip(self, clip_id: str, feature: str) -> np.ndarray:
        """One clip's decoded array of ``feature`` (reads that feature's column of its part).

        Raises:
            DataError: no such clip or feature in the store.
        """
        if feature not in self.specs:
            raise DataError(self.roots[0], f"feature store has no {feature!r} feature")
        found = self.index[self.index["clip_id"] == clip_id]
        if not len(found):
            raise DataError(self.roots[0], f"clip {clip_id!r} is not in the feature store")
        row = found.iloc[0]
        part = Part(
            location=row["part"],
            rows=np.array([int(row["row"])]),
            clip_ids=(clip_id,),
            labels=(row["label"],),
            digests={feature: (row[feature + DIGEST_SUFFIX],)},
        )
        return read_part_feature(part, self.specs[feature])[0]

    def spec_for(self, backbone: str) -> FeatureSpec:
        """The spec of the feature ``backbone`` reads (:func:`required_feature` checks it)."""
        return self.specs[required_feature(backbone, self.specs, self.roots[0])]


def resolve_store(location: str | os.PathLike) -> str:
    """The store a location stands for: itself, or the store its ``feature-store.json`` names.

    Raises:
        DataError: the reference file is unreadable.
    """
    location = str(location)
    ref = locations.join(location, REF_FILE)
    if locations.exists(locations.join(location, META_FILE)) or not locations.exists(ref):
        return location
    try:
        return str(locations.read_json(ref)["uri"])
    except (ValueError, KeyError) as exc:
        raise DataError(ref, f"not a feature-store reference ({exc})", "re-run preprocess") from None


def _read_index(location: str) -> tuple[Any, Lineage]:
    """A shard index as (pandas DataFrame, the :class:`Lineage` of the manifest it lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with locations.open_input(location) as handle:
            table = pq.read_table(handle, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            location, f"unreadable store index ({str(exc).splitlines()[0]})", "re-run preprocess for that shard"
        ) from None
    text = (table.schema.metadata or {}).get(b"avsc.lineage")
    if text is None or "source" not in table.column_names:
        raise DataError(
            location,
            "store index without clip fingerprints or lineage (an older avsc)",
            "re-run preprocess for that shard",
        )
    return table.to_pandas(), Lineage.from_json(text, source=location)


def _check_same_manifest(seen: dict[str, Lineage], location: str, lineage: Lineage) -> None:
    """Shard indexes opened together must list one manifest's clips."""
    for other_location, other in seen.items():
        if other.manifest_hash != lineage.manifest_hash:
            differ = "; ".join(lineage.differences(other))
            raise DataError(
                location,
                f"lists the clips of another manifest than {other_location} ({differ})",
                "re-run preprocess for every shard with the same manifest "
                "(or remove the index of a shard that no longer exists)",
            )
    seen[location] = lineage

"""The feature store written by ``avsc preprocess`` and streamed by training.

Layout of a store directory (any number of them can be opened together, e.g. one per
preprocessing shard)::

    FEATURES/
      store.json                  format, full feature config and its hash, feature shapes/dtypes
      clips/<clip_id>.npz         one clip: mel, gam, cqt [shape=(n_bins, frames, channels), float16]
                                  and frames [shape=(n_frames, size, size, 3), uint8]
      index/shard-I-of-N.parquet  clip_id, label, split, file (relative) for the clips of one shard
      summary.json                processed, rejected [{clip_id, reason}], shapes

Every file is written atomically, so a killed job leaves only whole clips behind and a
re-run skips them. Delta and delta-delta are not stored: the audio models compute them
on the fly (see :class:`avsc.models.backbones.Deltas`), which keeps the store 3x smaller.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.config import FeatureConfig, config_hash, feature_config_from_dict, to_dict
from avsc.errors import DataError
from avsc.storage.files import atomic_path, read_json, write_json

STORE_FORMAT = "avsc-features/1"
FEATURE_NAMES: tuple[str, ...] = ("mel", "gam", "cqt", "frames")
INDEX_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
    ]
)


def init_store(root: str | Path, config: FeatureConfig, shapes: dict[str, list[int]]) -> Path:
    """Create (or check) a store directory for ``config``.

    Raises:
        DataError: the directory already holds a store made with another config.
    """
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    (root / "index").mkdir(exist_ok=True)
    meta_path = root / "store.json"
    digest = config_hash(config)
    if meta_path.exists():
        existing = read_json(meta_path)
        if existing.get("config_hash") != digest:
            raise DataError(root, f"feature store was made with config {existing.get('config_hash')}, "
                            f"not {digest}", "use a new output folder or the same config")
        return root
    write_json(meta_path, {
        "format": STORE_FORMAT,
        "config": to_dict(config),
        "config_hash": digest,
        "features": {name: {"shape": list(shape), "dtype": "uint8" if name == "frames" else "float16"}
                     for name, shape in shapes.items()},
    })
    return root


def clip_file(root: str | Path, clip_id: str) -> Path:
    return Path(root) / "clips" / f"{clip_id}.npz"


def write_clip(root: str | Path, clip_id: str, arrays: dict[str, np.ndarray]) -> Path:
    """Write one clip's features atomically (spectrograms as float16, frames as uint8)."""
    path = clip_file(root, clip_id)
    converted = {
        name: np.asarray(value, dtype=np.uint8 if name == "frames" else np.float16)
        for name, value in arrays.items()
    }
    buffer = io.BytesIO()
    np.savez(buffer, **converted)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def write_index(root: str | Path, shard: tuple[int, int], rows: list[dict]) -> Path:
    """Record the clips of one shard (dicts with clip_id, label, split, file)."""
    index, count = shard
    path = Path(root) / "index" / f"shard-{index:05d}-of-{count:05d}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), tmp)
    return path


@dataclass(frozen=True)
class FeatureStore:
    """One or more store directories opened together (e.g. the shards of one preprocessing run).

    Attributes:
        roots: the store directories.
        config: the feature config they share.
        config_hash: its hash.
        shapes: feature name -> shape of one clip's array.
        index: pandas DataFrame with clip_id, label, split, path (absolute).
    """

    roots: tuple[Path, ...]
    config: FeatureConfig
    config_hash: str
    shapes: dict[str, tuple[int, ...]]
    index: object  # pandas.DataFrame

    @classmethod
    def open(cls, roots: str | Path | Sequence[str | Path]) -> "FeatureStore":
        """Open store directories; they must share one feature config.

        Raises:
            DataError: a directory is not a store, the configs differ, or no clip is indexed.
        """
        import pandas as pd

        if isinstance(roots, (str, Path)):
            roots = [roots]
        roots = tuple(Path(r) for r in roots)
        if not roots:
            raise DataError("<none>", "no feature store given")
        meta = None
        frames = []
        for root in roots:
            meta_path = root / "store.json"
            if not meta_path.is_file():
                raise DataError(root, "not a feature store (no store.json)",
                                "run `avsc preprocess MANIFEST -o FEATURES` first")
            this = read_json(meta_path)
            if this.get("format") != STORE_FORMAT:
                raise DataError(meta_path, f"unknown store format {this.get('format')!r}")
            if meta is None:
                meta = this
            elif this["config_hash"] != meta["config_hash"]:
                raise DataError(root, f"feature config {this['config_hash']} differs from "
                                f"{meta['config_hash']} of {roots[0]}")
            for shard_file in sorted((root / "index").glob("shard-*.parquet")):
                part = pq.read_table(shard_file).to_pandas()
                part["path"] = [str(root / f) for f in part["file"]]
                frames.append(part)
        if not frames:
            raise DataError(roots[0], "feature store has no indexed clips")
        index = pd.concat(frames, ignore_index=True).drop_duplicates("clip_id", keep="last")
        index = index.sort_values("clip_id").reset_index(drop=True)
        shapes = {name: tuple(spec["shape"]) for name, spec in meta["features"].items()}
        return cls(roots=roots, config=feature_config_from_dict(meta["config"]),
                   config_hash=meta["config_hash"], shapes=shapes, index=index)

    def clips(self, split: str | None = None):
        """Index rows of one split (``train``, ``val``, ``test``) or of all clips."""
        if split is None:
            return self.index
        return self.index[self.index["split"] == split].reset_index(drop=True)


def load_clip(path: str | Path, names: Sequence[str] = FEATURE_NAMES) -> dict[str, np.ndarray]:
    """Load the named feature arrays of one clip file."""
    try:
        with np.load(path) as data:
            return {name: data[name] for name in names}
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(path, f"unreadable feature file ({exc})", "delete it and re-run preprocess") from None


def read_summary(root: str | Path) -> dict:
    return read_json(Path(root) / "summary.json")


def write_summary(root: str | Path, summary: dict) -> None:
    write_json(Path(root) / "summary.json", summary)

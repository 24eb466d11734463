"""Backbone embeddings as Parquet: one file per backbone, one row per clip, every split.

Columns: ``clip_id`` (string), ``split`` (string), ``label`` (string), ``fc1024``
(fixed-size list of float32, the first dense layer's output) and ``fc10`` (fixed-size
list of 10 float32, the second dense layer's output, before softmax). Schema metadata:
``avsc.backbone``, ``avsc.config_hash``, ``avsc.model_sha256``, ``avsc.labels``.

Readable as is: ``pandas.read_parquet(path)`` or ``duckdb.sql("select * from 'x.parquet'")``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.errors import DataError
from avsc.fileio import atomic_path
from avsc.labels import LABELS


def embedding_schema(fc_width: int = 1024, n_classes: int = len(LABELS)) -> pa.Schema:
    return pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("fc1024", pa.list_(pa.float32(), fc_width), nullable=False),
            pa.field("fc10", pa.list_(pa.float32(), n_classes), nullable=False),
        ]
    )


def write_embeddings(
    path: str | Path,
    *,
    clip_ids: list[str],
    splits: list[str],
    labels: list[str],
    fc1024: np.ndarray,
    fc10: np.ndarray,
    backbone: str,
    config_hash: str,
    model_sha256: str,
) -> Path:
    """Write one backbone's embeddings atomically.

    Args:
        fc1024: [shape=(n_clips, width), float32] first dense layer outputs.
        fc10: [shape=(n_clips, 10), float32] second dense layer outputs (pre-softmax).
    """
    fc1024 = np.ascontiguousarray(fc1024, dtype=np.float32)
    fc10 = np.ascontiguousarray(fc10, dtype=np.float32)
    n = len(clip_ids)
    if not (len(splits) == len(labels) == fc1024.shape[0] == fc10.shape[0] == n):
        raise ValueError("clip_ids, splits, labels, fc1024 and fc10 must have one row per clip")
    schema = embedding_schema(fc1024.shape[1], fc10.shape[1])
    table = pa.Table.from_arrays(
        [
            pa.array(clip_ids, pa.string()),
            pa.array(splits, pa.string()),
            pa.array(labels, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(fc1024.reshape(-1)), fc1024.shape[1]),
            pa.FixedSizeListArray.from_arrays(pa.array(fc10.reshape(-1)), fc10.shape[1]),
        ],
        schema=schema,
    ).replace_schema_metadata({
        "avsc.backbone": backbone,
        "avsc.config_hash": config_hash,
        "avsc.model_sha256": model_sha256,
        "avsc.labels": json.dumps(list(LABELS)),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


@dataclass(frozen=True)
class Embeddings:
    """One backbone's embeddings in memory.

    Attributes:
        fc1024: [shape=(n_clips, width), float32]
        fc10: [shape=(n_clips, 10), float32]
    """

    backbone: str
    config_hash: str
    model_sha256: str
    clip_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    fc1024: np.ndarray
    fc10: np.ndarray


def read_embeddings(path: str | Path) -> Embeddings:
    """Read a backbone's embedding file written by :func:`write_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "embedding file not found", "run `avsc embed` first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({exc})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "avsc.backbone" not in meta:
        raise DataError(path, "Parquet file has no avsc.backbone metadata; not an avsc embedding file")
    def matrix(name: str) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
    return Embeddings(
        backbone=meta["avsc.backbone"],
        config_hash=meta.get("avsc.config_hash", ""),
        model_sha256=meta.get("avsc.model_sha256", ""),
        clip_ids=np.asarray(table.column("clip_id").to_pylist()),
        splits=np.asarray(table.column("split").to_pylist()),
        labels=np.asarray(table.column("label").to_pylist()),
        fc1024=matrix("fc1024"),
        fc10=matrix("fc10"),
    )

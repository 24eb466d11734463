"""The files of a fusion folder that evaluation reads: ``fusion.json`` and ``predictions.parquet``.

``predictions.parquet`` holds one row per clip of every split: ``clip_id``, ``split``,
``label`` (true), ``predicted`` (arg-max label), ``probs`` (a fixed-size list of 10
float32 in :data:`avsc.labels.LABELS` order: the calibrated probabilities) and, written by
:func:`avsc.training.fusion.train_fusion`, ``logits`` (the fusion model's raw ``fc10``
output; ``probs = softmax(logits / T)`` with ``T`` from ``fusion.json["calibration"]``). It
can be read without avsc (pandas, DuckDB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.errors import DataError
from avsc.labels import LABELS
from avsc.storage.files import atomic_path

__all__ = ["PREDICTIONS_FILE", "FUSION_FILE", "write_predictions", "read_predictions"]

PREDICTIONS_FILE = "predictions.parquet"
FUSION_FILE = "fusion.json"


def write_predictions(path: str | Path, *, clip_ids: Sequence[str], splits: Sequence[str],
                      labels: Sequence[str], probs: np.ndarray, logits: np.ndarray | None = None) -> Path:
    """Write clip probabilities as Parquet (atomically).

    Columns: ``clip_id``, ``split``, ``label`` (true), ``predicted`` (arg-max label),
    ``probs`` [fixed-size list of 10 float32, :data:`LABELS` order] and, when given,
    ``logits`` [the same shape, float32] (the raw scores the probabilities came from).
    """
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    predicted = [LABELS[k] for k in probs.argmax(axis=1)] if len(probs) else []
    arrays = [pa.array(list(clip_ids), pa.string()), pa.array(list(splits), pa.string()),
              pa.array(list(labels), pa.string()), pa.array(predicted, pa.string()),
              pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), probs.shape[1])]
    names = ["clip_id", "split", "label", "predicted", "probs"]
    if logits is not None:
        logits = np.ascontiguousarray(logits, dtype=np.float32).reshape(probs.shape)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1]))
        names.append("logits")
    table = pa.Table.from_arrays(arrays, names=names)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Read a predictions file: ``clip_id``, ``split``, ``label`` [shape=(n,)], ``probs``
    [shape=(n, 10)] and, when the file has them, ``logits`` [shape=(n, 10)], float64."""
    from avsc.storage import locations

    path = Path(path)
    table = locations.read_parquet(path, what="predictions file", hint="train the fusion model again (`avsc fuse`)")
    missing = [c for c in ("clip_id", "split", "label", "probs") if c not in table.column_names]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}", "not an avsc predictions file")
    def matrix(name: str) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float64)

    out = {
        "clip_id": np.asarray(table.column("clip_id").to_pylist()),
        "split": np.asarray(table.column("split").to_pylist()),
        "label": np.asarray(table.column("label").to_pylist()),
        "probs": matrix("probs"),
    }
    if "logits" in table.column_names:
        out["logits"] = matrix("logits")
    return out

"""A fusion folder's clip probabilities: ``predictions.parquet`` (:class:`Predictions`).

One row per clip of every split: ``clip_id``, ``split``, ``label`` (true), ``predicted``
(arg-max label), ``probs`` (a fixed-size list of 10 float32 in :data:`avsc.labels.LABELS`
order: the calibrated probabilities) and, written by
:func:`avsc.training.fusion.train_fusion`, ``logits`` (the fusion model's raw ``fc10`` output;
``probs = softmax(logits / T)`` with ``T`` from ``fusion.json``'s ``calibration``). The file's
Parquet metadata holds ``avsc.format`` and ``avsc.version``; it can be read without avsc
(pandas, DuckDB).

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> preds = Predictions(clip_ids=np.array(["a", "b"]), splits=np.array(["val", "test"]),
    ...                     labels=np.array(["bus", "park"]), probs=np.full((2, 10), 0.1))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     back = Predictions.read_file(preds.write(folder))
    >>> back.clip_ids.tolist(), back.of_split("test").labels.tolist(), back.logits is None
    (['a', 'b'], ['park'], True)
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.labels import LABELS
from avsc.records._base import RecordError
from avsc.records.fusion_info import FusionInfo
from avsc.storage import locations

__all__ = ["PREDICTIONS_FILE", "FUSION_FILE", "Predictions"]

PREDICTIONS_FILE = "predictions.parquet"
FUSION_FILE = FusionInfo.FILE_NAME

_COLUMNS = ("clip_id", "split", "label", "probs")
_HINT = "train the fusion model again (`avsc fuse`)"


def _matrix(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    """A fixed-size-list column as [shape=(n, width)] float64."""
    column = table.column(name).combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(len(column), -1)


def _strings(table: pa.Table, name: str) -> npt.NDArray[np.str_]:
    return np.asarray(table.column(name).to_pylist(), dtype=str)


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
    """Clip probabilities of a fusion model on every split (``FUSION_DIR/predictions.parquet``).

    Attributes:
        clip_ids: [shape=(n,), str] clip (or segment) ids.
        splits: [shape=(n,), str] each row's split (``train``, ``val``, ``test``).
        labels: [shape=(n,), str] true scene labels.
        probs: [shape=(n, 10), float64] calibrated probabilities, :data:`LABELS` order.
        logits: [shape=(n, 10), float64] the raw scores the probabilities came from (None:
            not recorded; the probabilities are then all there is).
    """

    FILE_NAME: ClassVar[str] = PREDICTIONS_FILE
    FORMAT: ClassVar[str] = "avsc-predictions"
    VERSION: ClassVar[int] = 1

    clip_ids: npt.NDArray[np.str_]
    splits: npt.NDArray[np.str_]
    labels: npt.NDArray[np.str_]
    probs: npt.NDArray[np.float64]
    logits: npt.NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        # Lists are accepted and kept as arrays (a frozen dataclass sets them once, here).
        for name in ("clip_ids", "splits", "labels"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=str))
        object.__setattr__(self, "probs", np.asarray(self.probs, dtype=np.float64))
        if self.logits is not None:
            object.__setattr__(self, "logits", np.asarray(self.logits, dtype=np.float64))
        n = len(self.clip_ids)
        if len(self.splits) != n or len(self.labels) != n or len(self.probs) != n:
            raise ValueError(
                f"predictions: {n} clip ids but {len(self.splits)} splits, {len(self.labels)} labels "
                f"and {len(self.probs)} rows of probabilities"
            )
        if self.logits is not None and np.shape(self.logits) != np.shape(self.probs):
            raise ValueError(
                f"predictions: logits of shape {np.shape(self.logits)}, probabilities of shape {np.shape(self.probs)}"
            )

    @property
    def predicted(self) -> list[str]:
        """The arg-max label of each row."""
        return [LABELS[int(k)] for k in np.asarray(self.probs).argmax(axis=1)] if len(self.probs) else []

    def of_split(self, split: str) -> Predictions:
        """The rows of one split, in file order."""
        mask = np.asarray(self.splits) == split
        return Predictions(
            self.clip_ids[mask],
            self.splits[mask],
            self.labels[mask],
            self.probs[mask],
            None if self.logits is None else self.logits[mask],
        )

    def sorted_by_clip(self) -> Predictions:
        """The rows ordered by clip id (stable)."""
        order = np.argsort(self.clip_ids, kind="stable")
        return Predictions(
            self.clip_ids[order],
            self.splits[order],
            self.labels[order],
            self.probs[order],
            None if self.logits is None else self.logits[order],
        )

    def _table(self) -> pa.Table:
        probs = np.ascontiguousarray(self.probs, dtype=np.float32)
        width = probs.shape[1] if probs.ndim == 2 else len(LABELS)
        columns = {
            "clip_id": pa.array([str(c) for c in self.clip_ids], pa.string()),
            "split": pa.array([str(s) for s in self.splits], pa.string()),
            "label": pa.array([str(label) for label in self.labels], pa.string()),
            "predicted": pa.array(self.predicted, pa.string()),
            "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), width),
        }
        if self.logits is not None:
            logits = np.ascontiguousarray(self.logits, dtype=np.float32)
            columns["logits"] = pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), width)
        table = pa.Table.from_pydict(columns)
        return table.replace_schema_metadata({"avsc.format": self.FORMAT, "avsc.version": str(self.VERSION)})

    def write(self, folder: str | os.PathLike[str]) -> str:
        """Write ``predictions.parquet`` into ``folder`` (local or ``s3://``) atomically; returns
        its location."""
        sink = pa.BufferOutputStream()
        pq.write_table(self._table(), sink)
        path = locations.join(str(folder), self.FILE_NAME)
        locations.write_bytes(path, sink.getvalue().to_pybytes())
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Predictions:
        """The predictions of the fusion folder ``folder`` (local or ``s3://``); see :meth:`read_file`."""
        return cls.read_file(locations.join(str(folder), cls.FILE_NAME))

    @classmethod
    def read_file(cls, path: str | os.PathLike[str]) -> Predictions:
        """The predictions in the Parquet file ``path``.

        Raises:
            DataError: not there or not Parquet.
            RecordError: written without this format and version (an older or newer avsc, or
                another file), or a column missing; the message names ``path``.
            StoreError: the object store refused or could not be reached.
        """
        table = locations.read_parquet(path, what="predictions file", hint=_HINT)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        fmt, version = meta.get("avsc.format"), meta.get("avsc.version")
        if fmt != cls.FORMAT:
            found = "no avsc.format metadata" if fmt is None else f"format {fmt!r}"
            raise RecordError(path, f"not a {cls.FORMAT} file ({found}; an older avsc or another file)", _HINT)
        number = int(version) if version is not None and version.isdigit() else None
        if number is None:
            raise RecordError(path, f"{cls.FORMAT} file without an integer avsc.version", _HINT)
        if number > cls.VERSION:
            raise RecordError(
                path, f"{cls.FORMAT} version {number} is newer than this avsc reads ({cls.VERSION})", "upgrade avsc"
            )
        if number < cls.VERSION:
            raise RecordError(
                path, f"{cls.FORMAT} version {number} is older than this avsc reads ({cls.VERSION})", _HINT
            )
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            raise RecordError(path, f"missing column(s) {', '.join(missing)}", _HINT)
        logits = _matrix(table, "logits") if "logits" in table.column_names else None
        return cls(
            _strings(table, "clip_id"),
            _strings(table, "split"),
            _strings(table, "label"),
            _matrix(table, "probs"),
            logits,
        )

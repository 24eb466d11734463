"""Evaluation of fusion models on one split (paper, section III-C): metrics, report, CSV.

Metrics are computed in NumPy only, on whole clips, with the class order of
:data:`avsc.labels.LABELS` (alphabetical):

- accuracy: the fraction of clips whose most probable class is the true class;
- per-class accuracy: for each class, the accuracy on the clips of that class (the recall
  of the class, as DCASE reports it);
- multi-class log loss: ``-mean_n log p_n[y_n]`` after clipping every probability to
  ``[1e-15, 1 - 1e-15]`` and renormalising each row to sum to 1 (as DCASE computed it
  with scikit-learn's ``log_loss``);
- confusion matrix: ``C[i, j]`` = clips of true class ``i`` predicted as class ``j``.

:func:`evaluate` reads the ``predictions.parquet`` of fusion folders written by
:func:`avsc.fusion.train_fusion` and writes ``metrics.json``, one confusion-matrix PNG and
one DCASE-style submission CSV per result, ``report.html`` and ``report.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.config import BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.errors import DataError
from avsc.fileio import atomic_path, read_json, write_json
from avsc.labels import LABEL_INDEX, LABELS

__all__ = [
    "LOG_LOSS_EPS",
    "accuracy",
    "per_class_accuracy",
    "log_loss",
    "confusion_matrix",
    "classification_metrics",
    "softmax",
    "write_predictions",
    "read_predictions",
    "find_fusion_dirs",
    "evaluate",
]

LOG_LOSS_EPS = 1e-15
PREDICTIONS_FILE = "predictions.parquet"
FUSION_FILE = "fusion.json"


# --- Metrics (pure NumPy) -------------------------------------------------------------------


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of rows whose arg-max is the true class.

    Args:
        y_true: [shape=(n,)] true class indices.
        probs: [shape=(n, n_classes)] scores (probabilities or logits).
    """
    y_true = np.asarray(y_true)
    if not len(y_true):
        return float("nan")
    return float((np.asarray(probs).argmax(axis=1) == y_true).mean())


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(LABELS)) -> np.ndarray:
    """Accuracy on the clips of each class (recall per class); NaN for a class with no clip.

    Args:
        y_true, y_pred: [shape=(n,)] true and predicted class indices.
    Returns:
        [shape=(n_classes,), float64]
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = np.full(n_classes, np.nan)
    for k in range(n_classes):
        mask = y_true == k
        if mask.any():
            out[k] = float((y_pred[mask] == k).mean())
    return out


def log_loss(y_true: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Multi-class log loss: clip to ``[eps, 1 - eps]``, renormalise rows, mean ``-log p[y]``.

    Args:
        y_true: [shape=(n,)] true class indices.
        probs: [shape=(n, n_classes)] predicted probabilities.
    """
    y_true = np.asarray(y_true)
    if not len(y_true):
        return float("nan")
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(y_true)), y_true]).mean())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(LABELS)) -> np.ndarray:
    """``C[i, j]`` = number of rows of true class ``i`` predicted as ``j``.

    Returns:
        [shape=(n_classes, n_classes), int64] rows = true class, columns = predicted.
    """
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, [shape=(n, k)] -> [shape=(n, k)], float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Accuracy, log loss, per-class accuracy and confusion matrix of clip probabilities.

    Args:
        y_true: [shape=(n,)] true class indices into ``labels``.
        probs: [shape=(n, len(labels))] class probabilities.

    Returns:
        ``{"accuracy", "log_loss", "per_class_accuracy": {label: acc} (classes with clips
        only), "confusion_matrix": [[int]], "n_clips", "labels"}``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(labels)
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    per_class = per_class_accuracy(y_true, y_pred, n_classes)
    return {
        "accuracy": accuracy(y_true, probs),
        "log_loss": log_loss(y_true, probs),
        "per_class_accuracy": {label: float(per_class[k]) for k, label in enumerate(labels)
                               if not np.isnan(per_class[k])},
        "confusion_matrix": confusion_matrix(y_true, y_pred, n_classes).tolist(),
        "n_clips": int(len(y_true)),
        "labels": list(labels),
    }


def label_indices(labels: Sequence[str], where: str | Path) -> np.ndarray:
    """Class indices of label strings; DataError naming ``where`` for an unknown label."""
    unknown = sorted(set(labels) - set(LABEL_INDEX))
    if unknown:
        raise DataError(where, f"unknown scene label(s) {', '.join(unknown)}",
                        f"labels must be among {', '.join(LABELS)}")
    return np.asarray([LABEL_INDEX[label] for label in labels], dtype=np.int64)


# --- Predictions file ---------------------------------------------------------------------


def write_predictions(path: str | Path, *, clip_ids: Sequence[str], splits: Sequence[str],
                      labels: Sequence[str], probs: np.ndarray) -> Path:
    """Write clip probabilities as Parquet (atomically).

    Columns: ``clip_id``, ``split``, ``label`` (true), ``predicted`` (arg-max label) and
    ``probs`` [fixed-size list of 10 float32, :data:`LABELS` order].
    """
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    predicted = [LABELS[k] for k in probs.argmax(axis=1)] if len(probs) else []
    table = pa.Table.from_arrays(
        [pa.array(list(clip_ids), pa.string()), pa.array(list(splits), pa.string()),
         pa.array(list(labels), pa.string()), pa.array(predicted, pa.string()),
         pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), probs.shape[1])],
        names=["clip_id", "split", "label", "predicted", "probs"],
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Read a predictions file: ``clip_id``, ``split``, ``label`` [shape=(n,)], ``probs`` [shape=(n, 10)]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "predictions file not found", "train the fusion model again (`avsc fuse`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({exc})") from None
    missing = [c for c in ("clip_id", "split", "label", "probs") if c not in table.column_names]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}", "not an avsc predictions file")
    column = table.column("probs").combine_chunks()
    return {
        "clip_id": np.asarray(table.column("clip_id").to_pylist()),
        "split": np.asarray(table.column("split").to_pylist()),
        "label": np.asarray(table.column("label").to_pylist()),
        "probs": column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float64),
    }


# --- Evaluation of fusion folders ------------------------------------------------------------


def _result_order(meta: dict[str, Any]) -> tuple[int, int]:
    method = meta.get("method")
    modalities = meta.get("modalities")
    m = FUSION_METHODS.index(method) if method in FUSION_METHODS else len(FUSION_METHODS)
    s = list(MODALITY_SETS).index(modalities) if modalities in MODALITY_SETS else len(MODALITY_SETS)
    return (s, m)


def find_fusion_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Fusion folders among ``paths``: each path is a fusion folder (has ``fusion.json``) or a
    folder whose direct sub-folders are. Sorted by modality set, then method.

    Raises:
        DataError: a path does not exist, or holds no fusion folder.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DataError(path, "fusion folder not found", "give the output folder of `avsc fuse`")
        if (path / FUSION_FILE).is_file():
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / FUSION_FILE).is_file())
        if not children:
            raise DataError(path, f"no {FUSION_FILE} here nor in its sub-folders",
                            "give a folder written by `avsc fuse` (or the root of `avsc fuse --method all`)")
        found.extend(children)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return sorted(unique, key=lambda p: (_result_order(read_json(p / FUSION_FILE)), str(p)))


def _best(results: list[dict[str, Any]]) -> dict[str, str] | None:
    """The result to put in Table II: highest VAL accuracy (ties: lower val log loss),
    among audio+visual results when there are any. The evaluated split never decides."""
    if not results:
        return None
    pool = [r for r in results if r["modalities"] == "audio+visual"] or results
    def key(r: dict[str, Any]) -> tuple[float, float, int]:
        acc, loss = r["val_accuracy"], r["val_log_loss"]
        order = FUSION_METHODS.index(r["method"]) if r["method"] in FUSION_METHODS else len(FUSION_METHODS)
        return (-1.0 if math.isnan(acc) else acc, -math.inf if math.isnan(loss) else -loss, -order)

    chosen = max(pool, key=key)
    return {"method": chosen["method"], "modalities": chosen["modalities"]}


def _backbone_rows(embeddings_dir: Path, split: str) -> list[dict[str, Any]]:
    from avsc.embeddings import read_embeddings

    if not embeddings_dir.is_dir():
        raise DataError(embeddings_dir, "embeddings folder not found", "give the folder of `avsc embed` outputs")
    rows = []
    for backbone in BACKBONES:
        path = embeddings_dir / f"{backbone}.parquet"
        if not path.is_file():
            continue
        emb = read_embeddings(path)
        mask = emb.splits == split
        if not mask.any():
            raise DataError(path, f"no clips in the {split!r} split")
        y = label_indices(list(emb.labels[mask]), path)
        metrics = classification_metrics(y, softmax(emb.fc10[mask]))
        rows.append({"backbone": backbone, "accuracy": metrics["accuracy"], "log_loss": metrics["log_loss"],
                     "per_class_accuracy": metrics["per_class_accuracy"], "n_clips": metrics["n_clips"]})
    if not rows:
        raise DataError(embeddings_dir, f"no <backbone>.parquet file (one of {', '.join(BACKBONES)})",
                        "give the folder of `avsc embed` outputs")
    return rows


def evaluate(
    fusion_dirs: Sequence[str | Path] | str | Path,
    report_dir: str | Path,
    *,
    split: str = "test",
    embeddings_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate fusion models on one split and write the report.

    Args:
        fusion_dirs: fusion folders and/or roots holding them (``avsc fuse --method all``).
        report_dir: output folder; afterwards holds ``metrics.json``, ``report.html``
            (self-contained), ``report.md``, ``confusion-<method>-<modalities>.png`` and
            ``submission-<method>-<modalities>.csv`` per result.
        split: the split to evaluate (``test`` = TAU fold1_evaluate).
        embeddings_dir: optional folder of ``<backbone>.parquet``; adds one row per
            backbone (softmax of its ``fc10``) to the metrics and the report.

    Returns:
        The content of ``metrics.json``: ``{"split", "results": [{"method", "modalities",
        "accuracy", "log_loss", "per_class_accuracy", "confusion_matrix", "n_clips",
        "labels", "val_accuracy", "val_log_loss", "fusion_dir"}], "backbones": [...] (with
        ``embeddings_dir``), "best": {"method", "modalities"}, "dataset": {...}}``.

    Raises:
        DataError: a missing or unreadable fusion folder, a split without clips, two
            folders for the same method and modality set.

    Example:
        >>> metrics = evaluate(["runs/fusion"], "runs/report", embeddings_dir="runs/embeddings")
        >>> metrics["best"], metrics["results"][0]["accuracy"]
    """
    from avsc import report

    if isinstance(fusion_dirs, (str, Path)):
        fusion_dirs = [fusion_dirs]
    report_dir = Path(report_dir)
    dirs = find_fusion_dirs(fusion_dirs)
    results: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], Path] = {}
    dataset: dict[str, Any] = {"split": split}
    reference_ids: np.ndarray | None = None
    metas = {fusion_dir: read_json(fusion_dir / FUSION_FILE) for fusion_dir in dirs}
    for fusion_dir, meta in metas.items():  # before anything is written
        key = (meta.get("method"), meta.get("modalities"))
        if key in seen:
            raise DataError(fusion_dir, f"a second result for {key[0]} {key[1]} (first: {seen[key]})",
                            "evaluate one folder per method and modality set")
        seen[key] = fusion_dir
    for fusion_dir, meta in metas.items():
        if list(meta.get("labels", LABELS)) != list(LABELS):
            raise DataError(fusion_dir / FUSION_FILE, "class order differs from avsc's LABELS")
        preds = read_predictions(fusion_dir / PREDICTIONS_FILE)
        mask = preds["split"] == split
        if not mask.any():
            present = ", ".join(sorted(set(preds["split"]))) or "none"
            raise DataError(fusion_dir / PREDICTIONS_FILE, f"no clips in the {split!r} split (splits: {present})",
                            "choose another --split")
        clip_ids = preds["clip_id"][mask]
        order = np.argsort(clip_ids, kind="stable")
        clip_ids, labels, probs = clip_ids[order], preds["label"][mask][order], preds["probs"][mask][order]
        if reference_ids is None:
            reference_ids = clip_ids
            dataset.update(clips_per_split=meta.get("clips_per_split", {}), n_clips=int(len(clip_ids)),
                           class_counts={lab: int((labels == lab).sum()) for lab in LABELS})
        elif not np.array_equal(reference_ids, clip_ids):
            raise DataError(fusion_dir / PREDICTIONS_FILE,
                            f"its {split} clips differ from those of {dirs[0]}",
                            "evaluate fusion models trained on the same embeddings together")
        y = label_indices(list(labels), fusion_dir / PREDICTIONS_FILE)
        metrics = classification_metrics(y, probs)
        val = meta.get("val_metrics", {})
        name = f"{meta['method']}-{meta['modalities']}"
        results.append({
            "method": meta["method"], "modalities": meta["modalities"], **metrics,
            "val_accuracy": float(val.get("accuracy", float("nan"))),
            "val_log_loss": float(val.get("log_loss", float("nan"))),
            "fusion_dir": str(fusion_dir), "confusion_png": f"confusion-{name}.png",
            "submission_csv": f"submission-{name}.csv",
        })
        report.write_submission_csv(report_dir / f"submission-{name}.csv", clip_ids, probs)
    out: dict[str, Any] = {"split": split, "labels": list(LABELS), "dataset": dataset, "results": results,
                           "best": _best(results)}
    if embeddings_dir is not None:
        out["backbones"] = _backbone_rows(Path(embeddings_dir), split)
    for result in results:
        report.plot_confusion(np.asarray(result["confusion_matrix"]), report_dir / result["confusion_png"],
                              title=f"{result['method']} {result['modalities']} ({split}): "
                                    f"accuracy {100 * result['accuracy']:.1f}%")
    write_json(report_dir / "metrics.json", out)
    report.write_report(out, report_dir)
    return out

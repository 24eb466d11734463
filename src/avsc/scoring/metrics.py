"""Classification metrics of every phase, on scikit-learn and SciPy, with the DCASE conventions.

Backbones (Phase I model selection), fusion models (Phase II) and the evaluation all call
:func:`classification_metrics`, so a val log loss means the same thing everywhere. Class
order is :data:`avsc.labels.LABELS` (alphabetical, as DCASE orders probability columns);
scores are computed on whole rows (clips, or segments under the 1-second protocol):

- accuracy: ``sklearn.metrics.accuracy_score`` of the arg-max class, with its 95 % Wilson
  score interval (:func:`wilson_interval`, ``scipy.stats.binomtest``);
- per-class accuracy: ``sklearn.metrics.recall_score(average=None)`` (DCASE's class-wise
  accuracy is the recall of each class); only classes with at least one row are reported,
  each with its row count, its correct rows and its Wilson interval;
- multi-class log loss: ``sklearn.metrics.log_loss(..., labels=range(10))``, which clips
  probabilities to ``[eps, 1 - eps]`` (``eps`` of float64) after each row is normalised to
  sum to 1, as the challenge computed it;
- expected calibration error (:func:`expected_calibration_error`): the top-label ECE of
  Guo et al. (2017) over 15 equal-width confidence bins;
- confusion matrix: ``sklearn.metrics.confusion_matrix``; ``C[i, j]`` = rows of true class
  ``i`` predicted as ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avsc.errors import DataError
from avsc.labels import LABEL_INDEX, LABELS

__all__ = [
    "classification_metrics",
    "expected_calibration_error",
    "reliability_bins",
    "equal_count_reliability",
    "wilson_interval",
    "label_indices",
    "softmax",
    "ECE_BINS",
]

# Bins of the expected calibration error and of the reliability diagrams (Guo et al. use 15).
ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, [shape=(n, k)] -> [shape=(n, k)], float64 (``scipy.special.softmax``)."""
    from scipy.special import softmax as _softmax

    return np.asarray(_softmax(np.asarray(logits, dtype=np.float64), axis=1), dtype=np.float64)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (``scipy.stats.binomtest``).

    Unlike the normal approximation it stays inside [0, 1] and is meaningful for the small
    counts of a per-class accuracy (3 clips give 0 %, 33 %, 67 % or 100 %).

    Returns:
        ``(low, high)`` as fractions; ``(nan, nan)`` when ``n == 0``.

    Example:
        >>> wilson_interval(7, 10)  # 70 % of 10
        (0.3967..., 0.8922...)
    """
    from scipy.stats import binomtest

    if n <= 0:
        return (float("nan"), float("nan"))
    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, list[Any]]:
    """Top-label reliability of class probabilities, over ``n_bins`` equal-width bins of (0, 1].

    Each row falls into the bin of its confidence (its largest probability).

    Returns:
        ``{"edges": [n_bins + 1], "confidence": [mean confidence per bin], "accuracy":
        [share of correct arg-max per bin], "count": [rows per bin]}``; empty bins hold NaN.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == y_true) if len(probs) else np.zeros(0, bool)
    # Bin k holds (edges[k], edges[k + 1]]; a confidence of exactly 0 cannot occur.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=n_bins) / count
    return {
        "edges": edges.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": accuracy.tolist(),
        "count": count.astype(int).tolist(),
    }


def equal_count_reliability(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int | None = None, min_count: int = 10
) -> dict[str, list[Any]]:
    """Top-label reliability over bins holding (nearly) the same number of rows.

    Rows are sorted by confidence (their largest probability) and cut into ``n_bins``
    consecutive groups of equal size (within one row). Unlike fixed-width bins, no bin holds one
    or two rows, so the accuracy of every bin means something on a small test split; each
    comes with its row count and its 95 % Wilson interval.

    Args:
        y_true: [shape=(n,)] true class indices.
        probs: [shape=(n, k)] class probabilities.
        n_bins: number of bins; None: ``n // min_count`` (at least 1, at most 10).
        min_count: the rows a bin should hold when ``n_bins`` is None.

    Returns:
        ``{"confidence": [mean confidence per bin], "accuracy": [share correct], "count":
        [rows], "low": [Wilson low], "high": [Wilson high], "edges": [[lowest, highest
        confidence] per bin]}``, bins in increasing confidence; empty lists without rows.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out: dict[str, list[Any]] = {"confidence": [], "accuracy": [], "count": [], "low": [], "high": [], "edges": []}
    if len(y_true) == 0:
        return out
    if n_bins is None:
        n_bins = max(1, min(10, len(y_true) // max(1, min_count)))
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    order = np.argsort(confidence, kind="stable")
    for part in np.array_split(order, min(n_bins, len(order))):
        k, n = int(correct[part].sum()), len(part)
        low, high = wilson_interval(k, n)
        out["confidence"].append(float(confidence[part].mean()))
        out["accuracy"].append(k / n)
        out["count"].append(n)
        out["low"].append(low)
        out["high"].append(high)
        out["edges"].append([float(confidence[part].min()), float(confidence[part].max())])
    return out


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error: ``sum_k (n_k / n) |accuracy_k - confidence_k|``.

    Over ``n_bins`` equal-width confidence bins (Guo et al., "On calibration of modern
    neural networks", 2017). 0 for a perfectly calibrated model; NaN when there are no rows.
    """
    bins = reliability_bins(y_true, probs, n_bins)
    count = np.asarray(bins["count"], dtype=float)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float(np.sum(np.where(count > 0, gap * count, 0.0)) / count.sum())


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Accuracy, log loss, calibration error, per-class accuracy and confusion matrix.

    Args:
        y_true: [shape=(n,)] true class indices into ``labels``.
        probs: [shape=(n, len(labels))] class probabilities (rows are normalised to sum to 1).
        labels: class names, in the column order of ``probs``.

    Returns:
        ``{"accuracy", "accuracy_ci": [low, high] (95 % Wilson), "n_correct", "log_loss",
        "ece", "per_class_accuracy": {label: recall}, "per_class_count": {label: rows},
        "per_class_correct": {label: rows}, "per_class_ci": {label: [low, high]} (classes
        with rows only), "confusion_matrix": [[int]], "n_clips", "labels"}``; accuracy, log
        loss and ECE are NaN when ``n == 0``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, recall_score

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(y_true), len(labels))
    classes = np.arange(len(labels))
    nan = float("nan")
    if len(y_true) == 0:
        return {
            "accuracy": nan,
            "accuracy_ci": [nan, nan],
            "n_correct": 0,
            "log_loss": nan,
            "ece": nan,
            "per_class_accuracy": {},
            "per_class_count": {},
            "per_class_correct": {},
            "per_class_ci": {},
            "confusion_matrix": np.zeros((len(labels),) * 2, int).tolist(),
            "n_clips": 0,
            "labels": list(labels),
        }
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    counts = matrix.sum(axis=1)
    correct = np.diag(matrix)
    recall = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0.0)
    # scikit-learn clips to [eps, 1 - eps] and warns before it renormalises a row that does
    # not sum to 1; doing both here first gives the same value without the warning.
    eps = np.finfo(np.float64).eps
    clipped = np.clip(probs, eps, 1.0 - eps)
    normalised = clipped / clipped.sum(axis=1, keepdims=True)
    n_correct = int(correct.sum())
    present = [int(k) for k in classes if counts[k]]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci": list(wilson_interval(n_correct, len(y_true))),
        "n_correct": n_correct,
        "log_loss": float(log_loss(y_true, normalised, labels=classes)),
        "ece": expected_calibration_error(y_true, normalised),
        "per_class_accuracy": {labels[k]: float(recall[k]) for k in present},
        "per_class_count": {labels[k]: int(counts[k]) for k in present},
        "per_class_correct": {labels[k]: int(correct[k]) for k in present},
        "per_class_ci": {labels[k]: list(wilson_interval(int(correct[k]), int(counts[k]))) for k in present},
        "confusion_matrix": matrix.tolist(),
        "n_clips": int(len(y_true)),
        "labels": list(labels),
    }


def label_indices(labels: Sequence[str], where: str | Path) -> np.ndarray:
    """Class indices of label strings; DataError naming ``where`` for an unknown label."""
    unknown = sorted(set(labels) - set(LABEL_INDEX))
    if unknown:
        raise DataError(
            where, f"unknown scene label(s) {', '.join(unknown)}", f"labels must be among {', '.join(LABELS)}"
        )
    return np.asarray([LABEL_INDEX[label] for label in labels], dtype=np.int64)

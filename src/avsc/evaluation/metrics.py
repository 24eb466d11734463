"""Classification metrics of every phase, on scikit-learn, with the DCASE conventions.

Backbones (Phase I model selection), fusion models (Phase II) and the evaluation all call
:func:`classification_metrics`, so a val log loss means the same thing everywhere. Class
order is :data:`avsc.labels.LABELS` (alphabetical, as DCASE orders probability columns);
scores are computed on whole rows (clips, or segments under the 1-second protocol):

- accuracy: ``sklearn.metrics.accuracy_score`` of the arg-max class;
- per-class accuracy: the recall of each class (DCASE's class-wise accuracy), from the
  confusion matrix; only classes with at least one row are reported;
- multi-class log loss: ``sklearn.metrics.log_loss(..., labels=range(10))``, which clips
  probabilities to ``[eps, 1 - eps]`` (``eps`` of float64) after each row is normalised to
  sum to 1, as the challenge computed it;
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

__all__ = ["classification_metrics", "label_indices", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, [shape=(n, k)] -> [shape=(n, k)], float64 (``scipy.special.softmax``)."""
    from scipy.special import softmax as _softmax

    return _softmax(np.asarray(logits, dtype=np.float64), axis=1)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray,
                           labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Accuracy, log loss, per-class accuracy and confusion matrix of class probabilities.

    Args:
        y_true: [shape=(n,)] true class indices into ``labels``.
        probs: [shape=(n, len(labels))] class probabilities (rows are normalised to sum to 1).
        labels: class names, in the column order of ``probs``.

    Returns:
        ``{"accuracy", "log_loss", "per_class_accuracy": {label: recall} (classes with rows
        only), "per_class_count": {label: rows}, "confusion_matrix": [[int]], "n_clips",
        "labels"}``; accuracy and log loss are NaN when ``n == 0``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(y_true), len(labels))
    classes = np.arange(len(labels))
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "log_loss": float("nan"), "per_class_accuracy": {},
                "per_class_count": {}, "confusion_matrix": np.zeros((len(labels),) * 2, int).tolist(),
                "n_clips": 0, "labels": list(labels)}
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    counts = matrix.sum(axis=1)
    # scikit-learn clips to [eps, 1 - eps] and warns before it renormalises a row that does
    # not sum to 1; doing both here first gives the same value without the warning.
    eps = np.finfo(np.float64).eps
    clipped = np.clip(probs, eps, 1.0 - eps)
    normalised = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "log_loss": float(log_loss(y_true, normalised, labels=classes)),
        "per_class_accuracy": {label: float(matrix[k, k] / counts[k])
                               for k, label in enumerate(labels) if counts[k]},
        "per_class_count": {label: int(counts[k]) for k, label in enumerate(labels) if counts[k]},
        "confusion_matrix": matrix.tolist(),
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

"""The report's figures as PNG files (matplotlib's object API, no global state, no display).

- :func:`plot_confusion`: one confusion matrix (colour = share of the true class, text = count).
- :func:`plot_reliability`: reliability diagrams, one small panel per model, before and
  after temperature scaling, in one figure.
- :func:`plot_training_curves`: per model, training loss, val accuracy and val log loss
  (raw and after temperature scaling) per epoch, the selected epoch marked.

Every function writes its file atomically and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avsc.labels import LABELS
from avsc.scoring.metrics import equal_count_reliability
from avsc.storage.files import atomic_path

__all__ = ["Reliability", "Curves", "plot_confusion", "plot_reliability", "plot_training_curves"]

_BEFORE, _AFTER = "#d9541e", "#1f6fb4"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _readable(label: str) -> str:
    return label.replace("_", " ")


def plot_confusion(matrix: np.ndarray, path: str | Path, *, labels: Sequence[str] = LABELS, title: str = "") -> Path:
    """A confusion-matrix PNG: colour = share of the true class (rows sum to 1), text = count.

    Args:
        matrix: [shape=(n_classes, n_classes), int] rows = true class, columns = predicted.
    """
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    n = len(labels)
    fig = _figure(7.2, 6.4)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), [_readable(lab) for lab in labels], rotation=45, ha="right")
    ax.set_yticks(range(n), [_readable(lab) for lab in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


@dataclass(frozen=True)
class Reliability:
    """One panel of :func:`plot_reliability`.

    Attributes:
        y_true: [shape=(n,)] true class indices.
        before: [shape=(n, k)] probabilities before temperature scaling.
        after: [shape=(n, k)] probabilities after it.
    """

    title: str
    y_true: np.ndarray
    before: np.ndarray
    after: np.ndarray
    temperature: float = 1.0


def _reliability_line(ax, y: np.ndarray, probs: np.ndarray, colour: str, label: str, *, counts: bool = False) -> None:
    """Accuracy against mean confidence over equal-count bins, each with its 95 % Wilson
    interval (and, with ``counts``, its row count written beside it)."""
    bins = equal_count_reliability(y, probs)
    conf, acc = np.asarray(bins["confidence"]), np.asarray(bins["accuracy"])
    errors = np.abs(np.vstack([acc - np.asarray(bins["low"]), np.asarray(bins["high"]) - acc]))
    ax.errorbar(
        conf,
        acc,
        yerr=errors,
        fmt="o-",
        color=colour,
        markersize=3,
        linewidth=1.2,
        elinewidth=0.7,
        capsize=2,
        label=label,
    )
    if counts:
        for x, a, n in zip(conf, acc, bins["count"], strict=True):
            ax.annotate(f"n={n}", (x, a), textcoords="offset points", xytext=(3, -9), fontsize=5.5, color=colour)


def plot_reliability(panels: Sequence[Reliability], path: str | Path, *, columns: int = 3, title: str = "") -> Path:
    """Reliability diagrams (accuracy against confidence) before and after calibration.

    Bins hold equal numbers of rows (:func:`avsc.scoring.metrics.equal_count_reliability`:
    about 10 rows each, at most 10 bins), each point with its 95 % Wilson interval and, after
    calibration, its row count. A calibrated model lies on the diagonal; below it the model
    is over-confident.
    """
    from avsc.scoring.metrics import expected_calibration_error

    columns = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    fig = _figure(3.2 * columns, 3.1 * rows + (0.4 if title else 0))
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.plot([0, 1], [0, 1], color="#999", linewidth=0.8, linestyle="--")
        before = expected_calibration_error(panel.y_true, panel.before)
        after = expected_calibration_error(panel.y_true, panel.after)
        _reliability_line(ax, panel.y_true, panel.before, _BEFORE, f"raw (ECE {before:.3f})")
        _reliability_line(
            ax, panel.y_true, panel.after, _AFTER, f"T={panel.temperature:.2f} (ECE {after:.3f})", counts=True
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5, loc="upper left")
        if i % columns == 0:
            ax.set_ylabel("accuracy", fontsize=8)
        if i >= (rows - 1) * columns:
            ax.set_xlabel("confidence", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


@dataclass(frozen=True)
class Curves:
    """One row of :func:`plot_training_curves`: a model's ``history.json`` and its selected epoch."""

    title: str
    history: list[dict[str, Any]]
    selected_epoch: int


def plot_training_curves(models: Sequence[Curves], path: str | Path) -> Path:
    """Per model (one row each): training loss, val accuracy, val log loss (raw and after
    temperature scaling) against the epoch; a vertical line marks the selected epoch."""
    from matplotlib.ticker import MaxNLocator

    rows = max(1, len(models))
    fig = _figure(11.0, 2.3 * rows)
    for r, model in enumerate(models):
        epochs = [h["epoch"] for h in model.history]

        def series(key: str, history: list[dict[str, Any]] = model.history) -> list[float]:
            return [float(h.get(key, float("nan"))) for h in history]

        panels = [
            ("training loss", [("loss", "#444", "loss")]),
            ("val accuracy", [("val_accuracy", _AFTER, "val accuracy")]),
            (
                "val log loss",
                [("val_log_loss", _BEFORE, "raw"), ("val_log_loss_calibrated", _AFTER, "after temperature")],
            ),
        ]
        for c, (name, lines) in enumerate(panels):
            ax = fig.add_subplot(rows, 3, 3 * r + c + 1)
            for key, colour, label in lines:
                values = series(key)
                if not all(math.isnan(v) for v in values):
                    ax.plot(epochs, values, color=colour, linewidth=1.2, label=label)
            if model.selected_epoch:
                ax.axvline(
                    model.selected_epoch,
                    color="#2a9d3a",
                    linestyle=":",
                    linewidth=1.2,
                    label=f"selected (epoch {model.selected_epoch})",
                )
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{model.title}: {name}", fontsize=8.5)
            if r == rows - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if c == 2 or (c == 0 and r == 0):
                ax.legend(fontsize=6.5)
    fig.tight_layout()
    return _save(fig, path)

"""A reference for the fusion models: standardised logistic regression on the same embeddings.

A fusion model earns its place only if it does at least as well as the simplest sound
classifier of the same inputs. :func:`logistic_reference` fits scikit-learn's
``LogisticRegression`` (multinomial, L2) on the train split's embeddings of a modality set —
concatenated across its backbones and standardised with train-split statistics
(``StandardScaler``) — choosing the inverse regularisation strength ``C`` on the val split
(lowest val log loss, ties: the stronger regularisation), and scores it on the evaluated split.
Its probabilities are used as they come (no temperature).

Example::

    rows = logistic_reference("runs/embeddings", split="test")
    [(r["modalities"], r["level"], r["accuracy"], r["log_loss"]) for r in rows]
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import MODALITY_SETS
from avsc.labels import LABEL_INDEX, LABELS
from avsc.scoring.metrics import classification_metrics

__all__ = ["logistic_reference", "REFERENCE_C_GRID"]

log = logging.getLogger(__name__)

# Inverse L2 strengths tried on val (scikit-learn's C): 1e-3 .. 1e3, two per decade.
REFERENCE_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 3, 13))


def _fit_reference(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _probabilities(model, x: np.ndarray) -> np.ndarray:
    """[shape=(n, 10)] probabilities in LABELS order (classes absent from train get 0)."""
    probs = np.zeros((len(x), len(LABELS)))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def logistic_reference(
    embeddings: str | Path | Mapping[str, str | Path],
    *,
    split: str = "test",
    modality_sets: Sequence[str] = tuple(MODALITY_SETS),
    levels: Sequence[str] = ("fc10",),
) -> list[dict[str, Any]]:
    """Fit and score the logistic-regression reference of every modality set and level.

    Args:
        embeddings: a folder of ``<backbone>.parquet`` (``avsc embed`` outputs) or a mapping
            backbone -> file; modality sets with a missing backbone are left out.
        split: the split scored (``test``); train fits, val chooses ``C``.
        modality_sets: which backbones to concatenate (``audio+visual``, ``audio``, ``visual``).
        levels: ``fc10`` (the backbones' logits, width 10 each; the default: 50 features for
            five backbones, fitted in a second) and/or ``fc1024`` (5,120 features: minutes).

    Returns:
        One row per modality set and level: ``{"modalities", "level", "C", "val_accuracy",
        "val_log_loss", **classification_metrics of the split}``.

    Raises:
        DataError: inconsistent embeddings (see :func:`avsc.training.fusion_data.load_fusion_data`).
    """
    from avsc.storage.files import backbone_paths
    from avsc.training.fusion_data import load_fusion_data

    paths = backbone_paths(
        embeddings, "{backbone}.parquet", what="embeddings", hint="give the folder of `avsc embed` outputs"
    )
    rows = []
    for modalities in modality_sets:
        backbones = MODALITY_SETS[modalities]
        if not all(b in paths and paths[b].is_file() for b in backbones):
            continue
        data = load_fusion_data({b: paths[b] for b in backbones}, backbones)
        y = np.asarray([LABEL_INDEX[label] for label in data.labels])
        masks = {s: data.splits == s for s in ("train", "val", split)}
        if not all(m.any() for m in masks.values()):
            continue
        for level in levels:
            x = np.concatenate(data.inputs(level), axis=1).astype(np.float64)
            best: tuple[tuple[float, float], float, Any, dict[str, Any]] | None = None
            for c in REFERENCE_C_GRID:
                model = _fit_reference(x[masks["train"]], y[masks["train"]], c)
                val = classification_metrics(y[masks["val"]], _probabilities(model, x[masks["val"]]))
                key = (val["log_loss"], -c)
                if best is None or key < best[0]:
                    best = (key, c, model, val)
            assert best is not None  # the grid is not empty
            _, c, model, val = best
            scores = classification_metrics(y[masks[split]], _probabilities(model, x[masks[split]]))
            rows.append(
                {
                    "modalities": modalities,
                    "level": level,
                    "C": c,
                    "val_accuracy": val["accuracy"],
                    "val_log_loss": val["log_loss"],
                    **scores,
                }
            )
            log.debug(
                "reference %s %s: C=%g, val log loss %.3f, %s accuracy %.3f, log loss %.3f",
                modalities,
                level,
                c,
                val["log_loss"],
                split,
                scores["accuracy"],
                scores["log_loss"],
            )
    return rows

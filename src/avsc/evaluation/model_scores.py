"""The scores of one model on one split: a fusion folder, a backbone alone.

Each function reads what the model left behind (``predictions.parquet`` and ``fusion.json``
of a fusion folder, ``<backbone>.parquet`` of ``avsc embed``), applies the model's temperature
(:mod:`avsc.scoring.calibration`) and scores the calibrated probabilities with
:func:`avsc.scoring.metrics.classification_metrics`, the raw log loss and ECE beside them. It
returns the typed part of :class:`avsc.records.EvaluationResult` and the rows behind it (for
the report's figures and submission files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import BACKBONES
from avsc.data.segments import average_segments, is_segment
from avsc.errors import DataError
from avsc.labels import LABELS
from avsc.records import FusionInfo, ModelInfo
from avsc.records.evaluation_result import (
    BackboneResult,
    CalibratedScores,
    ClassificationScores,
    FusionResult,
    ReliabilityBins,
    ScoredRows,
    Uncalibrated,
    ValCalibration,
)
from avsc.records.model_info import Calibration
from avsc.records.predictions import Predictions
from avsc.scoring.calibration import calibrate, calibrated_probabilities, row_log_losses
from avsc.scoring.metrics import classification_metrics, equal_count_reliability, label_indices
from avsc.storage.files import backbone_paths

__all__ = ["score_fusion_folder", "score_backbones", "calibrated_scores", "selection_standard_error"]


def calibrated_scores(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray) -> dict[str, Any]:
    """The fields of a :class:`CalibratedScores`: metrics of ``calibrated`` [shape=(n, 10)],
    the log loss and ECE of ``raw`` beside them."""
    before = classification_metrics(y, raw)
    return {
        **ClassificationScores.fields_of(classification_metrics(y, calibrated)),
        "uncalibrated": Uncalibrated(float(before["log_loss"]), float(before["ece"])),
    }


def _val_calibration(calibration: Calibration) -> ValCalibration:
    return ValCalibration(dict(calibration.before), dict(calibration.after), calibration.cv_log_loss)


def selection_standard_error(val: Predictions, where: str | Path) -> float | None:
    """The standard error of the mean of the per-clip val log losses a fusion model is chosen on.

    The selection log loss is the mean over val clips of the out-of-fold loss of the
    calibrated model (:func:`avsc.scoring.calibration.calibrate`, run again on the val logits:
    the same folds, so the same losses), or of the raw loss where calibration did not pay.
    Without logits the stored probabilities' losses stand in. None: fewer than two val clips.
    """
    if len(val.clip_ids) < 2:
        return None
    y = label_indices(list(val.labels), where)
    if val.logits is not None:
        se = float(calibrate(val.logits, y)["selection_log_loss_se"])
    else:
        losses = row_log_losses(val.probs, y)
        se = float(losses.std(ddof=1) / math.sqrt(len(losses)))
    return None if math.isnan(se) else se


def _probabilities(preds: Predictions, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(raw, calibrated) probabilities [shape=(n, 10)] of ``preds``."""
    if preds.logits is None:  # written without logits: its probabilities are all there is
        return preds.probs, preds.probs
    return calibrated_probabilities(preds.logits, 1.0), calibrated_probabilities(preds.logits, temperature)


def _clip_level(rows: ScoredRows, where: Path) -> CalibratedScores:
    """Scores of whole clips: each clip's probabilities the mean of its segments'."""
    _, parent_labels, clip_probs = average_segments(list(rows.clip_ids), list(rows.labels), rows.calibrated)
    _, _, clip_raw = average_segments(list(rows.clip_ids), list(rows.labels), rows.raw)
    return CalibratedScores(**calibrated_scores(label_indices(list(parent_labels), where), clip_raw, clip_probs))


def score_fusion_folder(fusion_dir: Path, meta: FusionInfo, split: str) -> tuple[FusionResult, ScoredRows]:
    """Score the fusion model of ``fusion_dir`` on ``split`` (rows in clip-id order).

    ``val_within_one_se`` is left False: it compares candidates, which
    :func:`avsc.evaluation.evaluate.score` does once all are scored.

    Raises:
        DataError: its class order is not avsc's, or it has no rows of ``split``.
        RecordError: its ``predictions.parquet`` is not of this avsc's format.
    """
    if list(meta.labels) != list(LABELS):
        raise DataError(fusion_dir / FusionInfo.FILE_NAME, "class order differs from avsc's LABELS")
    every = Predictions.read(fusion_dir)
    preds = every.of_split(split).sorted_by_clip()
    where = fusion_dir / Predictions.FILE_NAME
    if not len(preds.clip_ids):
        present = ", ".join(sorted(set(every.splits))) or "none"
        raise DataError(where, f"no clips in the {split!r} split (splits: {present})", "choose another --split")
    calibration = meta.calibration
    temperature = float(calibration.temperature)
    raw, calibrated = _probabilities(preds, temperature)
    y = label_indices(list(preds.labels), where)
    rows = ScoredRows(
        f"{meta.method} {meta.modalities}",
        meta.modalities,
        preds.clip_ids,
        preds.labels,
        y,
        raw,
        calibrated,
        temperature,
    )
    name = f"{meta.method}-{meta.modalities}"
    segmented = any(is_segment(str(c)) for c in preds.clip_ids)
    bins = equal_count_reliability(y, calibrated)
    result = FusionResult(
        **calibrated_scores(y, raw, calibrated),
        method=meta.method,
        modalities=meta.modalities,
        temperature=temperature,
        calibration_method=calibration.method,
        temperature_at_bound=calibration.at_bound,
        val_accuracy=float(meta.val_metrics["accuracy"]),
        val_log_loss=float(meta.val_metrics["log_loss"]),
        val_selection_log_loss=calibration.selection_log_loss,
        val_selection_log_loss_se=selection_standard_error(every.of_split("val"), where),
        val_within_one_se=False,
        val_calibration=_val_calibration(calibration),
        best_epoch=meta.best_epoch,
        best_step=meta.best_step,
        steps_run=meta.steps_run,
        stopped=meta.stopped,
        fusion_dir=str(fusion_dir),
        confusion_png=f"confusion-{name}.png",
        submission_csv=f"submission-{name}.csv",
        reliability=ReliabilityBins(
            tuple(bins["confidence"]),
            tuple(bins["accuracy"]),
            tuple(bins["count"]),
            tuple(bins["low"]),
            tuple(bins["high"]),
            tuple((float(a), float(b)) for a, b in bins["edges"]),
        ),
        clip_level=_clip_level(rows, where) if segmented else None,
        clip_submission_csv=f"submission-{name}-clips.csv" if segmented else None,
    )
    return result, rows


def score_backbones(
    embeddings: str | Path | Mapping[str, str | Path], split: str, model_infos: Mapping[str, ModelInfo]
) -> tuple[list[BackboneResult], dict[str, ScoredRows]]:
    """Each backbone alone on ``split``: the calibrated softmax of its ``fc10`` embeddings.

    Args:
        embeddings: a folder of ``<backbone>.parquet`` or a mapping backbone -> file (a folder
            need not hold every backbone).
        model_infos: the backbones' ``config.json`` where known: their val calibration.

    Raises:
        DataError: no embeddings file at all, or one without rows of ``split``.
    """
    from avsc.training.embeddings import read_embeddings

    paths = backbone_paths(
        embeddings, "{backbone}.parquet", what="embeddings", hint="give the folder of `avsc embed` outputs"
    )
    results, rows = [], {}
    for backbone, path in paths.items():
        if not path.is_file():
            continue
        emb = read_embeddings(path)
        mask = emb.splits == split
        if not mask.any():
            raise DataError(path, f"no clips in the {split!r} split")
        y = label_indices(list(emb.labels[mask]), path)
        raw = calibrated_probabilities(emb.fc10[mask], 1.0)
        calibrated = calibrated_probabilities(emb.fc10[mask], emb.info.temperature)
        info = model_infos.get(backbone)
        results.append(
            BackboneResult(
                **calibrated_scores(y, raw, calibrated),
                backbone=backbone,
                temperature=float(emb.info.temperature),
                val_calibration=_val_calibration(info.calibration) if info else None,
                calibration_method=info.calibration.method if info else None,
                temperature_at_bound=info.calibration.at_bound if info else False,
            )
        )
        rows[backbone] = ScoredRows(
            backbone,
            "backbones",
            np.asarray(emb.clip_ids[mask], dtype=str),
            np.asarray(emb.labels[mask], dtype=str),
            y,
            raw,
            calibrated,
            float(emb.info.temperature),
        )
    if not results:
        raise DataError(
            str(embeddings) if not isinstance(embeddings, Mapping) else "embeddings",
            f"no <backbone>.parquet file (one of {', '.join(BACKBONES)})",
            "give the folder of `avsc embed` outputs",
        )
    return results, rows

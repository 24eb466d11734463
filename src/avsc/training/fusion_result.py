"""What a fusion training did, or found already done: :class:`FusionResult`.

:func:`avsc.training.fusion.train_all_fusions` skips a folder that is complete (its
``fusion.json``, written last, is there): it is reused when it was made with the same method,
settings, embeddings and data (:func:`reused_result`) and refused otherwise, never overwritten
silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsc.config import FusionConfig, config_hash
from avsc.errors import ConfigError
from avsc.records import FusionInfo
from avsc.records.predictions import FUSION_FILE, PREDICTIONS_FILE
from avsc.training.fusion_data import FusionData

__all__ = ["FusionResult", "completed_info", "fingerprint", "reused_result"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionResult:
    """What :func:`avsc.training.fusion.train_fusion` did (or found, when resumed).

    Attributes:
        out_dir: holds model.keras, fusion.json, predictions.parquet, history.json (a folder,
            or an ``s3://`` prefix).
        best_epoch: passes over train before the kept weights (1-based).
        best_step: optimizer steps before the kept weights.
        val_accuracy, val_log_loss_calibrated: on val, after calibration.
        selection_log_loss: the cross-validated val log loss the weights were kept on.
        temperature: fitted on val for the kept weights (1.0 when calibration did not pay).
        train_seconds: wall time of the training (0 when skipped as already complete).
        skipped: True when :func:`avsc.training.fusion.train_all_fusions` found the folder complete.
    """

    out_dir: Path | str
    method: str
    modalities: str
    val_accuracy: float
    val_log_loss_calibrated: float
    best_epoch: int = 0
    best_step: int = 0
    selection_log_loss: float = float("nan")
    backbones: tuple[str, ...] = ()
    level: str = ""
    train_seconds: float = 0.0
    temperature: float = 1.0
    skipped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def fingerprint(data: FusionData, method: str, modalities: str, config: FusionConfig) -> dict[str, Any]:
    """What a fusion model is made of, as :class:`~avsc.records.FusionInfo` records it."""
    return {
        "method": method,
        "modalities": modalities,
        "config_hash": config_hash(config),
        "embeddings": {
            b: {"model_sha256": data.model_sha256[b], "config_hash": data.config_hash[b]} for b in data.backbones
        },
    }


def completed_info(out_dir: Path) -> FusionInfo | None:
    """The record of a complete fusion folder (model, predictions, ``fusion.json``), else None."""
    if not (
        FusionInfo.exists_in(out_dir) and (out_dir / "model.keras").is_file() and (out_dir / PREDICTIONS_FILE).is_file()
    ):
        return None
    return FusionInfo.read(out_dir)


def reused_result(
    out_dir: Path, meta: FusionInfo, data: FusionData, *, method: str, modalities: str, config: FusionConfig
) -> FusionResult:
    """The result of the complete folder ``out_dir`` (its record ``meta``), to be reused.

    Raises:
        ConfigError: it was made with other settings or other embeddings.
        DataError: its embeddings were made from other data.
    """
    wanted = fingerprint(data, method, modalities, config)
    found = {k: getattr(meta, k) for k in wanted}
    found["embeddings"] = {b: dict(v) for b, v in found["embeddings"].items()}
    if found != wanted:
        raise ConfigError(
            f"{out_dir}: holds a fusion model made with other settings or embeddings "
            f"(config {meta.config_hash}, wanted {wanted['config_hash']}); "
            "use a new output folder, or delete this one to train it again"
        )
    if data.lineage is not None:
        data.lineage.check_same(
            meta.lineage,
            source=out_dir / FUSION_FILE,
            what="the fusion model",
            hint="use a new output folder, or delete this one to train it again",
        )
    return FusionResult(
        out_dir=out_dir,
        method=method,
        modalities=modalities,
        val_accuracy=float(meta.val_metrics["accuracy"]),
        val_log_loss_calibrated=float(meta.val_metrics["log_loss"]),
        best_epoch=meta.best_epoch,
        best_step=meta.best_step,
        temperature=meta.calibration.temperature,
        selection_log_loss=float(meta.calibration.selection_log_loss or float("nan")),
        backbones=meta.backbones,
        level=meta.level,
        skipped=True,
    )

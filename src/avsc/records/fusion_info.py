"""A trained fusion model's folder: ``fusion.json`` (:class:`FusionInfo`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from avsc.records._base import Record
from avsc.records.lineage import Lineage
from avsc.records.model_info import Calibration

__all__ = ["FusionInfo"]


@dataclasses.dataclass(frozen=True)
class FusionInfo(Record):
    """What a fusion folder holds and how it was made (``FUSION_DIR/fusion.json``).

    Written last by :func:`avsc.training.fusion.train_fusion`, so its presence means the folder
    is complete.

    Attributes:
        method: ``f1`` .. ``f6``.
        modalities: ``audio+visual``, ``audio`` or ``visual``.
        config_hash: hash of ``config``.
        embeddings: backbone -> ``{"model_sha256", "config_hash"}`` of the embeddings fused.
        equation: the paper's equation (1, 2 or 3).
        level: ``fc1024`` or ``fc10``: the embedding fused.
        width: that embedding's width.
        backbones: the model's inputs, in order.
        labels: the class names, in the order of the model's outputs.
        val_metrics: classification metrics of the kept weights on val, after calibration.
        best_epoch, best_step: passes over train and optimizer steps before the kept weights.
        epochs_run, steps_run: how far training went.
        stopped: why it stopped: ``patience`` (early stopping), ``max_steps`` or ``epochs``.
        selection: the rule that chose the kept weights.
        calibration: their temperature and val scores.
        config: the Phase II settings (:class:`avsc.config.FusionConfig` as a dict).
        clips_per_split: clips of each split in the embeddings.
        train_seconds: wall time of the training.
        val_distance_quantiles: quantile (``"0.5"`` .. ``"1"``) -> the val clips' distance from
            the training data (:func:`avsc.models.fusion.distance_score`).
        lineage: the data the embeddings were made from (None when they do not record it).
    """

    FILE_NAME: ClassVar[str] = "fusion.json"
    FORMAT: ClassVar[str] = "avsc-fusion-info"
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "avsc fuse"

    method: str
    modalities: str
    config_hash: str
    embeddings: Mapping[str, Mapping[str, str]]
    equation: int
    level: str
    width: int
    backbones: tuple[str, ...]
    labels: tuple[str, ...]
    val_metrics: Mapping[str, Any]
    best_epoch: int
    best_step: int
    epochs_run: int
    steps_run: int
    stopped: str
    selection: str
    calibration: Calibration
    config: Mapping[str, Any]
    clips_per_split: Mapping[str, int]
    train_seconds: float
    val_distance_quantiles: Mapping[str, float]
    lineage: Lineage | None = None

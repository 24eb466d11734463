"""A trained backbone's model folder: ``config.json`` (:class:`ModelInfo`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from avsc.records._base import Record
from avsc.records.lineage import Lineage

__all__ = ["Calibration", "ModelInfo"]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A model's temperature and its val scores before and after it.

    Attributes:
        temperature: ``T`` of ``softmax(z / T)``.
        before: val ``{"log_loss", "ece"}`` of the raw probabilities (``T = 1``).
        after: the same after temperature scaling.
        fitted_on: the split ``T`` was fitted on (always ``"val"``).
    """

    temperature: float
    before: Mapping[str, float]
    after: Mapping[str, float]
    fitted_on: str = "val"


@dataclasses.dataclass(frozen=True)
class ModelInfo(Record):
    """What a backbone's model folder holds and how it was made (``MODEL_DIR/config.json``).

    Attributes:
        backbone: ``aud-mel``, ``aud-gam``, ``aud-cqt``, ``vis-inc`` or ``vis-conv``.
        train: the training settings (:class:`avsc.config.TrainConfig` as a dict).
        config_hash: hash of ``train``.
        features: the feature settings of the store it was trained on.
        feature_config_hash: hash of ``features``.
        feature_shapes: every feature's per-clip shape in that store, e.g. ``{"mel": [128, 715, 2]}``.
        labels: the class names, in the order of the model's outputs.
        best_epoch: the epoch whose weights are ``model.keras`` (1-based).
        selection: the rule that chose it (:data:`avsc.evaluation.calibration.SELECTION_RULES`).
        calibration: the chosen epoch's temperature and val scores.
        lineage: the data it was trained on: the feature store's lineage (dataset, manifest
            and store hashes). Embedding, fusion and evaluation compare it with theirs.
        mixed_precision: whether it was trained in ``mixed_float16``.
    """

    FILE_NAME: ClassVar[str] = "config.json"
    FORMAT: ClassVar[str] = "avsc-model-info"
    VERSION: ClassVar[int] = 2  # 2: lineage required
    WRITTEN_BY: ClassVar[str] = "avsc train"

    backbone: str
    train: Mapping[str, Any]
    config_hash: str
    features: Mapping[str, Any]
    feature_config_hash: str
    feature_shapes: Mapping[str, tuple[int, ...]]
    labels: tuple[str, ...]
    best_epoch: int
    selection: str
    calibration: Calibration
    lineage: Lineage
    mixed_precision: bool = False

    @property
    def temperature(self) -> float:
        """The calibration temperature (1.0 leaves the probabilities raw)."""
        return float(self.calibration.temperature)

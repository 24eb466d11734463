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
        method: ``"temperature"`` (``T`` applied) or ``"none"`` (``T = 1``: too few val
            rows, or the cross-validated check found that scaling does not lower the log
            loss; :func:`avsc.scoring.calibration.calibrate`).
        fitted_temperature: ``T`` fitted on every val row (applied only under ``temperature``).
        at_bound: the applied ``T`` sits at a bound of the search (a warning sign).
        cv_log_loss: pooled out-of-fold val log loss of the scaled model (None: not run).
        selection_log_loss: the honest val log loss the model was selected on.
    """

    temperature: float
    before: Mapping[str, float]
    after: Mapping[str, float]
    fitted_on: str = "val"
    method: str = "temperature"
    fitted_temperature: float | None = None
    at_bound: bool = False
    cv_log_loss: float | None = None
    selection_log_loss: float | None = None

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> Calibration:
        """The record of a :func:`avsc.scoring.calibration.calibrate` result."""

        def number(key: str) -> float | None:
            value = result.get(key)
            return None if value is None or value != value else float(value)  # NaN: not run

        # A training state saved before these keys existed has only temperature, before, after.
        return cls(
            temperature=float(result["temperature"]),
            before=dict(result["before"]),
            after=dict(result["after"]),
            method=result.get("method", "temperature"),
            fitted_temperature=number("fitted_temperature"),
            at_bound=bool(result.get("at_bound", False)),
            cv_log_loss=number("cv_log_loss"),
            selection_log_loss=number("selection_log_loss"),
        )


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
        selection: the rule that chose it (:data:`avsc.scoring.calibration.SELECTION_RULES`).
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

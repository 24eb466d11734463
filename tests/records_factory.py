"""Model folders' ``config.json`` (:class:`avsc.records.ModelInfo`) for tests that need one
without training a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsc.config import FeatureConfig, TrainConfig, config_hash, to_dict
from avsc.labels import LABELS
from avsc.records import Calibration, FusionInfo, Lineage, ModelInfo

# The data every test model folder and embedding file says it was made from.
LINEAGE = Lineage("demo", "0123456789abcdef", "fedcba9876543210")


def write_model_info(
    folder: Path,
    backbone: str,
    *,
    train: TrainConfig | dict | None = None,
    features: FeatureConfig | dict | None = None,
    **fields: Any,
) -> ModelInfo:
    """Write a :class:`ModelInfo` for ``backbone`` into ``folder``: defaults from the default
    settings, any field replaced by ``fields``."""
    train = TrainConfig() if train is None else train
    features = FeatureConfig() if features is None else features
    values: dict[str, Any] = dict(
        backbone=backbone,
        train=train if isinstance(train, dict) else to_dict(train),
        config_hash="traindefault" if isinstance(train, dict) else config_hash(train),
        features=features if isinstance(features, dict) else to_dict(features),
        feature_config_hash="featdefault" if isinstance(features, dict) else config_hash(features),
        feature_shapes={"mel": (128, 715, 2)},
        labels=tuple(LABELS),
        best_epoch=1,
        selection="log_loss",
        calibration=Calibration(1.0, {"log_loss": 2.3, "ece": 0.1}, {"log_loss": 2.3, "ece": 0.1}),
        lineage=LINEAGE,
    )
    values.update(fields)
    info = ModelInfo(**values)
    folder.mkdir(parents=True, exist_ok=True)
    info.write(folder)
    return info


def write_fusion_info(folder: Path, method: str, modalities: str, **fields: Any) -> FusionInfo:
    """Write a :class:`FusionInfo` (``fusion.json``) into ``folder``: defaults from the default
    Phase II settings, any field replaced by ``fields``."""
    from avsc.config import FusionConfig

    config = FusionConfig()
    values: dict[str, Any] = dict(
        method=method,
        modalities=modalities,
        config_hash=config_hash(config),
        embeddings={},
        equation=1,
        level="fc10",
        width=10,
        backbones=(),
        labels=tuple(LABELS),
        val_metrics={"accuracy": 0.5, "log_loss": 1.0},
        best_epoch=2,
        best_step=20,
        epochs_run=3,
        steps_run=30,
        stopped="max_steps",
        selection="log_loss",
        calibration=Calibration(
            1.0, {"log_loss": 1.0, "ece": 0.1}, {"log_loss": 1.0, "ece": 0.1}, method="none", selection_log_loss=1.0
        ),
        config=to_dict(config),
        clips_per_split={},
        train_seconds=1.0,
        val_distance_quantiles={"0.5": 1.0, "0.9": 1.5, "0.95": 2.0, "0.99": 3.0, "1": 4.0},
    )
    values.update(fields)
    info = FusionInfo(**values)
    folder.mkdir(parents=True, exist_ok=True)
    info.write(folder)
    return info

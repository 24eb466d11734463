"""Phase I: train one backbone on a feature store (paper, sections II-A and III-A).

Loss (eq. 4): ``KL(y || y_hat) + (lambda / 2) * ||Theta||^2``. The KL term is
``sum_k y_k log(y_k / y_hat_k)`` per example (0 log 0 taken as 0), averaged over the
batch (the paper's sum over examples differs only by a constant factor, absorbed by the
learning rate). The L2 term is a ``kernel_regularizer`` of coefficient ``lambda / 2`` on
every kernel (conv, dense; biases and batch-norm parameters excluded), with
``lambda = TrainConfig.l2``. Mixup (``TrainConfig.mixup_alpha``) makes the labels soft,
which is why KL divergence and not cross-entropy with hard labels; it is applied by the
training model's first layer (:mod:`avsc.training.mixup`), on the accelerator. Adam optimises.

Preemption-safe: after every epoch the model, its optimizer state, the epoch, the history
and the best-so-far are checkpointed to ``checkpoints`` (a folder or ``s3://`` prefix;
default ``MODEL_DIR/checkpoints``, see :mod:`avsc.training.checkpoints`); running again with
the same settings and checkpoint location (``epochs`` may grow), in a new process with a new,
empty output folder if need be, continues after the last finished epoch. Within an epoch a
checkpoint is also saved every ``checkpoint_every_s`` seconds and on SIGTERM (then training
stops with :class:`~avsc.errors.Preempted`); a run resumed from one continues at
the next step and ends with the same weights as a run never stopped.

Model selection uses the VAL split only; the test split is never read here. After every
epoch the val clips' logits (``fc10``; a visual clip's are the mean over its frames, as
in its embedding) are scored, a temperature is fitted on them
(:mod:`avsc.scoring.calibration`), and ``TrainConfig.selection`` decides which epoch is
kept: ``log_loss`` (default, DCASE's primary metric) keeps the lowest cross-validated val
log loss after temperature scaling, ``accuracy`` the highest val accuracy. That step, with
the checkpoint after it, is :class:`avsc.training.selection_loop.SelectionLoop`, shared with
the fusion models (Phase II). The kept epoch's temperature is
stored in ``config.json["calibration"]`` and applied wherever the backbone's probabilities
leave avsc (its embeddings stay raw logits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras

from avsc.config import TrainConfig, config_hash, to_dict
from avsc.errors import ConfigError, DataError
from avsc.labels import LABELS
from avsc.models.saving import save_keras_model
from avsc.records import Calibration, ModelInfo
from avsc.scoring.calibration import SELECTION_RULES
from avsc.storage import locations, staging
from avsc.storage.locations import write_json
from avsc.training.backbone_trainer import start_or_resume, train_epoch
from avsc.training.checkpoints import Checkpoints, sigterm_flag
from avsc.training.mixup import inner_model
from avsc.training.state import TrainingState

__all__ = ["train_backbone", "TrainResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_backbone` did.

    Attributes:
        model_dir: folder (or ``s3://`` prefix) holding model.keras, history.json,
            val_metrics.json, config.json.
        best_epoch: 1-based epoch of the selected model.
        epochs_run: epochs trained by THIS call (0 when already complete).
        val_accuracy, val_log_loss_calibrated: of the selected epoch on val, after temperature
            scaling.
        temperature: the selected epoch's temperature (fitted on val).
        history: one dict per epoch (:func:`avsc.training.selection_loop.history_entry`: epoch,
            loss, val_accuracy, val_log_loss (raw), val_log_loss_calibrated, temperature,
            val_log_loss_selection, calibration_method, seconds).
    """

    model_dir: Path | str
    backbone: str
    best_epoch: int
    epochs_run: int
    val_accuracy: float
    val_log_loss_calibrated: float
    history: list[dict[str, Any]]
    temperature: float = 1.0


def _use_mixed_precision(setting: str) -> bool:
    if setting == "on":
        return True
    if setting == "off":
        return False
    if setting == "auto":
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(device.platform == "gpu" for device in jax.devices())
        return False
    raise ConfigError(f"train.mixed_precision must be auto, on or off, got {setting!r}")


def train_backbone(
    backbone: str,
    feature_dirs: str | Path | Sequence[str | Path],
    model_dir: str | Path,
    *,
    config: TrainConfig,
    checkpoints: str | Path | None = None,
    progress: bool = True,
    checkpoint_every_s: float = 60.0,
    checkpoint_every_steps: int | None = None,
) -> TrainResult:
    """Train one backbone, resuming from ``checkpoints`` if a run was cut short.

    Args:
        backbone: one of ``aud-mel``, ``aud-gam``, ``aud-cqt``, ``vis-inc``, ``vis-conv``.
        feature_dirs: the feature store (or its shards): folders or ``s3://`` prefixes,
            streamed (only the backbone's feature is read).
        model_dir: output folder or ``s3://`` prefix; afterwards holds ``model.keras`` (the
            model of the epoch selected on val, uncompiled), ``history.json``,
            ``val_metrics.json`` (calibrated) and ``config.json`` (with ``calibration``: the
            temperature and the val log loss and expected calibration error before and after it).
        config: training settings.
        checkpoints: where the per-epoch checkpoints live (folder or ``s3://`` prefix;
            default ``model_dir/checkpoints``). Give a durable location on a cluster: a
            retried pod pointed at it resumes after the last finished epoch.
        progress: show Keras' progress bar. Each epoch's summary is logged (INFO).
        checkpoint_every_s, checkpoint_every_steps: within an epoch, also checkpoint after
            this many seconds and (if given) every this many steps; and on SIGTERM.

    Raises:
        ConfigError: unknown backbone or checkpoints of another run at ``checkpoints``.
        Preempted: SIGTERM arrived; a checkpoint was committed first (run again to resume).
        DataError: the store lacks the needed feature, or its train or val split is empty.
        StoreError: the object store refused or could not be reached.

    Example::

        cfg = load_config(preset="quick").train
        result = train_backbone("aud-mel", ["features"], "models/aud-mel", config=cfg,
                                checkpoints="s3://avsc/checkpoints/aud-mel")
        result.val_accuracy
    """
    checkpoints = str(checkpoints) if checkpoints else locations.join(str(model_dir), "checkpoints")
    from avsc.training.streams import store_errors

    with staging.output_folder(model_dir) as local_dir, store_errors():
        result = _train_backbone(
            backbone,
            feature_dirs,
            local_dir,
            config=config,
            checkpoints=Checkpoints(checkpoints),
            progress=progress,
            every=(checkpoint_every_s, checkpoint_every_steps),
        )
    return result if not locations.is_remote(str(model_dir)) else replace(result, model_dir=str(model_dir))


def _train_backbone(
    backbone: str,
    feature_dirs,
    model_dir: Path,
    *,
    config: TrainConfig,
    checkpoints: Checkpoints,
    progress: bool,
    every: tuple[float, int | None] = (60.0, None),
) -> TrainResult:
    from avsc.features.store import FeatureStore
    from avsc.models.backbones import check_backbone
    from avsc.runtime import describe_limits, limit_tensorflow_threads

    check_backbone(backbone)
    limit_tensorflow_threads()  # before TensorFlow's first operation fixes its pools
    log.info("%s: %s", backbone, describe_limits())
    store = FeatureStore.open(feature_dirs)
    _check_inputs(backbone, store, config)
    mixed = _use_mixed_precision(config.mixed_precision)
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        keras.utils.set_random_seed(config.seed)
        trainer, loop = start_or_resume(backbone, store, config, checkpoints)
        start = loop.state.epoch
        with sigterm_flag() as stop:  # SIGTERM, while epochs run: save, then stop
            for epoch in range(start, config.epochs):
                train_epoch(
                    trainer, loop, store, backbone, config, epoch=epoch, stop=stop, progress=progress, every=every
                )
        state = loop.state
        # The last epoch's weights are in memory; fetch the best epoch's only when it is another.
        best = (
            inner_model(trainer)
            if state.best_epoch == state.epoch
            else inner_model(checkpoints.load_model(str(state.best), compile=False))
        )
        save_keras_model(best, model_dir / "model.keras")
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    return _write_outputs(backbone, store, config, state, model_dir, mixed=mixed, epochs_run=config.epochs - start)


def _check_inputs(backbone: str, store, config: TrainConfig) -> None:
    store.spec_for(backbone)
    for split in ("train", "val"):
        if not len(store.clips(split)):
            raise DataError(
                store.roots[0],
                f"the {split} split of the feature store is empty",
                "training needs train clips and val clips (val selects the model)",
            )
    if config.epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {config.epochs}")
    if config.selection not in SELECTION_RULES:
        raise ConfigError(f"train.selection must be one of {', '.join(SELECTION_RULES)}, got {config.selection!r}")


def _write_outputs(
    backbone: str, store, config: TrainConfig, state: TrainingState, model_dir: Path, *, mixed: bool, epochs_run: int
) -> TrainResult:
    """Write ``history.json``, ``val_metrics.json`` and ``config.json`` beside ``model.keras``."""
    assert state.best_calibration is not None  # at least one epoch was scored
    calibration = dict(state.best_calibration, fitted_on="val")
    if calibration.get("at_bound"):
        log.warning(
            "%s: the val temperature sits at its search bound (T=%.2f): the model's val predictions "
            "are barely better than chance or val is too small to calibrate on",
            backbone,
            calibration["temperature"],
        )
    val_metrics = dict(calibration["metrics"], epoch=state.best_epoch, temperature=calibration["temperature"])
    history = [dict(entry) for entry in state.history]
    write_json(model_dir / "history.json", history)
    write_json(model_dir / "val_metrics.json", val_metrics)
    ModelInfo(
        backbone=backbone,
        train=to_dict(config),
        config_hash=config_hash(config),
        features=to_dict(store.config),
        feature_config_hash=store.config_hash,
        feature_shapes={k: tuple(v) for k, v in store.shapes.items()},
        labels=tuple(LABELS),
        best_epoch=state.best_epoch,
        selection=config.selection,
        calibration=Calibration.from_result(calibration),
        mixed_precision=mixed,
        lineage=store.lineage,
    ).write(model_dir)
    return TrainResult(
        model_dir=model_dir,
        backbone=backbone,
        best_epoch=state.best_epoch,
        epochs_run=epochs_run,
        val_accuracy=val_metrics["accuracy"],
        val_log_loss_calibrated=val_metrics["log_loss"],
        history=history,
        temperature=calibration["temperature"],
    )

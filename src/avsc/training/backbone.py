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
kept: ``log_loss`` (default, DCASE's primary metric) keeps the lowest val log loss after
temperature scaling, ``accuracy`` the highest val accuracy. The kept epoch's temperature is
stored in ``config.json["calibration"]`` and applied wherever the backbone's probabilities
leave avsc (its embeddings stay raw logits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from avsc.config import TrainConfig, config_hash, to_dict
from avsc.errors import ConfigError, DataError, Preempted
from avsc.scoring.calibration import SELECTION_RULES, calibrate, selection_key
from avsc.labels import LABELS
from avsc.models.losses import kl_divergence_loss
from avsc.models.saving import save_keras_model
from avsc.records import Calibration, ModelInfo
from avsc.storage import locations
from avsc.storage.locations import write_json
from avsc.training.checkpoints import (
    Checkpoints,
    StepCheckpoints,
    check_resume_key,
    restore_seed_states,
    seed_states,
    sigterm_flag,
)
from avsc.training.mixup import inner_model, with_mixup
from avsc.training.streams import (
    clip_predictions,
    eval_stream,
    label_indices,
    train_stream,
)

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
        val_accuracy, val_log_loss: of the selected epoch on val, after temperature scaling.
        temperature: the selected epoch's temperature (fitted on val).
        history: one dict per epoch (epoch, loss, val_accuracy, val_log_loss (raw),
            val_log_loss_calibrated, temperature, seconds).
    """

    model_dir: Path | str
    backbone: str
    best_epoch: int
    epochs_run: int
    val_accuracy: float
    val_log_loss: float
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


def _resume_key(backbone: str, config: TrainConfig, store) -> dict[str, Any]:
    # The data (the store's lineage) and every setting but the epoch count and the input
    # stream (both give the same batches) must match to continue a run
    # (avsc.training.checkpoints.check_resume_key says what differs).
    train = {k: v for k, v in to_dict(config).items() if k not in ("epochs", "stream")}
    return {"settings": {"backbone": backbone, "train": train, "features": to_dict(store.config)},
            "lineage": dataclasses.asdict(store.lineage)}


def _train_examples(store, backbone: str, config: TrainConfig) -> int:
    """Examples in one training epoch: train clips, or their frames for a visual backbone."""
    from avsc.config import VISUAL_BACKBONES
    from avsc.training.streams import _examples

    visual = backbone in VISUAL_BACKBONES
    return _examples(store.parts("train"), store.spec_for(backbone), config.frames_per_clip if visual else None)


def _logits_model(model: keras.Model) -> keras.Model:
    """The same network (shared weights) ending at ``fc10``, the logits before softmax."""
    return keras.Model(model.input, model.get_layer("fc10").output, name=f"{model.name}_logits")


def _clip_logits(logits_model, store, backbone: str, split: str, batch_size: int,
                 stream: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """[shape=(n_clips, 10)] logits of a split's clips (visual: mean over frames) and labels."""
    labels = label_indices(store, split)
    outputs = logits_model.predict(eval_stream(stream, store, backbone, split, batch_size=batch_size), verbose=0)
    return clip_predictions(np.asarray(outputs, dtype=np.float64), len(labels)), labels


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

    with locations.output_folder(model_dir) as local_dir, store_errors():
        result = _train_backbone(backbone, feature_dirs, local_dir, config=config,
                                 checkpoints=Checkpoints(checkpoints), progress=progress,
                                 every=(checkpoint_every_s, checkpoint_every_steps))
    return result if not locations.is_remote(str(model_dir)) else replace(result, model_dir=str(model_dir))


def _train_backbone(backbone: str, feature_dirs, model_dir: Path, *, config: TrainConfig,
                    checkpoints: Checkpoints, progress: bool,
                    every: tuple[float, int | None] = (60.0, None)) -> TrainResult:
    from avsc.features.store import FeatureStore
    from avsc.models.backbones import build_backbone, check_backbone
    from avsc.runtime import describe_limits, limit_tensorflow_threads

    check_backbone(backbone)
    limit_tensorflow_threads()  # before TensorFlow's first operation fixes its pools
    log.info("%s: %s", backbone, describe_limits())
    store = FeatureStore.open(feature_dirs)
    store.spec_for(backbone)
    for split in ("train", "val"):
        if not len(store.clips(split)):
            raise DataError(store.roots[0], f"the {split} split of the feature store is empty",
                            "training needs train clips and val clips (val selects the model)")
    if config.epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {config.epochs}")
    if config.selection not in SELECTION_RULES:
        raise ConfigError(f"train.selection must be one of {', '.join(SELECTION_RULES)}, got {config.selection!r}")

    ckpt = checkpoints
    resume_key = _resume_key(backbone, config, store)
    mixed = _use_mixed_precision(config.mixed_precision)
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16" if mixed else "float32")
    stack = contextlib.ExitStack()  # the SIGTERM handler, while epochs run
    try:
        keras.utils.set_random_seed(config.seed)
        state = ckpt.read_state()
        if state is not None:
            check_resume_key(state.get("resume_key"), resume_key, location=ckpt.location)
            if int(state["epoch"]) > config.epochs:
                raise ConfigError(f"{ckpt.location}: checkpointed after epoch {state['epoch']}, more than "
                                  f"train.epochs = {config.epochs}; give --epochs {state['epoch']} or more "
                                  f"to finish this run, or another checkpoint location to train "
                                  f"{config.epochs} epoch(s) afresh")
        in_epoch = state.get("in_epoch") if state is not None else None
        if state is not None:
            trainer = ckpt.load_model(in_epoch["model"] if in_epoch else state["last"])
            restore_seed_states(trainer, (in_epoch or state).get("seed_states"))
            model = inner_model(trainer)
            history = state["history"]
            if in_epoch:
                log.info("%s: resuming in epoch %d of %d after step %d", backbone, in_epoch["epoch"],
                         config.epochs, in_epoch["step"])
            else:
                log.info("%s: resuming after epoch %d of %d", backbone, state["epoch"], config.epochs)
        else:
            model = build_backbone(backbone, store.shapes, config)
            # Trained through a model whose first layer casts and mixes the stored arrays
            # (on the accelerator); ``model`` itself is what is evaluated and saved.
            trainer = with_mixup(model, x_dtype=np.dtype(store.spec_for(backbone).dtype).name)
            trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=kl_divergence_loss)
            # Optimizer slots made now, not inside the first step: otherwise TensorFlow traces
            # the training step twice, which is most of the first epoch on a CPU.
            trainer.optimizer.build(trainer.trainable_variables)
            history = []
            state = {"resume_key": resume_key, "epoch": 0, "history": history, "best_epoch": 0,
                     "best_key": None, "best": None, "last": None}
        logits_model = _logits_model(model)
        start = int(state["epoch"])
        epochs_run = 0
        stop = stack.enter_context(sigterm_flag())
        for epoch in range(start, config.epochs):
            began = time.perf_counter()
            train = train_stream(config.stream, store, backbone, batch_size=config.batch_size,
                                 mixup_alpha=config.mixup_alpha, frames_per_clip=config.frames_per_clip,
                                 seed=config.seed * 100003 + epoch)
            # A checkpoint within this epoch: skip the (same, seeded) batches trained on already.
            prior = in_epoch if in_epoch and in_epoch["epoch"] == epoch + 1 else None
            first_step = prior["step"] if prior else 0
            steps = StepCheckpoints(ckpt, state, epoch=epoch, first_step=first_step,
                                    examples=_train_examples(store, backbone, config),
                                    batch_size=config.batch_size, stop=stop, every_s=every[0],
                                    every_steps=every[1], prior=prior)
            fit = trainer.fit(train.skip(first_step), epochs=1, shuffle=False,
                              verbose=1 if progress else 0, callbacks=[steps])
            if steps.stopped_at is not None:
                raise Preempted(f"stopped by SIGTERM in epoch {epoch + 1}, after step {steps.stopped_at}; "
                                f"checkpoint saved in {ckpt.location}: run the same command again to resume")
            logits, labels = _clip_logits(logits_model, store, backbone, "val", config.batch_size, config.stream)
            calibration = calibrate(logits, labels)
            metrics = calibration["metrics"]
            entry = {"epoch": epoch + 1, "loss": steps.epoch_loss(float(fit.history["loss"][-1])),
                     "val_accuracy": metrics["accuracy"], "val_log_loss": calibration["before"]["log_loss"],
                     "val_log_loss_calibrated": metrics["log_loss"], "temperature": calibration["temperature"],
                     "val_log_loss_selection": calibration["selection_log_loss"],
                     "calibration_method": calibration["method"],
                     "seconds": round(time.perf_counter() - began, 3)}
            history.append(entry)
            last_name = f"epoch-{epoch + 1:04d}.keras"
            ckpt.save_model(trainer, last_name)
            key = selection_key(metrics["accuracy"], calibration["selection_log_loss"], config.selection)
            improved = state["best_key"] is None or key > tuple(state["best_key"])
            if improved:
                best_name = f"best-epoch-{epoch + 1:04d}.keras"
                ckpt.copy(last_name, best_name)
                state.update(best=best_name, best_epoch=epoch + 1, best_key=list(key), best_val_metrics=metrics,
                             best_calibration={k: calibration[k] for k in (
                                 "temperature", "before", "after", "method", "fitted_temperature", "at_bound",
                                 "cv_log_loss", "selection_log_loss")})
            state.update(epoch=epoch + 1, history=history, last=last_name, in_epoch=None,
                         seed_states=seed_states(trainer))
            ckpt.write_state(state)  # the checkpoint counts only once this is written
            ckpt.prune({state["last"], state["best"]})
            epochs_run += 1
            if stop.is_set():
                raise Preempted(f"stopped by SIGTERM after epoch {epoch + 1}; checkpoint saved in "
                                f"{ckpt.location}: run the same command again to resume")
            log.info("%s epoch %d/%d: loss %.4f, val accuracy %.3f, val log loss %.4f (%.4f at T=%.2f)%s, %.1f s",
                     backbone, epoch + 1, config.epochs, entry["loss"], entry["val_accuracy"],
                     entry["val_log_loss"], entry["val_log_loss_calibrated"], entry["temperature"],
                     " (best)" if improved else "", entry["seconds"])

        # The last epoch's weights are in memory; fetch the best epoch's only when it is another.
        best = model if state["best_epoch"] == state["epoch"] else \
            inner_model(ckpt.load_model(state["best"], compile=False))
        save_keras_model(best, model_dir / "model.keras")
    finally:
        stack.close()
        keras.mixed_precision.set_dtype_policy(previous_policy)

    calibration = dict(state["best_calibration"], fitted_on="val")
    if calibration.get("at_bound"):
        log.warning("%s: the val temperature sits at its search bound (T=%.2f): the model's val predictions "
                    "are barely better than chance or val is too small to calibrate on", backbone,
                    calibration["temperature"])
    val_metrics = dict(state["best_val_metrics"], epoch=state["best_epoch"], temperature=calibration["temperature"])
    write_json(model_dir / "history.json", history)
    write_json(model_dir / "val_metrics.json", val_metrics)
    ModelInfo(
        backbone=backbone, train=to_dict(config), config_hash=config_hash(config),
        features=to_dict(store.config), feature_config_hash=store.config_hash,
        feature_shapes={k: tuple(v) for k, v in store.shapes.items()}, labels=tuple(LABELS),
        best_epoch=state["best_epoch"], selection=config.selection,
        calibration=Calibration.from_result(calibration),
        mixed_precision=mixed, lineage=store.lineage,
    ).write(model_dir)
    return TrainResult(model_dir=model_dir, backbone=backbone, best_epoch=state["best_epoch"],
                       epochs_run=epochs_run, val_accuracy=val_metrics["accuracy"],
                       val_log_loss=val_metrics["log_loss"], history=history,
                       temperature=calibration["temperature"])

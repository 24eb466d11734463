"""Phase I's trainer: start or resume a backbone training, train an epoch, score and checkpoint it.

:func:`avsc.training.backbone.train_backbone` drives it: :func:`start_or_resume` builds the
training model (mixup as its first layer, :mod:`avsc.training.mixup`) or loads it from the
checkpoints, and :func:`train_epoch` trains one epoch with a checkpoint every
``checkpoint_every_s`` seconds and on SIGTERM (:class:`avsc.training.checkpoints.StepCheckpoints`),
then hands the val clips' logits to :class:`EpochLoop`, Phase I's
:class:`~avsc.training.selection_loop.SelectionLoop`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import keras
import numpy as np

from avsc.config import TrainConfig, to_dict
from avsc.errors import ConfigError, Preempted
from avsc.models.losses import kl_divergence_loss
from avsc.training.checkpoints import Checkpoints, StepCheckpoints, restore_seed_states, seed_states
from avsc.training.mixup import inner_model, with_mixup
from avsc.training.selection_loop import SelectionLoop
from avsc.training.state import TrainingState, check_resume_key
from avsc.training.streams import clip_predictions, eval_stream, label_indices, train_stream

__all__ = ["EpochLoop", "start_or_resume", "train_epoch"]

log = logging.getLogger(__name__)


def _resume_key(backbone: str, config: TrainConfig, store) -> dict[str, Any]:
    # The data (the store's lineage) and every setting but the epoch count and the input
    # stream (both give the same batches) must match to continue a run
    # (avsc.training.state.check_resume_key says what differs).
    train = {k: v for k, v in to_dict(config).items() if k not in ("epochs", "stream")}
    return {
        "settings": {"backbone": backbone, "train": train, "features": to_dict(store.config)},
        "lineage": dataclasses.asdict(store.lineage),
    }


def _train_examples(store, backbone: str, config: TrainConfig) -> int:
    """Examples in one training epoch: train clips, or their frames for a visual backbone."""
    from avsc.config import VISUAL_BACKBONES
    from avsc.training.streams import _examples

    visual = backbone in VISUAL_BACKBONES
    return _examples(store.parts("train"), store.spec_for(backbone), config.frames_per_clip if visual else None)


def _logits_model(model: keras.Model) -> keras.Model:
    """The same network (shared weights) ending at ``fc10``, the logits before softmax."""
    return keras.Model(model.input, model.get_layer("fc10").output, name=f"{model.name}_logits")


def _clip_logits(
    logits_model, store, backbone: str, split: str, batch_size: int, stream: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """[shape=(n_clips, 10)] logits of a split's clips (visual: mean over frames) and labels."""
    labels = label_indices(store, split)
    outputs = logits_model.predict(eval_stream(stream, store, backbone, split, batch_size=batch_size), verbose=0)
    return clip_predictions(np.asarray(outputs, dtype=np.float64), len(labels)), labels


class EpochLoop(SelectionLoop):
    """Phase I's selection loop: every epoch is checkpointed, the training model as
    ``epoch-EEEE.keras`` and, when it is the best so far, also as ``best-epoch-EEEE.keras``."""

    def __init__(self, state: TrainingState, trainer: keras.Model, *, selection: str, checkpoints: Checkpoints):
        super().__init__(state, selection=selection, checkpoints=checkpoints)
        self.trainer = trainer
        # Made once: a new model each epoch would trace its predict function anew.
        self.logits_model = _logits_model(inner_model(trainer))

    def checkpoint(self, checkpoints: Checkpoints, improved: bool) -> TrainingState:
        last = f"epoch-{self.state.epoch:04d}.keras"
        checkpoints.save_model(self.trainer, last)
        best = self.state.best
        if improved:
            best = f"best-epoch-{self.state.epoch:04d}.keras"
            checkpoints.copy(last, best)
        self.state = replace(self.state, last=last, best=best, seed_states=seed_states(self.trainer))
        return super().checkpoint(checkpoints, improved)


def start_or_resume(
    backbone: str, store, config: TrainConfig, checkpoints: Checkpoints
) -> tuple[keras.Model, EpochLoop]:
    """The training model (mixup first, compiled) and the selection loop: new, or as
    ``checkpoints`` left them (after an epoch, or within one).

    Raises:
        ConfigError, DataError: the checkpoints are of other settings or other data
            (:func:`avsc.training.state.check_resume_key`), or of more epochs.
    """
    from avsc.models.backbones import build_backbone

    resume_key = _resume_key(backbone, config, store)
    state = checkpoints.read_state()
    if state is None:
        model = build_backbone(backbone, store.shapes, config)
        # Trained through a model whose first layer casts and mixes the stored arrays
        # (on the accelerator); ``model`` itself is what is evaluated and saved.
        trainer = with_mixup(model, x_dtype=np.dtype(store.spec_for(backbone).dtype).name)
        trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=kl_divergence_loss)
        # Optimizer slots made now, not inside the first step: otherwise TensorFlow traces
        # the training step twice, which is most of the first epoch on a CPU.
        trainer.optimizer.build(trainer.trainable_variables)
        state = TrainingState(resume_key=resume_key)
    else:
        check_resume_key(state.resume_key, resume_key, location=checkpoints.location)
        if state.epoch > config.epochs:
            raise ConfigError(
                f"{checkpoints.location}: checkpointed after epoch {state.epoch}, more than "
                f"train.epochs = {config.epochs}; give --epochs {state.epoch} or more "
                f"to finish this run, or another checkpoint location to train "
                f"{config.epochs} epoch(s) afresh"
            )
        in_epoch = state.in_epoch
        trainer = checkpoints.load_model(in_epoch.model if in_epoch else str(state.last))
        restore_seed_states(trainer, in_epoch.seed_states if in_epoch else state.seed_states)
        if in_epoch:
            log.info(
                "%s: resuming in epoch %d of %d after step %d", backbone, in_epoch.epoch, config.epochs, in_epoch.step
            )
        else:
            log.info("%s: resuming after epoch %d of %d", backbone, state.epoch, config.epochs)
    return trainer, EpochLoop(state, trainer, selection=config.selection, checkpoints=checkpoints)


def train_epoch(
    trainer: keras.Model,
    loop: EpochLoop,
    store,
    backbone: str,
    config: TrainConfig,
    *,
    epoch: int,
    stop: threading.Event,
    progress: bool,
    every: tuple[float, int | None],
) -> None:
    """Train epoch ``epoch`` (0-based), score it on val and checkpoint it.

    Raises:
        Preempted: SIGTERM arrived; the checkpoint (within the epoch or after it) is committed.
    """
    began = time.perf_counter()
    ckpt = loop.checkpoints
    assert ckpt is not None  # Phase I always checkpoints
    train = train_stream(
        config.stream,
        store,
        backbone,
        batch_size=config.batch_size,
        mixup_alpha=config.mixup_alpha,
        frames_per_clip=config.frames_per_clip,
        seed=config.seed * 100003 + epoch,
    )
    # A checkpoint within this epoch: skip the (same, seeded) batches trained on already.
    in_epoch = loop.state.in_epoch
    prior = in_epoch if in_epoch and in_epoch.epoch == epoch + 1 else None
    first_step = prior.step if prior else 0
    steps = StepCheckpoints(
        ckpt,
        loop.state,
        epoch=epoch,
        first_step=first_step,
        examples=_train_examples(store, backbone, config),
        batch_size=config.batch_size,
        stop=stop,
        every_s=every[0],
        every_steps=every[1],
        prior=prior,
    )
    fit = trainer.fit(train.skip(first_step), epochs=1, shuffle=False, verbose=1 if progress else 0, callbacks=[steps])
    if steps.stopped_at is not None:
        raise Preempted(
            f"stopped by SIGTERM in epoch {epoch + 1}, after step {steps.stopped_at}; "
            f"checkpoint saved in {ckpt.location}: run the same command again to resume"
        )
    logits, labels = _clip_logits(loop.logits_model, store, backbone, "val", config.batch_size, config.stream)
    evaluation = loop.end_round(
        logits, labels, epoch=epoch + 1, began=began, loss=steps.epoch_loss(float(fit.history["loss"][-1]))
    )
    if stop.is_set():
        raise Preempted(
            f"stopped by SIGTERM after epoch {epoch + 1}; checkpoint saved in "
            f"{ckpt.location}: run the same command again to resume"
        )
    entry = evaluation.entry
    log.info(
        "%s epoch %d/%d: loss %.4f, val accuracy %.3f, val log loss %.4f (%.4f at T=%.2f)%s, %.1f s",
        backbone,
        epoch + 1,
        config.epochs,
        entry["loss"],
        entry["val_accuracy"],
        entry["val_log_loss"],
        entry["val_log_loss_calibrated"],
        entry["temperature"],
        " (best)" if evaluation.improved else "",
        entry["seconds"],
    )

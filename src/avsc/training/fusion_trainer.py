"""Phase II's trainer: a fusion model fitted on the embeddings of the train split, selected on val.

Training (paper, section III-A): mixup on the embeddings (one mixing weight per clip, shared by
all its embeddings), KL-divergence loss + L2 (eq. 4; coefficient ``lambda / 2`` on the
fusion vectors ``w`` and the dense kernel, biases excluded), Adam, seeded. Each input is
standardised with the mean and variance of the **train** split, held by a ``Normalization``
layer inside the saved model (so inference feeds raw embeddings): FC(10) logits of five
backbones differ in scale by an order of magnitude, and one step size fits them all only once
they are standardised.

Training is counted in optimizer steps, not epochs, so the same settings converge on 60
training clips (2 steps an epoch) and on 8,646 (136): it stops when the val selection log
loss has not improved for ``FusionConfig.patience`` steps (early stopping), after
``max_steps`` steps, or after ``epochs`` passes over train when that is set. Val is scored
every ``eval_every`` steps (rounded to whole passes over train). The trainer is Keras only
(``train_on_batch`` on NumPy arrays): it runs under any Keras backend.

After each round of whole passes over train (about ``eval_every`` steps),
:class:`~avsc.training.selection_loop.SelectionLoop` scores val, calibrates, keeps the best
weights so far and checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np

from avsc.config import FusionConfig
from avsc.errors import ConfigError, DataError
from avsc.labels import LABEL_INDEX, LABELS
from avsc.models.fusion import build_fusion_model, fusion_logits_model, standardization
from avsc.scoring.calibration import SELECTION_RULES
from avsc.training.checkpoints import Checkpoints
from avsc.training.fusion_data import FusionData
from avsc.training.selection_loop import SelectionLoop
from avsc.training.state import TrainingState

__all__ = [
    "FittedFusion",
    "FusionSplits",
    "check_settings",
    "fit_fusion",
    "fusion_logits",
    "fusion_splits",
    "mixed_epochs",
    "schedule",
]


@dataclass(frozen=True)
class FusionSplits:
    """A fusion model's inputs: one array per backbone, in the model's input order.

    Attributes:
        x_train, x_val: [shape=(n_clips, width)] float32 embeddings of each split.
        y_train: [shape=(n_train, 10)] float32 one-hot labels.
        y_val: [shape=(n_val,)] class indices.
    """

    x_train: list[np.ndarray]
    y_train: np.ndarray
    x_val: list[np.ndarray]
    y_val: np.ndarray


@dataclass(frozen=True)
class FittedFusion:
    """What :func:`fit_fusion` ends with.

    Attributes:
        model: a new, uncompiled fusion model holding the best weights (loading it needs no
            custom loss).
        state: the training state: history, best epoch/step and its calibration.
        steps: optimizer steps run in all.
        stopped: ``patience``, ``max_steps`` or ``epochs``.
        train_seconds: wall time of this call.
        standardize: each input's train mean and variance (held by the model).
    """

    model: keras.Model
    state: TrainingState
    steps: int
    stopped: str
    train_seconds: float
    standardize: list[tuple[np.ndarray, np.ndarray]]


def fusion_logits(model: keras.Model, inputs: list[np.ndarray], chunk: int = 8192) -> np.ndarray:
    """The ``fc10`` output of ``model`` (a logits model) for every row, [shape=(n, 10)] float64."""
    n = len(inputs[0])
    parts = [
        np.asarray(
            keras.ops.convert_to_numpy(model([x[i : i + chunk] for x in inputs], training=False)), dtype=np.float64
        )
        for i in range(0, n, chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(LABELS)))


def mixed_epochs(
    rng: np.random.Generator, x: list[np.ndarray], y: np.ndarray, epochs: int, alpha: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """``epochs`` passes over the train rows, each shuffled and mixed, one after the other.

    Each pass draws a permutation (the order of the minibatches), a partner for every clip
    and a mixing weight ``lam ~ Beta(alpha, alpha)`` per clip, shared by all its embeddings
    and its label (``alpha = 0``: no mixup).

    Returns:
        ``(xs, ys)``: one [shape=(epochs * n, width)] array per input, and the soft labels.
    """
    n = len(y)
    xs: list[list[np.ndarray]] = [[] for _ in x]
    ys: list[np.ndarray] = []
    for _ in range(epochs):
        order = rng.permutation(n)
        if alpha > 0:
            lam = rng.beta(alpha, alpha, size=n).astype(np.float32)[:, None]
            partner = order[rng.permutation(n)]
        else:
            lam, partner = np.ones((n, 1), np.float32), order
        for parts, table in zip(xs, x, strict=True):
            parts.append(lam * table[order] + (1.0 - lam) * table[partner])
        ys.append(lam * y[order] + (1.0 - lam) * y[partner])
    return [np.concatenate(parts) for parts in xs], np.concatenate(ys)


def schedule(config: FusionConfig, n_train: int) -> tuple[int, int, int, int]:
    """``(steps_per_epoch, epochs_per_round, max_epochs, patience_epochs)`` of a training on
    ``n_train`` clips: the step settings of ``config`` as whole passes over train."""
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    per_round = max(1, round(config.eval_every / steps_per_epoch))
    max_epochs = max(1, math.ceil(config.max_steps / steps_per_epoch))
    if config.epochs is not None:
        max_epochs = min(max_epochs, config.epochs)
    patience = max(per_round, math.ceil(config.patience / steps_per_epoch))
    return steps_per_epoch, per_round, max_epochs, patience


def check_settings(config: FusionConfig) -> None:
    """Raise :class:`~avsc.errors.ConfigError` for a step setting below 1 or an unknown selection rule."""
    for name in ("max_steps", "patience", "eval_every", "batch_size", "epochs"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"fusion.{name} must be at least 1, got {value}")
    if config.selection not in SELECTION_RULES:
        raise ConfigError(f"fusion.selection must be one of {', '.join(SELECTION_RULES)}, got {config.selection!r}")


def fusion_splits(data: FusionData, level: str) -> FusionSplits:
    """The train and val inputs and labels of ``data`` at embedding ``level``.

    Raises:
        DataError: the train or the val split has no clips.
    """
    masks = {s: data.splits == s for s in ("train", "val")}
    for split, mask in masks.items():
        if not mask.any():
            raise DataError(
                data.paths[data.backbones[0]],
                f"the {split} split has no clips",
                "fusion needs train clips and val clips (val selects the model)",
            )
    y_index = np.asarray([LABEL_INDEX[label] for label in data.labels])
    return FusionSplits(
        x_train=data.inputs(level, masks["train"]),
        y_train=np.eye(len(LABELS), dtype=np.float32)[y_index[masks["train"]]],
        x_val=data.inputs(level, masks["val"]),
        y_val=y_index[masks["val"]],
    )


class _RoundLoop(SelectionLoop):
    """Phase II's selection loop: the best weights are kept in memory, and a checkpoint is
    one ``.npz`` (weights, Adam's state, best weights) with the NumPy generator's state."""

    def __init__(
        self,
        state: TrainingState,
        model: keras.Model,
        rng: np.random.Generator,
        best_weights: list[np.ndarray] | None,
        *,
        selection: str,
        checkpoints: Checkpoints | None,
        every_s: float,
    ):
        super().__init__(state, selection=selection, checkpoints=checkpoints, every_s=every_s)
        self.model, self.rng, self.best_weights = model, rng, best_weights

    def keep_best(self) -> None:
        self.best_weights = [w.copy() for w in self.model.get_weights()]

    def checkpoint(self, checkpoints: Checkpoints, improved: bool) -> TrainingState:
        return checkpoints.save_state(self.state, self.model, self.model.optimizer, self.rng, self.best_weights)


def _train_round(
    model: keras.Model, rng: np.random.Generator, splits: FusionSplits, n_epochs: int, config: FusionConfig
) -> tuple[float, int]:
    """Train ``n_epochs`` passes over train; return the mean loss and the steps run."""
    xs, ys = mixed_epochs(rng, splits.x_train, splits.y_train, n_epochs, config.mixup_alpha)
    short = -len(ys) % config.batch_size
    if short:  # full batches only: a last, smaller batch would trace the step a second time
        xs, ys = [np.concatenate([x, x[:short]]) for x in xs], np.concatenate([ys, ys[:short]])
    # One train_on_batch per step: model.fit's per-call set-up costs more than the few
    # steps between two evaluations of these small models.
    losses = [
        float(model.train_on_batch([x[i : i + config.batch_size] for x in xs], ys[i : i + config.batch_size]))
        for i in range(0, len(ys), config.batch_size)
    ]
    return float(np.mean(losses)), len(ys) // config.batch_size


def _new_model(
    method: str, backbones: tuple[str, ...], splits: FusionSplits, config: FusionConfig, *, fc1024: bool
) -> tuple[keras.Model, list[tuple[np.ndarray, np.ndarray]]]:
    """The compiled fusion model (optimizer built) and its inputs' train statistics."""
    from avsc.models.losses import kl_divergence_loss

    learning_rate = (
        config.learning_rate_fc1024 if fc1024 and config.learning_rate_fc1024 is not None else config.learning_rate
    )
    standardize = [standardization(x) for x in splits.x_train]
    model = fusion_model(method, backbones, splits, config, standardize, fc1024=fc1024)
    optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=kl_divergence_loss)
    optimizer.build(model.trainable_variables)
    return model, standardize


def fusion_model(
    method: str,
    backbones: tuple[str, ...],
    splits: FusionSplits,
    config: FusionConfig,
    standardize: list[tuple[np.ndarray, np.ndarray]],
    *,
    fc1024: bool,
) -> keras.Model:
    """An uncompiled fusion model for these inputs (its L2 as ``config`` sets it for the level)."""
    l2 = config.l2_fc1024 if fc1024 and config.l2_fc1024 is not None else config.l2
    return build_fusion_model(method, backbones, splits.x_train[0].shape[1], l2=l2, standardize=standardize)


def fit_fusion(
    method: str,
    backbones: tuple[str, ...],
    splits: FusionSplits,
    config: FusionConfig,
    *,
    fc1024: bool,
    resume_key: str,
    checkpoints: Checkpoints | None,
    every_s: float,
    progress: bool,
    desc: str,
) -> FittedFusion:
    """Train a fusion model in rounds, select on val, checkpoint; resume from ``checkpoints``.

    Raises:
        ConfigError: ``checkpoints`` hold the state of another run (another ``resume_key``).
    """
    from tqdm import tqdm

    began = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model, standardize = _new_model(method, backbones, splits, config, fc1024=fc1024)
    logits_model = fusion_logits_model(model)
    _, per_round, max_epochs, patience = schedule(config, len(splits.y_train))
    restored = checkpoints.restore_state(resume_key, model, model.optimizer, rng) if checkpoints else None
    state, best_weights = restored or (TrainingState(resume_key=resume_key), None)
    loop = _RoundLoop(
        state, model, rng, best_weights, selection=config.selection, checkpoints=checkpoints, every_s=every_s
    )
    epoch, steps = state.epoch, state.history[-1]["step"] if state.history else 0
    bar = tqdm(total=max_epochs, initial=epoch, desc=desc, unit="epoch", disable=not progress, file=sys.stderr)
    stopped = "max_steps" if config.epochs is None or max_epochs < config.epochs else "epochs"
    while epoch < max_epochs:
        if loop.state.best_epoch and epoch - loop.state.best_epoch >= patience:
            stopped = "patience"
            break
        round_began = time.perf_counter()
        n_epochs = min(per_round, max_epochs - epoch)
        loss, round_steps = _train_round(model, rng, splits, n_epochs, config)
        epoch, steps = epoch + n_epochs, steps + round_steps
        evaluation = loop.end_round(
            fusion_logits(logits_model, splits.x_val),
            splits.y_val,
            epoch=epoch,
            step=steps,
            loss=loss,
            began=round_began,
            last=epoch >= max_epochs,
        )
        bar.update(n_epochs)
        bar.set_postfix(
            val_acc=f"{evaluation.entry['val_accuracy']:.3f}",
            val_loss=f"{evaluation.entry['val_log_loss_selection']:.3f}",
            best=loop.state.best_epoch,
        )
    bar.close()
    assert loop.best_weights is not None  # every training scores val at least once
    final = fusion_model(method, backbones, splits, config, standardize, fc1024=fc1024)
    final.set_weights(loop.best_weights)
    return FittedFusion(
        model=final,
        state=loop.state,
        steps=steps,
        stopped=stopped,
        train_seconds=time.perf_counter() - began,
        standardize=standardize,
    )

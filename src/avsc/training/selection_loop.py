"""What both training phases do after each round of training: score on val, calibrate, select,
checkpoint.

A round is one epoch of a backbone (Phase I) or ``eval_every`` steps of a fusion model (Phase
II). After it, the trainer hands :meth:`SelectionLoop.end_round` the val clips' logits; the loop
fits a temperature on them under the guards of :mod:`avsc.scoring.calibration`, scores the
calibrated probabilities, appends a history entry, decides with the selection rule
(:func:`avsc.scoring.calibration.selection_key`) whether this is the best evaluation so far,
and commits a checkpoint when one is due. What differs between the phases, how the best
weights are kept and what a checkpoint holds, is the subclass's: :meth:`SelectionLoop.keep_best`
and :meth:`SelectionLoop.checkpoint`. The state it carries is a
:class:`~avsc.training.state.TrainingState`.

Model selection uses the val split only; the test split is never read here.

Example:
    >>> import time
    >>> import numpy as np
    >>> loop = SelectionLoop(TrainingState(resume_key="k"), selection="accuracy")
    >>> labels = np.arange(10)
    >>> first = loop.end_round(np.eye(10), labels, epoch=1, loss=2.0, began=time.perf_counter())
    >>> second = loop.end_round(np.roll(np.eye(10), 1, axis=1), labels, epoch=2, loss=1.5,
    ...                         began=time.perf_counter())
    >>> first.improved, second.improved, loop.state.best_epoch, len(loop.state.history)
    (True, False, 1, 2)
    >>> first.entry["val_accuracy"]
    1.0
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from avsc.scoring.calibration import calibrate, selection_key
from avsc.training.checkpoints import Checkpoints
from avsc.training.state import TrainingState

__all__ = ["Evaluation", "SelectionLoop", "history_entry"]


def history_entry(
    calibration: dict[str, Any], *, epoch: int, loss: float, seconds: float, step: int | None = None
) -> dict[str, Any]:
    """One history entry (``history.json``, ``state.json``) of a val evaluation.

    Args:
        calibration: :func:`avsc.scoring.calibration.calibrate`'s result on the val logits.
        epoch: passes over train before the evaluation.
        loss: the training loss of the round.
        seconds: wall time of the round.
        step: optimizer steps before the evaluation (Phase II; Phase I records none).

    Returns:
        ``{"epoch", ["step",] "loss", "val_accuracy" (calibrated), "val_log_loss" (raw: before
        temperature scaling), "val_log_loss_calibrated", "temperature", "val_log_loss_selection"
        (what selection compares), "calibration_method", "seconds"}``.
    """
    metrics = calibration["metrics"]
    return {
        "epoch": epoch,
        **({} if step is None else {"step": step}),
        "loss": loss,
        "val_accuracy": metrics["accuracy"],
        "val_log_loss": calibration["before"]["log_loss"],
        "val_log_loss_calibrated": metrics["log_loss"],
        "temperature": calibration["temperature"],
        "val_log_loss_selection": calibration["selection_log_loss"],
        "calibration_method": calibration["method"],
        "seconds": seconds,
    }


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One val evaluation as :meth:`SelectionLoop.end_round` recorded it.

    Attributes:
        entry: its history entry (:func:`history_entry`).
        improved: whether it is the best so far (it is then the state's best).
        calibration: :func:`avsc.scoring.calibration.calibrate`'s result.
    """

    entry: dict[str, Any]
    improved: bool
    calibration: dict[str, Any]


class SelectionLoop:
    """Score each round on val, keep the best so far, checkpoint; the state is :attr:`state`.

    Args:
        state: where training stands: new (``TrainingState(resume_key=...)``) or restored
            from ``checkpoints``.
        selection: the selection rule, ``log_loss`` or ``accuracy``
            (:data:`avsc.scoring.calibration.SELECTION_RULES`).
        checkpoints: where to commit checkpoints; None keeps none.
        every_s: least time between two checkpoints (0: after every round); the last round's
            is always written.
    """

    def __init__(
        self, state: TrainingState, *, selection: str, checkpoints: Checkpoints | None = None, every_s: float = 0.0
    ):
        self.state = state
        self.selection = selection
        self.checkpoints = checkpoints
        self.every_s = every_s
        self._saved_at = time.monotonic()

    def end_round(
        self,
        logits: np.ndarray,
        labels: np.ndarray,
        *,
        epoch: int,
        loss: float,
        began: float,
        step: int | None = None,
        last: bool = False,
    ) -> Evaluation:
        """Record the evaluation after a round of training; checkpoint when one is due.

        Args:
            logits: [shape=(n_val_clips, 10)] the val clips' logits (before softmax).
            labels: [shape=(n_val_clips,)] their class indices.
            epoch, step: passes over train and optimizer steps so far (Phase I: no steps).
            loss: the round's training loss.
            began: :func:`time.perf_counter` when the round began (its wall time, evaluation
                included, is recorded in milliseconds).
            last: no round follows (a checkpoint is written whatever ``every_s`` says).
        """
        calibration = calibrate(np.asarray(logits, dtype=np.float64), labels)
        entry = history_entry(
            calibration, epoch=epoch, loss=loss, step=step, seconds=round(time.perf_counter() - began, 3)
        )
        key = selection_key(calibration["metrics"]["accuracy"], calibration["selection_log_loss"], self.selection)
        improved = self.state.best_key is None or key > tuple(self.state.best_key)
        self.state = dataclasses.replace(self.state, epoch=epoch, history=(*self.state.history, entry), in_epoch=None)
        if improved:
            self.state = dataclasses.replace(
                self.state, best_epoch=epoch, best_step=step or 0, best_key=key, best_calibration=calibration
            )
            self.keep_best()
        if self.checkpoints is not None and (last or time.monotonic() - self._saved_at >= self.every_s):
            self.state = self.checkpoint(self.checkpoints, improved)
            self._saved_at = time.monotonic()
        return Evaluation(entry=entry, improved=improved, calibration=calibration)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The history so far, one entry per val evaluation."""
        return [dict(entry) for entry in self.state.history]

    def keep_best(self) -> None:
        """Keep the weights of the evaluation just recorded as the best so far (in memory);
        a trainer that keeps them in its checkpoint files instead leaves this as is."""

    def checkpoint(self, checkpoints: Checkpoints, improved: bool) -> TrainingState:
        """Commit a checkpoint of :attr:`state` and return the state committed.

        This base commits the state alone: ``state.json``, then the files it no longer names
        are deleted. A trainer writes its files first and then commits the state naming them
        (``improved``: the evaluation just recorded is the best so far).
        """
        checkpoints.write_state(self.state)  # the checkpoint counts only once this is written
        checkpoints.prune(self.state.files())
        return self.state

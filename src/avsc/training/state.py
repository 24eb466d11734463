"""Where a training stands: :class:`TrainingState`, the ``state.json`` of its checkpoints.

Both phases keep one: a backbone training (:mod:`avsc.training.backbone`, the models as
``.keras`` files beside it) and a fusion training (:mod:`avsc.training.fusion`, the weights,
Adam's state and the best weights in one ``.npz``). It is written last, after the files it
names, so it is the commit point of a checkpoint (:mod:`avsc.training.checkpoints`), and
it is read strictly: a ``state.json`` of another format or version (an older avsc) is refused
with a message naming it, never resumed from by guessing.

Example:
    >>> state = TrainingState(resume_key="k", epoch=2, history=({"epoch": 1}, {"epoch": 2}),
    ...                       best_epoch=1, best_key=(-1.5, 0.25), last="epoch-0002.keras",
    ...                       best="best-epoch-0001.keras")
    >>> TrainingState.from_dict(state.to_dict()) == state
    True
    >>> sorted(state.files())
    ['best-epoch-0001.keras', 'epoch-0002.keras']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from avsc.records._base import Record

__all__ = ["InEpoch", "TrainingState"]


@dataclasses.dataclass(frozen=True)
class InEpoch:
    """A checkpoint taken within an epoch (:class:`avsc.training.checkpoints.StepCheckpoints`).

    Attributes:
        epoch: the epoch being trained, 1-based.
        step: steps of it trained before the checkpoint.
        model: the training model's file (``step-EEEE-SSSSSS.keras``, with its optimizer state).
        loss_sum: the training loss summed over the examples of those steps.
        seed_states: the states of the model's random generators (dropout), in layer order.
    """

    epoch: int
    step: int
    model: str
    loss_sum: float
    seed_states: tuple[tuple[int, ...], ...] | None = None


@dataclasses.dataclass(frozen=True)
class TrainingState(Record):
    """What a training has done so far and where its files are (``CHECKPOINTS/state.json``).

    Attributes:
        resume_key: what a run must match to continue this one: the settings and the data's
            lineage (Phase I, a dict compared key by key), or their JSON (Phase II).
        epoch: passes over train finished before the last val evaluation (0: none yet).
        history: one entry per val evaluation (see :func:`avsc.training.selection_loop.history_entry`).
        best_epoch, best_step: passes over train and optimizer steps before the best
            evaluation so far (0: none yet; Phase I counts no steps).
        best_key: its selection key (:func:`avsc.scoring.calibration.selection_key`; larger wins).
        best_calibration: its :func:`avsc.scoring.calibration.calibrate` result (metrics included).
        last: the file holding the training after ``epoch``: the training model
            (``epoch-EEEE.keras``) or the weights, Adam's state and the best weights
            (``state-epoch-EEEEE.npz``).
        best: the best evaluation's model file when it is kept as a file of its own.
        rng: the state of the trainer's NumPy generator (Phase II draws its mixup in NumPy).
        seed_states: the model's random generators' states after ``epoch`` (Phase I).
        in_epoch: a checkpoint taken within the next epoch, or None.
    """

    FILE_NAME: ClassVar[str] = "state.json"
    FORMAT: ClassVar[str] = "avsc-training-state"
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "avsc train or avsc fuse"

    resume_key: Any
    epoch: int = 0
    history: tuple[Mapping[str, Any], ...] = ()
    best_epoch: int = 0
    best_step: int = 0
    best_key: tuple[float, ...] | None = None
    best_calibration: Mapping[str, Any] | None = None
    last: str | None = None
    best: str | None = None
    rng: Mapping[str, Any] | None = None
    seed_states: tuple[tuple[int, ...], ...] | None = None
    in_epoch: InEpoch | None = None

    def files(self) -> set[str]:
        """The checkpoint files this state names (every other one may be deleted)."""
        named = (self.last, self.best, self.in_epoch.model if self.in_epoch else None)
        return {name for name in named if name}

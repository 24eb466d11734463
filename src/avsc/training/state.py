"""Where a training stands: :class:`TrainingState`, the ``state.json`` of its checkpoints.

Both phases keep one: a backbone training (:mod:`avsc.training.backbone`, the models as
``.keras`` files beside it) and a fusion training (:mod:`avsc.training.fusion`, the weights,
Adam's state and the best weights in one ``.npz``). It is written last, after the files it
names, so it is the commit point of a checkpoint (:mod:`avsc.training.checkpoints`), and
it is read strictly: a ``state.json`` of another format or version (an older avsc) is refused
with a message naming it, never resumed from by guessing. :func:`check_resume_key` refuses a
backbone checkpoint of other data or other settings, naming what differs.

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

__all__ = ["InEpoch", "TrainingState", "check_resume_key"]


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


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def check_resume_key(found: Any, expected: dict[str, Any], *, location: str, what: str = "checkpoint") -> None:
    """Refuse to resume from a checkpoint of other data or other settings (Phase I), saying what differs.

    A resume key is ``{"settings": {...}, "lineage": {...}}``: the settings a run depends on
    (nested dicts, compared key by key) and its data (:class:`avsc.records.Lineage` as a dict).

    Raises:
        DataError: the checkpoint was made from other data (dataset, clips, labels, splits,
            feature store), or records no data (an older avsc).
        ConfigError: it was made with other settings, naming each (``train.learning_rate``).
    """
    from avsc.errors import ConfigError, DataError
    from avsc.records.lineage import Lineage

    hint = "use another checkpoint location, or delete these checkpoints to start over"
    if not isinstance(found, dict) or "lineage" not in found or "settings" not in found:
        raise DataError(location, f"{what} records no data lineage (written by an older avsc)", hint)
    here = Lineage.from_json(expected["lineage"], source=location)
    here.check_same(Lineage.from_json(found["lineage"], source=location), source=location, what=what, hint=hint)
    mine, theirs = _flatten(expected["settings"]), _flatten(found["settings"])
    differ = [
        f"{key} {theirs.get(key)!r} there, {mine.get(key)!r} here"
        for key in sorted(set(mine) | set(theirs))
        if mine.get(key) != theirs.get(key)
    ]
    if differ:
        raise ConfigError(
            f"{location}: {what} of a run with other settings ({'; '.join(differ[:5])}"
            f"{'; ...' if len(differ) > 5 else ''}); {hint}"
        )

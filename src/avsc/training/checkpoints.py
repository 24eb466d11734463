"""Training checkpoints at a location that outlives the process: a folder or ``s3://`` prefix.

A training task on a cluster runs in a pod whose disk is gone when the pod is preempted
or retried. Its checkpoints therefore go to a location given by the caller (the pipeline
derives one from the run's output URI, the backbone and the config hash), and a new
process pointed at the same location continues after the last finished epoch.

Layout under the location::

    state.json                 what a resumed run needs (:class:`~avsc.training.state.TrainingState`):
                               the epoch reached, the history, the best epoch so far, and
                               the names of the files below
    epoch-0003.keras           the model (with optimizer state) after the last epoch
    best-epoch-0002.keras      the model of the best epoch so far
    step-0004-000120.keras     the model within an epoch (epoch 4 after step 120), written
                               every ~60 s and on SIGTERM (:class:`StepCheckpoints`); named by
                               ``state.json``'s ``in_epoch`` until the epoch ends
    state-epoch-00005.npz      a fusion training's weights, Adam's state and best weights

Every file is written atomically; ``state.json`` is written last and is the commit point: a
run killed while it saves leaves the previous state and its files intact. Files the state
no longer names are deleted afterwards.

Preemption costs seconds, not an epoch: within an epoch :class:`StepCheckpoints` (a Keras
callback, like ``keras.callbacks.BackupAndRestore`` with ``save_freq`` in steps, but also by
time, on SIGTERM and to an ``s3://`` location) saves the training model, the step reached, the
running loss and the state of the model's random generators (dropout), which a ``.keras``
file does not keep. A resumed run skips the batches already trained on (the epoch's stream is
seeded, so they are the same batches) and ends with the same weights as a run never stopped.
:func:`sigterm_flag` turns SIGTERM (what Kubernetes sends a pod it evicts or preempts, 30 s
before SIGKILL by default) into a request to save and stop: the trainer raises
:class:`~avsc.errors.Preempted` once the checkpoint is committed.

Example::

    ckpt = Checkpoints("s3://avsc/runs/r1/checkpoints/aud-mel-1a2b3c")
    state = ckpt.read_state()  # None when nothing was checkpointed yet
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from avsc.storage import locations, staging
from avsc.training.state import InEpoch, TrainingState

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def checkpoint_location(root: str | os.PathLike, name: str, *identity: Any) -> str:
    """A durable checkpoint location for one training: ``ROOT/checkpoints/<name>-<hash>``.

    ``identity`` is everything the training depends on (its config sections, the hashes of
    its inputs): the same training finds its checkpoints again (a retried pod), and any
    other one gets a location of its own instead of refusing another run's checkpoints.
    """
    import hashlib
    import json

    from avsc.config import to_dict

    def plain(value: Any) -> Any:
        try:
            return to_dict(value)
        except TypeError:
            return value

    digest = hashlib.sha256(json.dumps([plain(v) for v in identity], sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]
    return locations.join(str(root), "checkpoints", f"{name}-{digest}")


class Checkpoints:
    """Read and write the checkpoint files of one training run at ``location``."""

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)

    def __repr__(self) -> str:
        return f"Checkpoints({self.location!r})"

    def _at(self, name: str) -> str:
        return locations.join(self.location, name)

    def read_state(self) -> TrainingState | None:
        """The committed state, or None when nothing was checkpointed here.

        Raises:
            DataError: a ``state.json`` that is not a training state of this avsc (an older
                avsc wrote it, or another file), naming it.
        """
        from avsc.errors import DataError
        from avsc.records import RecordError

        where = self._at(STATE_FILE)
        if not locations.exists(where):
            return None
        try:
            return TrainingState.read_file(where)
        except RecordError as exc:
            raise DataError(
                where, exc.problem, "use another checkpoint location, or delete these checkpoints to start over"
            ) from None

    def write_state(self, state: TrainingState) -> None:
        """Commit ``state`` (write it after the files it names)."""
        locations.write_json(self._at(STATE_FILE), state.to_dict())

    def save_model(self, model, name: str) -> None:
        """Save a Keras model (with its optimizer state) as ``name`` (a ``.keras`` file)."""
        from avsc.models.saving import save_keras_model

        if not locations.is_remote(self.location):
            save_keras_model(model, self._at(name))
            return
        with tempfile.TemporaryDirectory(prefix="avsc-ckpt-") as scratch:
            local = Path(scratch) / name
            model.save(local)
            locations.copy(local, self._at(name))  # a verified upload, streamed from disk

    def load_model(self, name: str, *, compile: bool = True):
        """Load the Keras model saved as ``name``."""
        import keras

        with staging.local_copy(self._at(name)) as local:  # a local path is used in place
            return keras.models.load_model(local, compile=compile)

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Save named arrays as one ``.npz`` file ``name``."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as the allow_pickle flag
        locations.write_bytes(self._at(name), buffer.getvalue())

    def load_arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(locations.read_bytes(self._at(name)))) as data:
            return {key: data[key] for key in data.files}

    def copy(self, source: str, target: str) -> None:
        """Copy file ``source`` to ``target`` here (server-side on ``s3://``)."""
        locations.copy(self._at(source), self._at(target))

    def prune(self, keep: set[str]) -> None:
        """Delete the files here, other than ``state.json``, that are not in ``keep``."""
        for location in locations.list_files(self.location):
            name = locations.name_of(location)
            if (
                name != STATE_FILE
                and name not in keep
                and "/" not in location[len(self.location) :].strip("/\\").replace("\\", "/")
            ):
                locations.remove(location)

    # ------------------------------------------------------------ a whole training state

    def save_state(
        self, state: TrainingState, model, optimizer, rng: np.random.Generator, best_weights: list[np.ndarray] | None
    ) -> TrainingState:
        """Checkpoint a trainer that keeps its model in memory between evaluations (Phase II).

        The weights, the optimizer's variables (Adam's moments and step) and ``best_weights``
        go to one ``.npz`` file, then ``state`` naming it and holding the NumPy generator's
        state is committed; returns that state.
        """
        name = f"state-epoch-{state.epoch:05d}.npz"
        arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
        arrays.update({f"b{i}": w for i, w in enumerate(best_weights or [])})
        self.save_arrays(name, arrays)
        state = dataclasses.replace(state, last=name, rng=rng.bit_generator.state)
        self.write_state(state)
        self.prune(state.files())
        return state

    def restore_state(
        self, resume_key: str, model, optimizer, rng: np.random.Generator
    ) -> tuple[TrainingState, list[np.ndarray] | None] | None:
        """Load what :meth:`save_state` saved into the model, the optimizer (built) and the
        generator; return the state and the best weights (None when nothing was saved).

        Raises:
            ConfigError: the saved state belongs to another run (another ``resume_key``).
        """
        from avsc.errors import ConfigError

        state = self.read_state()
        if state is None:
            return None
        if state.resume_key != resume_key:
            raise ConfigError(
                f"{self.location}: holds the checkpoint of another run; use another "
                "checkpoint location, or delete it to start over"
            )
        if state.last is None or state.rng is None:
            raise ConfigError(
                f"{self.location}: holds the checkpoint of another kind of training; use "
                "another checkpoint location, or delete it to start over"
            )
        arrays = self.load_arrays(state.last)
        n_weights = len(model.get_weights())
        model.set_weights([arrays[f"w{i}"] for i in range(n_weights)])
        for i, variable in enumerate(optimizer.variables):
            variable.assign(arrays[f"o{i}"])
        rng.bit_generator.state = dict(state.rng)
        best_weights = [arrays[f"b{i}"] for i in range(n_weights)] if "b0" in arrays else None
        log.info("resuming after epoch %d from %s", state.epoch, self.location)
        return state, best_weights

    # ------------------------------------------------------------ finished outputs

    def keep_folder(self, folder: Path, name: str, *, last: str) -> None:
        """Copy the files of a finished output ``folder`` to ``name/`` here; ``last`` is
        written last, so its presence means the copy is whole."""
        files = sorted((p for p in Path(folder).iterdir() if p.is_file()), key=lambda p: p.name == last)
        for path in files:
            locations.copy(path, locations.join(self.location, name, path.name))

    def fetch_folder(self, name: str, folder: Path, last: str) -> bool:
        """Copy ``name/`` kept here into ``folder``; False when it is not there (whole)."""
        if not locations.exists(locations.join(self.location, name, last)):
            return False
        Path(folder).mkdir(parents=True, exist_ok=True)
        for location in locations.list_files(locations.join(self.location, name)):
            locations.copy(location, Path(folder) / locations.name_of(location))
        return True


# ---------------------------------------------------------------- within an epoch, and SIGTERM


@contextlib.contextmanager
def sigterm_flag() -> Iterator[threading.Event]:
    """An event that is set when the process receives SIGTERM while the block runs.

    The handler only sets the event (the trainer saves and stops at its next step); the
    previous handler is restored afterwards. Outside the main thread, where Python cannot
    install handlers, the event is never set.
    """
    from avsc.runtime import on_sigterm

    flag = threading.Event()

    def handler(signum, frame) -> None:
        log.warning("SIGTERM received: saving a checkpoint at the next step, then stopping")
        flag.set()

    with on_sigterm(handler):
        yield flag


def seed_states(model) -> tuple[tuple[int, ...], ...]:
    """The states of the model's random generators (its dropout layers'), in layer order.

    A ``.keras`` file does not keep them: a model loaded from one draws other dropout masks
    than the model that was saved would have drawn next.
    """
    return tuple(tuple(np.asarray(v.numpy()).astype(np.int64).tolist()) for v in _seed_variables(model))


def restore_seed_states(model, states: Sequence[Sequence[int]] | None) -> None:
    """Put back what :func:`seed_states` returned (nothing when ``states`` is None)."""
    if states is None:
        return
    variables = _seed_variables(model)
    if len(variables) != len(states):
        raise ValueError(f"checkpoint has {len(states)} random generator states, the model {len(variables)}")
    for variable, value in zip(variables, states, strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _seed_variables(model) -> list:
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


class StepCheckpoints(keras.callbacks.Callback):
    """A Keras callback that checkpoints within an epoch: every ``every_s`` seconds, every
    ``every_steps`` steps (if given) and when ``stop`` is set (then it stops the training).

    Each checkpoint is the training model (``step-EEEE-SSSSSS.keras``, with its optimizer
    state) and ``state.json`` holding the trainer's ``state`` with its ``in_epoch``
    (:class:`~avsc.training.state.InEpoch`: the epoch (1-based) and step reached, the loss
    summed over the examples seen, and the random generators' states). The epoch's last step
    is never saved here (the end-of-epoch checkpoint follows at once).

    Args:
        ckpt: where to save.
        state: the trainer's committed state (written with ``in_epoch`` added).
        epoch: the epoch being trained, 0-based.
        first_step: steps of this epoch already trained before this ``fit`` (a resumed run).
        examples: examples in the epoch (for the loss over the whole epoch).
        batch_size: examples a step (every step but the last is full).
        prior: ``in_epoch`` of the checkpoint resumed from, or None.
    """

    def __init__(
        self,
        ckpt: Checkpoints,
        state: TrainingState,
        *,
        epoch: int,
        first_step: int,
        examples: int,
        batch_size: int,
        stop: threading.Event,
        every_s: float = 60.0,
        every_steps: int | None = None,
        prior: InEpoch | None = None,
    ):
        super().__init__()
        self.ckpt, self.state, self.epoch, self.first_step = ckpt, state, epoch, first_step
        self.examples, self.batch_size, self.stop = examples, batch_size, stop
        self.every_s, self.every_steps = every_s, every_steps
        self.prior_sum = float(prior.loss_sum) if prior else 0.0
        self.prior_seen = first_step * batch_size
        self.stopped_at: int | None = None
        self._last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self.first_step + batch + 1
        if step >= self.first_step + int(self.params.get("steps") or 0):
            return  # the end-of-epoch checkpoint comes next
        due = (
            self.stop.is_set()
            or (self.every_steps and step % self.every_steps == 0)
            or time.monotonic() - self._last >= self.every_s
        )
        if not due:
            return
        seen_now = (batch + 1) * self.batch_size
        self.save(step, self.prior_sum + float((logs or {})["loss"]) * seen_now)
        if self.stop.is_set():
            self.stopped_at = step
            self.model.stop_training = True

    def save(self, step: int, loss_sum: float) -> None:
        name = f"step-{self.epoch + 1:04d}-{step:06d}.keras"
        self.ckpt.save_model(self.model, name)
        state = dataclasses.replace(
            self.state,
            in_epoch=InEpoch(
                epoch=self.epoch + 1, step=step, model=name, loss_sum=loss_sum, seed_states=seed_states(self.model)
            ),
        )
        self.ckpt.write_state(state)
        self.ckpt.prune(state.files())
        self._last = time.monotonic()
        log.info("checkpoint at epoch %d, step %d in %s", self.epoch + 1, step, self.ckpt.location)

    def epoch_loss(self, fit_loss: float) -> float:
        """The loss over the whole epoch, from ``fit``'s mean over the steps it ran."""
        rest = self.examples - self.prior_seen
        return (self.prior_sum + fit_loss * rest) / max(1, self.examples)

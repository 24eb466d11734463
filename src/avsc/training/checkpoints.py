"""Training checkpoints at a location that outlives the process: a folder or ``s3://`` prefix.

A training task on a cluster runs in a pod whose disk is gone when the pod is preempted
or retried. Its checkpoints therefore go to a location given by the caller (the pipeline
derives one from the run's output URI, the backbone and the config hash), and a new
process pointed at the same location continues after the last finished epoch.

Layout under the location::

    state.json                 what a resumed run needs: the epoch reached, the history,
                               the best epoch so far, and the names of the files below
    epoch-0003.keras           the model (with optimizer state) after the last epoch
    best-epoch-0002.keras      the model of the best epoch so far
    <anything>.npz             arrays a trainer keeps (the fusion trainers' weights)

Every file is written atomically; ``state.json`` is written last and is the commit point: a
run killed while it saves leaves the previous state and its files intact. Files the state
no longer names are deleted afterwards.

Example:
    >>> ckpt = Checkpoints("s3://avsc/runs/r1/checkpoints/aud-mel-1a2b3c")
    >>> state = ckpt.read_state()  # None when nothing was checkpointed yet
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from avsc.storage import locations

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


class Checkpoints:
    """Read and write the checkpoint files of one training run at ``location``."""

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)

    def __repr__(self) -> str:
        return f"Checkpoints({self.location!r})"

    def _at(self, name: str) -> str:
        return locations.join(self.location, name)

    def read_state(self) -> dict[str, Any] | None:
        """The committed state, or None when no epoch was checkpointed here."""
        where = self._at(STATE_FILE)
        return locations.read_json(where) if locations.exists(where) else None

    def write_state(self, state: dict[str, Any]) -> None:
        """Commit ``state`` (write it after the files it names)."""
        locations.write_json(self._at(STATE_FILE), state)

    def save_model(self, model, name: str) -> None:
        """Save a Keras model (with its optimizer state) as ``name`` (a ``.keras`` file)."""
        from avsc.models.saving import save_keras_model

        if not locations.is_remote(self.location):
            save_keras_model(model, self._at(name))
            return
        with tempfile.TemporaryDirectory(prefix="avsc-ckpt-") as scratch:
            local = Path(scratch) / name
            model.save(local)
            locations.write_bytes(self._at(name), local.read_bytes())

    def load_model(self, name: str, *, compile: bool = True):
        """Load the Keras model saved as ``name``."""
        import keras

        if not locations.is_remote(self.location):
            return keras.models.load_model(self._at(name), compile=compile)
        with tempfile.TemporaryDirectory(prefix="avsc-ckpt-") as scratch:
            local = Path(scratch) / name
            local.write_bytes(locations.read_bytes(self._at(name)))
            return keras.models.load_model(local, compile=compile)

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Save named arrays as one ``.npz`` file ``name``."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
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
            if name != STATE_FILE and name not in keep and "/" not in \
                    location[len(self.location):].strip("/\\").replace("\\", "/"):
                locations.remove(location)

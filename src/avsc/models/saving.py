"""Saving Keras models atomically: a reader never finds half a ``.keras`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsc.storage.files import atomic_path

__all__ = ["save_keras_model"]


def save_keras_model(model: Any, path: str | Path) -> Path:
    """Save a Keras model to a ``.keras`` file atomically (Keras insists on the suffix)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)

"""Shared fixtures: a seeded RNG, and quiet TensorFlow logs."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20211)

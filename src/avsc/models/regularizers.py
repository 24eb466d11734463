"""The L2 term of the paper's loss (eq. 4) as Keras kernel regularizers."""

from __future__ import annotations

import keras

__all__ = ["l2_half"]


def l2_half(l2: float):
    """A regularizer adding ``(l2 / 2) * ||w||^2``, or None when ``l2`` is 0.

    Keras' ``L2(c)`` adds ``c * sum(w^2)``; the paper's loss adds ``(lambda / 2) * ||theta||^2``
    with ``lambda = l2``, hence the halving. Used on every kernel of the backbones and on the
    fusion vectors and dense kernel of the fusion models (biases and batch-norm parameters are
    not regularised).
    """
    return keras.regularizers.L2(l2 / 2.0) if l2 else None

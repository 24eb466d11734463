"""The training loss of both phases (paper, eq. 4): KL divergence to (mixed-up) soft labels.

The L2 term of eq. 4 is not part of the loss function: it is the models' kernel
regularizers (:func:`avsc.models.regularizers.l2_half`), which Keras adds to the loss.
"""

from __future__ import annotations

import keras

__all__ = ["kl_divergence_loss"]

_EPS = 1e-7


@keras.saving.register_keras_serializable(package="avsc")
def kl_divergence_loss(y_true, y_pred):
    """Per-example ``sum_k y_k * log(y_k / y_hat_k)``, computed in float32 (``keras.ops``: any backend).

    Both sides are clipped to ``[1e-7, 1]`` so that ``0 * log 0`` counts as 0 and a
    zero prediction cannot give infinity.

    Args:
        y_true: [shape=(batch, n_classes)] target distribution (soft after mixup).
        y_pred: [shape=(batch, n_classes)] softmax output.
    Returns:
        [shape=(batch,)] loss per example.
    """
    ops = keras.ops
    y_true = ops.clip(ops.cast(y_true, "float32"), _EPS, 1.0)
    y_pred = ops.clip(ops.cast(y_pred, "float32"), _EPS, 1.0)
    return ops.sum(y_true * ops.log(y_true / y_pred), axis=-1)

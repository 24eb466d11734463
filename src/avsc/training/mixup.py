"""Mixup (Zhang et al., 2018), used by both training phases.

Each example ``j`` is mixed with a partner ``k``: ``x' = lam_j * x_j + (1 - lam_j) * x_k`` and
the same for its (one-hot or soft) label, with ``lam_j ~ Beta(alpha, alpha)``. Phase I mixes
within a batch (:func:`mixup`, partners by a permutation of the batch); Phase II mixes each
training clip with a partner drawn from the whole training set, all its embeddings with the
same weight (:func:`mix` on gathered rows).
"""

from __future__ import annotations

__all__ = ["mix", "mixup"]


def mix(a, b, lam):
    """``lam * a + (1 - lam) * b`` with one weight per example.

    Args:
        a, b: [shape=(batch, ...)] tensors (or arrays) of the same shape.
        lam: [shape=(batch,)] weights in [0, 1], broadcast over the trailing axes.
    """
    import tensorflow as tf

    a = tf.convert_to_tensor(a)
    b = tf.convert_to_tensor(b, dtype=a.dtype)
    weight = tf.reshape(tf.cast(lam, a.dtype), [-1] + [1] * (len(a.shape) - 1))
    return weight * a + (1 - weight) * b


def mixup(x, y, lam, perm):
    """Mix each example of a batch (and its label) with the one ``perm`` pairs it with.

    Args:
        x: [shape=(batch, ...)] inputs.
        y: [shape=(batch, n_classes)] one-hot (or already soft) labels.
        lam: [shape=(batch,)] mixing weights in [0, 1].
        perm: [shape=(batch,)] a permutation of the batch.

    Returns:
        ``(x', y')`` of the shapes of ``x`` and ``y``.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    return mix(x, tf.gather(x, perm), lam), mix(y, tf.gather(y, perm), lam)

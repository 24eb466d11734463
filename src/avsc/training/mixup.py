"""Mixup (Zhang et al., 2018), used by both training phases.

Each example ``j`` is mixed with a partner ``k``: ``x' = lam_j * x_j + (1 - lam_j) * x_k`` and
the same for its (one-hot or soft) label, with ``lam_j ~ Beta(alpha, alpha)``. Phase I mixes
within a batch (:func:`mixup`, partners by a permutation of the batch); Phase II mixes each
training clip with a partner drawn from the whole training set, all its embeddings with the
same weight (:func:`mix` on gathered rows).

In Phase I the input pipeline (:mod:`avsc.training.streams`) only reads, shuffles and batches
the stored arrays (float16 spectrograms, uint8 frames), draws one ``lam`` and one partner per
example and mixes the (tiny) labels. The arrays are cast to float32 and mixed by
:class:`MixupInputs`, the first layer of the training model (:func:`with_mixup`), so this
per-element work runs where the model runs: on the GPU in a cluster, not on the few CPU cores
that must keep the GPU fed (casting and mixing one batch of 32 paper-preset spectrograms
costs about 0.1 s of a CPU core, several times the cost of reading them).

Everything here is ``keras.ops``, so it runs on any Keras backend (TensorFlow, JAX).
"""

from __future__ import annotations

import keras

__all__ = ["mix", "mixup", "MixupInputs", "with_mixup", "inner_model", "mix_batch"]


def mix(a, b, lam):
    """``lam * a + (1 - lam) * b`` with one weight per example.

    Args:
        a, b: [shape=(batch, ...)] tensors (or arrays) of the same shape.
        lam: [shape=(batch,)] weights in [0, 1], broadcast over the trailing axes.
    """
    ops = keras.ops
    a = ops.convert_to_tensor(a)
    b = ops.convert_to_tensor(b, dtype=a.dtype)
    weight = ops.reshape(ops.cast(lam, a.dtype), [-1] + [1] * (len(a.shape) - 1))
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
    ops = keras.ops
    x = ops.convert_to_tensor(x)
    y = ops.convert_to_tensor(y)
    return mix(x, ops.take(x, perm, axis=0), lam), mix(y, ops.take(y, perm, axis=0), lam)


@keras.saving.register_keras_serializable(package="avsc")
class MixupInputs(keras.layers.Layer):
    """``[x, lam, perm]`` -> ``lam * x + (1 - lam) * x[perm]`` as floats (Phase I's inputs).

    ``x`` arrives as stored (float16 spectrograms or uint8 frames) and is cast to the
    layer's compute dtype first.
    """

    def call(self, inputs):
        x, lam, perm = inputs
        x = keras.ops.cast(x, self.compute_dtype)
        return mix(x, keras.ops.take(x, perm, axis=0), lam)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def with_mixup(model: keras.Model, *, x_dtype: str) -> keras.Model:
    """The training model: inputs ``[x, lam, perm]``, :class:`MixupInputs`, then ``model``.

    ``model`` (the backbone) is shared, not copied: training the returned model trains it.
    """
    x = keras.Input(model.input.shape[1:], dtype=x_dtype, name="x")
    lam = keras.Input((), dtype="float32", name="lam")
    perm = keras.Input((), dtype="int32", name="perm")
    mixed = MixupInputs(name="mixup")([x, lam, perm])
    return keras.Model([x, lam, perm], model(mixed), name=f"{model.name}_mixup")


def inner_model(trainer: keras.Model) -> keras.Model:
    """The backbone inside a model made by :func:`with_mixup`."""
    return next(layer for layer in trainer.layers if isinstance(layer, keras.Model))


def mix_batch(inputs, y):
    """The float32 batch a training model sees: ``((x, lam, perm), y)`` -> ``(x_mixed, y)``.

    For code that wants the mixed batch itself (tests, inspection), not for training.
    """
    x, lam, perm = inputs
    x = keras.ops.cast(x, "float32")
    return mix(x, keras.ops.take(x, perm, axis=0), lam), y

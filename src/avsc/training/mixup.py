"""Mixup (Zhang et al., 2018) for Phase I, computed inside the model's training step.

The input pipeline (:mod:`avsc.training.streams`) only reads, shuffles and batches the
stored arrays (float16 spectrograms, uint8 frames) and draws one mixing weight ``lam`` and
one partner ``perm`` per example; it mixes the (tiny) labels itself. The arrays are cast to
float32 and mixed by :class:`MixupInputs`, the first layer of the training model
(:func:`with_mixup`), so this per-element work runs where the model runs: on the GPU in a
cluster, instead of on the few CPU cores that must keep the GPU fed (a cast and a mixup of
a batch of 32 paper-preset spectrograms is about 0.1 s of one CPU core, several times the
cost of reading them).

Example:
    >>> trainer = with_mixup(model, x_dtype="float16")
    >>> trainer.compile(optimizer="adam", loss=kl_divergence_loss)
    >>> trainer.fit(train_dataset(store, "aud-mel", batch_size=32))
"""

from __future__ import annotations

import keras

__all__ = ["mixup", "MixupInputs", "with_mixup", "inner_model", "mix_batch"]


def mixup(x, y, lam, perm):
    """Mix each example with the one ``perm`` pairs it with (Zhang et al., 2018).

    ``x' = lam * x + (1 - lam) * x[perm]`` and ``y' = lam * y + (1 - lam) * y[perm]``,
    with one ``lam`` per example. Works on NumPy arrays and on tensors.

    Args:
        x: [shape=(batch, ...)] inputs.
        y: [shape=(batch, n_classes)] one-hot (or already soft) labels.
        lam: [shape=(batch,)] mixing weights in [0, 1].
        perm: [shape=(batch,)] a permutation of the batch.
    """
    return _mix(x, lam, perm), _mix(y, lam, perm)


def _mix(x, lam, perm):
    """``lam * x + (1 - lam) * x[perm]`` along the first axis, in ``x``'s (float) dtype."""
    from keras import ops

    x = ops.convert_to_tensor(x)
    lam = ops.cast(ops.reshape(ops.convert_to_tensor(lam), [-1] + [1] * (len(x.shape) - 1)), x.dtype)
    return lam * x + (1 - lam) * ops.take(x, ops.convert_to_tensor(perm), axis=0)


@keras.saving.register_keras_serializable(package="avsc")
class MixupInputs(keras.layers.Layer):
    """``[x, lam, perm]`` -> the mixed inputs ``lam * x + (1 - lam) * x[perm]``, as floats.

    ``x`` arrives as stored (float16 spectrograms or uint8 frames) and is cast to the
    layer's compute dtype first.
    """

    def call(self, inputs):
        x, lam, perm = inputs
        from keras import ops

        return _mix(ops.cast(x, self.compute_dtype), lam, perm)

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
    from keras import ops

    x, lam, perm = inputs
    return _mix(ops.cast(x, "float32"), lam, perm), y

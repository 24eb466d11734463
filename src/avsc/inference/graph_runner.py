"""Running an embedding model fast on many windows: one traced graph function per model."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["GraphRunner"]


def _is_not_retracing_warning(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


class GraphRunner:
    """An embedding model called through one ``tf.function`` (retraced only for new shapes),
    or, on Keras' other backends, through ``predict_on_batch`` (compiled once per shape).

    Each of the five runners traces its own function once; TensorFlow's detector of frequent
    retracing counts them together and warns about "5 out of the last 5 calls", a false alarm
    that the ``tensorflow`` logger is told to drop.
    """

    def __init__(self, model: Any):
        import keras

        self.model = model
        if keras.backend.backend() != "tensorflow":
            # JAX (and others): Keras' own compiled predict step (XLA), one per input shape.
            self._call = model.predict_on_batch
            return
        import tensorflow as tf

        tf_log = logging.getLogger("tensorflow")
        if _is_not_retracing_warning not in tf_log.filters:
            tf_log.addFilter(_is_not_retracing_warning)
        self._call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        return self._call(inputs)

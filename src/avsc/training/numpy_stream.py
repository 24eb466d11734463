"""The feature store as NumPy batches, without TensorFlow: for Keras' JAX (or PyTorch) backend.

The same batches as the tf.data streams of :mod:`avsc.training.streams` for a given seed
(both realise one :class:`avsc.training.sampling.EpochPlan`): the same examples in the same
order, the same mixup weights and partners, JPEG frames decoded to the same pixels (Pillow and
``tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")`` are both libjpeg-turbo's accurate IDCT).

How it reads: a shuffle group's part files are read by pyarrow in parallel threads (one
column each), the next two groups are read while the current one is batched, and a visual batch's
JPEG frames are decoded by a pool of threads (Pillow releases the GIL while it decodes). The
streams are :class:`keras.utils.PyDataset` objects, so ``model.fit`` and ``model.predict``
take them on every backend; a batch is built by ``stream[i]`` (random access: a batch needs
only the one or two groups it spans, kept in a small cache).

Which stream a run uses is the setting ``train.stream``: ``auto`` (tf.data when Keras runs on
TensorFlow, this stream otherwise, so a JAX run never imports TensorFlow), ``tfdata`` or
``numpy``; see :func:`stream_kind`.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import keras
import numpy as np

from avsc.errors import ConfigError
from avsc.features.store import FeatureStore
from avsc.features.store_format import decode_jpeg
from avsc.training.sampling import EpochPlan, epoch_plan

__all__ = ["FeatureBatches", "train_batches", "eval_batches", "stream_kind", "STREAMS"]

STREAMS = ("auto", "tfdata", "numpy")


def stream_kind(setting: str) -> str:
    """``tfdata`` or ``numpy``: the stream that the setting ``train.stream`` asks for.

    ``auto`` is tf.data when Keras' backend is TensorFlow and the NumPy stream on any other
    backend (JAX, PyTorch), which then needs no TensorFlow installed.

    Raises:
        ConfigError: an unknown setting, or ``tfdata`` without TensorFlow installed.
    """
    if setting not in STREAMS:
        raise ConfigError(f"train.stream must be one of {', '.join(STREAMS)}, got {setting!r}")
    if setting == "auto":
        return "tfdata" if keras.backend.backend() == "tensorflow" else "numpy"
    if setting == "tfdata":
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            raise ConfigError(
                "train.stream = tfdata needs TensorFlow (pip install 'avsc[cpu]'); use train.stream = numpy or auto"
            )
    return setting


def _default_threads() -> int:
    from avsc.runtime import usable_cpus

    return max(2, min(8, usable_cpus()))  # the pod's CPUs, not the node's


class FeatureBatches(keras.utils.PyDataset):
    """The batches of an :class:`~avsc.training.sampling.EpochPlan`, as NumPy arrays.

    Training (``plan.shuffle``): ``stream[i]`` is ``((x, lam, perm), y)`` as in
    :func:`avsc.training.streams.train_dataset`: ``x`` [shape=(batch, ...)] as stored
    (float16 spectrograms, uint8 frames), ``lam`` [shape=(batch,), float32], ``perm``
    [shape=(batch,), int32], ``y`` [shape=(batch, 10), float32] soft labels. Evaluation:
    ``stream[i]`` is ``x`` alone, in store order. The last batch may be shorter.

    Args:
        plan: what to read (:func:`avsc.training.sampling.epoch_plan`).
        batch_size: examples per batch.
        decode_threads: threads decoding JPEG frames (default: the usable CPUs,
            :func:`avsc.runtime.usable_cpus`, 2 to 8).
        workers: batches Keras builds ahead in threads (``keras.utils.PyDataset``'s own
            setting; 1: built when asked, the next group still read ahead).
    """

    READ_AHEAD = 2  # groups read while the current one is batched

    def __init__(self, plan: EpochPlan, batch_size: int, *, decode_threads: int | None = None, workers: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4)
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.plan = plan
        self.batch_size = int(batch_size)
        self._first = 0  # batches skipped (:meth:`skip`)
        self._starts = np.concatenate([[0], np.cumsum(plan.group_sizes)]).astype(np.int64)
        self._lock = threading.Lock()
        self._groups: dict[int, Future] = {}
        # Two groups read ahead, as the tf.data stream keeps two group reads in flight.
        self._readers = ThreadPoolExecutor(self.READ_AHEAD, thread_name_prefix="avsc-read")
        self._decoders = (
            ThreadPoolExecutor(decode_threads or _default_threads(), thread_name_prefix="avsc-jpeg")
            if plan.jpeg
            else None
        )

    def __len__(self) -> int:
        return self.plan.n_batches(self.batch_size) - self._first

    def skip(self, count: int) -> FeatureBatches:
        """Leave out the first ``count`` batches of the pass (as ``tf.data.Dataset.skip``): a
        training resumed within an epoch gets the batches it had not trained on, with the same
        mixup draws as in the uninterrupted pass. Returns this stream."""
        self._first = min(max(0, int(count)), self.plan.n_batches(self.batch_size))
        return self

    @property
    def num_batches(self) -> int:
        return len(self)

    def _group(self, number: int) -> Future:
        """The group's future, reading it (and the next ones, ahead) when not yet asked for."""
        with self._lock:
            for n in range(number, number + 1 + self.READ_AHEAD):
                if n < len(self.plan.groups) and n not in self._groups:
                    self._groups[n] = self._readers.submit(self.plan.read_group, n)
            # Keep the groups a batch in flight may still need; the rest is garbage.
            for n in [n for n in self._groups if n < number - 1]:
                del self._groups[n]
            return self._groups[number]

    def examples(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Examples ``[start, stop)`` of the pass and their int32 labels, as stored."""
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        xs, ys = [], []
        number = first
        while number < len(self.plan.groups) and self._starts[number] < stop:
            x, y = self._group(number).result()
            lo, hi = (
                max(start, self._starts[number]) - self._starts[number],
                min(stop, self._starts[number + 1]) - self._starts[number],
            )
            xs.append(x[lo:hi])
            ys.append(y[lo:hi])
            number += 1
        return (np.concatenate(xs) if len(xs) > 1 else xs[0]), (np.concatenate(ys) if len(ys) > 1 else ys[0])

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        index += self._first
        start = index * self.batch_size
        x, labels = self.examples(start, min(start + self.batch_size, self.plan.n_examples))
        if self._decoders is not None:  # the stored frames are JPEG (self.plan.jpeg)
            x = np.stack(list(self._decoders.map(decode_jpeg, x)))
        if not self.plan.shuffle:
            return x
        lam, perm, y = self.plan.batch_labels(index, labels)
        return (x, lam, perm), y

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def close(self) -> None:
        """Stop the reader and decoder threads (also done when the stream is collected)."""
        self._readers.shutdown(wait=False, cancel_futures=True)
        if self._decoders is not None:
            self._decoders.shutdown(wait=False, cancel_futures=True)

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


def train_batches(
    store: FeatureStore,
    backbone: str,
    *,
    batch_size: int,
    mixup_alpha: float = 0.4,
    frames_per_clip: int | None = None,
    seed: int = 0,
    shuffle_buffer: int = 2048,
    parallel_reads: int | None = None,
    decode_threads: int | None = None,
    workers: int = 1,
) -> FeatureBatches:
    """One epoch of training batches ``((x, lam, perm), y)``: the batches of
    :func:`avsc.training.streams.train_dataset` with the same arguments, as NumPy arrays.

    Raises:
        DataError: the store lacks the backbone's feature, or the train split is empty.
    """
    from avsc.training.streams import PARALLEL_READS, train_plan

    plan = train_plan(
        store,
        backbone,
        mixup_alpha=mixup_alpha,
        frames_per_clip=frames_per_clip,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        parallel_reads=parallel_reads or PARALLEL_READS,
    )
    return FeatureBatches(plan, batch_size, decode_threads=decode_threads, workers=workers)


def eval_batches(
    store: FeatureStore, backbone: str, split: str | None, *, batch_size: int, decode_threads: int | None = None
) -> FeatureBatches:
    """Unshuffled inputs of a split in store order (``split=None``: every clip), as
    :func:`avsc.training.streams.eval_dataset` gives them: audio one clip an example, visual
    every frame of every clip, clip by clip.

    Raises:
        DataError: the store lacks the backbone's feature.
    """
    plan = epoch_plan(store.parts(split), store.spec_for(backbone), train=False)
    return FeatureBatches(plan, batch_size, decode_threads=decode_threads)

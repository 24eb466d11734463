"""tf.data input pipelines over a feature store: one feature, streamed part by part.

A stream reads only the feature its backbone needs, one part file at a time (about 32 clips,
one contiguous column chunk: a large sequential read, local or ``s3://``), never the whole
store and never the other features. Memory is bounded by the parts in flight
(``parallel_reads``), the shuffle buffer and the prefetched batches, whatever the store's size.

- Audio backbones: one example per clip, ``[shape=(n_bins, frames, 2), float32]``; a part
  decodes to one float16 array without per-clip work.
- Visual backbones: one example per video FRAME, labelled with its clip's label;
  ``frames_per_clip`` random frames of each clip per epoch (``None``: all of them). The
  frames travel as JPEG bytes through the shuffle buffer and are decoded last, in parallel,
  by ``tf.io.decode_jpeg`` (libjpeg-turbo), only those chosen.

Training follows an :class:`avsc.training.sampling.EpochPlan`: the parts in a seeded order,
then the examples of each group of consecutive parts (about ``shuffle_buffer`` examples)
shuffled, and mixup draws made in NumPy, so the NumPy stream (:mod:`avsc.training.numpy_stream`,
for installs without TensorFlow) gives the same batches for a given seed. A training batch is
``((x, lam, perm), y)``: ``x`` as stored (float16 spectrograms, uint8 frames), the mixup
weights and partners, and the mixed soft labels; the cast to float32 and the mixing of ``x``
happen in the model (:mod:`avsc.training.mixup`), on the accelerator, not on the CPU cores
feeding it. Evaluation streams keep the store's order
(:meth:`avsc.features.store.FeatureStore.clips`): whole clips (audio) or every frame of every
clip in order (visual; a clip's prediction is the mean over its frames, see
:func:`clip_predictions`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np

from avsc.config import VISUAL_BACKBONES
from avsc.errors import AvscError, DataError
from avsc.features.part_reader import Part
from avsc.features.store import FeatureSpec, FeatureStore
from avsc.labels import LABEL_INDEX, LABELS
from avsc.training.mixup import mixup  # noqa: F401  (re-exported: the one mixup of Phase I)
from avsc.training.sampling import EpochPlan, epoch_plan, part_loader

PARALLEL_READS = 4  # part files read at the same time (each ~12 MB at the paper preset)

# Errors raised by the store reader inside tf.data, kept so that :func:`store_errors` can
# re-raise the error itself instead of TensorFlow's wrapping of it (a long traceback).
_RAISED: list[AvscError] = []
_RAISED_LOCK = threading.Lock()


def _recording(fn):
    """``fn`` as tf.data calls it through ``tf.numpy_function``: a store error it raises is kept
    for :func:`store_errors` (TensorFlow passes on only its text, in a long error)."""

    def run(*args):
        try:
            return fn(*args)
        except AvscError as exc:
            with _RAISED_LOCK:
                _RAISED.append(exc)
            raise

    return run


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Run Keras or tf.data code over a stream; a store error raised inside tf.data (a
    missing or corrupted part, an unreachable object store) comes out as itself, an
    :class:`~avsc.errors.AvscError` the CLI prints as one line, not as TensorFlow's error.
    On another Keras backend (the NumPy stream, no tf.data) the error is raised as itself
    already, and TensorFlow, which may not be installed, is not imported."""
    import sys

    with _RAISED_LOCK:
        _RAISED.clear()
    tf = sys.modules.get("tensorflow")  # only a stream built with TensorFlow can wrap errors
    wrapped = (tf.errors.OpError,) if tf is not None else ()
    try:
        yield
    except wrapped as exc:
        with _RAISED_LOCK:
            raised, _RAISED[:] = list(_RAISED), []
        if not raised:
            raise
        named = [error for error in raised if str(error) in str(exc)]
        raise (named or raised)[0] from None


def label_indices(store: FeatureStore, split: str) -> np.ndarray:
    """Integer labels (alphabetical :data:`avsc.labels.LABELS`) of one split, in store order.

    Raises:
        DataError: a label that is not a scene of :data:`avsc.labels.LABELS`.
    """
    rows = store.clips(split)
    _check_labels(store, rows["label"])
    return np.array([LABEL_INDEX[v] for v in rows["label"]], dtype=np.int32)


def _check_labels(store: FeatureStore, labels) -> None:
    unknown = sorted(set(labels) - set(LABEL_INDEX))
    if unknown:
        raise DataError(
            store.roots[0],
            f"unknown scene label(s) {', '.join(unknown)} in the index",
            f"labels must be among {', '.join(LABELS)}",
        )


def _parts_dataset(
    parts: list[Part],
    spec: FeatureSpec,
    order: np.ndarray,
    *,
    frames_per_clip: int | None,
    seed: int,
    parallel_reads: int,
):
    """Examples ``(x, label)`` of ``parts`` read in ``order``, ``parallel_reads`` parts at a time."""
    import tensorflow as tf

    load = part_loader(parts, spec, frames_per_clip, seed)
    jpeg = spec.encoding == "jpeg"
    if spec.name == "frames":
        x_type, x_shape = (tf.string, [None]) if jpeg else (tf.uint8, [None, *spec.shape[1:]])
    else:
        x_type, x_shape = tf.float16, [None, *spec.shape]

    def read(number):
        x, y = tf.numpy_function(_recording(load), [number], [x_type, tf.int32], stateful=False)
        x.set_shape(x_shape)
        y.set_shape([None])
        return x, y

    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    ds = ds.map(read, num_parallel_calls=max(1, parallel_reads), deterministic=True)
    return ds.unbatch()


def _within_cpu_limit(ds):
    """``ds`` with tf.data's thread pool (which AUTOTUNE sizes its parallel calls within) sized
    to the usable CPUs (:func:`avsc.runtime.usable_cpus`: the pod's quota), not the node's cores."""
    import tensorflow as tf

    from avsc.runtime import usable_cpus

    options = tf.data.Options()
    options.threading.private_threadpool_size = usable_cpus()
    return ds.with_options(options)


def _decode_frames(spec: FeatureSpec):
    import tensorflow as tf

    size = spec.shape[1:]

    def decode(x, label):
        if spec.encoding == "jpeg":
            x = tf.io.decode_jpeg(x, channels=3, dct_method="INTEGER_ACCURATE")
            x.set_shape(size)
        return x, label

    return decode


def train_dataset(
    store: FeatureStore,
    backbone: str,
    *,
    batch_size: int,
    mixup_alpha: float = 0.4,
    frames_per_clip: int | None = None,
    seed: int = 0,
    shuffle_buffer: int = 2048,
    parallel_reads: int = PARALLEL_READS,
):
    """One epoch of shuffled training batches ``((x, lam, perm), y_soft)`` from the train split.

    Pass a different ``seed`` each epoch (e.g. ``config.seed * 100003 + epoch``); the same
    seed always gives the same batches.

    Args:
        shuffle_buffer: examples shuffled together, a shuffle group (frames for a visual
            backbone; for an audio backbone at most 256 clips, ~94 MB of float16 at the paper
            preset); two groups are read while one is batched.
        parallel_reads: part files of a group read at the same time.

    Returns:
        tf.data.Dataset of ``((x, lam, perm), y)``: ``x`` [shape=(batch, ...)] as stored
        (float16 spectrograms, uint8 frames), ``lam`` [shape=(batch,), float32] mixing weights
        (all 1 without mixup), ``perm`` [shape=(batch,), int32] mixing partners, ``y``
        [shape=(batch, 10), float32] soft labels after mixup. Feed it to
        :func:`avsc.training.mixup.with_mixup` of the backbone, or mix it yourself with
        :func:`avsc.training.mixup.mix_batch`.

    Raises:
        DataError: the store lacks the backbone's feature, or the train split is empty.
    """
    import tensorflow as tf

    plan = train_plan(
        store,
        backbone,
        mixup_alpha=mixup_alpha,
        frames_per_clip=frames_per_clip,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        parallel_reads=parallel_reads,
    )
    spec = plan.spec
    jpeg = plan.jpeg
    if spec.name == "frames":
        x_type, x_shape = (tf.string, [None]) if jpeg else (tf.uint8, [None, *spec.shape[1:]])
    else:
        x_type, x_shape = tf.float16, [None, *spec.shape]

    def read(group):
        x, y = tf.numpy_function(_recording(plan.read_group), [group], [x_type, tf.int32], stateful=False)
        x.set_shape(x_shape)
        y.set_shape([None])
        return x, y

    # Two groups in flight: one being batched, the next being read (its parts in parallel).
    ds = tf.data.Dataset.range(len(plan.groups)).map(read, num_parallel_calls=2, deterministic=True)
    ds = ds.unbatch()
    if spec.name == "frames":
        ds = ds.map(_decode_frames(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(plan.n_batches(batch_size)))
    ds = ds.enumerate().map(_batch_map(plan), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _within_cpu_limit(ds).prefetch(tf.data.AUTOTUNE)


def train_plan(
    store: FeatureStore,
    backbone: str,
    *,
    mixup_alpha: float,
    frames_per_clip: int | None,
    seed: int,
    shuffle_buffer: int,
    parallel_reads: int,
) -> EpochPlan:
    """The :class:`avsc.training.sampling.EpochPlan` of one training epoch (both streams use it).

    Raises:
        DataError: the store lacks the backbone's feature, or the train split is empty.
    """
    spec = store.spec_for(backbone)
    parts = store.parts("train")
    if not parts:
        raise DataError(store.roots[0], "the train split is empty", "the store needs train clips")
    _check_labels(store, store.clips("train")["label"])
    visual = backbone in VISUAL_BACKBONES
    return epoch_plan(
        parts,
        spec,
        train=True,
        seed=seed,
        frames_per_clip=frames_per_clip if visual else None,
        shuffle_buffer=shuffle_buffer if visual else min(shuffle_buffer, 256),
        mixup_alpha=mixup_alpha,
        read_threads=parallel_reads,
    )


def _examples(parts: list[Part], spec: FeatureSpec, frames_per_clip: int | None) -> int:
    """Examples a stream over ``parts`` yields: clips, or frames for a visual backbone.

    Keras needs the count: with an unknown cardinality it runs one step too many an epoch.
    """
    clips = sum(len(part.rows) for part in parts)
    if spec.name != "frames":
        return clips
    per_clip = spec.shape[0] if frames_per_clip is None else min(frames_per_clip, spec.shape[0])
    return clips * per_clip


def _batch_map(plan: EpochPlan):
    """(step, (x, labels)) -> ((x, lam, perm), soft labels): the mixup draws of one batch
    (:meth:`avsc.training.sampling.EpochPlan.batch_labels`, NumPy, as the NumPy stream draws them).

    ``x`` is passed on untouched; only the labels are mixed here (``[batch, 10]``).
    """
    import tensorflow as tf

    def fn(step, batch):
        x, label = batch
        lam, perm, y = tf.numpy_function(
            plan.batch_labels, [step, label], [tf.float32, tf.int32, tf.float32], stateful=False
        )
        lam.set_shape([None])
        perm.set_shape([None])
        y.set_shape([None, len(LABELS)])
        return (x, lam, perm), y

    return fn


def eval_dataset(
    store: FeatureStore, backbone: str, split: str | None, *, batch_size: int, parallel_reads: int = PARALLEL_READS
):
    """Unshuffled inputs of a split in store order (``split=None``: every clip), as stored:
    float16 spectrograms or uint8 frames (a Keras model casts them to its input dtype).

    Audio: one element per clip. Visual: every frame of every clip, clip by clip, so
    predictions reshape to ``[n_clips, n_frames, ...]``. The clips are those of
    ``store.clips(split)``, in that order.

    Raises:
        DataError: the store lacks the backbone's feature.
    """
    import tensorflow as tf

    spec = store.spec_for(backbone)
    parts = store.parts(split)
    ds = _parts_dataset(parts, spec, np.arange(len(parts)), frames_per_clip=None, seed=0, parallel_reads=parallel_reads)
    if backbone in VISUAL_BACKBONES:
        ds = ds.map(_decode_frames(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = (
        ds.map(lambda x, label: x)
        .batch(batch_size)
        .apply(tf.data.experimental.assert_cardinality(-(-_examples(parts, spec, None) // batch_size)))
    )
    return _within_cpu_limit(ds).prefetch(tf.data.AUTOTUNE)


def train_stream(setting: str, store: FeatureStore, backbone: str, **kwargs):
    """One epoch of training batches from the stream ``setting`` (``train.stream``) selects:
    :func:`train_dataset` (tf.data) or :func:`avsc.training.numpy_stream.train_batches`
    (NumPy), the same batches either way. ``kwargs`` as for :func:`train_dataset`."""
    from avsc.training import numpy_stream

    if numpy_stream.stream_kind(setting) == "numpy":
        return numpy_stream.train_batches(store, backbone, **kwargs)
    return train_dataset(store, backbone, **kwargs)


def eval_stream(setting: str, store: FeatureStore, backbone: str, split: str | None, *, batch_size: int):
    """:func:`eval_dataset` or its NumPy twin :func:`avsc.training.numpy_stream.eval_batches`,
    as ``setting`` (``train.stream``) selects."""
    from avsc.training import numpy_stream

    if numpy_stream.stream_kind(setting) == "numpy":
        return numpy_stream.eval_batches(store, backbone, split, batch_size=batch_size)
    return eval_dataset(store, backbone, split, batch_size=batch_size)


def clip_predictions(outputs: np.ndarray, n_clips: int) -> np.ndarray:
    """Per-clip outputs from per-frame (or per-clip) outputs: the mean over a clip's frames."""
    outputs = np.asarray(outputs)
    if n_clips == 0:
        return outputs.reshape(0, *outputs.shape[1:])
    return outputs.reshape(n_clips, -1, *outputs.shape[1:]).mean(axis=1)

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

Training shuffles twice: the order of the parts (seeded per epoch), then the examples in a
buffer spanning several parts. A training batch is ``((x, lam, perm), y)``: ``x`` as stored
(float16 spectrograms, uint8 frames), the mixup weights and partners, and the mixed soft
labels; the cast to float32 and the mixing of ``x`` happen in the model
(:mod:`avsc.training.mixup`), on the accelerator, not on the CPU cores feeding it. Evaluation streams keep the store's order
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
from avsc.features.store import FeatureSpec, FeatureStore, Part, read_part_feature
from avsc.labels import LABEL_INDEX, LABELS
from avsc.training.mixup import mixup  # noqa: F401  (re-exported: the one mixup of Phase I)

PARALLEL_READS = 4  # part files read at the same time (each ~12 MB at the paper preset)

# Errors raised by the store reader inside tf.data, kept so that :func:`store_errors` can
# re-raise the error itself instead of TensorFlow's wrapping of it (a long traceback).
_RAISED: list[AvscError] = []
_RAISED_LOCK = threading.Lock()


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Run Keras or tf.data code over a stream; a store error raised inside tf.data (a
    missing or corrupted part, an unreachable object store) comes out as itself, an
    :class:`~avsc.errors.AvscError` the CLI prints as one line, not as TensorFlow's error."""
    import tensorflow as tf

    with _RAISED_LOCK:
        _RAISED.clear()
    try:
        yield
    except tf.errors.OpError as exc:
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
        raise DataError(store.roots[0], f"unknown scene label(s) {', '.join(unknown)} in the index",
                        f"labels must be among {', '.join(LABELS)}")


def _part_loader(parts: list[Part], spec: FeatureSpec, frames_per_clip: int | None, seed: int):
    """A NumPy function (part number) -> (examples, int32 labels) of that part.

    Audio: ``[n_clips, *shape]`` float16. Visual: the chosen frames of every clip, as JPEG
    strings ``[n_frames]`` (or uint8 pixels ``[n_frames, H, W, 3]`` for a raw store).
    """
    labels = [np.array([LABEL_INDEX[v] for v in part.labels], np.int32) for part in parts]
    visual = spec.name == "frames"

    def load(number: np.ndarray):
        try:
            return read(int(number))
        except AvscError as exc:
            with _RAISED_LOCK:
                _RAISED.append(exc)
            raise

    def read(number: int):
        part = parts[number]
        values = read_part_feature(part, spec, decode=False)
        if not visual:
            return np.ascontiguousarray(values), labels[number]
        n_frames = spec.shape[0]
        rng = np.random.default_rng([seed, number])
        chosen = [np.arange(n_frames) if frames_per_clip is None or frames_per_clip >= n_frames
                  else np.sort(rng.choice(n_frames, frames_per_clip, replace=False))
                  for _ in range(len(part.rows))]
        clip_labels = np.concatenate([np.full(len(c), y, np.int32) for c, y in zip(chosen, labels[number])])
        if spec.encoding == "jpeg":
            jpegs = [clip[i] for clip, picks in zip(values, chosen) for i in picks]
            return np.array(jpegs, dtype=object), clip_labels
        return np.concatenate([clip[picks] for clip, picks in zip(values, chosen)]), clip_labels
    return load


def _parts_dataset(parts: list[Part], spec: FeatureSpec, order: np.ndarray, *,
                   frames_per_clip: int | None, seed: int, parallel_reads: int):
    """Examples ``(x, label)`` of ``parts`` read in ``order``, ``parallel_reads`` parts at a time."""
    import tensorflow as tf

    load = _part_loader(parts, spec, frames_per_clip, seed)
    jpeg = spec.encoding == "jpeg"
    if spec.name == "frames":
        x_type, x_shape = (tf.string, [None]) if jpeg else (tf.uint8, [None, *spec.shape[1:]])
    else:
        x_type, x_shape = tf.float16, [None, *spec.shape]

    def read(number):
        x, y = tf.numpy_function(load, [number], [x_type, tf.int32], stateful=False)
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
        shuffle_buffer: examples shuffled together (frames for a visual backbone; for an
            audio backbone at most 256 clips, ~94 MB of float16 at the paper preset).
        parallel_reads: part files read at the same time.

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

    spec = store.spec_for(backbone)
    parts = store.parts("train")
    if not parts:
        raise DataError(store.roots[0], "the train split is empty", "the store needs train clips")
    _check_labels(store, store.clips("train")["label"])
    visual = backbone in VISUAL_BACKBONES
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(parts))
    ds = _parts_dataset(parts, spec, order, frames_per_clip=frames_per_clip if visual else None,
                        seed=seed, parallel_reads=parallel_reads)
    buffer = shuffle_buffer if visual else min(shuffle_buffer, 256)
    ds = ds.shuffle(buffer, seed=seed + 1, reshuffle_each_iteration=False)
    if visual:
        ds = ds.map(_decode_frames(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(
        -(-_examples(parts, spec, frames_per_clip if visual else None) // batch_size)))
    ds = ds.enumerate().map(_batch_map(mixup_alpha, seed), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    return _within_cpu_limit(ds).prefetch(tf.data.AUTOTUNE)


def _examples(parts: list[Part], spec: FeatureSpec, frames_per_clip: int | None) -> int:
    """Examples a stream over ``parts`` yields: clips, or frames for a visual backbone.

    Keras needs the count: with an unknown cardinality it runs one step too many an epoch.
    """
    clips = sum(len(part.rows) for part in parts)
    if spec.name != "frames":
        return clips
    per_clip = spec.shape[0] if frames_per_clip is None else min(frames_per_clip, spec.shape[0])
    return clips * per_clip


def _batch_map(alpha: float, seed: int):
    """(step, (x, labels)) -> ((x, lam, perm), soft labels): the mixup draws of one batch.

    ``x`` is passed on untouched; only the labels are mixed here (``[batch, 10]``).
    """
    import tensorflow as tf

    def fn(step, batch):
        x, label = batch
        y = tf.one_hot(label, len(LABELS), dtype=tf.float32)
        n = tf.shape(x)[0]
        if not alpha or alpha <= 0:
            return (x, tf.ones([n], tf.float32), tf.range(n, dtype=tf.int32)), y
        s = tf.stack([tf.cast(seed, tf.int64), step])
        # Beta(alpha, alpha) as g1 / (g1 + g2) with g ~ Gamma(alpha).
        g1 = tf.random.stateless_gamma([n], seed=s, alpha=alpha)
        g2 = tf.random.stateless_gamma([n], seed=s + [0, 7919], alpha=alpha)
        lam = g1 / tf.maximum(g1 + g2, 1e-12)
        perm = tf.cast(tf.argsort(tf.random.stateless_uniform([n], seed=s + [0, 15485863])), tf.int32)
        y = lam[:, None] * y + (1.0 - lam[:, None]) * tf.gather(y, perm)
        return (x, lam, perm), y
    return fn


def eval_dataset(store: FeatureStore, backbone: str, split: str | None, *, batch_size: int,
                 parallel_reads: int = PARALLEL_READS):
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
    ds = _parts_dataset(parts, spec, np.arange(len(parts)), frames_per_clip=None, seed=0,
                        parallel_reads=parallel_reads)
    if backbone in VISUAL_BACKBONES:
        ds = ds.map(_decode_frames(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda x, label: x).batch(batch_size).apply(
        tf.data.experimental.assert_cardinality(-(-_examples(parts, spec, None) // batch_size)))
    return _within_cpu_limit(ds).prefetch(tf.data.AUTOTUNE)


def clip_predictions(outputs: np.ndarray, n_clips: int) -> np.ndarray:
    """Per-clip outputs from per-frame (or per-clip) outputs: the mean over a clip's frames."""
    outputs = np.asarray(outputs)
    if n_clips == 0:
        return outputs.reshape(0, *outputs.shape[1:])
    return outputs.reshape(n_clips, -1, *outputs.shape[1:]).mean(axis=1)

"""tf.data input pipelines over a feature store: streamed, parallel, deterministic for a seed.

A training stream never holds the store in memory: the index (paths, labels) is sliced
into a dataset, each element loads the one array it needs from its clip file in a
parallel ``tf.numpy_function``, and the stream is shuffled, batched, mixed up and
prefetched.

- Audio backbones: one example per clip, ``[shape=(n_bins, frames, 2), float32]``.
- Visual backbones: one example per video FRAME, labelled with its clip's label;
  ``frames_per_clip`` random frames of each clip per epoch (``None``: all of them).

Evaluation streams keep the store's order: whole clips (audio) or every frame of every
clip in order (visual; a clip's prediction is the mean over its frames, see
:func:`clip_predictions`).
"""

from __future__ import annotations

import numpy as np

from avsc.config import BACKBONE_FEATURE, VISUAL_BACKBONES
from avsc.errors import DataError
from avsc.features.store import FeatureStore, load_clip
from avsc.labels import LABEL_INDEX, LABELS
from avsc.training.mixup import mixup


def label_indices(store: FeatureStore, split: str) -> tuple[list[str], np.ndarray]:
    """Paths and integer labels (alphabetical :data:`avsc.labels.LABELS`) of one split."""
    rows = store.clips(split)
    unknown = sorted(set(rows["label"]) - set(LABEL_INDEX))
    if unknown:
        raise DataError(store.roots[0], f"unknown scene label(s) {', '.join(unknown)} in the index",
                        f"labels must be among {', '.join(LABELS)}")
    return list(rows["path"]), np.array([LABEL_INDEX[v] for v in rows["label"]], dtype=np.int32)


def _element_shape(store: FeatureStore, backbone: str) -> tuple[int, ...]:
    feature = BACKBONE_FEATURE[backbone]
    if feature not in store.shapes:
        raise DataError(store.roots[0], f"feature store has no {feature!r} feature, needed by {backbone}",
                        "re-run preprocess with that feature")
    return tuple(store.shapes[feature])


def _loader(feature: str, frames_per_clip: int | None):
    """A NumPy function (path, seed) -> the array a clip contributes, float32."""
    def load(path: bytes, seed: np.ndarray) -> np.ndarray:
        array = load_clip(path.decode(), [feature])[feature]
        if frames_per_clip is not None and feature == "frames" and frames_per_clip < len(array):
            chosen = np.random.default_rng(seed.tolist()).choice(len(array), frames_per_clip, replace=False)
            array = array[np.sort(chosen)]
        return array.astype(np.float32)
    return load


def _load_map(feature: str, shape: tuple[int, ...], frames_per_clip: int | None):
    import tensorflow as tf

    load = _loader(feature, frames_per_clip)
    if feature == "frames" and frames_per_clip is not None:
        shape = (min(frames_per_clip, shape[0]),) + shape[1:]

    def fn(path, label, seed):
        array = tf.numpy_function(load, [path, seed], tf.float32, stateful=False)
        array.set_shape(shape)
        return array, label
    return fn


def train_dataset(
    store: FeatureStore,
    backbone: str,
    *,
    batch_size: int,
    mixup_alpha: float = 0.4,
    frames_per_clip: int | None = None,
    seed: int = 0,
    shuffle_buffer: int = 2048,
):
    """One epoch of shuffled, mixed-up training batches ``(x, y_soft)``.

    Pass a different ``seed`` each epoch (e.g. ``config.seed * 100003 + epoch``); the same
    seed always gives the same batches.

    Returns:
        tf.data.Dataset of ``x`` [shape=(batch, ...), float32] and ``y`` [shape=(batch, 10),
        float32] (soft labels after mixup).
    """
    import tensorflow as tf

    shape = _element_shape(store, backbone)
    feature = BACKBONE_FEATURE[backbone]
    paths, labels = label_indices(store, "train")
    if not paths:
        raise DataError(store.roots[0], "the train split is empty", "the store needs train clips")
    visual = backbone in VISUAL_BACKBONES
    n = len(paths)
    seeds = np.stack([np.full(n, seed, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, seeds))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=False)
    ds = ds.map(_load_map(feature, shape, frames_per_clip if visual else None),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if visual:  # each frame becomes an example carrying its clip's label
        ds = ds.flat_map(lambda frames, label: tf.data.Dataset.from_tensor_slices(
            (frames, tf.fill([tf.shape(frames)[0]], label))))
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=False)
    ds = ds.map(lambda x, label: (x, tf.one_hot(label, len(LABELS), dtype=tf.float32)))
    ds = ds.batch(batch_size)
    if mixup_alpha and mixup_alpha > 0:
        ds = ds.enumerate().map(_mixup_map(mixup_alpha, seed), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _mixup_map(alpha: float, seed: int):
    import tensorflow as tf

    def fn(step, batch):
        x, y = batch
        n = tf.shape(x)[0]
        s = tf.stack([tf.cast(seed, tf.int64), step])
        # Beta(alpha, alpha) as g1 / (g1 + g2) with g ~ Gamma(alpha).
        g1 = tf.random.stateless_gamma([n], seed=s, alpha=alpha)
        g2 = tf.random.stateless_gamma([n], seed=s + [0, 7919], alpha=alpha)
        lam = g1 / tf.maximum(g1 + g2, 1e-12)
        perm = tf.argsort(tf.random.stateless_uniform([n], seed=s + [0, 15485863]))
        return mixup(x, y, lam, perm)
    return fn


def eval_dataset(store: FeatureStore, backbone: str, split: str | None, *, batch_size: int):
    """Unshuffled inputs of a split in index order (``split=None``: every clip).

    Audio: one element per clip. Visual: every frame of every clip, clip by clip, so
    predictions reshape to ``[n_clips, n_frames, ...]``.
    """
    import tensorflow as tf

    shape = _element_shape(store, backbone)
    feature = BACKBONE_FEATURE[backbone]
    paths, labels = label_indices(store, split) if split else (
        list(store.clips()["path"]), np.zeros(len(store.clips()), np.int32))
    seeds = np.zeros((len(paths), 2), np.int64)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, seeds))
    ds = ds.map(_load_map(feature, shape, None), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda x, label: x)
    if backbone in VISUAL_BACKBONES:
        ds = ds.unbatch()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def clip_predictions(outputs: np.ndarray, n_clips: int) -> np.ndarray:
    """Per-clip outputs from per-frame (or per-clip) outputs: the mean over a clip's frames."""
    outputs = np.asarray(outputs)
    if n_clips == 0:
        return outputs.reshape(0, *outputs.shape[1:])
    return outputs.reshape(n_clips, -1, *outputs.shape[1:]).mean(axis=1)

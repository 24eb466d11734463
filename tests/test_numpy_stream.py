"""The NumPy input stream: the same batches as the tf.data stream, without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from features_factory import make_feature_store

from avsc.errors import ConfigError
from avsc.features.store import FeatureStore
from avsc.training import numpy_stream
from avsc.training.sampling import epoch_plan, mixup_draws


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    # 8 clips a part: 60 train clips in 8 parts, so shuffle groups span several parts.
    return make_feature_store(
        tmp_path_factory.mktemp("features"), per_class={"train": 6, "val": 2}, n_frames=3, features=("mel", "frames")
    )


def _tf_batches(dataset):
    return [tuple(np.asarray(t) for t in (*inputs, y)) for inputs, y in dataset]


def _np_batches(stream):
    return [(x, lam, perm, y) for (x, lam, perm), y in stream]


def _assert_same(tf_batches, np_batches):
    assert len(tf_batches) == len(np_batches)
    for a, b in zip(tf_batches, np_batches, strict=True):
        for ta, tb in zip(a, b, strict=True):
            assert ta.dtype == tb.dtype and ta.shape == tb.shape
            np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize(
    "backbone, kwargs",
    [
        ("aud-mel", {"batch_size": 16, "shuffle_buffer": 20}),  # groups of 3 parts, batches across them
        ("vis-inc", {"batch_size": 7, "frames_per_clip": 2, "shuffle_buffer": 40}),
    ],
)
def test_numpy_stream_gives_the_tf_data_batches(store_dir, backbone, kwargs):
    from avsc.training.streams import train_dataset

    store = FeatureStore.open(store_dir)
    tf_batches = _tf_batches(train_dataset(store, backbone, seed=3, **kwargs))
    np_batches = _np_batches(numpy_stream.train_batches(store, backbone, seed=3, **kwargs))
    _assert_same(tf_batches, np_batches)
    n = 60 * kwargs.get("frames_per_clip", 1)
    assert sum(len(b[0]) for b in np_batches) == n
    labels = np.concatenate([b[3] for b in np_batches])
    assert (labels.max(axis=1) < 0.999).any()  # mixed
    # Another seed: another order.
    other = _np_batches(numpy_stream.train_batches(store, backbone, seed=4, **kwargs))
    assert not np.array_equal(other[0][0], np_batches[0][0])


def test_numpy_eval_stream_keeps_store_order(store_dir):
    from avsc.training.streams import eval_dataset

    store = FeatureStore.open(store_dir)
    for backbone in ("aud-mel", "vis-inc"):
        tf_x = np.concatenate([np.asarray(x) for x in eval_dataset(store, backbone, "val", batch_size=5)])
        np_x = np.concatenate(list(numpy_stream.eval_batches(store, backbone, "val", batch_size=5)))
        assert np_x.dtype == tf_x.dtype
        np.testing.assert_array_equal(np_x, tf_x)
    rows = store.clips("val")
    first = store.read_clip(rows["clip_id"].iloc[0], "mel")
    np.testing.assert_array_equal(numpy_stream.eval_batches(store, "aud-mel", "val", batch_size=4)[0][0], first)


def test_batches_are_random_access_and_groups_bounded(store_dir):
    store = FeatureStore.open(store_dir)
    stream = numpy_stream.train_batches(store, "aud-mel", batch_size=16, seed=1, shuffle_buffer=20)
    in_order = [stream[i][1] for i in range(len(stream))]
    np.testing.assert_array_equal(stream[1][1], in_order[1])  # asked again, out of order
    assert len(stream._groups) <= 2 + stream.READ_AHEAD  # the groups around the last batch, and those read ahead
    with pytest.raises(IndexError):
        stream[len(stream)]


def test_group_plan_covers_every_example_once(store_dir):
    store = FeatureStore.open(store_dir)
    spec = store.spec_for("aud-mel")
    parts = store.parts("train")
    plan = epoch_plan(parts, spec, train=True, seed=2, shuffle_buffer=20)
    assert sorted(n for g in plan.groups for n in g) == list(range(len(parts)))
    assert all(len(g) == 3 for g in plan.groups[:-1])
    assert plan.n_examples == 60
    labels = np.concatenate([plan.read_group(i)[1] for i in range(len(plan.groups))])
    assert sorted(labels) == sorted(np.repeat(np.arange(10), 6))


def test_mixup_draws_are_beta_distributed_and_seeded():
    lam, perm = mixup_draws(0.4, seed=1, step=0, n=20000)
    assert lam.dtype == np.float32 and perm.dtype == np.int32
    assert sorted(perm) == list(range(20000))
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(0.25 / (2 * 0.4 + 1), rel=0.05)  # Beta(a, a): 1 / (4 (2a + 1))
    np.testing.assert_array_equal(mixup_draws(0.4, 1, 0, 8)[0], mixup_draws(0.4, 1, 0, 8)[0])
    assert not np.array_equal(mixup_draws(0.4, 1, 1, 8)[0], mixup_draws(0.4, 1, 0, 8)[0])
    np.testing.assert_array_equal(mixup_draws(0.0, 1, 0, 4)[0], np.ones(4, np.float32))


def test_stream_setting_is_checked():
    assert numpy_stream.stream_kind("numpy") == "numpy"
    assert numpy_stream.stream_kind("auto") in {"numpy", "tfdata"}
    with pytest.raises(ConfigError, match=r"train\.stream must be one of"):
        numpy_stream.stream_kind("grain")


def test_a_resumed_epoch_skips_the_batches_tf_data_skips(store_dir):
    """A training resumed within an epoch skips the batches it had trained on: the NumPy
    stream's rest of the pass equals tf.data's ``skip``, mixup draws included."""
    from avsc.training.streams import train_dataset

    store = FeatureStore.open(store_dir)
    kwargs = {"batch_size": 16, "shuffle_buffer": 20, "seed": 5}
    rest = _np_batches(numpy_stream.train_batches(store, "aud-mel", **kwargs).skip(2))
    _assert_same(_tf_batches(train_dataset(store, "aud-mel", **kwargs).skip(2)), rest)
    assert len(rest) == len(numpy_stream.train_batches(store, "aud-mel", **kwargs)) - 2

"""Feature store layout, atomic writes and opening several shards together."""

from __future__ import annotations

import numpy as np
import pytest

from avsc.config import FeatureConfig, load_config
from avsc.errors import DataError
from avsc.features.store import (
    FeatureStore,
    clip_file,
    init_store,
    load_clip,
    write_clip,
    write_index,
)
from avsc.storage.files import atomic_path

SHAPES = {"mel": [8, 5, 2], "frames": [2, 4, 4, 3]}


def _clip(rng):
    return {"mel": rng.normal(size=(8, 5, 2)), "frames": rng.integers(0, 255, (2, 4, 4, 3))}


def test_clips_round_trip_with_store_dtypes(tmp_path, rng):
    init_store(tmp_path, FeatureConfig(), SHAPES)
    arrays = _clip(rng)
    path = write_clip(tmp_path, "bus-lyon-1-1", arrays)
    assert path == clip_file(tmp_path, "bus-lyon-1-1")
    loaded = load_clip(path, ["mel", "frames"])
    assert loaded["mel"].dtype == np.float16 and loaded["frames"].dtype == np.uint8
    np.testing.assert_allclose(loaded["mel"], arrays["mel"], atol=1e-2)
    np.testing.assert_array_equal(loaded["frames"], arrays["frames"])


def test_shards_open_together_and_index_every_clip(tmp_path, rng):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, shard, ids in ((a, (0, 2), ["c1", "c3"]), (b, (1, 2), ["c2"])):
        init_store(root, FeatureConfig(), SHAPES)
        rows = []
        for clip_id in ids:
            write_clip(root, clip_id, _clip(rng))
            rows.append({"clip_id": clip_id, "label": "bus", "split": "train", "file": f"clips/{clip_id}.npz"})
        write_index(root, shard, rows)
    store = FeatureStore.open([a, b])
    assert list(store.index["clip_id"]) == ["c1", "c2", "c3"]
    assert store.shapes == {"mel": (8, 5, 2), "frames": (2, 4, 4, 3)}
    assert len(store.clips("train")) == 3 and len(store.clips("test")) == 0
    assert all(p.endswith(".npz") for p in store.index["path"])


def test_stores_with_different_configs_are_refused(tmp_path):
    init_store(tmp_path / "a", FeatureConfig(), SHAPES)
    write_index(tmp_path / "a", (0, 1), [{"clip_id": "x", "label": "bus", "split": "train", "file": "clips/x.npz"}])
    quick = load_config(preset="quick").features
    with pytest.raises(DataError, match="made with config"):
        init_store(tmp_path / "a", quick, SHAPES)
    init_store(tmp_path / "b", quick, SHAPES)
    write_index(tmp_path / "b", (0, 1), [{"clip_id": "y", "label": "bus", "split": "train", "file": "clips/y.npz"}])
    with pytest.raises(DataError, match="differs"):
        FeatureStore.open([tmp_path / "a", tmp_path / "b"])


def test_not_a_store_and_unreadable_clip_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not a feature store"):
        FeatureStore.open(tmp_path)
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="broken.npz"):
        load_clip(bad, ["mel"])


def test_atomic_path_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"

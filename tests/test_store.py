"""Feature store: layout, encodings, reading one feature, opening shards, old formats, atomic writes."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from avsc.config import FeatureConfig, FrameConfig, load_config
from avsc.errors import ConfigError, DataError
from avsc.features.part_reader import read_part_feature
from avsc.features.store import FeatureStore, required_feature
from avsc.features.store_format import decode_jpeg, encode_jpeg
from avsc.features.store_writer import (
    StoreWriter,
    arrays_lineage,
    convert_store,
    init_store,
    scan_parts,
    write_index,
)
from avsc.storage.files import atomic_path

SHAPES = {"mel": [8, 5, 2], "frames": [2, 16, 16, 3]}


def _clip(rng):
    return {"mel": rng.normal(size=(8, 5, 2)), "frames": rng.integers(0, 255, (2, 16, 16, 3))}


def _smooth_frames(rng, n=2, size=16):
    """Pictures a JPEG keeps well: smooth gradients plus mild noise (not white noise)."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x * 200 + 20, y * 180 + 30, (x + y) * 100 + 10], axis=-1)
    return np.clip(base[None] + rng.normal(0, 3, (n, size, size, 3)), 0, 255).astype(np.uint8)


def test_parts_round_trip_with_store_dtypes(tmp_path, rng):
    config = FeatureConfig(frames=FrameConfig(encoding="raw"))
    arrays = {cid: _clip(rng) for cid in ("bus-lyon-1-1", "bus-lyon-1-2", "park-lyon-2-1")}
    with StoreWriter(tmp_path, config, SHAPES, part_clips=2) as writer:
        for clip_id, clip in arrays.items():
            writer.add(clip_id, clip_id.split("-")[0], "train", clip)
    store = FeatureStore.open(tmp_path)
    assert list(store.clips("train")["clip_id"]) == list(arrays)
    parts = store.parts("train")
    assert [len(p.rows) for p in parts] == [2, 1]
    mel = np.concatenate([read_part_feature(p.location, store.specs["mel"], p.rows) for p in parts])
    frames = np.concatenate([read_part_feature(p.location, store.specs["frames"], p.rows) for p in parts])
    assert mel.dtype == np.float16 and frames.dtype == np.uint8
    np.testing.assert_allclose(mel, np.stack([a["mel"] for a in arrays.values()]), atol=1e-2)
    np.testing.assert_array_equal(frames, np.stack([a["frames"] for a in arrays.values()]))


class _CountingFile(io.FileIO):
    """A file that counts the bytes read through it."""

    bytes_read = 0

    def read(self, size=-1):  # what pyarrow.PythonFile calls
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_a_reader_of_one_feature_reads_only_its_bytes(tmp_path, rng, monkeypatch):
    import pyarrow as pa

    from avsc.storage import locations

    shapes = {"mel": [64, 100, 2], "cqt": [64, 100, 2], "frames": [2, 16, 16, 3]}
    with StoreWriter(tmp_path, FeatureConfig(), shapes, part_clips=8) as writer:
        for k in range(8):
            writer.add(
                f"bus-a-1-{k}",
                "bus",
                "train",
                {
                    "mel": rng.normal(size=(64, 100, 2)),
                    "cqt": rng.normal(size=(64, 100, 2)),
                    "frames": _smooth_frames(rng),
                },
            )
    store = FeatureStore.open(tmp_path)
    part = store.parts("train")[0].location
    meta = pq.ParquetFile(part).metadata
    assert meta.num_row_groups == 1  # each feature is one contiguous column chunk
    sizes = {
        meta.row_group(0).column(i).path_in_schema.split(".")[0]: meta.row_group(0).column(i).total_compressed_size
        for i in range(meta.num_columns)
    }
    opened = []
    monkeypatch.setattr(
        locations, "open_input", lambda location: opened.append(_CountingFile(location)) or pa.PythonFile(opened[-1])
    )
    mel = read_part_feature(part, store.specs["mel"])
    assert mel.shape == (8, 64, 100, 2)
    # the mel chunk and the file's tail (Parquet reads the last 64 KiB to find its footer)
    assert opened[0].bytes_read <= sizes["mel"] + 65536 + meta.serialized_size
    assert sizes["mel"] <= opened[0].bytes_read < sizes["mel"] + sizes["cqt"]


def test_jpeg_frames_are_close_and_decode_like_tensorflow(tmp_path, rng):
    frames = _smooth_frames(rng, size=32)
    data = encode_jpeg(frames[0], 90)
    decoded = decode_jpeg(data)
    psnr = 10 * np.log10(255.0**2 / np.mean((decoded.astype(float) - frames[0]) ** 2))
    assert psnr > 35 and len(data) < frames[0].nbytes
    tf = pytest.importorskip("tensorflow")
    np.testing.assert_array_equal(tf.io.decode_jpeg(data, dct_method="INTEGER_ACCURATE").numpy(), decoded)


def test_files_are_readable_without_avsc(tmp_path, rng):
    import duckdb
    import pandas as pd

    with StoreWriter(tmp_path, FeatureConfig(), SHAPES) as writer:
        for k in range(3):
            writer.add(f"bus-a-1-{k}", "bus", "val" if k else "train", _clip(rng))
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["features"]["mel"] == {"shape": [8, 5, 2], "dtype": "<f2", "encoding": "raw"}
    assert meta["features"]["frames"]["encoding"] == "jpeg"
    frame = pd.read_parquet(tmp_path / "parts" / "val", columns=["clip_id", "mel"])
    mel = np.frombuffer(frame["mel"].iloc[0], meta["features"]["mel"]["dtype"]).reshape(8, 5, 2)
    assert mel.shape == (8, 5, 2) and len(frame) == 2
    counts = duckdb.sql(
        f"select split, count(*) from '{tmp_path}/parts/*/*.parquet' group by split order by split"
    ).fetchall()
    assert counts == [("train", 1), ("val", 2)]
    field = pq.read_schema(next((tmp_path / "parts" / "train").iterdir())).field("mel")
    assert json.loads(field.metadata[b"avsc.spec"])["shape"] == [8, 5, 2]


def test_shards_open_together_and_index_every_clip(tmp_path, rng):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, shard, ids in ((a, (0, 2), ["c1", "c3"]), (b, (1, 2), ["c2"])):
        with StoreWriter(root, FeatureConfig(), SHAPES, shard=shard) as writer:
            for clip_id in ids:
                writer.add(clip_id, "bus", "train", _clip(rng))
    store = FeatureStore.open([a, b])
    assert sorted(store.index["clip_id"]) == ["c1", "c2", "c3"]
    assert store.shapes == {"mel": (8, 5, 2), "frames": (2, 16, 16, 3)}
    assert len(store.clips("train")) == 3 and len(store.clips("test")) == 0
    assert {row["clip_id"] for row in scan_parts(a)} == {"c1", "c3"}


def test_the_one_feature_check_names_store_and_backbone(tmp_path, rng):
    with StoreWriter(tmp_path, FeatureConfig(), {"mel": [8, 5, 2]}) as writer:
        writer.add("c1", "bus", "train", {"mel": rng.normal(size=(8, 5, 2))})
    store = FeatureStore.open(tmp_path)
    assert store.spec_for("aud-mel").name == "mel"
    with pytest.raises(DataError, match="no 'cqt' feature, needed by aud-cqt"):
        store.spec_for("aud-cqt")
    with pytest.raises(DataError, match="unknown backbone"):
        required_feature("aud-xyz", store.specs)


def test_stores_with_different_configs_are_refused(tmp_path):
    init_store(tmp_path / "a", FeatureConfig(), SHAPES)
    write_index(
        tmp_path / "a",
        (0, 1),
        [{"clip_id": "x", "label": "bus", "split": "train", "part": "parts/train/p.parquet", "row": 0, "source": "s"}],
        lineage=arrays_lineage("d"),
        features=[],
    )
    quick = load_config(preset="quick").features
    with pytest.raises(DataError, match="made with config"):
        init_store(tmp_path / "a", quick, SHAPES)
    init_store(tmp_path / "b", quick, SHAPES)
    write_index(
        tmp_path / "b",
        (0, 1),
        [{"clip_id": "y", "label": "bus", "split": "train", "part": "parts/train/q.parquet", "row": 0, "source": "s"}],
        lineage=arrays_lineage("d"),
        features=[],
    )
    with pytest.raises(DataError, match="differs"):
        FeatureStore.open([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ConfigError, match="jpeg_quality"):
        init_store(tmp_path / "c", FeatureConfig(frames=FrameConfig(jpeg_quality=0)), SHAPES)


def test_not_a_store_and_unreadable_part_name_the_file(tmp_path, rng):
    with pytest.raises(DataError, match="not a feature store"):
        FeatureStore.open(tmp_path)
    with StoreWriter(tmp_path / "s", FeatureConfig(), SHAPES) as writer:
        writer.add("c1", "bus", "train", _clip(rng))
    store = FeatureStore.open(tmp_path / "s")
    part = store.parts("train")[0].location
    with open(part, "wb") as handle:
        handle.write(b"not parquet")
    with pytest.raises(DataError, match="unreadable feature part"):
        read_part_feature(part, store.specs["mel"])


def _old_store(root, rng):
    """A store as avsc-features/1 wrote it: store.json, clips/<id>.npz, index/shard-*.parquet."""
    import pyarrow as pa

    from avsc.config import config_hash, to_dict

    config = FeatureConfig()
    (root / "clips").mkdir(parents=True)
    (root / "index").mkdir()
    recorded = to_dict(config)
    recorded["frames"] = {"fps": 2.0, "size": 224}
    (root / "store.json").write_text(
        json.dumps(
            {
                "format": "avsc-features/1",
                "config": recorded,
                "config_hash": config_hash(config),
                "features": {
                    "mel": {"shape": [8, 5, 2], "dtype": "float16"},
                    "frames": {"shape": [2, 16, 16, 3], "dtype": "uint8"},
                },
            }
        )
    )
    rows, clips = [], {}
    for k in range(3):
        clip = {"mel": rng.normal(size=(8, 5, 2)).astype(np.float16), "frames": _smooth_frames(rng)}
        np.savez(root / "clips" / f"c{k}.npz", **clip)
        clips[f"c{k}"] = clip
        rows.append({"clip_id": f"c{k}", "label": "bus", "split": "train", "file": f"clips/c{k}.npz"})
    pq.write_table(pa.Table.from_pylist(rows), root / "index" / "shard-00000-of-00001.parquet")
    return clips


def test_a_store_of_the_previous_format_gets_a_message_and_converts(tmp_path, rng):
    from avsc.cli import main

    clips = _old_store(tmp_path / "old", rng)
    with pytest.raises(DataError, match="previous format avsc-features/1") as caught:
        FeatureStore.open(tmp_path / "old")
    assert "convert_store" in str(caught.value) and "avsc preprocess" in str(caught.value)
    assert main(["train", "aud-mel", str(tmp_path / "old"), "-o", str(tmp_path / "m"), "--quiet"]) == 1
    assert convert_store(tmp_path / "old", tmp_path / "new") == 3
    store = FeatureStore.open(tmp_path / "new")
    part = store.parts("train")[0]
    mel = read_part_feature(part.location, store.specs["mel"], part.rows)
    np.testing.assert_array_equal(mel, np.stack([clips[c]["mel"] for c in part.clip_ids]))
    assert store.specs["frames"].encoding == "jpeg"


def test_atomic_path_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def killed_while_writing() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        killed_while_writing()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"

"""The 1-second protocol: segment ids and offsets, the split by parent clip, preprocessing at
an offset, the clip length check, and the clip-level average of segment probabilities."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from avsc.cli import main
from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.data.demo import make_demo_dataset
from avsc.data.ingest import ingest_dataset
from avsc.data.manifest import MANIFEST_SCHEMA, read_manifest, write_manifest
from avsc.data.segments import (
    average_segments,
    check_segment_length,
    is_segment,
    parent_clip,
    segment_id,
    segment_offsets,
    segment_records,
)
from avsc.errors import ConfigError, DataError

ONE_SECOND = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))


# --- Pure parts, by hand ---------------------------------------------------------------------------


def test_segment_ids_and_parents():
    assert segment_id("airport-lisbon-1000-40000", 0) == "airport-lisbon-1000-40000_s000"
    assert segment_id("airport-lisbon-1000-40000", 12) == "airport-lisbon-1000-40000_s012"
    assert parent_clip("airport-lisbon-1000-40000_s012") == "airport-lisbon-1000-40000"
    assert parent_clip("airport-lisbon-1000-40000") == "airport-lisbon-1000-40000"  # a whole clip
    assert is_segment("park-paris-3-1_s1000") and not is_segment("park-paris-3-1")
    with pytest.raises(ValueError, match="segment index must be >= 0, got -1"):
        segment_id("x", -1)


def test_segment_offsets():
    assert segment_offsets(10.0, 1.0) == [float(k) for k in range(10)]
    assert segment_offsets(9.99, 1.0) == [float(k) for k in range(10)]  # within the 2.5 % tolerance
    assert segment_offsets(10.6, 1.0) == [float(k) for k in range(10)]  # a short tail is dropped
    assert segment_offsets(10.0, 2.5) == [0.0, 2.5, 5.0, 7.5]
    assert segment_offsets(0.9, 1.0) == [] and segment_offsets(None, 1.0) == []
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="positive"):
            segment_offsets(10.0, bad)


def test_segment_records_inherit_their_parent():
    records = [
        {
            "clip_id": "bus-lyon-2-7",
            "video": "video/bus-lyon-2-7.mp4",
            "label": "bus",
            "location": "lyon-2",
            "split": "val",
            "duration_s": 3.01,
        },
        {
            "clip_id": "park-lyon-3-1",
            "video": "video/park-lyon-3-1.mp4",
            "label": "park",
            "location": "lyon-3",
            "split": "test",
            "duration_s": 0.4,
        },
    ]
    segments, rejected = segment_records(records, 1.0)
    assert [s["clip_id"] for s in segments] == ["bus-lyon-2-7_s000", "bus-lyon-2-7_s001", "bus-lyon-2-7_s002"]
    assert [s["offset_s"] for s in segments] == [0.0, 1.0, 2.0]
    assert {(s["parent_clip"], s["label"], s["location"], s["split"], s["segment_s"]) for s in segments} == {
        ("bus-lyon-2-7", "bus", "lyon-2", "val", 1.0)
    }
    assert rejected == [{"file": "video/park-lyon-3-1.mp4", "reason": "0.400 s long, shorter than one 1-s segment"}]
    assert records[0]["clip_id"] == "bus-lyon-2-7"  # the input is not modified


def test_average_segments_by_hand():
    ids = ["b-x-1-1_s001", "a-x-1-1_s000", "b-x-1-1_s000", "a-x-1-1_s001", "a-x-1-1_s002", "c-x-9-9"]
    labels = ["b", "a", "b", "a", "a", "c"]
    probs = np.array(
        [[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.6, 0.2, 0.2], [0.0, 0.0, 1.0]]
    )
    parents, parent_labels, clip_probs = average_segments(ids, labels, probs)
    assert list(parents) == ["a-x-1-1", "b-x-1-1", "c-x-9-9"] and list(parent_labels) == ["a", "b", "c"]
    np.testing.assert_allclose(clip_probs, [[0.6, 1 / 3, 0.2 / 3], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(DataError, match="differs"):
        average_segments(["a-x-1-1_s000", "a-x-1-1_s001"], ["a", "b"], probs[:2])


def test_clip_length_must_match_the_segments(tmp_path):
    check_segment_length(None, 10.0, "m.parquet")  # whole clips: any clip length
    check_segment_length(1.0, 1.0, "m.parquet")
    with pytest.raises(ConfigError, match=r"m.parquet: holds 1-s segments.*is 10 s.*clip_seconds=1"):
        check_segment_length(1.0, 10.0, "m.parquet")


# --- Ingest and preprocess on a demo dataset (real ffmpeg) ----------------------------------------


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    root = make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "TAU-demo",
        classes=3,
        clips_per_class=6,
        locations_per_class=3,
        seconds=3.0,
        width=64,
        height=48,
        fps=5.0,
        seed=3,
        progress=False,
    ).root
    out = tmp_path_factory.mktemp("manifests")
    whole = ingest_dataset(root, out / "clips.parquet", progress=False)
    cut = ingest_dataset(root, out / "segments.parquet", segment_seconds=1.0, progress=False)
    return root, whole, cut


def test_ingest_cuts_clips_into_segments_split_by_parent(segmented):
    _, whole, cut = segmented
    clips, segments = read_manifest(whole.manifest_path), read_manifest(cut.manifest_path)
    assert cut.n_clips == 3 * whole.n_clips and cut.rejected == []
    assert {k: 3 * v for k, v in whole.counts.items()} == cut.counts
    assert pq.read_schema(cut.manifest_path).names == MANIFEST_SCHEMA.names
    by_parent = segments.groupby("parent_clip")
    assert set(by_parent.groups) == set(clips["clip_id"])
    for parent, group in by_parent:
        assert list(group["clip_id"]) == [f"{parent}_s{k:03d}" for k in range(3)]
        assert list(group["offset_s"]) == [0.0, 1.0, 2.0] and set(group["segment_s"]) == {1.0}
        # A parent's segments share its split (and label, location): the split is by parent clip.
        parent_row = clips.set_index("clip_id").loc[parent]
        assert set(group["split"]) == {parent_row["split"]} and set(group["location"]) == {parent_row["location"]}
    locations = {s: set(segments.loc[segments.split == s, "location"]) for s in ("train", "val", "test")}
    assert not (
        locations["train"] & locations["val"]
        or locations["train"] & locations["test"]
        or locations["val"] & locations["test"]
    )
    # Whole clips read as their own parent, from 0 s.
    assert (clips["parent_clip"] == clips["clip_id"]).all() and (clips["offset_s"] == 0.0).all()
    meta = pq.read_schema(cut.manifest_path).metadata
    assert json.loads(meta[b"avsc.segment_seconds"]) == 1.0
    dataset = json.loads(meta[b"avsc.dataset"])
    assert dataset["synthetic"] is True and dataset["name"] == "TAU-demo"


def test_preprocess_decodes_each_segment_at_its_offset(segmented, tmp_path):
    from avsc.features.preprocess import preprocess
    from avsc.features.spectrograms import compute_clip_features
    from avsc.features.store import FeatureStore
    from avsc.features.store_format import decode_jpeg, encode_jpeg
    from avsc.media.decode import demux_audio, read_wav, sample_frames

    root, _, cut = segmented
    frame = read_manifest(cut.manifest_path)
    parent = frame["parent_clip"].iloc[0]
    rows = [{k: r[k] for k in MANIFEST_SCHEMA.names} for _, r in frame[frame.parent_clip == parent].iterrows()]
    manifest = write_manifest(rows, tmp_path / "one.parquet", dataset_root=root)
    with pytest.raises(ConfigError, match="clip_seconds"):
        preprocess(manifest, tmp_path / "wrong", config=FeatureConfig(), progress=False)
    assert not (tmp_path / "wrong").exists()  # refused before anything was written
    result = preprocess(manifest, tmp_path / "features", config=ONE_SECOND, progress=False)
    assert result.processed == 3 and result.rejected == []
    store = FeatureStore.open(tmp_path / "features")
    ids = [f"{parent}_s{k:03d}" for k in range(3)]
    assert sorted(store.clips()["clip_id"]) == ids  # the store keeps its clips in a shuffled order
    video = root / rows[1]["video"]
    # The sound comes from where the manifest says: the dataset's WAV by default (data.audio_source).
    assert rows[1]["audio_source"] == "wav"
    sound = read_wav(root / rows[1]["audio"], ONE_SECOND.audio, offset_s=1.0)
    assert not np.allclose(sound, demux_audio(video, ONE_SECOND.audio, offset_s=1.0), atol=1e-3)  # not the track's
    expected = compute_clip_features(
        sound, sample_frames(video, ONE_SECOND.frames, seconds=1.0, offset_s=1.0), ONE_SECOND
    )
    second = store.read_clip(ids[1], "mel")
    np.testing.assert_allclose(second, expected["mel"].astype(np.float16), rtol=1e-3, atol=1e-3)
    # Frames are stored as JPEG: the stored ones are the expected frames through the same codec.
    quality = store.specs["frames"].jpeg_quality
    np.testing.assert_array_equal(
        store.read_clip(ids[1], "frames"), np.stack([decode_jpeg(encode_jpeg(f, quality)) for f in expected["frames"]])
    )
    first = store.read_clip(ids[0], "mel")
    assert not np.allclose(first, second)  # another second of the recording


def test_cli_ingest_segment_seconds(segmented, tmp_path, capsys):
    root, whole, _ = segmented
    assert main(["ingest", str(root), "-o", str(tmp_path / "m.parquet"), "--segment-seconds", "1.5"]) == 0
    assert "1.5-s segments" in capsys.readouterr().out
    frame = read_manifest(tmp_path / "m.parquet")
    assert len(frame) == 2 * whole.n_clips and set(frame["offset_s"]) == {0.0, 1.5}
    assert main(["ingest", str(root), "-o", str(tmp_path / "n.parquet"), "--segment-seconds", "0"]) == 2
    assert "positive" in capsys.readouterr().err
    # The same setting from a config file, as every other command reads it.
    settings = tmp_path / "one-second.toml"
    settings.write_text("[data]\nsegment_seconds = 1.5\n[features.audio]\nclip_seconds = 1.5\n")
    assert main(["ingest", str(root), "-o", str(tmp_path / "c.parquet"), "--config", str(settings)]) == 0
    assert read_manifest(tmp_path / "c.parquet")["clip_id"].tolist() == frame["clip_id"].tolist()


def test_check_segment_setting_compares_the_two_lengths():
    from avsc.config import load_config
    from avsc.data.segments import check_segment_setting

    check_segment_setting(load_config(preset="quick"))  # whole clips: any clip length
    check_segment_setting(load_config(preset="quick", overrides=["data.segment_seconds=4"]))  # quick: 4-s clips
    with pytest.raises(
        ConfigError,
        match=r"data.segment_seconds is 1, but features.audio.clip_seconds is 4"
        r".*--set features.audio.clip_seconds=1",
    ):
        check_segment_setting(load_config(preset="quick", overrides=["data.segment_seconds=1"]))

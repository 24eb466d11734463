"""Preprocess: rejection of bad clips, resume, shards, summary, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from media_cases import make_text_as_mp4, make_truncated, make_video

from avsc.cli import main
from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.data.manifest import read_manifest, write_manifest
from avsc.errors import ConfigError, DataError
from avsc.features.preprocess import preprocess
from avsc.features.shards import parse_shard, shard_rows
from avsc.features.spectrograms import feature_shapes
from avsc.features.store import FeatureStore
from avsc.records import StoreSummary

CONFIG = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))
GOOD = ("airport-lisbon-1-1", "bus-lisbon-2-1", "park-paris-3-1", "tram-paris-4-1")
BAD = {"metro-lyon-5-1": "silent", "park-lyon-6-1": "truncated", "tram-lyon-7-1": "text"}


def _row(clip_id: str, split: str = "train") -> dict:
    label, city, location, _ = clip_id.split("-")
    return {
        "clip_id": clip_id,
        "video": f"video/{clip_id}.mp4",
        "audio": None,
        "label": label,
        "city": city,
        "location": f"{city}-{location}",
        "split": split,
        "duration_s": 1.0,
        "fps": 10.0,
        "width": 64,
        "height": 48,
        "audio_channels": 2,
        "audio_rate": 48000,
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four good clips (one mono) and three bad ones, with a manifest listing all seven."""
    root = tmp_path_factory.mktemp("dataset")
    video = root / "video"
    for number, clip_id in enumerate(GOOD):
        make_video(
            video / f"{clip_id}.mp4",
            seconds=1.0,
            width=64,
            height=48,
            channels=1 if number == 0 else 2,
            tone_hz=300.0 * (number + 1),
            seed=number,
        )
    make_video(video / "metro-lyon-5-1.mp4", seconds=1.0, width=64, height=48, channels=0)
    make_truncated(video / "park-lyon-6-1.mp4", seconds=1.0, width=64, height=48)
    make_text_as_mp4(video / "tram-lyon-7-1.mp4")
    manifest = write_manifest([_row(c) for c in (*GOOD, *BAD)], root / "manifest.parquet", dataset_root=root)
    only_bad = write_manifest([_row(c) for c in BAD], root / "bad.parquet", dataset_root=root)
    return {"root": root, "manifest": manifest, "only_bad": only_bad}


def indexed_ids(out_dir) -> set[str]:
    ids: set[str] = set()
    for path in (out_dir / "index").glob("shard-*.parquet"):
        ids.update(pq.read_table(path).column("clip_id").to_pylist())
    return ids


def test_bad_clips_are_rejected_and_the_rest_completes(dataset, tmp_path):
    out = tmp_path / "features"
    result = preprocess(dataset["manifest"], out, config=CONFIG, progress=False)
    assert result.processed == len(GOOD)
    assert result.skipped_existing == 0
    reasons = {item["clip_id"]: item["reason"] for item in result.rejected}
    assert set(reasons) == set(BAD)
    for clip_id, reason in reasons.items():
        assert f"{clip_id}.mp4" in reason  # the reason names the file
    assert "no audio stream" in reasons["metro-lyon-5-1"]
    assert "truncated" in reasons["park-lyon-6-1"]

    assert indexed_ids(out) == set(GOOD)
    summary = StoreSummary.read(out)
    assert json.loads((out / "summary.json").read_text())["format"] == StoreSummary.FORMAT
    assert summary.processed == len(GOOD)
    assert {item.clip_id for item in summary.rejected} == set(BAD)
    assert summary.shapes == {name: tuple(shape) for name, shape in feature_shapes(CONFIG).items()}

    store = FeatureStore.open(out)
    arrays = {name: store.read_clip(GOOD[0], name) for name in store.specs}
    assert {name: list(a.shape) for name, a in arrays.items()} == feature_shapes(CONFIG)
    assert arrays["mel"].dtype == np.float16 and arrays["frames"].dtype == np.uint8
    # The mono clip's two channels are identical copies.
    np.testing.assert_array_equal(arrays["mel"][..., 0], arrays["mel"][..., 1])
    # Every split in its own parts; no video was written anywhere near the store.
    assert {p.parent.name for p in (out / "parts").rglob("*.parquet")} == {"train"}


def test_rerun_resumes(dataset, tmp_path):
    out = tmp_path / "features"
    preprocess(dataset["manifest"], out, config=CONFIG, progress=False, part_clips=2)
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").rglob("*.parquet")}
    assert len(parts) == 2
    next(iter(parts)).unlink()  # as if the run had been killed before its second part
    again = preprocess(dataset["manifest"], out, config=CONFIG, progress=False, part_clips=2)
    assert again.processed == 2
    assert again.skipped_existing == 2
    assert len(again.rejected) == len(BAD)  # bad clips are retried, and fail again
    kept = [p for p in parts if p.exists()]
    assert len(kept) == 1 and kept[0].stat().st_mtime_ns == parts[kept[0]]  # not rewritten
    assert StoreSummary.read(out).processed == len(GOOD)
    assert sorted(FeatureStore.open(out).index["clip_id"]) == sorted(GOOD)
    done = preprocess(dataset["manifest"], out, config=CONFIG, progress=False)
    assert done.processed == 0 and done.skipped_existing == len(GOOD)


def test_a_store_with_another_config_is_refused(dataset, tmp_path):
    out = tmp_path / "features"
    preprocess(dataset["manifest"], out, config=CONFIG, shard=(0, 3), progress=False)
    other = FeatureConfig(audio=AudioConfig(clip_seconds=1.0, n_bins=64), frames=CONFIG.frames)
    with pytest.raises(DataError, match="config"):
        preprocess(dataset["manifest"], out, config=other, progress=False)


def test_shards_are_disjoint_and_complete(dataset, tmp_path):
    manifest = read_manifest(dataset["manifest"])
    parts = [set(shard_rows(manifest, (i, 3))["clip_id"]) for i in range(3)]
    assert sum(len(p) for p in parts) == len(manifest)
    assert set().union(*parts) == set(manifest["clip_id"])
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    assert [
        set(shard_rows(manifest.sample(frac=1.0, random_state=1), (i, 3))["clip_id"]) for i in range(3)
    ] == parts  # independent of the manifest's row order

    out = tmp_path / "features"
    processed = 0
    for i in range(3):
        result = preprocess(dataset["manifest"], out, config=CONFIG, shard=(i, 3), progress=False)
        assert {item["clip_id"] for item in result.rejected} <= parts[i]
        processed += result.processed
    assert processed == len(GOOD)
    assert indexed_ids(out) == set(GOOD)
    assert len(list((out / "index").glob("shard-*-of-00003.parquet"))) == 3
    summary = StoreSummary.read(out)
    assert summary.processed == len(GOOD)
    assert {item.clip_id for item in summary.rejected} == set(BAD)
    assert sorted(summary.shards) == [(0, 3), (1, 3), (2, 3)]


def test_shard_and_worker_arguments_are_checked(dataset, tmp_path):
    assert parse_shard("2/5") == (2, 5)
    for text in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(text)
    with pytest.raises(ConfigError, match="workers"):
        preprocess(dataset["manifest"], tmp_path / "f", config=CONFIG, workers=0, progress=False)


def test_cli_exits_1_when_every_clip_is_rejected(dataset, tmp_path, capsys):
    code = main(["preprocess", str(dataset["only_bad"]), "-o", str(tmp_path / "f"), "--preset", "quick", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "3 rejected" in out and "tram-lyon-7-1.mp4" in out
    assert main(["preprocess", str(dataset["only_bad"]), "-o", str(tmp_path / "g"), "--shard", "2/2"]) == 2
    assert "shard" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end_demo_to_training_batch(tmp_path, capsys):
    """demo data -> ingest -> `avsc preprocess` (2 workers) -> FeatureStore -> one training batch."""
    from avsc.data.demo import make_demo_dataset
    from avsc.data.ingest import ingest_dataset
    from avsc.training.streams import train_dataset

    demo = make_demo_dataset(
        tmp_path / "demo",
        classes=3,
        clips_per_class=3,
        locations_per_class=3,
        seconds=2.0,
        width=64,
        height=48,
        progress=False,
    )
    manifest = ingest_dataset(demo.root, tmp_path / "manifest.parquet", val_fraction=0.3, progress=False).manifest_path
    out = tmp_path / "features"
    code = main(["preprocess", str(manifest), "-o", str(out), "--preset", "quick", "--workers", "2", "--quiet"])
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert code == 0
    assert "9 processed" in line and "0 rejected" in line

    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 9 and summary["rejected"] == []
    store = FeatureStore.open(out)
    assert len(store.index) == 9
    assert store.shapes["mel"] == (128, 286, 2)  # 4 s (quick) at a 14 ms hop, 2 s of it real sound
    assert store.shapes["frames"] == (8, 96, 96, 3)

    (batch_x, _, _), batch_y = next(iter(train_dataset(store, "aud-mel", batch_size=2, mixup_alpha=0.0)))
    assert tuple(batch_x.shape) == (2, 128, 286, 2)
    assert tuple(batch_y.shape) == (2, 10)
    assert np.isfinite(batch_x.numpy()).all()


def test_a_tau_layout_with_mute_videos_preprocesses_every_clip_from_its_wav(tmp_path):
    from avsc.data.demo import make_demo_dataset
    from avsc.data.ingest import ingest_dataset
    from avsc.media.encode import write_wav

    root = make_demo_dataset(
        tmp_path / "TAU",
        classes=2,
        clips_per_class=6,
        locations_per_class=3,
        seconds=1.0,
        width=64,
        height=48,
        fps=5.0,
        video_audio=False,
        progress=False,
    ).root
    # TAU's WAVs are a sample short or long now and then: padded or cropped to the clip.
    wavs = sorted((root / "audio").glob("*.wav"))
    t = np.arange(47_999) / 48_000
    write_wav(wavs[0], np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1), 48_000, sample_width=3)
    t = np.arange(48_001) / 48_000
    write_wav(wavs[1], np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1), 48_000, sample_width=3)
    manifest = ingest_dataset(root, tmp_path / "manifest.parquet", val_fraction=0.3, progress=False).manifest_path
    result = preprocess(manifest, tmp_path / "features", config=CONFIG, progress=False)
    assert result.processed == 12 and not result.rejected
    summary = json.loads(next((tmp_path / "features").glob("summary-shard-*.json")).read_text())
    assert set(summary["audio_sources"].values()) == {"wav"} and len(summary["audio_sources"]) == 12
    store = FeatureStore.open(tmp_path / "features")
    assert store.read_clip(wavs[0].stem, "mel").shape == tuple(feature_shapes(CONFIG)["mel"])

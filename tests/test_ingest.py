"""ingest_dataset on demo datasets: splits by location, bad rows reported and left out, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from media_cases import Variant, make_text_as_mp4, make_truncated, make_variant, make_video

from avsc.cli import main
from avsc.data.dataset_lists import find_metadata
from avsc.data.demo import make_demo_dataset
from avsc.data.ingest import ingest_dataset
from avsc.data.manifest import MANIFEST_SCHEMA, read_manifest
from avsc.errors import DataError

SMALL = dict(
    classes=3, clips_per_class=8, locations_per_class=4, seconds=1.0, width=64, height=48, fps=5.0, progress=False
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "TAU-demo", seed=1, **SMALL).root


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    root = tmp_path / pristine.name
    shutil.copytree(pristine, root)
    return root


def _append(root: Path, name: str, line: str) -> None:
    path = next(root.rglob(name))
    path.write_text(path.read_text() + line + "\n")


def test_clean_dataset_gives_location_disjoint_splits(dataset, tmp_path):
    result = ingest_dataset(dataset, tmp_path / "out" / "manifest.parquet", progress=False)
    assert result.rejected == [] and result.notes == []
    assert result.n_clips == 24 and sum(result.counts.values()) == 24
    assert result.counts["test"] == 6  # one evaluate location of two clips per scene
    assert pq.read_schema(result.manifest_path).names == MANIFEST_SCHEMA.names
    frame = read_manifest(result.manifest_path)
    locations = {split: set(frame.loc[frame.split == split, "location"]) for split in ("train", "val", "test")}
    assert locations["val"] and not locations["val"] & locations["train"]
    assert not locations["val"] & locations["test"] and not locations["train"] & locations["test"]
    for label in frame.label.unique():  # each scene keeps train and val locations
        assert {"train", "val", "test"} <= set(frame.loc[frame.label == label, "split"])
    row = frame.iloc[0]
    assert (row.width, row.height, row.fps, row.audio_channels, row.audio_rate) == (64, 48, 5.0, 2, 48000)
    assert row.duration_s == pytest.approx(1.0, abs=0.1)
    assert Path(row.video_path).is_file() and Path(row.audio_path).is_file()
    assert json.loads(result.rejected_path.read_text())["counts"] == result.counts
    assert result.rejected_path.name == "manifest.rejected.json"


def test_val_split_is_seeded(dataset, tmp_path):
    def val_locations(seed):
        result = ingest_dataset(dataset, tmp_path / f"m{seed}.parquet", seed=seed, progress=False)
        frame = read_manifest(result.manifest_path)
        return set(frame.loc[frame.split == "val", "location"])

    assert val_locations(0) == val_locations(0)
    assert any(val_locations(0) != val_locations(s) for s in (1, 2, 3))


def test_bad_rows_are_reported_by_name_and_the_rest_kept(dataset, tmp_path):
    video = dataset / "video"
    make_video(video / "bus-paris-1190-40000.mp4", seconds=1.0, channels=0)  # no audio
    make_truncated(video / "bus-paris-1191-40000.mp4", seconds=1.0)
    make_text_as_mp4(video / "bus-paris-1192-40000.mp4")
    make_video(video / "beach-paris-1193-40000.mp4", seconds=1.0)
    make_video(video / "bus_paris_1194.mp4", seconds=1.0)
    first_train = next(dataset.rglob("fold1_train.csv")).read_text().splitlines()[1]
    for stem, label in [
        ("bus-paris-1190-40000", "bus"),
        ("bus-paris-1191-40000", "bus"),
        ("bus-paris-1192-40000", "bus"),
        ("beach-paris-1193-40000", "beach"),
        ("bus-paris-1195-40000", "bus"),
        ("bus_paris_1194", "bus"),
    ]:
        _append(dataset, "fold1_train.csv", f"audio/{stem}.wav\tvideo/{stem}.mp4\t{label}")
    _append(dataset, "fold1_train.csv", first_train)  # duplicate id
    kept_without_wav = first_train.split("\t")[0]
    (dataset / kept_without_wav).unlink()

    result = ingest_dataset(dataset, tmp_path / "manifest.parquet", progress=False)
    reasons = {item["file"]: item["reason"] for item in result.rejected}
    assert "no audio track" in reasons["video/bus-paris-1190-40000.mp4"]
    assert "truncated" in reasons["video/bus-paris-1191-40000.mp4"]
    assert "moov atom not found" in reasons["video/bus-paris-1192-40000.mp4"]
    assert "unknown label 'beach'" in reasons["video/beach-paris-1193-40000.mp4"]
    assert "video file not found" in reasons["video/bus-paris-1195-40000.mp4"]
    assert "malformed file name" in reasons["video/bus_paris_1194.mp4"]
    assert "duplicate clip id" in reasons[first_train.split("\t")[1]]
    assert len(result.rejected) == 7
    assert result.n_clips == 24  # every good clip kept
    frame = read_manifest(result.manifest_path)
    stem = Path(kept_without_wav).stem
    assert frame.loc[frame.clip_id == stem, "audio"].isna().all()
    assert any(kept_without_wav in note for note in result.notes)
    report = json.loads(result.rejected_path.read_text())
    assert {r["file"] for r in report["rejected"]} == set(reasons)
    meta = pq.read_schema(result.manifest_path).metadata
    assert len(json.loads(meta[b"avsc.rejected"])) == 7


def test_lists_with_a_byte_order_mark(dataset, tmp_path):
    """Lists saved by Excel or other Windows tools start with a UTF-8 byte-order mark."""
    for name in ("fold1_train.csv", "fold1_evaluate.csv", "meta.csv"):
        path = next(dataset.rglob(name))
        path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode())
    result = ingest_dataset(dataset, tmp_path / "manifest.parquet", progress=False)
    assert result.n_clips == 24 and not result.rejected


def test_manifest_records_what_a_player_presents(dataset, tmp_path):
    """Displayed size, the true length and the chosen audio track; warnings become notes."""
    video = dataset / "video"
    stems = sorted(p.stem for p in video.glob("*.mp4"))[:2]
    # Two audio tracks, neither flagged default: the first is used. Picture stored turned by 90
    # degrees and with 2:1 pixels; displayed as 160x120. Sound starting 1 s late, lasting 2 s.
    make_variant(video / f"{stems[0]}.mp4", Variant("tracks", tracks="noise-second", rotation=90, sar=2.0))
    make_variant(video / f"{stems[1]}.mp4", Variant("late", audio_start=1.0, seconds=1.0, audio_seconds=2.0))
    result = ingest_dataset(dataset, tmp_path / "manifest.parquet", progress=False)
    frame = read_manifest(result.manifest_path).set_index("clip_id")
    first, second = frame.loc[stems[0]], frame.loc[stems[1]]
    assert (first.width, first.height, first.audio_track, first.audio_tracks) == (160, 120, 0, 2)
    assert (second.audio_track, second.audio_tracks) == (0, 1)
    assert second.duration_s == pytest.approx(3.0, abs=0.05)  # the header and the picture say 1-ish
    notes = " ".join(result.notes)
    assert f"{stems[0]}.mp4: 2 audio tracks; using track 0" in notes
    assert f"{stems[1]}.mp4: the sound starts at 0.98 s" in notes  # its first packet: 21 ms of priming


def test_metadata_one_folder_deeper(dataset, tmp_path):
    deeper = dataset / f"{dataset.name}.meta"
    deeper.mkdir()
    shutil.move(dataset / "meta.csv", deeper / "meta.csv")
    shutil.move(dataset / "evaluation_setup", deeper / "evaluation_setup")
    found = find_metadata(dataset)
    assert found["train"] == deeper / "evaluation_setup" / "fold1_train.csv"
    assert found["meta"] == deeper / "meta.csv"
    result = ingest_dataset(dataset, tmp_path / "manifest.parquet", progress=False)
    assert result.n_clips == 24 and not result.rejected


def test_location_in_train_and_test_is_a_clear_error(dataset, tmp_path):
    first_train = next(dataset.rglob("fold1_train.csv")).read_text().splitlines()[1]
    _, video, label = first_train.split("\t")
    scene, city, location, _ = Path(video).stem.split("-")
    leak = f"{scene}-{city}-{location}-49999"
    shutil.copy(dataset / video, dataset / "video" / f"{leak}.mp4")
    _append(dataset, "fold1_evaluate.csv", f"audio/{leak}.wav\tvideo/{leak}.mp4\t{label}")
    with pytest.raises(DataError, match=f"{city}-{location}.*both fold1_train and fold1_evaluate"):
        ingest_dataset(dataset, tmp_path / "manifest.parquet", progress=False)
    assert not (tmp_path / "manifest.parquet").exists()


def test_missing_metadata_and_nothing_usable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"fold1_train\.csv"):
        ingest_dataset(tmp_path / "empty", tmp_path / "m.parquet", progress=False)
    setup = tmp_path / "novideo" / "evaluation_setup"
    setup.mkdir(parents=True)
    for name in ("fold1_train.csv", "fold1_evaluate.csv"):
        (setup / name).write_text(
            "filename_audio\tfilename_video\tscene_label\naudio/bus-lyon-1-2.wav\tvideo/bus-lyon-1-2.mp4\tbus\n"
        )
    with pytest.raises(DataError, match="no usable clip"):
        ingest_dataset(tmp_path / "novideo", tmp_path / "m.parquet", progress=False)


def test_cli_demo_data_and_ingest(tmp_path, capsys):
    root = tmp_path / "demo"
    assert (
        main(
            [
                "demo-data",
                str(root),
                "--classes",
                "2",
                "--clips-per-class",
                "3",
                "--locations-per-class",
                "3",
                "--seconds",
                "0.5",
                "--width",
                "32",
                "--height",
                "32",
                "--fps",
                "4",
            ]
        )
        == 0
    )
    assert "6 synthetic clips" in capsys.readouterr().out
    make_text_as_mp4(root / "video" / "bus-lyon-1999-40000.mp4")
    _append(root, "fold1_train.csv", "audio/bus-lyon-1999-40000.wav\tvideo/bus-lyon-1999-40000.mp4\tbus")
    manifest = tmp_path / "m.parquet"
    assert main(["ingest", str(root), "-o", str(manifest), "--val-fraction", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "6 clips" in out and "1 rejected" in out
    assert "video/bus-lyon-1999-40000.mp4: not a complete MP4" in out
    assert manifest.is_file()

    assert main(["ingest", str(tmp_path / "nowhere"), "-o", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("avsc ingest: error:") and "dataset folder not found" in err
    assert "Traceback" not in err
    assert main(["demo-data", str(tmp_path / "x"), "--locations-per-class", "2"]) == 2
    assert "locations_per_class must be >= 3" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mute_videos(tmp_path_factory) -> Path:
    """The TAU layout with the sound only in audio/*.wav: videos without an audio track."""
    return make_demo_dataset(tmp_path_factory.mktemp("mute") / "TAU-mute", seed=2, video_audio=False, **SMALL).root


def test_sound_comes_from_the_wavs_when_the_videos_have_none(mute_videos, tmp_path):
    result = ingest_dataset(mute_videos, tmp_path / "auto.parquet", progress=False)
    assert result.n_clips == 24 and not result.rejected  # auto: every clip has its WAV
    frame = read_manifest(result.manifest_path)
    assert set(frame["audio_source"]) == {"wav"}
    assert set(frame["audio_channels"]) == {2} and set(frame["audio_rate"]) == {48000}  # the WAVs'
    assert all(Path(p).is_file() and p.endswith(".wav") for p in frame["audio_path"])
    # The video's own track only: every clip is rejected, and the run says why.
    with pytest.raises(DataError, match=r"video has no audio track \(data\.audio_source = video\)"):
        ingest_dataset(mute_videos, tmp_path / "video.parquet", audio_source="video", progress=False)


def test_wav_mode_rejects_a_clip_without_its_wav_and_auto_falls_back_to_the_track(dataset, tmp_path, capsys):
    wav = next((dataset / "audio").glob("*.wav"))
    wav.unlink()
    strict = ingest_dataset(dataset, tmp_path / "wav.parquet", audio_source="wav", progress=False)
    assert [Path(r["file"]).stem for r in strict.rejected] == [wav.stem]
    assert "not found (data.audio_source = wav)" in strict.rejected[0]["reason"]
    auto = read_manifest(ingest_dataset(dataset, tmp_path / "auto.parquet", progress=False).manifest_path)
    sources = dict(zip(auto["clip_id"], auto["audio_source"], strict=True))
    assert sources.pop(wav.stem) == "video" and set(sources.values()) == {"wav"}
    video = read_manifest(
        ingest_dataset(dataset, tmp_path / "video.parquet", audio_source="video", progress=False).manifest_path
    )
    assert set(video["audio_source"]) == {"video"}
    assert main(["ingest", str(dataset), "-o", str(tmp_path / "bad.parquet"), "--set", "data.audio_source=mp3"]) == 2
    assert "data.audio_source: input should be 'auto', 'wav' or 'video'" in capsys.readouterr().err

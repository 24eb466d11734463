"""``avsc inspect``: what the networks get for one video, written as files a person can open."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from media_cases import Variant, beep_onset, make_variant
from PIL import Image

from avsc.cli import main
from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.errors import DataError
from avsc.inference.inspect import inspect_media
from avsc.inference.windows import window_offsets
from avsc.media.decode import demux_audio, sample_frames

CONFIG = FeatureConfig(
    audio=AudioConfig(sample_rate=16000, clip_seconds=1.0, n_bins=16), frames=FrameConfig(fps=2.0, size=32)
)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 2.5 s, two audio tracks (the first used), sound starting 0.5 s late with its beep at 1.5 s.
    return make_variant(
        tmp_path_factory.mktemp("inspect") / "clip.mkv",
        Variant(
            "clip",
            container="mkv",
            acodec="flac",
            seconds=2.5,
            audio_seconds=2.0,
            audio_start=0.5,
            beep_at=1.0,
            tracks="noise-second",
        ),
    )


def test_inspect_writes_what_the_networks_get(video, tmp_path):
    out = tmp_path / "out"
    result = inspect_media(video, out, CONFIG)
    facts = json.loads((out / "media.json").read_text())
    media = facts["media"]
    assert (media["width"], media["height"], media["audio_track"], media["audio_tracks"]) == (160, 120, 0, 2)
    assert media["duration_s"] == pytest.approx(2.53, abs=0.02)  # 38 frames at 15 frames/s
    assert media["audio_start_s"] == pytest.approx(0.5, abs=0.01) and media["video_start_s"] == 0.0
    assert [s["kind"] for s in media["streams"]] == ["video", "audio", "audio"]
    assert any("2 audio tracks" in w for w in facts["warnings"])
    # Its first second, preprocessing's clip at this clip length, holds no sound yet.
    assert facts["preprocess"] == "rejected: the sound is digital silence"
    assert facts["feature_config"]["frames"]["size"] == 32

    offsets = [w["offset_s"] for w in facts["windows"]]
    assert offsets == window_offsets(media["duration_s"], 1.0) and len(offsets) == 3  # window 0: preprocessing's
    for window in facts["windows"]:
        assert [p.rsplit("/", 1)[1] for p in window["frames"]] == [
            f"frame-{i:03d}-t{window['offset_s'] + i / 2:.3f}s.png" for i in range(2)
        ]
        # Byte for byte what the decoder gives prediction for this window.
        expected = sample_frames(video, CONFIG.frames, seconds=1.0, offset_s=window["offset_s"])
        pngs = np.stack([np.asarray(Image.open(out / p)) for p in window["frames"]])
        np.testing.assert_array_equal(pngs, expected)
        sound, rate = soundfile.read(out / window["audio"], dtype="float32")
        assert rate == 16000
        np.testing.assert_array_equal(
            sound, demux_audio(video, CONFIG.audio, offset_s=window["offset_s"], duration_s=1.0)
        )
        for name in ("mel", "gam", "cqt"):
            assert Image.open(out / window["spectrograms"][name]).size[0] > 100
    assert facts["windows"][0]["silent"] is True  # the sound starts at 0.5 s, its beep at 1.5 s
    assert facts["windows"][1]["silent"] is False
    sound, _ = soundfile.read(out / facts["windows"][1]["audio"], dtype="float32")
    assert beep_onset(sound, 16000) == pytest.approx(0.5, abs=0.012)
    assert result.preprocess == facts["preprocess"] and len(result.windows) == 3


def test_inspect_refuses_a_folder_it_did_not_write(video, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an empty folder"):
        inspect_media(video, tmp_path / "mine", CONFIG)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    inspect_media(video, tmp_path / "again", CONFIG)
    inspect_media(video, tmp_path / "again", CONFIG)  # an earlier output is replaced


def test_cli_inspect(video, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "inspect",
            str(video),
            "-o",
            str(out),
            "--preset",
            "quick",
            "--set",
            "features.frames.size=24",
            "--set",
            "features.audio.clip_seconds=2.0",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "160x120 displayed" in printed and "audio track 0 of 2" in printed and "warning: 2 audio tracks" in printed
    facts = json.loads((out / "media.json").read_text())
    assert facts["feature_config"]["frames"]["size"] == 24 and facts["clip_seconds"] == 2.0
    assert main(["inspect", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x")]) != 0
    assert "missing.mp4: file not found" in capsys.readouterr().err

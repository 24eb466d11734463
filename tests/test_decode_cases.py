"""Nine kinds of real-world file that once gave wrong features or a misleading error.

Each is built the way people reported it against other tools and checked against what a
media player presents, or against a truthful error. Prediction-side checks (silent and
broken sound in a batch, streams of different lengths) are in ``test_predict.py``, next
to its bundle.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from media_cases import Variant, beep_onset, make_nan_video, make_variant, make_video, ramp_index, shipped_ffmpeg

from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.errors import MediaError
from avsc.media.decode import demux_audio, is_silent, sample_frames
from avsc.media.ffmpeg import FFmpegCrash, ffmpeg_exe, is_bundled, run_ffmpeg
from avsc.media.probe import probe_media

RATE = 16000
BEEP = "aevalsrc=exprs='if(between(t\\,1\\,1.3)\\,0.5*sin(2*PI*1000*t)\\,0)':s=48000:d=4:c=stereo"


def _ffmpeg(path: Path, *args: str) -> Path:
    run_ffmpeg(
        path,
        ["-loglevel", "error", "-y", *args, str(path)],
        what="generated streams",
        timeout_s=120,
        exe=shipped_ffmpeg(),
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    gray = "color=c=gray:s=160x120:r=30:d=4"
    return {
        # 1. Picture from 0 s; sound track starting at 1.0 s, its beep 1.0 s into it.
        "late": _ffmpeg(
            root / "late.mp4",
            "-f",
            "lavfi",
            "-i",
            gray,
            "-itsoffset",
            "1.0",
            "-f",
            "lavfi",
            "-i",
            BEEP,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ),
        # 3. Digital silence as the sound track.
        "silent": _ffmpeg(
            root / "silent.mp4",
            "-f",
            "lavfi",
            "-i",
            gray,
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=48000:cl=stereo",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ),
        # 5. Streams of different lengths.
        "long_sound": make_variant(
            root / "long_sound.mp4", Variant("long-sound", seconds=4.0, audio_seconds=12.0, beep_at=9.0, fps=10.0)
        ),
        "short_sound": make_variant(
            root / "short_sound.mp4", Variant("short-sound", seconds=12.0, audio_seconds=3.0, fps=10.0)
        ),
        # 6. A 0.2-s clip: three frames at 15 frames/s.
        "tiny": make_video(root / "tiny.mp4", seconds=0.2, fps=15.0),
        # 7. MPEG-TS.
        "ts": make_variant(root / "clip.ts", Variant("ts", container="ts", beep_at=0.7)),
    }


def test_late_sound_is_delayed_not_shifted(files):
    """Case 1: a player plays the beep at 2.0 s; so does avsc (it used to be at ~1.0 s)."""
    info = probe_media(files["late"])
    assert info.audio_start_s == pytest.approx(1.0, abs=0.03) and info.video_start_s == 0.0
    assert info.duration_s == pytest.approx(5.0, abs=0.05)
    assert any("sound starts at" in w for w in info.warnings)
    audio = demux_audio(files["late"], AudioConfig(sample_rate=RATE, clip_seconds=5.0), info=info)
    assert beep_onset(audio, RATE) == pytest.approx(2.0, abs=0.012)
    assert np.abs(audio[: int(1.9 * RATE)]).max() < 1e-3
    window = demux_audio(files["late"], AudioConfig(sample_rate=RATE, clip_seconds=1.0), offset_s=1.5, info=info)
    assert beep_onset(window, RATE) == pytest.approx(0.5, abs=0.012)


def test_default_track_else_first(tmp_path):
    """Case 2: a stereo scene track first, a 5.1 noise track second, neither default: the
    first is decoded (ffmpeg alone picks the one with more channels)."""
    path = make_variant(tmp_path / "two.mkv", Variant("two", container="mkv", tracks="noise-second"))
    info = probe_media(path)
    assert (info.audio_track, info.audio_tracks, info.audio_channels) == (0, 2, 2)
    assert any("2 audio tracks; using track 0" in w and "none is flagged default" in w for w in info.warnings)
    audio = demux_audio(path, AudioConfig(sample_rate=RATE, clip_seconds=2.0), info=info)
    assert 0.495 <= beep_onset(audio, RATE) <= 0.525  # AAC in MKV: + 21 ms of priming, in any player
    assert np.abs(audio[: int(0.45 * RATE)]).max() < 1e-3  # no noise: not the 5.1 track

    flagged = make_variant(
        tmp_path / "flagged.mkv", Variant("flagged", container="mkv", tracks="noise-first-default-second")
    )
    info = probe_media(flagged)
    assert (info.audio_track, info.audio_tracks) == (1, 2)
    assert "flagged default" in " ".join(info.warnings)


def _specs(config: FeatureConfig) -> dict:
    """How the store would keep each feature of ``config`` (what a preprocessing task encodes)."""
    from avsc.features.spectrograms import feature_shapes
    from avsc.features.store_format import feature_specs

    return feature_specs(config, feature_shapes(config))


def test_digital_silence_is_detected_and_rejected_by_preprocessing(files, tmp_path):
    """Case 3: an anullsrc track is silence; preprocessing rejects the clip and says why."""
    from avsc.features.clip_workers import _task

    audio = demux_audio(files["silent"], AudioConfig(sample_rate=RATE, clip_seconds=2.0))
    assert is_silent(audio)
    assert not is_silent(demux_audio(files["late"], AudioConfig(sample_rate=RATE, clip_seconds=2.0), offset_s=1.8))
    config = FeatureConfig(
        audio=AudioConfig(sample_rate=RATE, clip_seconds=1.0, n_bins=16), frames=FrameConfig(fps=2.0, size=16)
    )
    clip_id, encoded, reason = _task(
        ("silent", "bus", "train", str(files["silent"]), config, _specs(config), 1, 0.0, None)
    )
    assert clip_id == "silent" and encoded is None
    assert "silent.mp4" in reason and "digital silence" in reason


def test_non_finite_samples_are_a_truthful_error(tmp_path):
    """Case 4: NaN/Inf in float PCM are named as such, in decoding and in preprocessing."""
    from avsc.features.clip_workers import _task

    path = make_nan_video(tmp_path / "nan.mkv")
    with pytest.raises(MediaError, match=r"nan\.mkv: .*non-finite samples \(NaN or Inf"):
        demux_audio(path, AudioConfig(sample_rate=RATE, clip_seconds=2.0))
    config = FeatureConfig(
        audio=AudioConfig(sample_rate=RATE, clip_seconds=1.0, n_bins=16), frames=FrameConfig(fps=2.0, size=16)
    )
    _, _, reason = _task(("nan", "bus", "train", str(path), config, _specs(config), 1, 0.0, None))
    assert "non-finite" in reason and "unexpected" not in reason and "ParameterError" not in reason


def test_streams_of_different_lengths_are_padded_as_a_player_does(files):
    """Case 5: a 4-s picture with 12 s of sound, a 12-s picture with 3 s of sound."""
    frames_cfg = FrameConfig(fps=2.0, size=32)
    long_sound = probe_media(files["long_sound"])
    assert long_sound.duration_s == pytest.approx(12.0, abs=0.05)
    assert any("picture is its last frame" in w for w in long_sound.warnings)
    last = sample_frames(
        files["long_sound"], frames_cfg, seconds=4.0, offset_s=3.0, info=long_sound, reference_only=False
    )
    after = sample_frames(files["long_sound"], frames_cfg, seconds=4.0, offset_s=8.0, info=long_sound)
    assert after.shape == (8, 32, 32, 3)
    for frame in after:  # the picture ended at 4 s: its last frame, as at 3.5 s and later
        np.testing.assert_array_equal(frame, last[-1])
    audio = demux_audio(
        files["long_sound"], AudioConfig(sample_rate=RATE, clip_seconds=4.0), offset_s=8.0, info=long_sound
    )
    assert beep_onset(audio, RATE) == pytest.approx(1.0, abs=0.012)

    short_sound = probe_media(files["short_sound"])
    assert short_sound.duration_s == pytest.approx(12.0, abs=0.05)
    assert any("sound is silence" in w for w in short_sound.warnings)
    quiet = demux_audio(
        files["short_sound"], AudioConfig(sample_rate=RATE, clip_seconds=4.0), offset_s=8.0, info=short_sound
    )
    assert quiet.shape == (4 * RATE, 2) and not quiet.any()  # past the sound's end: silence
    frames = sample_frames(files["short_sound"], frames_cfg, seconds=4.0, offset_s=8.0, info=short_sound)
    assert len({ramp_index(frames[i : i + 1])[0] for i in range(len(frames))}) == 8  # the picture goes on


def test_very_short_video_repeats_its_last_frame(files):
    """Case 6: 0.2 s, three frames: the documented padding, not "no video frame decoded"."""
    frames = sample_frames(files["tiny"], FrameConfig(fps=2.0, size=32), seconds=4.0)
    exact = sample_frames(files["tiny"], FrameConfig(fps=2.0, size=32), seconds=4.0, reference_only=False)
    assert frames.shape == (8, 32, 32, 3)
    assert not np.array_equal(frames[0], frames[1])  # the first frame at 0 s, then (0.5 s on) the last
    for frame in frames[2:]:
        np.testing.assert_array_equal(frame, frames[1])
    assert np.abs(frames.astype(int) - exact.astype(int)).mean() < 40  # a picture, near the exact one
    assert demux_audio(files["tiny"], AudioConfig(sample_rate=RATE, clip_seconds=1.0)).shape == (RATE, 2)


def test_mpeg_ts_decodes_with_the_shipped_ffmpeg(files):
    """Case 7: the shipped static ffmpeg reads MPEG-TS (its crash is avoided, see avsc.media.ffmpeg)."""
    info = probe_media(files["ts"])
    assert (info.width, info.height, info.audio_track) == (160, 120, 0)
    audio = demux_audio(files["ts"], AudioConfig(sample_rate=RATE, clip_seconds=2.0), info=info)
    assert beep_onset(audio, RATE) == pytest.approx(0.7, abs=0.04)
    assert sample_frames(files["ts"], FrameConfig(fps=2.0, size=32), seconds=2.0, info=info).shape == (4, 32, 32, 3)


def test_the_shipped_ffmpeg_crash_on_mpeg_ts_is_reproduced_without_the_fix(files):
    exe = ffmpeg_exe()
    if not is_bundled(exe):
        pytest.skip("AVSC_FFMPEG points at another ffmpeg")
    env = {k: v for k, v in os.environ.items() if k != "GCONV_PATH"}
    proc = subprocess.run(
        [exe, "-nostdin", "-v", "error", "-i", str(files["ts"]), "-f", "null", "-"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    if proc.returncode >= 0:
        pytest.skip("the shipped ffmpeg does not crash on MPEG-TS with this machine's C library")
    assert proc.returncode == -11  # SIGSEGV, as reported; avsc runs it with GCONV_PATH set instead


def test_a_crashed_ffmpeg_is_reported_as_a_crash(files, tmp_path, monkeypatch):
    """Case 7: a decoder killed by a signal is told apart from a broken file."""
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nkill -SEGV $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("AVSC_FFMPEG", str(fake))
    with pytest.raises(FFmpegCrash) as caught:
        probe_media(files["ts"])
    message = str(caught.value)
    assert "clip.ts" in message and "crashed (SIGSEGV" in message and "AVSC_FFMPEG" in message
    assert "remux" in message and caught.value.signal_name == "SIGSEGV"
    with pytest.raises(FFmpegCrash):
        demux_audio(files["ts"], AudioConfig(clip_seconds=1.0), info=None)


@pytest.mark.skipif(shutil.which("ffmpeg", path="/usr/bin") is None, reason="no /usr/bin/ffmpeg here")
def test_another_ffmpeg_through_avsc_ffmpeg(files, monkeypatch):
    """The documented way around a crashing binary: a distribution's ffmpeg."""
    monkeypatch.setenv("AVSC_FFMPEG", "/usr/bin/ffmpeg")
    info = probe_media(files["ts"])
    audio = demux_audio(files["ts"], AudioConfig(sample_rate=RATE, clip_seconds=2.0), info=info)
    assert beep_onset(audio, RATE) == pytest.approx(0.7, abs=0.04)
    late = demux_audio(files["late"], AudioConfig(sample_rate=RATE, clip_seconds=5.0))
    assert beep_onset(late, RATE) == pytest.approx(2.0, abs=0.012)


def test_frame_timing_is_the_frame_a_player_shows(tmp_path):
    """Case 9: frame i is the picture shown at offset + i / fps (it used to be ~0.2 s later).

    30 frames/s with three plain B-frames between reference frames; instants on frame
    boundaries, where "nearest" and "at or before" differ most.
    """
    v = Variant("timing", vcodec="libx264-bframes", fps=30.0, seconds=4.0)
    path = make_variant(tmp_path / "timing.mp4", v)
    cfg = FrameConfig(fps=2.0, size=32)
    for offset in (0.0, 1.0, 1.3):
        instants = offset + np.arange(6) / cfg.fps
        expected = np.array([v.source_frame(t) for t in instants]) % 32
        exact = sample_frames(path, cfg, seconds=3.0, offset_s=offset, reference_only=False)
        np.testing.assert_array_equal(ramp_index(exact), expected)
        fast = sample_frames(path, cfg, seconds=3.0, offset_s=offset)
        early = (expected - ramp_index(fast)) % 32
        assert early.max() <= 3  # reference frames only: never late, at most 3 frames (100 ms) early

"""A generated matrix of media variants, each checked against what a player presents.

Every file is made by the ffmpeg avsc runs (:func:`media_cases.make_variant`) with a known
answer: a beep at a known instant of the sound, three bars of known widths and a luma ramp
that numbers the source frames in the picture. Each variant is probed and decoded by avsc
and compared with that answer: the displayed size and chosen track, the beep's onset on
the file's timeline (a late track delayed, not shifted), each sampled frame's source frame
(the latest at or before its instant), and the bars' proportions (rotation and pixel
aspect applied). The fast set covers every value of every factor at least once; the
``slow`` set crosses containers, channel layouts and stream starts.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from media_cases import RAMP_PERIOD, Variant, bar_fractions, beep_onset, make_variant, ramp_index

from avsc.config import AudioConfig, FrameConfig
from avsc.media.decode import demux_audio, sample_frames
from avsc.media.probe import probe_media

FAST = [
    Variant("mp4-h264-aac"),
    Variant(
        "mkv-h264-flac-mono-96k-late-audio-two-tracks",
        container="mkv",
        acodec="flac",
        layout="mono",
        rate=96000,
        audio_start=1.0,
        tracks="noise-second",
    ),
    Variant(
        "mkv-vp9-opus-5.1-default-second-track",
        container="mkv",
        vcodec="libvpx-vp9",
        acodec="libopus",
        layout="5.1",
        tracks="noise-first-default-second",
    ),
    Variant("mov-h264-pcm-7.1-44k-rot90", container="mov", acodec="pcm_s16le", layout="7.1", rate=44100, rotation=90),
    Variant("mp4-hevc-aac-5.1-sar2-rot180", vcodec="libx265", layout="5.1", rate=44100, sar=2.0, rotation=180),
    Variant(
        "webm-vp8-vorbis-late-video", container="webm", vcodec="libvpx", acodec="libvorbis", rate=44100, video_start=0.6
    ),
    Variant("avi-mpeg4-mp3-mono-22k", container="avi", vcodec="mpeg4", acodec="libmp3lame", layout="mono", rate=22050),
    Variant("ts-mpeg2-mp2-25fps", container="ts", vcodec="mpeg2video", acodec="mp2", fps=25.0),
    Variant("m2ts-h264-aac-sar-half", container="m2ts", sar=0.5),  # TS carries no rotation
    Variant("mov-mjpeg-pcm-rot270", container="mov", vcodec="mjpeg", acodec="pcm_s16le", rotation=270),
    Variant(
        "mkv-h264-f32-8k-short-sound", container="mkv", acodec="pcm_f32le", rate=8000, seconds=3.0, audio_seconds=1.0
    ),
    Variant("mp4-short-picture-long-sound", seconds=1.0, audio_seconds=3.0, beep_at=2.0, fps=30.0),
    Variant("mp4-0.2s", seconds=0.2, beep_at=0.05, audio_seconds=0.3),
    Variant("mp4-h264-bframes-30fps", vcodec="libx264-bframes", fps=30.0),
]
SLOW = [
    Variant(
        f"{container}-{layout}-{start}",
        container=container,
        layout=layout,
        acodec={"mkv": "libopus", "mov": "pcm_s16le"}.get(container, "aac"),
        audio_start=0.8 if start == "late-audio" else 0.0,
        video_start=0.6 if start == "late-video" else 0.0,
    )
    for container, layout, start in itertools.product(
        ("mp4", "mkv", "mov", "ts"), ("mono", "stereo", "5.1"), ("together", "late-audio", "late-video")
    )
]
# The displayed picture's three bars after a centre crop of 4:3 to a square: the crop keeps
# x in [1/8, 7/8], so blue 0.278, red 0.444, green 0.278 of the width.
BARS = (0.278, 0.444, 0.278)
RATE = 16000
FRAMES = FrameConfig(fps=5.0, size=48)


def _late_slack(v: Variant) -> float:
    """How late the beep may sound: an encoder delay the container does not state (MP3 and
    MP2 anywhere, AAC outside MP4/MOV) delays it by that much in every player."""
    delay = {"libmp3lame": 1700, "mp2": 600}.get(v.acodec, 0)  # samples, with the decoder's own
    if v.acodec == "aac" and v.container in ("ts", "m2ts", "avi", "mkv"):
        delay = 1100  # 1024 samples of priming
    return 0.012 + delay / v.rate


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    return {v.name: make_variant(root / f"{v.name}.{v.container}", v) for v in FAST}


def check_variant(v: Variant, path) -> None:
    info = probe_media(path)
    assert (info.width, info.height) == v.display_size, "displayed size"
    assert info.audio_track == v.chosen_track
    assert info.audio_tracks == (1 if v.tracks == "one" else 2)
    if v.tracks != "one":
        assert any("2 audio tracks" in w for w in info.warnings)
    # Within two audio frames: priming and the last frame's padding are played where the
    # container cannot say to trim them (AAC frames are 128 ms at 8 kHz).
    assert info.duration_s == pytest.approx(v.duration, abs=max(0.08, 2 * 1024 / v.rate))

    # The sound of the whole recording: the beep where a player plays it, silence before.
    audio = demux_audio(path, AudioConfig(sample_rate=RATE, clip_seconds=1.0), duration_s=v.duration + 0.5, info=info)
    onset = beep_onset(audio, RATE)
    assert onset is not None
    assert v.beep_time - 0.005 <= onset <= v.beep_time + _late_slack(v), f"beep at {onset:.3f} s"
    before = audio[: max(0, int((v.beep_time - 0.05) * RATE))]
    assert before.size == 0 or np.abs(before).max() < 0.01, "sound before the beep: the wrong track, or shifted"
    assert np.abs(audio[int((v.beep_time + 0.05) * RATE) : int((v.beep_time + 0.15) * RATE)]).max() > 0.2

    # Frames half a source frame after each instant: the latest source frame at or before it.
    offset = 0.5 / v.fps
    span = v.duration + 0.4
    frames = sample_frames(path, FRAMES, seconds=span, offset_s=offset, info=info, reference_only=False)
    instants = offset + np.arange(len(frames)) / FRAMES.fps
    expected = np.array([v.source_frame(t) for t in instants]) % RAMP_PERIOD
    np.testing.assert_array_equal(ramp_index(frames), expected)
    for got, want in zip(bar_fractions(frames[0]), BARS, strict=True):
        assert got == pytest.approx(want, abs=0.07), f"bars {bar_fractions(frames[0])}"

    # Reference frames only: never late, at most the skipped B-frames early.
    fast = sample_frames(path, FRAMES, seconds=span, offset_s=offset, info=info)
    early = (expected - ramp_index(fast)) % RAMP_PERIOD
    assert early.max() <= 3, f"reference-only frames up to {early.max()} source frames early"


@pytest.mark.parametrize("variant", FAST, ids=[v.name for v in FAST])
def test_variant_decodes_as_a_player_shows_it(generated, variant):
    check_variant(variant, generated[variant.name])


@pytest.mark.slow
@pytest.mark.parametrize("variant", SLOW, ids=[v.name for v in SLOW])
def test_variant_matrix_slow(tmp_path, variant):
    check_variant(variant, make_variant(tmp_path / f"{variant.name}.{variant.container}", variant))

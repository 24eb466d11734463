"""probe_media on real ffmpeg-written files: channel layouts, sizes, and broken files."""

from __future__ import annotations

import pytest
from media_cases import make_corrupt, make_text_as_mp4, make_truncated, make_video

from avsc.errors import MediaError
from avsc.media.probe import channels_of_layout, parse_ffmpeg_report, probe_media


@pytest.mark.parametrize(
    "channels, has_audio",
    [(2, True), (1, True), (6, True), (0, False)],
    ids=["stereo", "mono", "5.1", "no-audio"],
)
def test_probe_reports_audio_layout(tmp_path, channels, has_audio):
    path = make_video(tmp_path / "clip.mp4", seconds=1.0, channels=channels, sample_rate=48000)
    info = probe_media(path)
    assert info.has_video and info.video_codec == "h264"
    assert (info.width, info.height) == (160, 120)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(1.0, abs=0.1)
    assert info.has_audio is has_audio
    if has_audio:
        assert info.audio_channels == channels
        assert info.audio_rate == 48000
        assert info.audio_codec == "aac"
    else:
        assert info.audio_channels is None and info.audio_rate is None


def test_probe_odd_resolution_short_clip_and_other_rate(tmp_path):
    path = make_video(tmp_path / "odd.mp4", seconds=0.5, width=322, height=182, fps=25.0, sample_rate=44100)
    info = probe_media(path, decode_check=True)
    assert (info.width, info.height) == (322, 182)
    assert info.fps == pytest.approx(25.0)
    assert info.audio_rate == 44100
    assert info.duration_s == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize(
    "maker, problem",
    [(make_truncated, "truncated"), (make_text_as_mp4, "moov atom not found")],
    ids=["truncated", "text-as-mp4"],
)
def test_probe_rejects_broken_files_by_name(tmp_path, maker, problem):
    path = maker(tmp_path / "bad.mp4")
    with pytest.raises(MediaError) as caught:
        probe_media(path)
    assert str(path) in str(caught.value)
    assert problem in caught.value.problem


def test_probe_missing_and_empty_file(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        probe_media(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        probe_media(tmp_path / "empty.mp4")


def test_decode_check_catches_corrupt_frames_inside_intact_container(tmp_path):
    path = make_corrupt(tmp_path / "corrupt.mp4")
    assert probe_media(path).has_video  # the container alone looks fine
    with pytest.raises(MediaError, match="corrupt data in the first second"):
        probe_media(path, decode_check=True)


@pytest.mark.parametrize(
    "layout, channels",
    [
        ("mono", 1),
        ("stereo", 2),
        ("5.1", 6),
        ("5.1(side)", 6),
        ("quad", 4),
        ("7.1", 8),
        ("2.1", 3),
        ("6 channels", 6),
        ("3 channels (FL+FR+LFE)", 3),
        ("nonsense", None),
    ],
)
def test_channels_of_layout(layout, channels):
    assert channels_of_layout(layout) == channels


def test_parse_report_first_video_and_audio_stream_and_fractional_fps():
    report = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:00:10.01, start: 0.000000, bitrate: 20000 kb/s
  Stream #0:0[0x1](eng): Video: h264 (High) (avc1 / 0x31637661), yuvj420p(pc, bt709, progressive), \
1920x1080 [SAR 1:1 DAR 16:9], 19000 kb/s, 29.97 fps, 29.97 tbr, 90k tbn (default)
  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 7.1, fltp, 256 kb/s (default)
  Stream #0:2[0x3](eng): Data: none (tmcd / 0x64636D74), 0 kb/s
  Stream #0:3[0x4](eng): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 64 kb/s
"""
    info = parse_ffmpeg_report("x.mp4", report)
    assert info.duration_s == pytest.approx(10.01)
    assert (info.width, info.height, info.fps) == (1920, 1080, pytest.approx(29.97))
    assert (info.audio_channels, info.audio_rate) == (8, 48000)


def test_parse_report_without_video_stream_is_an_error():
    report = """Input #0, wav, from 'x.wav':
  Duration: 00:00:04.00, bitrate: 2304 kb/s
  Stream #0:0: Audio: pcm_s24le ([1][0][0][0] / 0x0001), 48000 Hz, 2 channels, s32 (24 bit), 2304 kb/s
"""
    with pytest.raises(MediaError, match="no video stream"):
        parse_ffmpeg_report("x.wav", report)

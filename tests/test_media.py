"""Demux and frame sampling on real (tiny) H.264 + AAC files, including broken ones."""

from __future__ import annotations

import numpy as np
import pytest
from media_cases import make_text_as_mp4, make_truncated, make_video

from avsc.config import AudioConfig, FrameConfig
from avsc.errors import MediaError
from avsc.media.decode import demux_audio, media_duration, sample_frames
from avsc.media.encode import write_clip

AUDIO = AudioConfig(clip_seconds=2.0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        "mono": make_video(root / "mono.mp4", seconds=2.0, channels=1, tone_hz=1000.0),
        "stereo": make_video(root / "stereo.mp4", seconds=2.0, channels=2, tone_hz=1000.0),
        "surround": make_video(root / "surround.mp4", seconds=2.0, channels=6, tone_hz=1000.0),
        "silent": make_video(root / "silent.mp4", seconds=2.0, channels=0),
        "short": make_video(root / "short.mp4", seconds=1.0, fps=10.0),
        "long": make_video(root / "long.mp4", seconds=3.0, fps=10.0),
        "odd": make_video(root / "odd.mp4", seconds=1.0, width=161, height=97),
        "truncated": make_truncated(root / "truncated.mp4", seconds=2.0),
        "text": make_text_as_mp4(root / "text.mp4"),
    }


def rms(audio: np.ndarray) -> np.ndarray:
    return np.sqrt((audio.astype(np.float64) ** 2).mean(axis=0))


def test_mono_is_duplicated_to_two_equal_channels(videos):
    audio = demux_audio(videos["mono"], AUDIO)
    assert audio.shape == (AUDIO.n_samples, 2) and audio.dtype == np.float32
    np.testing.assert_array_equal(audio[:, 0], audio[:, 1])
    assert rms(audio)[0] > 0.1  # the 0.3-amplitude tone is there


def test_stereo_keeps_distinct_channels_and_is_resampled(videos):
    audio = demux_audio(videos["stereo"], AUDIO)
    assert not np.array_equal(audio[:, 0], audio[:, 1])  # independent noise per channel
    # 48 kHz in, 32 kHz out: the 1 kHz tone must still be at 1 kHz.
    spectrum = np.abs(np.fft.rfft(audio[:, 0]))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / AUDIO.sample_rate)
    assert abs(freqs[np.argmax(spectrum)] - 1000.0) < 2.0


def test_surround_is_downmixed_to_two_sensible_channels(videos):
    stereo = rms(demux_audio(videos["stereo"], AUDIO))
    audio = demux_audio(videos["surround"], AUDIO)
    assert audio.shape == (AUDIO.n_samples, 2)
    level = rms(audio)
    assert np.all(level > 0.5 * stereo) and np.all(level < 4.0 * stereo)
    assert np.abs(audio).max() < 1.5


def test_no_audio_stream_is_a_media_error_naming_the_file(videos):
    with pytest.raises(MediaError, match="no audio stream") as info:
        demux_audio(videos["silent"], AUDIO)
    assert "silent.mp4" in str(info.value)


def test_short_clip_is_padded(videos):
    audio = demux_audio(videos["short"], AUDIO)
    assert audio.shape == (AUDIO.n_samples, 2)
    assert rms(audio[: AUDIO.sample_rate // 2]).min() > 0.001
    assert np.all(audio[int(1.2 * AUDIO.sample_rate) :] == 0.0)
    frames = sample_frames(videos["short"], FrameConfig(fps=4.0, size=24), seconds=2.0)
    assert frames.shape == (8, 24, 24, 3)
    # 1 s of video at 10 frames/s sampled at 4 frames/s: from t = 1.0 s on, past the end,
    # the last frame (shown from 0.9 s), which is not the one shown at 0.75 s.
    for later in frames[5:]:
        np.testing.assert_array_equal(later, frames[4])
    assert not np.array_equal(frames[4], frames[3])
    assert not np.array_equal(frames[0], frames[3])  # the bars move


def test_long_clip_is_cropped_and_offset_moves_the_window(videos):
    audio = demux_audio(videos["long"], AUDIO)
    assert audio.shape == (AUDIO.n_samples, 2)
    assert rms(audio[-1000:]).min() > 0.001  # still sound at the end: cropped, not padded
    later = demux_audio(videos["long"], AUDIO, offset_s=1.0, duration_s=1.0)
    assert later.shape == (AUDIO.sample_rate, 2)
    np.testing.assert_allclose(later[5000:6000], audio[AUDIO.sample_rate + 5000 : AUDIO.sample_rate + 6000], atol=0.02)
    frames = sample_frames(videos["long"], FrameConfig(fps=2.0, size=16), seconds=2.0)
    assert frames.shape == (4, 16, 16, 3)


def test_odd_resolution_gives_square_frames(videos):
    frames = sample_frames(videos["odd"], FrameConfig(fps=2.0, size=50), seconds=1.0)
    assert frames.shape == (2, 50, 50, 3) and frames.dtype == np.uint8
    assert frames.std() > 5  # a picture, not a blank


def test_frames_keep_proportions_by_centre_crop(tmp_path):
    # A 2:1 picture: red left quarter, green middle half, blue right quarter.
    picture = np.zeros((4, 96, 192, 3), np.uint8)
    picture[:, :, :48, 0] = 255
    picture[:, :, 48:144, 1] = 255
    picture[:, :, 144:, 2] = 255
    path = write_clip(tmp_path / "wide.mp4", picture, fps=4.0)
    frames = sample_frames(path, FrameConfig(fps=2.0, size=32), seconds=1.0)
    mean = frames.reshape(-1, 3).mean(axis=0)
    assert mean[1] > 180 and mean[0] < 50 and mean[2] < 50  # only the centre (green) is kept


def test_every_frame_mode_matches_shape(videos):
    fast = sample_frames(videos["long"], FrameConfig(fps=2.0, size=16), seconds=3.0)
    exact = sample_frames(videos["long"], FrameConfig(fps=2.0, size=16), seconds=3.0, reference_only=False, threads=1)
    assert fast.shape == exact.shape == (6, 16, 16, 3)


@pytest.mark.parametrize("name", ["truncated", "text"])
def test_broken_files_are_media_errors(videos, name):
    with pytest.raises(MediaError) as info:
        demux_audio(videos[name], AUDIO)
    assert f"{name}.mp4" in str(info.value)
    with pytest.raises(MediaError):
        sample_frames(videos[name], FrameConfig(size=16), seconds=2.0)


def test_missing_file_and_bad_spans(tmp_path, videos):
    with pytest.raises(MediaError, match="not found"):
        demux_audio(tmp_path / "nowhere.mp4", AUDIO)
    with pytest.raises(MediaError, match="duration"):
        demux_audio(videos["stereo"], AUDIO, duration_s=0)
    with pytest.raises(MediaError, match="offset"):
        sample_frames(videos["stereo"], FrameConfig(), seconds=1.0, offset_s=-1.0)


def test_media_duration(videos):
    assert media_duration(videos["long"]) == pytest.approx(3.0, abs=0.15)


def test_a_colon_or_odd_characters_in_a_relative_path_reach_ffmpeg_as_a_file(videos, tmp_path, monkeypatch):
    # ffmpeg reads "scene:" as the name of a protocol ("Protocol not found") unless told the
    # input is a file.
    import shutil

    from avsc.media.probe import probe_media

    odd = tmp_path / "scene: park #1 (é).mp4"
    shutil.copy(videos["stereo"], odd)
    monkeypatch.chdir(tmp_path)
    name = odd.name
    assert probe_media(name).has_audio
    audio = demux_audio(name, AudioConfig(clip_seconds=1.0))
    assert audio.shape == (32000, 2) and rms(audio).min() > 0
    frames = sample_frames(name, FrameConfig(fps=2.0, size=32), seconds=1.0)
    assert frames.shape == (2, 32, 32, 3)
    written = write_clip(tmp_path / "out: copy.mp4", frames, 2.0)  # and as an output
    assert probe_media(written.name).width == 32


@pytest.mark.parametrize("samples", [479_999, 480_000, 480_001])
def test_a_tau_wav_a_sample_short_or_long_gives_exactly_the_clip(tmp_path, samples):
    from avsc.media.decode import read_wav
    from avsc.media.encode import write_wav
    from avsc.media.probe import probe_wav

    t = np.arange(samples) / 48_000
    left, right = 0.3 * np.sin(2 * np.pi * 1000 * t), 0.1 * np.sin(2 * np.pi * 250 * t)
    path = tmp_path / "airport-lisbon-1000-40000.wav"
    write_wav(path, np.stack([left, right], axis=1), 48_000, sample_width=3)
    info = probe_wav(path)
    assert (info.channels, info.sample_rate, info.frames, info.subtype) == (2, 48_000, samples, "PCM_24")
    audio = read_wav(path, AudioConfig())  # the paper's 32 kHz, 10 s
    assert audio.shape == (320_000, 2) and audio.dtype == np.float32
    assert rms(audio[1000:-1000]) == pytest.approx([0.3 / np.sqrt(2), 0.1 / np.sqrt(2)], rel=0.01)
    later = read_wav(path, AudioConfig(clip_seconds=1.0), offset_s=9.5)  # past the end: zeros
    assert later.shape == (32_000, 2) and not later[16_500:].any()
    with pytest.raises(MediaError, match="not a readable audio file"):
        probe_wav(make_text_as_mp4(tmp_path / "notes.wav"))

"""Edge-case media files for tests: odd channel layouts, no audio, truncated, not a video.

Small and fast (a 4-s 160x120 clip takes a fraction of a second); built on
:func:`avsc.media.encode.write_clip`, so the videos are H.264 + AAC MP4s like the dataset's.

Example:
    >>> make_video(tmp_path / "mono.mp4", channels=1, tone_hz=440.0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avsc.media.encode import write_clip, write_wav


def make_frames(seconds: float = 4.0, width: int = 160, height: int = 120, fps: float = 10.0,
                seed: int = 0) -> np.ndarray:
    """Moving colour bars [shape=(frames, height, width, 3), uint8]; frame i is shifted by i."""
    n = max(1, int(round(seconds * fps)))
    x = np.arange(width)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(8, 3), dtype=np.uint8)
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        bars = ((x + 2 * i) * 8 // max(width, 1)) % 8
        frames[i] = palette[bars][None, :, :]
    return frames


def make_audio(seconds: float = 4.0, channels: int = 2, sample_rate: int = 48000,
               tone_hz: float | None = None, seed: int = 0) -> np.ndarray:
    """[shape=(samples, channels), float] a tone (if given) plus quiet noise in every channel."""
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng(seed)
    audio = 0.01 * rng.standard_normal((n, channels))
    if tone_hz:
        audio += 0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n) / sample_rate)[:, None]
    return audio.astype(np.float32)


def make_video(path: str | Path, seconds: float = 4.0, width: int = 160, height: int = 120,
               fps: float = 10.0, channels: int = 2, sample_rate: int = 48000,
               tone_hz: float | None = None, seed: int = 0) -> Path:
    """Write an H.264 + AAC MP4. ``channels=0``: no audio track; 1 mono; 2 stereo; 6 = 5.1."""
    frames = make_frames(seconds, width, height, fps, seed)
    audio = make_audio(seconds, channels, sample_rate, tone_hz, seed) if channels else None
    return write_clip(path, frames, fps, audio, sample_rate)


def make_wav(path: str | Path, seconds: float = 4.0, channels: int = 2, sample_rate: int = 48000,
             tone_hz: float | None = None, seed: int = 0) -> Path:
    """Write a 24-bit PCM WAV, as the dataset's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, make_audio(seconds, channels, sample_rate, tone_hz, seed), sample_rate)
    return path


def make_truncated(path: str | Path, seconds: float = 4.0, **video_kwargs) -> Path:
    """A valid MP4 cut in half (as an interrupted download leaves it)."""
    path = Path(path)
    full = path.with_name(f"{path.stem}.full.mp4")
    make_video(full, seconds=seconds, **video_kwargs)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_text_as_mp4(path: str | Path) -> Path:
    """A text file with an .mp4 name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video\n" * 20)
    return path


def make_corrupt(path: str | Path, seconds: float = 4.0, **video_kwargs) -> Path:
    """An MP4 whose container is intact but whose first coded frames are overwritten."""
    path = Path(path)
    make_video(path, seconds=seconds, **video_kwargs)
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 8
    rng = np.random.default_rng(1)
    data[start + 16:start + 4016] = rng.integers(0, 256, size=4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path

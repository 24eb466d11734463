"""Writing media: PCM WAV files and H.264 + AAC MP4 clips (the demo dataset, tests, benchmarks).

The encoding command is built with ``ffmpeg-python`` and run by :func:`avsc.media.ffmpeg.run_ffmpeg`.
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path

import ffmpeg
import numpy as np

from avsc.errors import AvscError, MediaError
from avsc.media.ffmpeg import local_file_argument, run_ffmpeg

__all__ = ["write_wav", "write_clip"]


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, sample_width: int = 3) -> None:
    """Write PCM WAV (24-bit by default, as TAU) from float audio [shape=(samples, channels)]."""
    audio = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    if audio.ndim == 1:
        audio = audio[:, None]
    scale = float(2 ** (8 * sample_width - 1) - 1)
    ints = np.round(audio * scale).astype("<i4")
    raw = ints.view(np.uint8).reshape(-1, 4)[:, :sample_width].tobytes()
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(audio.shape[1])
        handle.setsampwidth(sample_width)
        handle.setframerate(sample_rate)
        handle.writeframes(raw)


def write_clip(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 48000,
    *,
    crf: int = 28,
) -> Path:
    """Encode frames (and optional audio) as an H.264 + AAC MP4, as the dataset's videos are.

    Args:
        frames: [shape=(n_frames, height, width, 3), uint8] RGB video frames.
        fps: frame rate.
        audio: [shape=(samples, channels), float in -1..1] or None for a video with no
            audio track. Any channel count (1, 2, 6 for 5.1 ...).
        sample_rate: audio sample rate.
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    _, height, width, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        picture = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=str(fps)).video
        if width % 2 or height % 2:
            picture = picture.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")  # yuv420p needs even sides
        streams = [picture]
        options = {
            "c:v": "libx264",
            "preset": "veryfast",
            "crf": str(crf),
            "pix_fmt": "yuv420p",
            "movflags": "+faststart",
        }
        if audio is not None:
            wav = Path(tmp) / "audio.wav"
            write_wav(wav, audio, sample_rate, sample_width=2)
            streams.append(ffmpeg.input(str(wav)).audio)
            options.update({"c:a": "aac", "b:a": "128k", "ar": str(sample_rate)})
        cmd = (
            ffmpeg.output(*streams, local_file_argument(path), **options)
            .global_args("-loglevel", "error")
            .get_args(overwrite_output=True)
        )
        try:
            run_ffmpeg(path, cmd, what="frames and sound to encode", input_bytes=frames.tobytes(), timeout_s=600.0)
        except MediaError as exc:
            raise AvscError(f"{path}: ffmpeg could not encode the clip: {exc.problem}") from None
    return path

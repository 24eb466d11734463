"""From a video file to arrays: its sound as PCM samples, its pictures as a few RGB frames.

Both run the ffmpeg binary of :func:`avsc.media.ffmpeg.ffmpeg_exe` (command lines built with
``ffmpeg-python``) and read raw data from its standard output, so nothing touches the disk.

- :func:`demux_audio`: the audio stream only (``-vn``: the video is not decoded), resampled
  to ``AudioConfig.sample_rate`` and mixed to ``AudioConfig.channels`` by ffmpeg's
  resampler. A mono track is duplicated; 5.1 and other surround layouts are downmixed with
  ffmpeg's standard matrix (front channels as they are, centre and surrounds at -3 dB, LFE
  dropped). The output is float, so a loud mix is not clipped on the way. The result is
  zero-padded or cropped to exactly the clip length.
- :func:`sample_frames`: ``FrameConfig.fps`` frames a second (frame ``i`` shows the picture
  nearest ``offset_s + i / fps``), each scaled so its SHORTER side is ``size`` and then
  centre-cropped to ``size x size``: the picture keeps its proportions (no squashing of a
  16:9 frame) at the price of the left and right edges. A video shorter than asked repeats
  its last frame.

Example:
    >>> audio = demux_audio("video/airport-lisbon-1000-40000.mp4", AudioConfig())
    >>> audio.shape, audio.dtype
    ((320000, 2), dtype('float32'))
    >>> sample_frames("video/airport-lisbon-1000-40000.mp4", FrameConfig(), seconds=10.0).shape
    (20, 224, 224, 3)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from avsc.config import AudioConfig, FrameConfig
from avsc.errors import MediaError
from avsc.media.ffmpeg import ffmpeg_exe, ffmpeg_source, redact
from avsc.media.probe import check_media_file, probe_media

_HINT = "re-download or re-extract the file, or remove it from the manifest"

# ffmpeg report lines that mean the file as a whole is unusable, even when ffmpeg
# managed to decode a part of it and exited with status 0.
_FATAL_MARKERS: tuple[tuple[str, str], ...] = (
    ("partial file", "file is truncated (ends inside its own data)"),
    ("moov atom not found", "not a complete MP4 (moov atom not found): truncated or not a video"),
    ("Invalid data found when processing input", "not a media file ffmpeg can read"),
    ("does not contain any stream", "no audio stream"),
    ("Stream map '' matches no streams", "no audio stream"),
)


def _source(path: str | Path) -> tuple[str, dict[str, str]]:
    """ffmpeg's input for a local file (checked to exist and be non-empty) or an ``s3://`` URI."""
    source, options = ffmpeg_source(path)
    if not options:
        check_media_file(Path(path), _HINT)
    return source, options


def _run_ffmpeg(path: Path | str, cmd: list[str], timeout_s: float, what: str, source: str = "") -> bytes:
    """Run ffmpeg, return its stdout; turn failures into a :class:`MediaError` naming ``path``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MediaError(path, f"ffmpeg did not finish decoding its {what} within {timeout_s:.0f} s",
                         _HINT) from None
    report = redact(proc.stderr.decode("utf-8", errors="replace"), source or str(path), path)
    for marker, problem in _FATAL_MARKERS:
        if marker in report:
            if problem == "no audio stream":
                raise MediaError(path, "no audio stream", "avsc needs a video with sound")
            # A decoder error after a complete read is data damage; before any output it
            # means the file could not be opened at all. Either way the clip is unusable.
            if marker != "Invalid data found when processing input" or proc.returncode != 0:
                raise MediaError(path, problem, _HINT)
    if proc.returncode != 0:
        lines = [line.strip() for line in report.splitlines() if line.strip()]
        detail = lines[-1][:160] if lines else f"exit status {proc.returncode}"
        raise MediaError(path, f"ffmpeg could not decode its {what} ({detail})", _HINT)
    return proc.stdout


def _span(offset_s: float, duration_s: float, path: Path) -> None:
    if offset_s < 0:
        raise MediaError(path, f"offset must be >= 0 s, not {offset_s}")
    if not duration_s > 0:
        raise MediaError(path, f"duration must be > 0 s, not {duration_s}")


def demux_audio(
    path: str | Path,
    cfg: AudioConfig,
    *,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """The audio of a video (or audio) file as float PCM at ``cfg.sample_rate``.

    Args:
        path: a video (or audio) file ffmpeg can read: a local path or an ``s3://`` URI
            (read straight from the store, see :func:`avsc.media.ffmpeg.ffmpeg_source`).
        cfg: sample rate and channel count to deliver; ``cfg.clip_seconds`` is the default length.
        offset_s: where to start, in seconds from the start of the file.
        duration_s: how many seconds to deliver (default ``cfg.clip_seconds``); must be > 0.
            A shorter file is padded with silence, a longer one cropped.
        timeout_s: give up on a file ffmpeg cannot decode in this time.

    Returns:
        [shape=(round(duration_s * cfg.sample_rate), cfg.channels), float32] samples in -1..1.

    Raises:
        MediaError: missing or empty file, not decodable, truncated, no audio stream
            (the message names the file).
    """
    import ffmpeg

    path = str(path)
    duration_s = cfg.clip_seconds if duration_s is None else float(duration_s)
    _span(offset_s, duration_s, path)
    source, input_args = _source(path)
    if offset_s > 0:
        input_args["ss"] = f"{offset_s:.6f}"
    stream = ffmpeg.input(source, t=f"{duration_s:.6f}", **input_args)
    cmd = (stream.output("pipe:", format="f32le", acodec="pcm_f32le", ac=cfg.channels,
                         ar=cfg.sample_rate, vn=None, sn=None, dn=None)
           .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
           .compile(cmd=ffmpeg_exe()))
    raw = _run_ffmpeg(path, cmd, timeout_s, "audio", source)
    samples = np.frombuffer(raw, dtype="<f4")
    usable = len(samples) - len(samples) % cfg.channels
    samples = samples[:usable].reshape(-1, cfg.channels)
    if len(samples) == 0:
        raise MediaError(path, "no audio samples decoded" + (f" after {offset_s:g} s" if offset_s else ""),
                         _HINT)
    n = int(round(duration_s * cfg.sample_rate))
    out = np.zeros((n, cfg.channels), dtype=np.float32)
    keep = min(n, len(samples))
    out[:keep] = samples[:keep]
    return out


def sample_frames(
    path: str | Path,
    cfg: FrameConfig,
    *,
    seconds: float,
    offset_s: float = 0.0,
    reference_only: bool = True,
    threads: int = 0,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """``cfg.fps`` RGB frames a second from a video, scaled and centre-cropped to ``cfg.size``.

    Decoding the video is the cost; only the kept frames are scaled and converted. With
    ``reference_only`` the decoder skips the frames no other frame refers to (most
    B-frames; ffmpeg's ``-skip_frame noref``), which saves about a third of the decode of a
    typical H.264 stream, and the frame-rate filter takes the nearest decoded frame: a
    kept frame may be a frame or two (<= 70 ms at 30 frames/s) from its ideal instant.
    The pictures themselves are decoded exactly.

    Args:
        path: a video file: a local path or an ``s3://`` URI.
        cfg: frame rate and square size of the frames.
        seconds: span to sample, from ``offset_s``.
        offset_s: where to start, in seconds.
        reference_only: decode only reference frames (see above); False decodes every frame.
        threads: decoder threads (0: ffmpeg's choice; 1 is the most efficient when
            several clips are decoded in parallel processes).
        timeout_s: give up on a file ffmpeg cannot decode in this time.

    Returns:
        [shape=(round(seconds * cfg.fps), cfg.size, cfg.size, 3), uint8] RGB frames; the
        last decoded frame is repeated when the video ends early.

    Raises:
        MediaError: missing or empty file, not decodable, truncated, no frame decoded.
    """
    import ffmpeg

    path = str(path)
    _span(offset_s, seconds, path)
    n = int(round(seconds * cfg.fps))
    if n < 1:
        raise MediaError(path, f"{seconds:g} s at {cfg.fps:g} frames/s gives no frame")
    source, input_args = _source(path)
    size = int(cfg.size)
    if offset_s > 0:
        input_args["ss"] = f"{offset_s:.6f}"
    if reference_only:
        input_args["skip_frame"] = "noref"
    if threads:
        input_args["threads"] = str(int(threads))
    stream = ffmpeg.input(source, t=f"{seconds:.6f}", **input_args).video
    stream = (stream.filter("fps", fps=cfg.fps)
              .filter("scale", size, size, force_original_aspect_ratio="increase", flags="area")
              .filter("crop", size, size))
    cmd = (stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=n, an=None)
           .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
           .compile(cmd=ffmpeg_exe()))
    raw = _run_ffmpeg(path, cmd, timeout_s, "video", source)
    frame_bytes = size * size * 3
    count = len(raw) // frame_bytes
    if count == 0:
        raise MediaError(path, "no video frame decoded" + (f" after {offset_s:g} s" if offset_s else ""),
                         _HINT)
    frames = np.frombuffer(raw[:count * frame_bytes], dtype=np.uint8).reshape(count, size, size, 3)
    if count >= n:
        return frames[:n].copy()
    pad = np.repeat(frames[-1:], n - count, axis=0)
    return np.concatenate([frames, pad], axis=0)


def media_duration(path: str | Path) -> float:
    """Length of a media file in seconds, as its container states it.

    Raises:
        MediaError: the file cannot be read or does not state its duration.
    """
    info = probe_media(path)
    if info.duration_s is None:
        raise MediaError(path, "the file does not state its duration", _HINT)
    return float(info.duration_s)

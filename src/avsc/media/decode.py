"""From a video file to arrays: its sound as PCM samples, its pictures as a few RGB frames.

Both decode what a media player presents, on the player's timeline (0 is the file's
start), from the streams :func:`avsc.media.probe.probe_media` chose (the default audio
track, else the first; the default video stream, else the first). The command lines are
built with ``ffmpeg-python`` (input with ``-ss``/``-t``, stream ``0:a:N`` or ``0:v:N``, a
filter chain, the output; the chain becomes a ``-filter_complex`` graph with labelled
links, which gives the same samples and frames as ``-af``/``-vf``) and run through
:func:`avsc.media.ffmpeg.run_ffmpeg`. Raw data is read from ffmpeg's standard output, so
nothing touches the disk.

- :func:`demux_audio`: the chosen audio track only (stream ``0:a:N``; the video is not
  decoded), resampled to ``AudioConfig.sample_rate`` and mixed to ``AudioConfig.channels``
  by ffmpeg's resampler. A track that starts late is delayed, not shifted (silence until
  it starts: ``aresample=first_pts=0``); a gap inside it is filled with silence; past its
  end there is silence. A mono track is duplicated; 5.1 and other surround layouts are
  downmixed with ffmpeg's standard matrix (front channels as they are, centre and
  surrounds at -3 dB, LFE dropped). The output is float, so a loud mix is not clipped on
  the way. Non-finite samples (NaN, Inf) are an error; digital silence is reported by
  :func:`is_silent` and left to the caller.
- :func:`sample_frames`: ``FrameConfig.fps`` frames a second; frame ``i`` is the picture a
  player shows at ``offset_s + i / fps`` (the latest frame whose time is at or before that
  instant), turned and stretched as it is displayed (rotation, pixel aspect ratio), scaled
  so its SHORTER side is ``size`` and centre-cropped to ``size x size``: the picture keeps
  its proportions at the price of the left and right edges. Before the picture starts
  its first frame is shown, after it ends its last one.

Example::

    audio = demux_audio("video/airport-lisbon-1000-40000.mp4", AudioConfig())
    audio.shape, audio.dtype  # ((320000, 2), dtype('float32'))
    sample_frames("video/airport-lisbon-1000-40000.mp4", FrameConfig(), seconds=10.0).shape  # (20, 224, 224, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
from ffmpeg.nodes import FilterableStream, OutputStream

from avsc.config import AudioConfig, FrameConfig
from avsc.errors import MediaError
from avsc.media.ffmpeg import HINT, check_decoded_cleanly, media_path, run_ffmpeg
from avsc.media.probe import MediaInfo, check_media_file, probe_media

# Peak amplitude below which a clip's sound counts as digital silence: one step of 16-bit
# PCM (-90.3 dBFS). Nothing a microphone records stays under it; a muted or blank track does.
SILENCE_PEAK = 2.0**-15
# Seconds decoded before a window's start, so its first frame is the one shown at that
# instant (a seek alone would start at the first frame AFTER it).
_PRE_ROLL_S = 1.0

__all__ = ["demux_audio", "read_wav", "sample_frames", "is_silent", "media_duration", "SILENCE_PEAK"]


def _input(path: str | Path, start_s: float, seconds: float, **options: str) -> FilterableStream:
    """``path`` read from ``start_s`` for ``seconds`` (``-ss``/``-t`` before ``-i``: the demuxer seeks)."""
    if start_s > 0:
        options["ss"] = f"{start_s:.6f}"
    return ffmpeg.input(str(path), t=f"{seconds:.6f}", **options)


def _anchored(output: OutputStream, source: FilterableStream, start_s: float | None) -> OutputStream:
    """``output``, plus a timeline anchor on ``source`` when the decoded stream starts after zero.

    The anchor is a second output that copies every picture and sound stream to nowhere
    (``-map 0:v? -map 0:a? -c copy -f null -``: nothing decoded; ``?``: a kind the file
    lacks is skipped) and so keeps them all enabled: for formats whose timestamps may jump
    (MPEG-TS), ffmpeg moves the timeline's zero to the first ENABLED stream, so decoding a
    late sound track alone would shift it to the start. Only added where that can happen (it
    costs about 3 % more CPU on a frame decode).
    """
    if start_s is not None and start_s <= 0.0005:
        return output
    anchor = ffmpeg.output(source["v?"], source["a?"], "-", c="copy", format="null")
    return ffmpeg.merge_outputs(output, anchor)


def _span(offset_s: float, duration_s: float, path: str | Path) -> None:
    if offset_s < 0:
        raise MediaError(path, f"offset must be >= 0 s, not {offset_s}")
    if not duration_s > 0:
        raise MediaError(path, f"duration must be > 0 s, not {duration_s}")


def is_silent(audio: np.ndarray) -> bool:
    """Whether decoded audio is digital silence: every sample below :data:`SILENCE_PEAK` in magnitude."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def demux_audio(
    path: str | Path,
    cfg: AudioConfig,
    *,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    info: MediaInfo | None = None,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """The sound of a video as a player plays it, as float PCM at ``cfg.sample_rate``.

    Args:
        path: a video file ffmpeg can read: a local path or an ``s3://`` URI (decoded
            straight from the store, see :func:`avsc.media.ffmpeg.run_ffmpeg`).
        cfg: sample rate and channel count to deliver; ``cfg.clip_seconds`` is the default length.
        offset_s: where to start, in seconds from the start of the file.
        duration_s: how many seconds to deliver (default ``cfg.clip_seconds``); must be > 0.
            Where the track is silent (before it starts, after it ends) the result is zeros.
        info: the file's probe (probed now if not given): which track, where it lies.
        timeout_s: give up on a file ffmpeg cannot decode in this time.

    Returns:
        [shape=(round(duration_s * cfg.sample_rate), cfg.channels), float32] samples,
        about -1..1 (a downmix may exceed it).

    Raises:
        MediaError: missing or empty file, not decodable, truncated, no audio stream,
            non-finite samples (the message names the file).
    """
    path = media_path(path)
    duration_s = cfg.clip_seconds if duration_s is None else float(duration_s)
    _span(offset_s, duration_s, path)
    check_media_file(path, HINT)
    info = info or probe_media(path)
    if not info.has_audio:
        raise MediaError(path, "no audio stream", "avsc needs a video with sound")
    n = int(round(duration_s * cfg.sample_rate))
    out = np.zeros((n, cfg.channels), dtype=np.float32)
    start, end = info.audio_start_s, info.audio_end_s
    if (end is not None and offset_s >= end) or (start is not None and start >= offset_s + duration_s):
        return out  # the window lies outside the track: a player plays silence there
    source = _input(path, offset_s, duration_s)
    sound = (
        source[f"a:{info.audio_track}"]
        .filter("aresample", **{"async": 1, "first_pts": 0})  # async: a Python keyword
        .output(
            "pipe:", format="f32le", acodec="pcm_f32le", ac=cfg.channels, ar=cfg.sample_rate, vn=None, sn=None, dn=None
        )
    )
    args = _anchored(sound, source, start).global_args("-loglevel", "error").get_args()
    run = run_ffmpeg(path, args, what="audio", timeout_s=timeout_s)
    check_decoded_cleanly(path, run, "audio")
    raw = run.stdout
    samples = np.frombuffer(raw, dtype="<f4")
    samples = samples[: len(samples) - len(samples) % cfg.channels].reshape(-1, cfg.channels)
    if len(samples) == 0:
        where = f" between {offset_s:g} and {offset_s + duration_s:g} s" if offset_s else ""
        raise MediaError(path, f"no audio samples decoded from audio track {info.audio_track}{where}", HINT)
    finite = np.isfinite(samples)
    if not finite.all():
        raise MediaError(
            path,
            f"the audio track holds non-finite samples (NaN or Inf: {int((~finite).sum())} "
            f"of {finite.size} decoded values)",
            "the track is damaged or badly written float PCM; re-export the sound, or remove the file from the list",
        )
    keep = min(n, len(samples))
    out[:keep] = samples[:keep]
    return out


def read_wav(
    path: str | Path,
    cfg: AudioConfig,
    *,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """The sound of a dataset's own audio file (TAU 2021: ``audio/*.wav``, binaural, 48 kHz,
    24-bit) as float PCM at ``cfg.sample_rate``, exactly ``duration_s`` long.

    The file is resampled and mixed to ``cfg.channels`` by ffmpeg, as a video's track is by
    :func:`demux_audio`. A file shorter than the window is padded with zeros and a longer one
    cropped: TAU's 10-s files hold 479,999 to 480,001 samples.

    Args:
        path: the audio file: a local path or an ``s3://`` URI (read with range requests
            through a presigned URL; nothing copied).
        cfg: sample rate and channel count to deliver; ``cfg.clip_seconds`` is the default length.
        offset_s: where to start, in seconds from the start of the file.
        duration_s: how many seconds to deliver (default ``cfg.clip_seconds``); must be > 0.
        timeout_s: give up on a file ffmpeg cannot decode in this time.

    Returns:
        [shape=(round(duration_s * cfg.sample_rate), cfg.channels), float32] samples.

    Raises:
        MediaError: missing, empty or undecodable file, no samples in the window, or
            non-finite samples (the message names the file).
    """
    from avsc.media.probe import WAV_HINT

    path = media_path(path)
    duration_s = cfg.clip_seconds if duration_s is None else float(duration_s)
    _span(offset_s, duration_s, path)
    check_media_file(path, WAV_HINT)
    source = _input(path, offset_s, duration_s)
    sound = source.audio.output("pipe:", format="f32le", acodec="pcm_f32le", ac=cfg.channels, ar=cfg.sample_rate)
    args = sound.global_args("-loglevel", "error").get_args()
    raw = run_ffmpeg(path, args, what="audio", timeout_s=timeout_s, hint=WAV_HINT).stdout
    samples = np.frombuffer(raw, dtype="<f4")
    samples = samples[: len(samples) - len(samples) % cfg.channels].reshape(-1, cfg.channels)
    if len(samples) == 0:
        raise MediaError(path, f"no audio samples decoded from {offset_s:g} s on", WAV_HINT)
    if not np.isfinite(samples).all():
        raise MediaError(path, "the file holds non-finite samples (NaN or Inf)", WAV_HINT)
    n = int(round(duration_s * cfg.sample_rate))
    out = np.zeros((n, cfg.channels), dtype=np.float32)
    keep = min(n, len(samples))
    out[:keep] = samples[:keep]
    return out


def _frame_filters(
    picture: FilterableStream, cfg: FrameConfig, pre_roll_s: float, seconds: float, fixed_rate: bool
) -> FilterableStream:
    """The filter chain on ``picture``: move the window start to 0, pick frames, display geometry, scale, crop."""
    size = int(cfg.size)
    if fixed_rate:
        # The last frame stays on screen after the picture ends (tpad; before setpts, which
        # leaves the stream without the frame rate tpad's clones need), so the ticks past
        # the end show it, not the frame before the last tick inside the picture.
        picture = picture.filter("tpad", stop_mode="clone", stop_duration=f"{seconds:.6f}")
    if pre_roll_s > 0:
        picture = picture.filter("setpts", f"PTS-{pre_roll_s:.6f}/TB")
    if fixed_rate:
        # round=up: tick k takes the latest frame at or before k / fps (round=near, the
        # default, takes one up to half a tick LATER); start_time=0 shows the first frame
        # at ticks before the picture starts.
        picture = picture.filter("fps", fps=f"{cfg.fps:g}", round="up", start_time=0)
    # dar = iw / ih * sar, after ffmpeg's automatic rotation: the displayed proportions.
    # (ffmpeg-python escapes the commas for the filter graph.)
    picture = picture.filter(
        "scale", w=f"max({size},ceil({size}*dar))", h=f"max({size},ceil({size}/dar))", flags="area"
    )
    return picture.filter("setsar", 1).filter("crop", size, size)


def _decode_frames(
    path: str | Path,
    info: MediaInfo,
    cfg: FrameConfig,
    *,
    offset_s: float,
    seconds: float,
    fixed_rate: bool,
    max_frames: int | None,
    reference_only: bool,
    threads: int,
    timeout_s: float,
) -> np.ndarray:
    pre_roll = min(offset_s, max(_PRE_ROLL_S, 2.0 / info.fps if info.fps else 0.0))
    decoder: dict[str, str] = {}
    if reference_only:
        decoder["skip_frame"] = "noref"
    if threads:
        decoder["threads"] = str(int(threads))
    source = _input(path, offset_s - pre_roll, seconds + pre_roll, **decoder)
    limit = {"frames:v": max_frames} if max_frames else {}
    frames = _frame_filters(source[f"v:{info.video_stream}"], cfg, pre_roll, seconds, fixed_rate).output(
        "pipe:", format="rawvideo", pix_fmt="rgb24", an=None, sn=None, dn=None, **limit
    )
    args = _anchored(frames, source, info.video_start_s).global_args("-loglevel", "error").get_args()
    run = run_ffmpeg(path, args, what="video", timeout_s=timeout_s)
    check_decoded_cleanly(path, run, "video")
    raw = run.stdout
    size = int(cfg.size)
    count = len(raw) // (size * size * 3)
    return np.frombuffer(raw[: count * size * size * 3], dtype=np.uint8).reshape(count, size, size, 3)


def sample_frames(
    path: str | Path,
    cfg: FrameConfig,
    *,
    seconds: float,
    offset_s: float = 0.0,
    info: MediaInfo | None = None,
    reference_only: bool = True,
    threads: int = 0,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """``cfg.fps`` RGB frames a second, as a player shows them, scaled and centre-cropped to ``cfg.size``.

    Decoding the video is the cost; only the kept frames are scaled and converted. With
    ``reference_only`` the decoder skips the frames no other frame refers to (most
    B-frames; ffmpeg's ``-skip_frame noref``), which saves about a third of the decode of a
    typical H.264 stream; a kept frame is then the latest REFERENCE frame at or before its
    instant: exact, or up to the longest run of skipped frames early (one frame, 33 ms at
    30 frames/s, with x264's default B-pyramid; three frames, 100 ms, with three plain
    B-frames). Never late. ``reference_only=False`` decodes every frame and is exact.

    Args:
        path: a video file: a local path or an ``s3://`` URI.
        cfg: frame rate and square size of the frames.
        seconds: span to sample, from ``offset_s``.
        offset_s: where to start, in seconds from the start of the file.
        info: the file's probe (probed now if not given).
        reference_only: decode only reference frames (see above); False decodes every frame.
        threads: decoder threads (0: ffmpeg's choice; 1 is the most efficient when
            several clips are decoded in parallel processes).
        timeout_s: give up on a file ffmpeg cannot decode in this time.

    Returns:
        [shape=(round(seconds * cfg.fps), cfg.size, cfg.size, 3), uint8] RGB frames; past
        the end of the picture its last frame is repeated (a window that starts after the
        picture ended is its last frame throughout).

    Raises:
        MediaError: missing or empty file, not decodable, truncated, no frame decoded.
    """
    path = media_path(path)
    _span(offset_s, seconds, path)
    check_media_file(path, HINT)
    n = int(round(seconds * cfg.fps))
    if n < 1:
        raise MediaError(path, f"{seconds:g} s at {cfg.fps:g} frames/s gives no frame")
    info = info or probe_media(path)
    common: dict[str, Any] = {"reference_only": reference_only, "threads": threads, "timeout_s": timeout_s}
    end = info.video_end_s
    frames = np.zeros((0, cfg.size, cfg.size, 3), np.uint8)
    if end is None or offset_s < end:
        frames = _decode_frames(
            path, info, cfg, offset_s=offset_s, seconds=seconds, fixed_rate=True, max_frames=n, **common
        )
    if len(frames) == 0 and end is not None and offset_s > 0:
        # The window starts after the picture ended: a player keeps showing its last frame.
        tail = max(_PRE_ROLL_S, 2.0 / info.fps if info.fps else 0.0)
        frames = _decode_frames(
            path,
            info,
            cfg,
            offset_s=max(0.0, end - tail),
            seconds=tail + 1.0,
            fixed_rate=False,
            max_frames=None,
            **{**common, "reference_only": False},
        )[-1:]
    if len(frames) == 0:
        where = f" after {offset_s:g} s" if offset_s else ""
        raise MediaError(path, f"no video frame decoded{where} from video stream {info.video_stream}", HINT)
    if len(frames) >= n:
        return frames[:n].copy()
    return np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)], axis=0)


def media_duration(path: str | Path) -> float:
    """How long a player plays a media file, in seconds (see :attr:`MediaInfo.duration_s`).

    Raises:
        MediaError: the file cannot be read or its length cannot be told.
    """
    info = probe_media(path)
    if info.duration_s is None:
        raise MediaError(path, "neither the file nor its packets state its duration", HINT)
    return float(info.duration_s)

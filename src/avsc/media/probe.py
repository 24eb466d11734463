"""What is inside a media file: streams, size, frame rate, audio layout.

There is no ffprobe beside the ffmpeg binary avsc uses, so :func:`probe_media` runs
``ffmpeg -i FILE`` with a demux-only pass to the null muxer and reads its report. The
pass reads every packet without decoding, so a file cut short ("partial file") is caught
for the price of reading it once; ``decode_check`` also decodes the first second to catch
corrupt frames inside an intact container.

Example:
    >>> info = probe_media("video/airport-lisbon-1000-40000.mp4")
    >>> info.width, info.height, info.audio_channels
    (1280, 720, 2)
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from avsc.errors import MediaError
from avsc.media.ffmpeg import ffmpeg_exe, ffmpeg_source, redact

# ffmpeg's names for channel layouts that do not spell their count as "N.M".
_NAMED_LAYOUTS: dict[str, int] = {
    "mono": 1,
    "stereo": 2,
    "downmix": 2,
    "quad": 4,
    "hexagonal": 6,
    "octagonal": 8,
    "hexadecagonal": 16,
    "binaural": 2,
}

# Lines of ffmpeg's report that mean the container cannot be read as a whole.
_FATAL_MARKERS: tuple[tuple[str, str], ...] = (
    ("moov atom not found", "not a complete MP4 (moov atom not found): truncated or not a video"),
    ("Invalid data found when processing input", "not a media file ffmpeg can read"),
    ("partial file", "file is truncated (ends inside its own data)"),
    ("Could not find codec parameters", "stream parameters unreadable: corrupt or truncated"),
    ("error reading header", "corrupt header"),
)

# Lines that, during a decode of the first second, mean the coded data is corrupt.
_DECODE_MARKERS: tuple[str, ...] = (
    "Invalid NAL unit",
    "error while decoding",
    "corrupt",
    "concealing",
    "Invalid data",
    "partial file",
    "missing picture",
    "decode_slice_header error",
)

_HINT = "re-download or re-extract the file, or remove it from the metadata"


@dataclass(frozen=True)
class MediaInfo:
    """Facts about one media file, as ffmpeg reports them.

    ``duration_s`` is None when the container does not say; a video without an audio
    track has ``has_audio=False`` and None for the audio fields.
    """

    path: str
    duration_s: float | None
    has_video: bool
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    has_audio: bool
    audio_channels: int | None
    audio_rate: int | None
    audio_codec: str | None


def channels_of_layout(layout: str) -> int | None:
    """Number of channels in an ffmpeg channel-layout name.

    ``"mono"`` -> 1, ``"stereo"`` -> 2, ``"5.1(side)"`` -> 6, ``"7.1"`` -> 8,
    ``"quad"`` -> 4, ``"6 channels"`` -> 6; None when the name is unknown.
    """
    layout = layout.strip().lower()
    match = re.fullmatch(r"(\d+) channels(?: \(.*\))?", layout)
    if match:
        return int(match.group(1))
    base = re.sub(r"\(.*\)$", "", layout).strip()
    if base in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[base]
    if re.fullmatch(r"\d+(\.\d+){1,2}", base):  # 2.1, 5.1, 7.1, 5.1.2, 22.2
        return sum(int(part) for part in base.split("."))
    return None


def _number(text: str) -> float:
    """ffmpeg writes large rates as "1k"/"90k"."""
    if text.endswith("k"):
        return float(text[:-1]) * 1000.0
    return float(text)


def parse_ffmpeg_report(path: str | Path, report: str) -> MediaInfo:
    """Read a :class:`MediaInfo` from the stderr of ``ffmpeg -i FILE`` (first input only).

    Raises:
        MediaError: the report says the file is unreadable or has no video stream.
    """
    for marker, problem in _FATAL_MARKERS:
        if marker in report:
            raise MediaError(path, problem, _HINT)
    if "Input #0" not in report:
        tail = report.strip().splitlines()[-1:] or ["no report"]
        raise MediaError(path, f"ffmpeg could not open it ({tail[0].strip()})", _HINT)

    duration = None
    video: dict = {}
    audio: dict = {}
    for line in report.splitlines():
        if line.startswith("Input #") and not line.startswith("Input #0"):
            break  # only the first input is asked about
        text = line.strip()
        match = re.match(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
        if match and duration is None:
            h, m, s = match.groups()
            duration = int(h) * 3600 + int(m) * 60 + float(s)
            continue
        if not text.startswith("Stream #0:"):
            continue
        if " Video: " in text and not video and "(attached pic)" not in text:
            spec = text.split(" Video: ", 1)[1]
            size = re.search(r", (\d+)x(\d+)(?=[ ,\[]|$)", spec)
            fps = re.search(r", ([\d.]+k?) fps", spec) or re.search(r", ([\d.]+k?) tbr", spec)
            video = {
                "codec": spec.split()[0].rstrip(","),
                "width": int(size.group(1)) if size else None,
                "height": int(size.group(2)) if size else None,
                "fps": _number(fps.group(1)) if fps else None,
            }
        elif " Audio: " in text and not audio:
            spec = text.split(" Audio: ", 1)[1]
            rate = re.search(r", (\d+) Hz", spec)
            channels = None
            if rate:
                after = spec[rate.end():].lstrip(", ")
                layout = re.match(r"(\d+ channels(?: \([^)]*\))?|[^,]+)", after)
                if layout:
                    channels = channels_of_layout(layout.group(1))
            audio = {
                "codec": spec.split()[0].rstrip(","),
                "rate": int(rate.group(1)) if rate else None,
                "channels": channels,
            }
    if not video:
        raise MediaError(path, "no video stream", "avsc needs a video file with picture and sound")
    return MediaInfo(
        path=str(path),
        duration_s=duration,
        has_video=True,
        width=video["width"],
        height=video["height"],
        fps=video["fps"],
        video_codec=video["codec"],
        has_audio=bool(audio),
        audio_channels=audio.get("channels"),
        audio_rate=audio.get("rate"),
        audio_codec=audio.get("codec"),
    )


def probe_media(path: str | Path, *, decode_check: bool = False, timeout_s: float = 120.0) -> MediaInfo:
    """Streams, picture size, frame rate and audio layout of a video file.

    Args:
        path: the media file: a local path, or an ``s3://`` URI (read with HTTP range
            requests through a presigned URL; nothing is copied to disk).
        decode_check: also decode the first second of every stream and fail on any
            decoder error (slower; catches corrupt data inside an intact container).
        timeout_s: give up on a file ffmpeg cannot finish reading in this time.

    Returns:
        A :class:`MediaInfo`. A video without audio is not an error here
        (``has_audio=False``); callers that need sound check it.

    Raises:
        MediaError: missing file, not a media file, truncated or corrupt, or no video stream.
    """
    source, options = ffmpeg_source(path)
    if not options:
        path = Path(path)
        check_media_file(path)
    url_args = [arg for key, value in options.items() for arg in (f"-{key}", value)]
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *url_args, "-i", source,
           "-map", "0:v?", "-map", "0:a?", "-c", "copy", "-f", "null", "-"]
    _, report = _run(path, cmd, timeout_s, source)
    info = parse_ffmpeg_report(path, report)
    if decode_check:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-t", "1",
               *url_args, "-i", source, "-map", "0:v:0", "-map", "0:a?", "-f", "null", "-"]
        returncode, errors = _run(path, cmd, timeout_s, source)
        lines = [line.strip() for line in errors.splitlines() if line.strip()]
        bad = [line for line in lines if any(m in line for m in _DECODE_MARKERS)]
        if bad or returncode != 0:
            detail = (bad or lines or ["ffmpeg failed"])[0 if bad else -1]
            raise MediaError(path, f"corrupt data in the first second ({detail[:120]})", _HINT)
    return info


def check_media_file(path: Path, hint: str = _HINT) -> None:
    """Raise a :class:`MediaError` naming ``path`` unless it is an existing, non-empty file."""
    if not path.exists():
        raise MediaError(path, "file not found", "check the path, or that the dataset is fully extracted")
    if not path.is_file():
        raise MediaError(path, "not a file")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty", hint)


def _run(path: Path | str, cmd: list[str], timeout_s: float, source: str) -> tuple[int, str]:
    """Run ffmpeg; return its exit status and its report (stderr, naming ``path``, not a URL)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MediaError(path, f"ffmpeg did not finish reading it within {timeout_s:.0f} s", _HINT) from None
    return proc.returncode, redact(proc.stderr.decode("utf-8", errors="replace"), source, path)

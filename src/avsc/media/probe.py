"""What is inside a media file, and which of its streams avsc decodes.

:func:`probe_media` runs one demux-only ffmpeg pass (``-c copy -f framecrc``: every packet
is read, nothing is decoded; built with ``ffmpeg-python``, run by
:func:`avsc.media.ffmpeg.run_ffmpeg`) and reads its report and packet table
(:mod:`avsc.media.ffmpeg_report`). The pass catches a file cut short ("partial file") for the
price of reading it once; ``decode_check`` also decodes the first second to catch corrupt
frames inside an intact container.

It then settles what a player would present, which decoding follows everywhere
(ingest, preprocessing, prediction, ``avsc inspect``):

- **the picture**: the default video stream, else the first (cover pictures are not
  videos); its displayed size applies the pixel aspect ratio and the rotation;
- **the sound**: the default audio track, else the first, never "the one with the most
  channels" (ffmpeg's own choice); a warning says so when there are several;
- **the timeline**: 0 is the file's start; each stream starts and ends where its packets
  do, and the recording lasts until the later of the two ends (``duration_s``), whatever
  the header states.

Example::

    info = probe_media("video/airport-lisbon-1000-40000.mp4")
    info.width, info.height, info.audio_channels, info.audio_track  # (1280, 720, 2, 0)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from avsc.errors import MediaError
from avsc.media.ffmpeg import HINT, media_path, report_problem, run_ffmpeg
from avsc.media.ffmpeg_report import StreamInfo, channels_of_layout, parse_packet_table, parse_report

log = logging.getLogger(__name__)

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
# Streams whose ends differ by more than this (seconds) are reported as of different lengths.
_LENGTH_SLACK_S = 0.5
# A stream starting this much (seconds) after the other is reported as starting late.
_LATE_START_S = 0.1

__all__ = ["MediaInfo", "StreamInfo", "probe_media", "parse_ffmpeg_report", "check_media_file", "channels_of_layout"]


@dataclass(frozen=True)
class MediaInfo:
    """Facts about one media file, and the streams avsc decodes from it.

    Attributes:
        path: the file.
        duration_s: how long a player plays it: the later end of the chosen picture and
            sound streams (seconds from the file's start); the header's figure only when
            the packets carry no timestamps.
        has_video, width, height, fps, video_codec: the chosen video stream; ``width`` x
            ``height`` is the DISPLAYED size (pixel aspect and rotation applied).
        has_audio, audio_channels, audio_rate, audio_codec: the chosen audio track (None
            fields without one).
        video_stream: index of the chosen stream among the video streams (``0:v:N``).
        audio_track: index of the chosen track among the audio streams (``0:a:N``), or None.
        audio_tracks: number of audio tracks in the file.
        coded_width, coded_height, sar, rotation: the stored picture before display.
        video_start_s, video_end_s, audio_start_s, audio_end_s: where the chosen streams'
            packets start and end on the file's timeline (an AAC track's first packet
            holds the encoder's priming, about 21 ms before its first sample).
        container_duration_s, container_start_s: what the header states.
        streams: every stream, as :class:`avsc.media.ffmpeg_report.StreamInfo`.
        warnings: things a user should know that do not stop decoding.
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
    video_stream: int = 0
    audio_track: int | None = None
    audio_tracks: int = 0
    coded_width: int | None = None
    coded_height: int | None = None
    sar: float | None = None
    rotation: int = 0
    video_start_s: float | None = None
    video_end_s: float | None = None
    audio_start_s: float | None = None
    audio_end_s: float | None = None
    container_duration_s: float | None = None
    container_start_s: float | None = None
    streams: tuple[StreamInfo, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (streams as a list of dicts)."""
        return dataclasses.asdict(self)


def _choose(streams: list[StreamInfo]) -> StreamInfo | None:
    """The default stream, else the first."""
    return next((s for s in streams if s.default), streams[0] if streams else None)


def parse_ffmpeg_report(path: str | Path, report: str, packets: str | None = None) -> MediaInfo:
    """Read a :class:`MediaInfo` from a probe's report (stderr) and packet table (stdout).

    Args:
        path: the file (for messages).
        report: ffmpeg's report on the first input.
        packets: the ``framecrc`` packet table of ``-map 0:v? -map 0:a?``, if there is one
            (without it, stream starts and ends are unknown).

    Raises:
        MediaError: the report has no input, or no video stream.
    """
    if "Input #0" not in report:
        tail = report.strip().splitlines()[-1:] or ["no report"]
        raise MediaError(path, f"ffmpeg could not open it ({tail[0].strip()})", HINT)
    parsed = parse_report(report)
    streams = list(parsed.streams) if packets is None else _with_timing(list(parsed.streams), packets)
    videos = [s for s in streams if s.kind == "video" and not s.attached_pic]
    audios = [s for s in streams if s.kind == "audio"]
    video, audio = _choose(videos), _choose(audios)
    if video is None:
        raise MediaError(path, "no video stream", "avsc needs a video file with picture and sound")
    ends = [s.end_s for s in (video, audio) if s is not None and s.end_s is not None]
    duration = max(ends) if ends else parsed.duration_s
    warnings = _track_warnings(videos, audios, video, audio) + _timeline_warnings(video, audio)
    if parsed.duration_s is not None and duration is not None and abs(parsed.duration_s - duration) > 1.0:
        warnings.append(
            f"the header states {parsed.duration_s:.2f} s, the streams run {duration:.2f} s; using the streams' length"
        )
    display = video.display_size or (None, None)
    return MediaInfo(
        path=str(path),
        duration_s=duration,
        has_video=True,
        width=display[0],
        height=display[1],
        fps=video.fps,
        video_codec=video.codec,
        has_audio=audio is not None,
        audio_channels=audio.channels if audio else None,
        audio_rate=audio.sample_rate if audio else None,
        audio_codec=audio.codec if audio else None,
        video_stream=video.type_index,
        audio_track=audio.type_index if audio else None,
        audio_tracks=len(audios),
        coded_width=video.width,
        coded_height=video.height,
        sar=video.sar,
        rotation=video.rotation,
        video_start_s=video.start_s,
        video_end_s=video.end_s,
        audio_start_s=audio.start_s if audio else None,
        audio_end_s=audio.end_s if audio else None,
        container_duration_s=parsed.duration_s,
        container_start_s=parsed.start_s,
        streams=tuple(streams),
        warnings=tuple(warnings),
    )


def _with_timing(streams: list[StreamInfo], packets: str) -> list[StreamInfo]:
    """``streams`` with the start, end and packet count the packet table gives each."""
    # The table numbers the OUTPUT streams: the mapped videos first, then the audios.
    mapped = [s for s in streams if s.kind == "video"] + [s for s in streams if s.kind == "audio"]
    timing = parse_packet_table(packets)
    by_index = {}
    for out_index, stream in enumerate(mapped):
        start, end, count = timing.get(out_index, (None, None, 0))
        by_index[stream.index] = dataclasses.replace(stream, start_s=start, end_s=end, packets=count)
    return [by_index.get(s.index, s) for s in streams]


def _track_warnings(
    videos: list[StreamInfo], audios: list[StreamInfo], video: StreamInfo, audio: StreamInfo | None
) -> list[str]:
    """Which stream of several was chosen, and why."""
    warnings: list[str] = []
    if len(videos) > 1:
        warnings.append(
            f"{len(videos)} video streams; using video stream {video.type_index}"
            f" ({'flagged default' if video.default else 'the first; none is flagged default'})"
        )
    if audio is not None and len(audios) > 1:
        chosen = "flagged default" if audio.default else "the first; none is flagged default"
        warnings.append(f"{len(audios)} audio tracks; using track {audio.type_index} ({audio.layout or '?'}, {chosen})")
    return warnings


def _timeline_warnings(video: StreamInfo, audio: StreamInfo | None) -> list[str]:
    """Picture and sound of different lengths, or one starting later than the other."""
    video_start, video_end = video.start_s, video.end_s
    audio_start, audio_end = (audio.start_s, audio.end_s) if audio is not None else (None, None)
    if video_start is None or video_end is None or audio_start is None or audio_end is None:
        return []
    warnings: list[str] = []
    if abs(video_end - audio_end) > _LENGTH_SLACK_S:
        shorter = "sound" if audio_end < video_end else "picture"
        after = "silence" if shorter == "sound" else "its last frame"
        warnings.append(
            f"picture ends at {video_end:.2f} s, sound at {audio_end:.2f} s: past its end the "
            f"{shorter} is {after}, as a player shows it"
        )
    for name, start, other_start in (("sound", audio_start, video_start), ("picture", video_start, audio_start)):
        if start - other_start > _LATE_START_S:
            first = "picture" if name == "sound" else "sound"
            warnings.append(
                f"the {name} starts at {start:.2f} s, later than the {first}: it is delayed to there, as a player does"
            )
    return warnings


def probe_media(path: str | Path, *, decode_check: bool = False, timeout_s: float = 120.0) -> MediaInfo:
    """Streams, displayed picture size, timing and chosen tracks of a video file.

    Args:
        path: the media file: a local path, or an ``s3://`` URI (read in place with range
            requests through a presigned URL; nothing is copied to disk).
        decode_check: also decode the first second of the chosen streams and fail on any
            decoder error (slower; catches corrupt data inside an intact container).
        timeout_s: give up on a file ffmpeg cannot finish reading in this time.

    Returns:
        A :class:`MediaInfo`. A video without audio is not an error here
        (``has_audio=False``); callers that need sound check it.

    Raises:
        MediaError: missing file, not a media file, truncated or corrupt, or no video stream.
        avsc.media.ffmpeg.FFmpegCrash: ffmpeg crashed on it.
    """
    path = media_path(path)
    check_media_file(path)
    source = ffmpeg.input(str(path))
    # Every picture and sound stream (``?``: a kind the file lacks is skipped), copied, not decoded.
    table = ffmpeg.output(source["v?"], source["a?"], "-", c="copy", format="framecrc")
    run = run_ffmpeg(path, table.get_args(), what="streams", timeout_s=timeout_s, check=False)
    problem = report_problem(run.report, run.returncode)
    if problem:
        raise MediaError(path, problem, HINT)
    info = parse_ffmpeg_report(path, run.report, run.stdout.decode("ascii", errors="replace"))
    if decode_check:
        first_second = ffmpeg.input(str(path), t=1)
        chosen = [first_second[f"v:{info.video_stream}"]]
        if info.audio_track is not None:
            chosen.append(first_second[f"a:{info.audio_track}"])
        args = ffmpeg.output(*chosen, "-", format="null").global_args("-v", "error", "-xerror").get_args()
        check = run_ffmpeg(path, args, what="first second", timeout_s=timeout_s, check=False)
        lines = [line.strip() for line in check.report.splitlines() if line.strip()]
        bad = [line for line in lines if any(m in line for m in _DECODE_MARKERS)]
        if bad or check.returncode != 0:
            detail = (bad or lines or ["ffmpeg failed"])[0 if bad else -1]
            raise MediaError(path, f"corrupt data in the first second ({detail[:120]})", HINT)
    for warning in info.warnings:
        log.debug("%s: %s", path, warning)
    return info


@dataclass(frozen=True)
class WavInfo:
    """A dataset's audio file as its header describes it: ``channels``, ``sample_rate`` (Hz),
    ``frames`` (samples per channel) and ``subtype`` (``PCM_24`` for TAU 2021)."""

    channels: int
    sample_rate: int
    frames: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


WAV_HINT = "re-download or re-extract the dataset's audio, or set data.audio_source = video"


def probe_wav(path: str | Path) -> WavInfo:
    """Read the header of an audio file (WAV, FLAC, ...): a local path, or an ``s3://`` URI
    (a few kilobytes read with range requests; nothing copied).

    Raises:
        MediaError: missing or empty file, or not an audio file libsndfile reads.
    """
    import soundfile

    path = media_path(path)
    check_media_file(path, WAV_HINT)
    try:
        if isinstance(path, str):
            from avsc.storage import locations

            with locations.open_input(path) as handle:
                info = soundfile.info(handle)
        else:
            info = soundfile.info(str(path))
    except (RuntimeError, TypeError, ValueError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise MediaError(path, f"not a readable audio file ({str(exc).strip()[:120]})", WAV_HINT) from None
    return WavInfo(
        channels=int(info.channels),
        sample_rate=int(info.samplerate),
        frames=int(info.frames),
        subtype=str(info.subtype),
    )


def check_media_file(path: Path | str, hint: str = HINT) -> None:
    """Raise a :class:`MediaError` naming ``path`` unless it is an existing, non-empty file
    (or ``s3://`` object)."""
    path = media_path(path)
    if isinstance(path, str):
        from avsc.storage import locations

        if not locations.exists(path):
            raise MediaError(path, "object not found", "check the URI (`avsc data ls`), or push the file")
        return
    if not path.exists():
        raise MediaError(path, "file not found", "check the path, or that the dataset is fully extracted")
    if not path.is_file():
        raise MediaError(path, "a folder, not a file" if path.is_dir() else "not a file")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty", hint)

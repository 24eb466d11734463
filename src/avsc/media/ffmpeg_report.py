"""Reading what ffmpeg tells about a file: its stream report and its packet table.

avsc runs one ffmpeg binary for everything and that binary comes without ffprobe, so a
probe (:func:`avsc.media.probe.probe_media`) is one demux-only ffmpeg run that yields two
texts, both parsed here:

- the **report** on stderr (``Input #0 ... Stream #0:1(eng): Audio: aac, 48000 Hz, 5.1,
  ... (default)``): each stream's kind, codec, picture size, sample aspect ratio,
  rotation (``displaymatrix``), frame rate, sample rate, channel layout and dispositions;
- the **packet table** on stdout, from ffmpeg's ``framecrc`` muxer (``-c copy -f framecrc
  -``): a ``#tb`` time base per stream and one line per packet (``stream, dts, pts,
  duration, size, crc``) with timestamps on the file's timeline, where 0 is the file's
  start as a player counts it. Each stream's first and last packet give its true start
  and end, whatever the container's header says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

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
_STREAM = re.compile(r"Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: (\w+): (.*)$")
_NOPTS = -(2**63)


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a file, as ffmpeg reports it.

    Attributes:
        index: the stream's index in the file (ffmpeg's ``0:N``).
        kind: ``video``, ``audio``, ``subtitle``, ``data`` or ``attachment``.
        type_index: its index among the streams of its kind (ffmpeg's ``0:a:N``).
        codec: codec name (``h264``, ``aac``, ...).
        default: flagged as the default stream of its kind.
        attached_pic: a cover picture, not a video.
        start_s, end_s: first packet's time and last packet's end, in seconds on the file's
            timeline (None without packets or timestamps).
        packets: packets read.
        width, height: coded picture size (video).
        sar: sample (pixel) aspect ratio, width / height of one pixel (video; 1.0 if unstated).
        rotation: degrees the picture is turned for display, as ``displaymatrix`` states (video).
        fps: frame rate (video).
        sample_rate, channels, layout: audio format (audio).
    """

    index: int
    kind: str
    type_index: int
    codec: str
    default: bool = False
    attached_pic: bool = False
    start_s: float | None = None
    end_s: float | None = None
    packets: int = 0
    width: int | None = None
    height: int | None = None
    sar: float | None = None
    rotation: int = 0
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    layout: str | None = None

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) as a player shows it: pixel aspect applied, then the rotation."""
        if self.width is None or self.height is None:
            return None
        width, height = self.width, self.height
        # As mpv does: stretch, never shrink (wide pixels widen the picture, tall ones heighten it).
        if self.sar and self.sar > 1.0:
            width = int(round(width * self.sar))
        elif self.sar and self.sar < 1.0:
            height = int(round(height / self.sar))
        if abs(self.rotation) % 180 == 90:
            width, height = height, width
        return width, height


@dataclass(frozen=True)
class Report:
    """What the report says about the first input: container facts and its streams."""

    duration_s: float | None
    start_s: float | None
    streams: tuple[StreamInfo, ...]


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


def _ratio(text: str) -> float | None:
    num, _, den = text.partition(":")
    try:
        value = float(Fraction(int(num), int(den)))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def parse_report(report: str) -> Report:
    """The container's duration and start and every stream of the first input of a report."""
    duration = start = None
    streams: list[dict] = []
    counts: dict[str, int] = {}
    in_input = False
    for line in report.splitlines():
        if line.startswith("Input #0"):
            in_input = True
            continue
        if not in_input:
            continue
        if line.startswith(("Input #", "Output #", "Stream mapping:")):
            break  # only the first input is asked about; output streams look alike
        text = line.strip()
        match = re.match(r"Duration: (?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)(?:, start: (-?[\d.]+))?", text)
        if match:
            if match.group(1) is not None and duration is None:
                h, m, s = match.group(1, 2, 3)
                duration = int(h) * 3600 + int(m) * 60 + float(s)
            if match.group(4) is not None:
                start = float(match.group(4))
            continue
        rotation = re.match(r"displaymatrix: rotation of (-?[\d.]+) degrees", text)
        if rotation and streams and streams[-1]["kind"] == "video":
            streams[-1]["rotation"] = int(round(float(rotation.group(1)))) % 360
            continue
        match = _STREAM.match(text)
        if not match:
            continue
        kind = match.group(2).lower()
        spec = match.group(3)
        counts[kind] = counts.get(kind, 0) + 1
        stream = {
            "index": int(match.group(1)),
            "kind": kind,
            "type_index": counts[kind] - 1,
            "codec": spec.split()[0].rstrip(",") if spec.split() else "unknown",
            "default": "(default)" in spec,
            "attached_pic": "(attached pic)" in spec,
        }
        if kind == "video":
            size = re.search(r", (\d+)x(\d+)(?=[ ,\[]|$)", spec)
            sar = re.search(r"\[SAR (\d+:\d+) DAR \d+:\d+\]", spec)
            fps = re.search(r", ([\d.]+k?) fps", spec) or re.search(r", ([\d.]+k?) tbr", spec)
            stream.update(
                width=int(size.group(1)) if size else None,
                height=int(size.group(2)) if size else None,
                sar=_ratio(sar.group(1)) if sar else 1.0,
                fps=_number(fps.group(1)) if fps else None,
            )
        elif kind == "audio":
            rate = re.search(r", (\d+) Hz", spec)
            layout = None
            if rate:
                after = spec[rate.end() :].lstrip(", ")
                found = re.match(r"(\d+ channels(?: \([^)]*\))?|[^,]+)", after)
                layout = found.group(1).strip() if found else None
            stream.update(
                sample_rate=int(rate.group(1)) if rate else None,
                layout=layout,
                channels=channels_of_layout(layout) if layout else None,
            )
        streams.append(stream)
    return Report(duration_s=duration, start_s=start, streams=tuple(StreamInfo(**s) for s in streams))


def parse_packet_table(table: str) -> dict[int, tuple[float | None, float | None, int]]:
    """Per stream of a ``framecrc`` packet table: (first packet's time, last end, packets).

    Times are in seconds on the file's timeline; None when the packets carry no timestamps.
    """
    time_bases: dict[int, Fraction] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    counts: dict[int, int] = {}
    for line in table.splitlines():
        if line.startswith("#tb "):
            key, _, value = line[4:].partition(":")
            num, _, den = value.strip().partition("/")
            time_bases[int(key)] = Fraction(int(num), int(den))
            continue
        if not line or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 5:
            continue
        try:
            index, dts, pts, duration = (int(f) for f in fields[:4])
        except ValueError:
            continue
        counts[index] = counts.get(index, 0) + 1
        if pts == _NOPTS:
            pts = dts
        if pts == _NOPTS:
            continue
        first[index] = min(first.get(index, pts), pts)
        last[index] = max(last.get(index, pts), pts + max(duration, 0))
    out: dict[int, tuple[float | None, float | None, int]] = {}
    for index, count in counts.items():
        tb = time_bases.get(index)
        if tb is None or index not in first:
            out[index] = (None, None, count)
        else:
            out[index] = (round(float(first[index] * tb), 6), round(float(last[index] * tb), 6), count)
    return out

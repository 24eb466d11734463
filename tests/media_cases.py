"""Media files for tests: edge cases and a generated matrix of variants with known answers.

- ``make_video`` and friends: H.264 + AAC MP4s like the dataset's (built on
  :func:`avsc.media.encode.write_clip`), odd channel layouts, no audio, truncated, not a video.
- :class:`Variant` / :func:`make_variant`: files made by the ffmpeg avsc runs from lavfi
  sources in any container, codec, channel layout, sample rate, length, stream start,
  track layout and picture geometry, each with the answer of what a player presents
  (a beep's onset in the sound, a luma ramp and three bars in the picture), read back
  with :func:`beep_onset`, :func:`ramp_index` and :func:`bar_fractions`.

All small and fast (a few-second 160x120 clip takes a fraction of a second).

Example:
    >>> make_video(tmp_path / "mono.mp4", channels=1, tone_hz=440.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsc.media.encode import write_clip, write_wav


def make_frames(
    seconds: float = 4.0, width: int = 160, height: int = 120, fps: float = 10.0, seed: int = 0
) -> np.ndarray:
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


def make_audio(
    seconds: float = 4.0, channels: int = 2, sample_rate: int = 48000, tone_hz: float | None = None, seed: int = 0
) -> np.ndarray:
    """[shape=(samples, channels), float] a tone (if given) plus quiet noise in every channel."""
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng(seed)
    audio = 0.01 * rng.standard_normal((n, channels))
    if tone_hz:
        audio += 0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n) / sample_rate)[:, None]
    return audio.astype(np.float32)


def make_video(
    path: str | Path,
    seconds: float = 4.0,
    width: int = 160,
    height: int = 120,
    fps: float = 10.0,
    channels: int = 2,
    sample_rate: int = 48000,
    tone_hz: float | None = None,
    seed: int = 0,
) -> Path:
    """Write an H.264 + AAC MP4. ``channels=0``: no audio track; 1 mono; 2 stereo; 6 = 5.1."""
    frames = make_frames(seconds, width, height, fps, seed)
    audio = make_audio(seconds, channels, sample_rate, tone_hz, seed) if channels else None
    return write_clip(path, frames, fps, audio, sample_rate)


def make_wav(
    path: str | Path,
    seconds: float = 4.0,
    channels: int = 2,
    sample_rate: int = 48000,
    tone_hz: float | None = None,
    seed: int = 0,
) -> Path:
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
    data[start + 16 : start + 4016] = rng.integers(0, 256, size=4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------- generated variants
#
# Files made by ffmpeg itself from lavfi sources, each with a known answer for what a
# player presents. The picture, as displayed, is WIDTH x HEIGHT: its top half three vertical
# bars (blue | red | green, a third of the width each), its bottom half a flat grey whose
# luma steps with the frame number (16 + 7 * (N mod 32), limited range), so a decoded frame
# tells which source frame it is. The sound is silence with one 1-kHz beep of BEEP_S
# seconds at ``beep_at`` seconds into its track.

WIDTH, HEIGHT = 160, 120
BEEP_S = 0.2
RAMP_PERIOD = 32


@dataclass(frozen=True)
class Variant:
    """One generated media file and what a player shows of it.

    ``rotation``: degrees (counter-clockwise) the stored picture is turned for display; it is
    stored turned the other way, so the displayed picture is always the same landscape one
    (MP4, MOV and MKV carry it; MPEG-TS cannot). ``video_start``: a multiple of a source
    frame keeps the frame checks half a frame from every frame boundary.
    ``sar``: pixel aspect ratio; the stored width is ``WIDTH / sar``. ``tracks``: ``one``;
    ``noise-second`` (scene track first, a loud 5.1 noise track second, neither flagged
    default: the first must be chosen); ``noise-first-default-second`` (noise first, scene
    track second and flagged default: the second must be chosen).
    """

    name: str
    container: str = "mp4"
    vcodec: str = "libx264"
    acodec: str = "aac"
    layout: str = "stereo"
    rate: int = 48000
    fps: float = 15.0
    seconds: float = 2.0
    audio_seconds: float | None = None
    video_start: float = 0.0
    audio_start: float = 0.0
    beep_at: float = 0.5
    tracks: str = "one"
    rotation: int = 0
    sar: float = 1.0

    @property
    def sound_seconds(self) -> float:
        return self.seconds if self.audio_seconds is None else self.audio_seconds

    @property
    def beep_time(self) -> float:
        """When a player plays the beep, seconds from the file's start."""
        return self.audio_start + self.beep_at

    @property
    def chosen_track(self) -> int:
        return 1 if self.tracks == "noise-first-default-second" else 0

    @property
    def duration(self) -> float:
        """How long a player plays it."""
        return max(self.video_start + self.seconds, self.audio_start + self.sound_seconds)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) a player shows: its stored pixels stretched by their aspect, never shrunk."""
        scale = 1.0 / self.sar if self.sar < 1.0 else 1.0
        return int(round(WIDTH * scale)), int(round(HEIGHT * scale))

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    def source_frame(self, t: float) -> int:
        """Index of the source frame a player shows at ``t`` (first before, last after the picture)."""
        index = int(np.floor((t - self.video_start) * self.fps + 1e-6))
        return min(max(index, 0), self.n_frames - 1)


def ramp_index(frames: np.ndarray) -> np.ndarray:
    """Source frame number (mod RAMP_PERIOD) shown by each of [shape=(n, s, s, 3)] frames."""
    bottom = frames[:, frames.shape[1] * 5 // 8 :, :, :].astype(np.float64).mean(axis=(1, 2, 3))
    luma = bottom * 219.0 / 255.0 + 16.0  # full-range RGB back to limited-range luma
    return np.round((luma - 16.0) / 7.0).astype(int)


def bar_fractions(frame: np.ndarray) -> tuple[float, float, float]:
    """Share of the top rows' width that is blue, red and green in one [s, s, 3] frame."""
    rows = frame[: frame.shape[0] * 3 // 8].astype(int)
    cols = rows.mean(axis=0)  # [s, 3]
    red = (cols[:, 0] > 128) & (cols[:, 1] < 100) & (cols[:, 2] < 100)
    green = (cols[:, 1] > 90) & (cols[:, 0] < 100) & (cols[:, 2] < 100)
    blue = (cols[:, 2] > 128) & (cols[:, 0] < 100) & (cols[:, 1] < 100)
    n = float(len(cols))
    return blue.sum() / n, red.sum() / n, green.sum() / n


def beep_onset(audio: np.ndarray, sample_rate: int) -> float | None:
    """Seconds to the first 5-ms frame whose energy exceeds a quarter of the loudest's, or None."""
    hop = max(1, sample_rate // 200)
    mono = audio.astype(np.float64).mean(axis=1) if audio.ndim == 2 else audio.astype(np.float64)
    frames = mono[: len(mono) // hop * hop].reshape(-1, hop)
    energy = (frames**2).mean(axis=1)
    if energy.size == 0 or energy.max() <= 1e-8:
        return None
    first = int(np.argmax(energy > 0.25 * energy.max()))
    # Refine inside the frame: first sample above a quarter of the beep's amplitude.
    segment = np.abs(mono[max(0, (first - 1) * hop) : (first + 1) * hop])
    above = np.flatnonzero(segment > 0.25 * np.abs(mono).max())
    return (max(0, (first - 1) * hop) + (int(above[0]) if above.size else hop)) / sample_rate


def _video_graph(v: Variant) -> str:
    half = HEIGHT // 2
    third = WIDTH // 3
    src = f"r={v.fps:g}:d={v.seconds:g}"
    bars = (
        f"color=c=blue:s={WIDTH}x{half}:{src},"
        f"drawbox=x={third}:y=0:w={third}:h={half}:color=red:t=fill,"
        f"drawbox=x={2 * third}:y=0:w={WIDTH - 2 * third}:h={half}:color=green:t=fill,format=yuv420p[bars];"
        f"color=c=black:s={WIDTH}x{half}:{src},format=yuv420p,"
        f"geq=lum='16+7*mod(N\\,{RAMP_PERIOD})':cb=128:cr=128[ramp];[bars][ramp]vstack=inputs=2"
    )
    stored = []
    if v.sar != 1.0:
        stored.append(f"scale={int(round(WIDTH / v.sar))}:{HEIGHT},setsar={v.sar:g}")
    turn = {0: [], 90: ["transpose=clock"], 180: ["hflip", "vflip"], 270: ["transpose=cclock"]}[v.rotation % 360]
    stored += turn
    return bars + ("," + ",".join(stored) if stored else "") + ",format=yuv420p"


def _audio_source(v: Variant, noise: bool) -> str:
    rate = 48000 if v.acodec == "libopus" else v.rate
    if noise:
        return f"anoisesrc=a=0.3:c=pink:r={rate}:d={v.sound_seconds:g},aformat=channel_layouts=5.1"
    beep = f"if(between(t\\,{v.beep_at:g}\\,{v.beep_at + BEEP_S:g})\\,0.5*sin(2*PI*1000*t)\\,0)"
    return f"aevalsrc=exprs='{beep}':s={rate}:d={v.sound_seconds:g}:c={v.layout}"


_ENCODER = {"libx264-bframes": "libx264"}  # aliases for an encoder with other options
# Encoder name -> options. "libx264-bframes": three plain (non-reference)
# B-frames between reference frames, the worst case for ``reference_only`` decoding.
_VIDEO_OPTIONS = {
    "libx264": ["-preset", "ultrafast", "-crf", "12"],
    "libx264-bframes": ["-preset", "fast", "-crf", "12", "-bf", "3", "-b-pyramid", "none", "-b_strategy", "0"],
    "libx265": ["-preset", "ultrafast", "-crf", "12", "-tag:v", "hvc1", "-x265-params", "log-level=error"],
    "libvpx-vp9": ["-deadline", "realtime", "-cpu-used", "8", "-crf", "10", "-b:v", "0"],
    "libvpx": ["-deadline", "realtime", "-cpu-used", "8", "-crf", "4", "-b:v", "2M"],
    "mpeg4": ["-q:v", "2"],
    "mpeg2video": ["-q:v", "2"],
    "mjpeg": ["-q:v", "2", "-pix_fmt", "yuvj420p"],
}


def shipped_ffmpeg() -> str:
    """The ffmpeg of the ``imageio-ffmpeg`` wheel: test files are made with it whatever
    ``AVSC_FFMPEG`` says, so they are the same under every decoder tested."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_variant(path: str | Path, v: Variant) -> Path:
    """Write the file of variant ``v`` at ``path`` with the shipped ffmpeg."""
    from avsc.media.ffmpeg import run_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-loglevel", "error", "-y"]
    if v.video_start:
        args += ["-itsoffset", f"{v.video_start:g}"]
    args += ["-f", "lavfi", "-i", _video_graph(v)]
    sources = [_audio_source(v, noise=False)]
    if v.tracks == "noise-second":
        sources.append(_audio_source(v, noise=True))
    elif v.tracks == "noise-first-default-second":
        sources.insert(0, _audio_source(v, noise=True))
    for source in sources:
        if v.audio_start:
            args += ["-itsoffset", f"{v.audio_start:g}"]
        args += ["-f", "lavfi", "-i", source]
    args += ["-map", "0:v"] + [a for i in range(len(sources)) for a in ("-map", f"{i + 1}:a")]
    args += ["-c:v", _ENCODER.get(v.vcodec, v.vcodec), *_VIDEO_OPTIONS.get(v.vcodec, []), "-c:a", v.acodec]
    if v.acodec in ("libmp3lame", "mp2", "ac3", "aac", "libvorbis"):
        args += ["-b:a", "192k"]
    if v.acodec == "libopus":
        args += ["-ar", "48000"]
    if len(sources) > 1:
        default = 1 if v.tracks == "noise-first-default-second" else None
        for i in range(len(sources)):
            args += [f"-disposition:a:{i}", "default" if i == default else "0"]
    rotate = v.rotation % 360 != 0
    target = path.with_name(f".{path.stem}.unrotated{path.suffix}") if rotate else path
    run_ffmpeg(target, args + [str(target)], what="generated streams", timeout_s=120, exe=shipped_ffmpeg())
    if rotate:  # the display matrix is written by a stream copy (an encode would turn the pixels)
        run_ffmpeg(
            path,
            [
                "-loglevel",
                "error",
                "-y",
                "-display_rotation:v:0",
                str(v.rotation),
                "-i",
                str(target),
                "-map",
                "0",
                "-c",
                "copy",
                str(path),
            ],
            what="rotation",
            timeout_s=60,
            exe=shipped_ffmpeg(),
        )
        target.unlink()
    return path


def make_nan_video(path: Path) -> Path:
    """A pcm_f32le MKV whose sound holds a NaN, +Inf and -Inf."""
    raw = path.with_suffix(".f32")
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(96000) / 48000)).astype("<f4")
    audio = np.stack([tone, tone], axis=1)
    audio[1000, 0], audio[5000, 1], audio[30000, 0] = np.nan, np.inf, -np.inf
    audio.tofile(raw)
    from avsc.media.ffmpeg import run_ffmpeg

    run_ffmpeg(
        path,
        [
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=gray:s=64x48:r=10:d=2",
            "-f",
            "f32le",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-i",
            str(raw),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "pcm_f32le",
            str(path),
        ],
        what="generated streams",
        exe=shipped_ffmpeg(),
    )
    raw.unlink()
    return path

"""A small synthetic dataset in the layout of TAU Urban Audio-Visual Scenes 2021.

The real development set is 34 hours of video; this one is a few minutes, made so the
whole system (ingest, features, five backbones, fusion, evaluation) can run end to end
on a laptop and in tests, and so that learning is needed to do well:

- each scene has a sound (noise band, tones, modulation, bursts) and a picture (colour
  layout, stripes, moving shapes) drawn from a table of signatures;
- some scenes share their sound and differ only by a cue that half their clips carry
  (bus/tram, airport/shopping_mall, public_square/street_pedestrian) while their
  pictures differ; others share their picture and differ only by a cue in half their
  clips (metro/metro_station, airport/bus, park/public_square, street_traffic/tram)
  while their sounds differ. No modality alone is perfect; fusing them helps;
- each recording location adds its own nuisance (gain, mains hum, spectral tilt, stereo
  balance, colour cast, brightness, camera tilt) and each clip its own noise, so a model
  that memorises locations does not generalise: train and evaluate locations are disjoint,
  as in the real split.

Example:
    >>> result = make_demo_dataset("demo", classes=10, clips_per_class=12)
    >>> result.n_clips, result.n_train + result.n_evaluate
    (120, 120)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsc.errors import ConfigError
from avsc.labels import CITIES, LABELS
from avsc.storage.files import atomic_path

log = logging.getLogger(__name__)

# Audio signatures: scenes that share a key sound alike (bar a faint per-scene cue).
_AUDIO_GROUP: dict[str, str] = {
    "airport": "hall", "shopping_mall": "hall",
    "bus": "vehicle", "tram": "vehicle",
    "public_square": "crowd", "street_pedestrian": "crowd",
    "metro": "tunnel", "metro_station": "platform", "park": "birds", "street_traffic": "cars",
}
# band: noise band in Hz; tones: steady tones in Hz; am_hz: slow loudness modulation;
# bursts_per_s: short loud events (steps, chirps, passing cars).
_AUDIO_SIGNATURES: dict[str, dict] = {
    "hall": {"band": (300.0, 1200.0), "tones": (523.0, 1568.0), "am_hz": 0.0, "bursts_per_s": 0.5},
    "vehicle": {"band": (60.0, 400.0), "tones": (98.0, 196.0), "am_hz": 1.5, "bursts_per_s": 0.0},
    "crowd": {"band": (900.0, 3500.0), "tones": (), "am_hz": 4.0, "bursts_per_s": 3.0},
    "tunnel": {"band": (120.0, 800.0), "tones": (2900.0,), "am_hz": 0.3, "bursts_per_s": 0.0},
    "platform": {"band": (450.0, 2200.0), "tones": (740.0,), "am_hz": 0.0, "bursts_per_s": 1.0},
    "birds": {"band": (3000.0, 9000.0), "tones": (4200.0, 6100.0), "am_hz": 7.0, "bursts_per_s": 4.0},
    "cars": {"band": (60.0, 3000.0), "tones": (), "am_hz": 0.2, "bursts_per_s": 0.7},
}
# Visual signatures: scenes that share a key look alike (bar a faint per-scene cue).
_VISUAL_GROUP: dict[str, str] = {
    "metro": "underground", "metro_station": "underground",
    "airport": "interior", "bus": "interior",
    "park": "green", "public_square": "green",
    "street_traffic": "road", "tram": "road",
    "shopping_mall": "shops", "street_pedestrian": "facade",
}
# top/bottom: RGB of the upper and lower part; horizon: where they meet (fraction of
# height); stripes: (angle in degrees, cycles across the width, contrast); shapes: count,
# RGB, radius (fraction of height), speed (fraction of width per second).
_VISUAL_SIGNATURES: dict[str, dict] = {
    "underground": {"top": (40, 45, 70), "bottom": (110, 110, 115), "horizon": 0.35,
                    "stripes": (0.0, 6.0, 30.0), "shapes": (2, (230, 220, 120), 0.08, 0.05)},
    "interior": {"top": (200, 205, 215), "bottom": (170, 150, 120), "horizon": 0.55,
                 "stripes": (90.0, 8.0, 35.0), "shapes": (4, (60, 60, 160), 0.07, 0.15)},
    "green": {"top": (120, 175, 235), "bottom": (70, 150, 60), "horizon": 0.45,
              "stripes": (60.0, 3.0, 15.0), "shapes": (3, (240, 240, 240), 0.05, 0.08)},
    "road": {"top": (150, 170, 195), "bottom": (70, 70, 75), "horizon": 0.5,
             "stripes": (135.0, 4.0, 40.0), "shapes": (3, (200, 40, 40), 0.12, 0.4)},
    "shops": {"top": (230, 180, 120), "bottom": (200, 200, 190), "horizon": 0.3,
              "stripes": (90.0, 14.0, 45.0), "shapes": (5, (240, 120, 180), 0.06, 0.1)},
    "facade": {"top": (185, 120, 90), "bottom": (160, 155, 145), "horizon": 0.7,
               "stripes": (0.0, 10.0, 35.0), "shapes": (6, (30, 30, 30), 0.05, 0.12)},
}
# Faint per-scene cues that separate scenes sharing a signature: a tone (Hz) and a patch
# (centre x, centre y as fractions, RGB).
_CUE_RATE = 0.5  # share of clips that carry their scene's cue
_AUDIO_CUE_HZ: dict[str, float] = {label: 1800.0 * 1.19 ** i for i, label in enumerate(LABELS)}
_VISUAL_CUE: dict[str, tuple[float, float, tuple[int, int, int]]] = {
    label: ((0.15 + 0.7 * ((i * 3) % 10) / 9), (0.2 + 0.6 * ((i * 7) % 10) / 9),
            ((i * 80) % 256, (i * 140 + 60) % 256, (i * 200 + 120) % 256))
    for i, label in enumerate(LABELS)
}


@dataclass(frozen=True)
class DemoResult:
    """What :func:`make_demo_dataset` wrote: the root and how many clips per split."""

    root: Path
    n_clips: int
    n_train: int
    n_evaluate: int


@dataclass(frozen=True)
class _Clip:
    stem: str
    label: str
    city: str
    location_id: int
    location_index: int
    segment: int
    fold: str  # train | evaluate


def plan_demo_clips(*, classes: int, clips_per_class: int, locations_per_class: int,
                    seed: int) -> list[_Clip]:
    """Which clips the demo dataset has: names, locations and their fold (no media)."""
    if not 1 <= classes <= len(LABELS):
        raise ConfigError(f"demo dataset: classes must be 1..{len(LABELS)}, not {classes}")
    if locations_per_class < 3:
        raise ConfigError("demo dataset: locations_per_class must be >= 3 (two to train on, "
                          f"one to evaluate), not {locations_per_class}")
    if locations_per_class > 99:
        raise ConfigError(f"demo dataset: locations_per_class must be <= 99, not {locations_per_class}")
    if clips_per_class < locations_per_class:
        raise ConfigError(f"demo dataset: clips_per_class ({clips_per_class}) must be >= "
                          f"locations_per_class ({locations_per_class}) so every location has a clip")
    clips = []
    for class_index, label in enumerate(LABELS[:classes]):
        rng = np.random.default_rng([seed, class_index, 0])
        n_evaluate = max(1, int(round(0.3 * locations_per_class)))
        evaluate = set(rng.permutation(locations_per_class)[:n_evaluate].tolist())
        for k in range(clips_per_class):
            loc = k % locations_per_class
            city = CITIES[(class_index * locations_per_class + loc) % len(CITIES)]
            location_id = 1000 + 100 * class_index + loc
            segment = 40000 + k // locations_per_class
            clips.append(_Clip(
                stem=f"{label}-{city}-{location_id}-{segment}", label=label, city=city,
                location_id=location_id, location_index=loc, segment=segment,
                fold="evaluate" if loc in evaluate else "train"))
    return sorted(clips, key=lambda c: c.stem)


def make_demo_dataset(
    out_dir: str | Path,
    *,
    classes: int = 10,
    clips_per_class: int = 12,
    locations_per_class: int = 4,
    seconds: float = 4.0,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    fps: float = 15.0,
    sample_rate: int = 48000,
    workers: int | None = None,
    progress: bool = True,
    video_audio: bool = True,
) -> DemoResult:
    """Write a synthetic dataset in the TAU Urban Audio-Visual Scenes 2021 layout.

    Writes ``video/<stem>.mp4`` (H.264 + AAC stereo), ``audio/<stem>.wav`` (stereo 24-bit
    PCM), ``meta.csv``, ``evaluation_setup/fold1_{train,evaluate,test}.csv`` (TAB-separated,
    paths relative to ``out_dir``) and a ``README.txt``. Locations are split between
    fold1_train and fold1_evaluate (about 70/30, at least two train and one evaluate
    location per scene). The same arguments give the same CSV bytes and the same media
    content. Each file is written atomically; re-running with the same arguments keeps the
    clips already written and makes only the missing ones.

    Args:
        out_dir: dataset root to create.
        classes: how many scenes, the first ``classes`` of :data:`avsc.labels.LABELS`.
        clips_per_class: clips per scene, spread round-robin over its locations.
        locations_per_class: recording locations per scene (>= 3).
        seconds: clip length.
        seed: the random seed for content and split.
        width, height, fps: video format.
        sample_rate: audio sample rate of the WAV and the video's AAC track.
        workers: clips made at once (default: the usable CPUs).
        progress: show a progress bar.
        video_audio: give the videos an audio track (the WAV's sound); False writes videos
            without one, the sound only in the WAVs.

    Raises:
        ConfigError: impossible arguments (e.g. fewer than 3 locations per scene).
    """
    from tqdm import tqdm

    from avsc.media.encode import write_wav

    if seconds <= 0 or width < 16 or height < 16 or fps <= 0 or sample_rate < 8000:
        raise ConfigError("demo dataset: seconds and fps must be > 0, width/height >= 16, "
                          "sample_rate >= 8000")
    root = Path(out_dir)
    clips = plan_demo_clips(classes=classes, clips_per_class=clips_per_class,
                            locations_per_class=locations_per_class, seed=seed)
    params = {"classes": classes, "clips_per_class": clips_per_class,
              "locations_per_class": locations_per_class, "seconds": seconds, "seed": seed,
              "width": width, "height": height, "fps": fps, "sample_rate": sample_rate}
    if not video_audio:  # only when set, so the stamps of existing demo datasets stay valid
        params["video_audio"] = False
    stamp = root / ".avsc-demo.json"
    resumable = stamp.is_file() and json.loads(stamp.read_text()).get("params") == params
    if stamp.exists() and not resumable:
        stamp.unlink()  # other settings: every clip is made again
    for folder, leftovers in (("audio", ".*.wav.*.tmp"), ("video", ".*.part.mp4")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for stale in (root / folder).glob(leftovers):  # from a run that was killed
            stale.unlink(missing_ok=True)

    def make_one(clip: _Clip) -> None:
        wav = root / "audio" / f"{clip.stem}.wav"
        mp4 = root / "video" / f"{clip.stem}.mp4"
        if resumable and wav.is_file() and mp4.is_file():
            return
        where = [seed, LABELS.index(clip.label), 1 + clip.location_index]
        rng = np.random.default_rng(where + [clip.segment])
        audio = synth_audio(clip.label, seconds, sample_rate, rng, np.random.default_rng(where + [1]))
        frames = synth_frames(clip.label, seconds, width, height, fps, rng,
                              np.random.default_rng(where + [2]))
        with atomic_path(wav) as tmp:
            write_wav(tmp, audio, sample_rate, sample_width=3)
        _write_clip_atomic(mp4, frames, fps, audio if video_audio else None, sample_rate)

    if not workers:
        from avsc.runtime import usable_cpus

        workers = usable_cpus()  # the pod's or taskset's CPUs, not the node's
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(make_one, clips), total=len(clips), desc="demo clips",
                  unit="clip", disable=not progress))

    _write_metadata(root, clips)
    _write_readme(root, params, clips)
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps({"params": params}, sort_keys=True) + "\n")
    n_train = sum(c.fold == "train" for c in clips)
    log.debug("demo dataset: %d clips (%d train, %d evaluate) in %s",
             len(clips), n_train, len(clips) - n_train, root)
    return DemoResult(root=root, n_clips=len(clips), n_train=n_train,
                      n_evaluate=len(clips) - n_train)


def _write_clip_atomic(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray | None,
                       sample_rate: int) -> None:
    """Encode beside ``path`` under a temporary name that keeps the .mp4 suffix, then move."""
    from avsc.media.encode import write_clip

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{id(frames)}.part.mp4")
    try:
        write_clip(tmp, frames, fps, audio, sample_rate)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _tsv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_metadata(root: Path, clips: list[_Clip]) -> None:
    def names(c: _Clip) -> list[str]:
        return [f"audio/{c.stem}.wav", f"video/{c.stem}.mp4"]

    files = {
        root / "meta.csv": _tsv(
            ["filename_audio", "filename_video", "scene_label", "identifier"],
            [names(c) + [c.label, f"{c.city}-{c.location_id}"] for c in clips]),
        root / "evaluation_setup" / "fold1_train.csv": _tsv(
            ["filename_audio", "filename_video", "scene_label"],
            [names(c) + [c.label] for c in clips if c.fold == "train"]),
        root / "evaluation_setup" / "fold1_evaluate.csv": _tsv(
            ["filename_audio", "filename_video", "scene_label"],
            [names(c) + [c.label] for c in clips if c.fold == "evaluate"]),
        root / "evaluation_setup" / "fold1_test.csv": _tsv(
            ["filename_audio", "filename_video"],
            [names(c) for c in clips if c.fold == "evaluate"]),
    }
    for path, text in files.items():
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def _write_readme(root: Path, params: dict, clips: list[_Clip]) -> None:
    labels = sorted({c.label for c in clips})
    text = (
        "SYNTHETIC DATA - not recordings.\n\n"
        "This folder was generated by `avsc demo-data`. It imitates the layout of the\n"
        "TAU Urban Audio-Visual Scenes 2021 development set (audio/, video/, meta.csv,\n"
        "evaluation_setup/fold1_*.csv) so the avsc system can be run end to end without\n"
        "the real data. Sounds and pictures are made from noise, tones and shapes; some\n"
        "scenes sound alike and others look alike, so both modalities are needed.\n"
        "Accuracies measured on it say nothing about real scenes.\n\n"
        f"Scenes: {', '.join(labels)}\n"
        f"Clips: {len(clips)} ({sum(c.fold == 'train' for c in clips)} in fold1_train, "
        f"{sum(c.fold == 'evaluate' for c in clips)} in fold1_evaluate)\n"
        f"Settings: {json.dumps(params, sort_keys=True)}\n"
    )
    with atomic_path(root / "README.txt") as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------- content


def synth_audio(label: str, seconds: float, sample_rate: int, rng: np.random.Generator,
                loc_rng: np.random.Generator) -> np.ndarray:
    """One clip's sound [shape=(samples, 2), float in -1..1].

    The scene's signature (its group's band, tones, modulation and bursts) plus a faint
    scene cue, coloured by the location (gain, hum, tilt, balance) and per-clip noise.
    """
    sig = _AUDIO_SIGNATURES[_AUDIO_GROUP[label]]
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)

    # Location nuisance, fixed for every clip recorded there.
    gain = 10 ** (loc_rng.uniform(-6, 6) / 20)
    hum_hz = loc_rng.choice([50.0, 60.0])
    hum_level = loc_rng.uniform(0.0, 0.08)
    tilt = loc_rng.uniform(-0.5, 0.5)  # spectral slope, in decades of gain per decade of frequency
    balance = loc_rng.uniform(-0.3, 0.3)

    # Band noise, shaped in the frequency domain (smooth edges, with the location's tilt).
    lo, hi = (edge * rng.uniform(0.9, 1.1) for edge in sig["band"])
    log_f = np.log10(np.maximum(freqs, 1.0))
    centre, half_width = (np.log10(lo) + np.log10(hi)) / 2, (np.log10(hi) - np.log10(lo)) / 2
    shape = np.exp(-0.5 * ((log_f - centre) / max(half_width, 0.05)) ** 4)
    shape *= 10 ** (tilt * (log_f - 3.0))
    shape[0] = 0.0
    spectrum = np.fft.rfft(rng.standard_normal((n, 2)), axis=0) * shape[:, None]
    band = np.fft.irfft(spectrum, n=n, axis=0)
    band /= np.std(band) + 1e-9

    signal = 0.5 * band
    if sig["am_hz"] > 0:
        depth = rng.uniform(0.4, 0.8)
        signal *= (1 - depth / 2 + depth / 2 * np.sin(2 * np.pi * sig["am_hz"] * t
                                                       + rng.uniform(0, 2 * np.pi)))[:, None]
    for f in sig["tones"]:
        f *= rng.uniform(0.97, 1.03)
        signal += rng.uniform(0.15, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))[:, None]
    n_bursts = rng.poisson(sig["bursts_per_s"] * seconds)
    burst_len = int(0.08 * sample_rate)
    for _ in range(n_bursts):
        start = rng.integers(0, max(1, n - burst_len))
        envelope = np.hanning(burst_len)[:, None] * rng.uniform(1.0, 2.5)
        signal[start:start + burst_len] += envelope * band[start:start + burst_len]

    # The scene cue that separates sound-alike scenes: in about half the clips only, so
    # sound alone cannot tell those scenes apart every time.
    present, strength = rng.random() < _CUE_RATE, rng.uniform(0.08, 0.2)
    cue = present * strength * np.sin(2 * np.pi * _AUDIO_CUE_HZ[label] * t)
    signal += cue[:, None]

    signal += hum_level * sum(np.sin(2 * np.pi * hum_hz * k * t) / k for k in (1, 2, 3))[:, None]
    signal += rng.uniform(0.02, 0.12) * rng.standard_normal((n, 2))
    signal *= np.array([1 - balance, 1 + balance])[None, :]
    peak = np.max(np.abs(signal)) + 1e-9
    return (signal / peak * 0.5 * gain).clip(-1, 1).astype(np.float32)


def synth_frames(label: str, seconds: float, width: int, height: int, fps: float,
                 rng: np.random.Generator, loc_rng: np.random.Generator) -> np.ndarray:
    """One clip's pictures [shape=(frames, height, width, 3), uint8].

    The scene's look (its group's colours, horizon, stripes and moving shapes) plus a
    faint scene patch, coloured by the location (cast, brightness, camera tilt) and
    per-clip noise.
    """
    sig = _VISUAL_SIGNATURES[_VISUAL_GROUP[label]]
    n_frames = max(1, int(round(seconds * fps)))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = ys / height, xs / width

    cast = loc_rng.uniform(-22, 22, size=3)
    brightness = loc_rng.uniform(0.8, 1.2)
    horizon = sig["horizon"] + loc_rng.uniform(-0.08, 0.08)
    tilt = loc_rng.uniform(-0.1, 0.1)

    top, bottom = np.array(sig["top"], np.float32), np.array(sig["bottom"], np.float32)
    edge = 1 / (1 + np.exp(-(yn - horizon - tilt * (xn - 0.5)) * 40))
    background = top * (1 - edge)[..., None] + bottom * edge[..., None]
    angle, cycles, contrast = sig["stripes"]
    theta = np.deg2rad(angle + rng.uniform(-8, 8))
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * cycles * (xn * np.cos(theta) + yn * np.sin(theta) * height / width) + phase)
    background += (contrast * rng.uniform(0.7, 1.2) * stripes)[..., None]

    cue_x, cue_y, cue_rgb = _VISUAL_CUE[label]
    cue_mask = ((np.abs(xn - cue_x) < 0.09) & (np.abs(yn - cue_y) < 0.12)).astype(np.float32)
    present, strength = rng.random() < _CUE_RATE, rng.uniform(0.5, 0.8)
    strength *= present  # as for sound: the look-alike scenes differ in about half the clips
    background = background * (1 - strength * cue_mask[..., None]) + \
        strength * cue_mask[..., None] * np.array(cue_rgb, np.float32)
    background = background * brightness + cast

    # Blocky per-clip noise (cheap to encode, survives downscaling).
    block = 8
    coarse = rng.normal(0, 12, size=(4, -(-height // block), -(-width // block), 3)).astype(np.float32)
    noise = coarse.repeat(block, axis=1).repeat(block, axis=2)[:, :height, :width]

    count, shape_rgb, radius, speed = sig["shapes"]
    centres = rng.uniform(0, 1, size=(count, 2)) * [width, height]
    velocity = rng.normal(0, 1, size=(count, 2)) * speed * width
    shape_rgb = np.array(shape_rgb, np.float32) * brightness + cast
    r = radius * height
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        frame = background + noise[i % len(noise)]
        positions = (centres + velocity * i / fps) % [width, height]
        for cx, cy in positions:
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 < r * r
            frame[inside] = shape_rgb
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames

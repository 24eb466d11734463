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

This module plans the clips and writes the files; the sounds and pictures are made in
:mod:`avsc.data.demo_content`.

Example::

    result = make_demo_dataset("demo", classes=10, clips_per_class=12)
    result.n_clips, result.n_train + result.n_evaluate  # (120, 120)
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
from typing import Any

import numpy as np

from avsc.data.demo_content import synth_audio, synth_frames
from avsc.errors import ConfigError
from avsc.labels import CITIES, LABELS
from avsc.storage.files import atomic_path

log = logging.getLogger(__name__)


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


def plan_demo_clips(*, classes: int, clips_per_class: int, locations_per_class: int, seed: int) -> list[_Clip]:
    """Which clips the demo dataset has: names, locations and their fold (no media)."""
    if not 1 <= classes <= len(LABELS):
        raise ConfigError(f"demo dataset: classes must be 1..{len(LABELS)}, not {classes}")
    if locations_per_class < 3:
        raise ConfigError(
            "demo dataset: locations_per_class must be >= 3 (two to train on, "
            f"one to evaluate), not {locations_per_class}"
        )
    if locations_per_class > 99:
        raise ConfigError(f"demo dataset: locations_per_class must be <= 99, not {locations_per_class}")
    if clips_per_class < locations_per_class:
        raise ConfigError(
            f"demo dataset: clips_per_class ({clips_per_class}) must be >= "
            f"locations_per_class ({locations_per_class}) so every location has a clip"
        )
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
            clips.append(
                _Clip(
                    stem=f"{label}-{city}-{location_id}-{segment}",
                    label=label,
                    city=city,
                    location_id=location_id,
                    location_index=loc,
                    segment=segment,
                    fold="evaluate" if loc in evaluate else "train",
                )
            )
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
    if seconds <= 0 or width < 16 or height < 16 or fps <= 0 or sample_rate < 8000:
        raise ConfigError("demo dataset: seconds and fps must be > 0, width/height >= 16, sample_rate >= 8000")
    root = Path(out_dir)
    clips = plan_demo_clips(
        classes=classes, clips_per_class=clips_per_class, locations_per_class=locations_per_class, seed=seed
    )
    params: dict[str, Any] = {
        "classes": classes,
        "clips_per_class": clips_per_class,
        "locations_per_class": locations_per_class,
        "seconds": seconds,
        "seed": seed,
        "width": width,
        "height": height,
        "fps": fps,
        "sample_rate": sample_rate,
    }
    if not video_audio:  # only when set, so the stamps of existing demo datasets stay valid
        params["video_audio"] = False
    stamp = root / ".avsc-demo.json"
    resumable = _prepare_folder(root, stamp, params)
    _make_clips(root, clips, params, keep_existing=resumable, workers=workers, progress=progress)
    _write_metadata(root, clips)
    _write_readme(root, params, clips)
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps({"params": params}, sort_keys=True) + "\n")
    n_train = sum(c.fold == "train" for c in clips)
    log.debug("demo dataset: %d clips (%d train, %d evaluate) in %s", len(clips), n_train, len(clips) - n_train, root)
    return DemoResult(root=root, n_clips=len(clips), n_train=n_train, n_evaluate=len(clips) - n_train)


def _prepare_folder(root: Path, stamp: Path, params: dict[str, Any]) -> bool:
    """Create ``audio/`` and ``video/``, clear what a killed run left half-written, and say
    whether the clips already there were made with ``params`` (the stamp says so) and may
    be kept; otherwise the stamp is removed and every clip is made again."""
    resumable = stamp.is_file() and json.loads(stamp.read_text()).get("params") == params
    if stamp.exists() and not resumable:
        stamp.unlink()  # other settings: every clip is made again
    for folder, leftovers in (("audio", ".*.wav.*.tmp"), ("video", ".*.part.mp4")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for stale in (root / folder).glob(leftovers):  # from a run that was killed
            stale.unlink(missing_ok=True)
    return resumable


def _make_clips(
    root: Path, clips: list[_Clip], params: dict[str, Any], *, keep_existing: bool, workers: int | None, progress: bool
) -> None:
    """Write every clip's WAV and video, ``workers`` clips at once (default: the usable CPUs)."""
    from tqdm import tqdm

    def make_one(clip: _Clip) -> None:
        _make_clip(root, clip, params, keep_existing=keep_existing)

    if not workers:
        from avsc.runtime import usable_cpus

        workers = usable_cpus()  # the pod's or taskset's CPUs, not the node's
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(make_one, clips), total=len(clips), desc="demo clips", unit="clip", disable=not progress))


def _make_clip(root: Path, clip: _Clip, params: dict[str, Any], *, keep_existing: bool) -> None:
    """Write one clip's WAV and video (unless ``keep_existing`` and both are there).

    Its content depends only on the seed, its scene, its location and its segment, so a
    clip is the same whichever worker makes it and in whichever order.
    """
    from avsc.media.encode import write_wav

    wav = root / "audio" / f"{clip.stem}.wav"
    mp4 = root / "video" / f"{clip.stem}.mp4"
    if keep_existing and wav.is_file() and mp4.is_file():
        return
    seconds, sample_rate, fps = params["seconds"], params["sample_rate"], params["fps"]
    where = [params["seed"], LABELS.index(clip.label), 1 + clip.location_index]
    rng = np.random.default_rng(where + [clip.segment])
    audio = synth_audio(clip.label, seconds, sample_rate, rng, np.random.default_rng(where + [1]))
    frames = synth_frames(
        clip.label, seconds, params["width"], params["height"], fps, rng, np.random.default_rng(where + [2])
    )
    with atomic_path(wav) as tmp:
        write_wav(tmp, audio, sample_rate, sample_width=3)
    _write_clip_atomic(mp4, frames, fps, audio if params.get("video_audio", True) else None, sample_rate)


def _write_clip_atomic(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray | None, sample_rate: int) -> None:
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
            [names(c) + [c.label, f"{c.city}-{c.location_id}"] for c in clips],
        ),
        root / "evaluation_setup" / "fold1_train.csv": _tsv(
            ["filename_audio", "filename_video", "scene_label"],
            [names(c) + [c.label] for c in clips if c.fold == "train"],
        ),
        root / "evaluation_setup" / "fold1_evaluate.csv": _tsv(
            ["filename_audio", "filename_video", "scene_label"],
            [names(c) + [c.label] for c in clips if c.fold == "evaluate"],
        ),
        root / "evaluation_setup" / "fold1_test.csv": _tsv(
            ["filename_audio", "filename_video"], [names(c) for c in clips if c.fold == "evaluate"]
        ),
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

"""From a dataset folder to a validated clip manifest: ``avsc ingest``.

Reads the TAU Urban Audio-Visual Scenes 2021 metadata wherever the archives put it,
checks every clip (label, file name, video present and decodable, with sound), probes its
media facts, and splits it three ways without leaking locations
(:mod:`avsc.data.location_split`):

- ``test``  = ``fold1_evaluate.csv`` (the paper reports accuracy on it);
- ``val``   = about ``val_fraction`` of the *locations* of ``fold1_train.csv`` (at least one
  per scene where a scene has two or more), for model selection;
- ``train`` = the rest of ``fold1_train.csv``.

A bad row never stops the run: it is left out of the manifest and reported with its file
name and the reason, in the result, in the manifest's metadata and in
``<manifest stem>.rejected.json`` beside it.

Example::

    result = ingest_dataset("TAU-urban-audio-visual-scenes-2021-development", "manifest.parquet")
    result.counts  # {'train': 7780, 'val': 866, 'test': 3645}
"""

from __future__ import annotations

import logging
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsc.data.dataset_description import describe_dataset
from avsc.data.dataset_lists import (
    DatasetFiles,
    ListRow,
    find_lists,
    media_root,
    read_identifiers,
    read_list_rows,
)
from avsc.data.location_split import assign_val, check_locations_disjoint
from avsc.data.manifest import MANIFEST_SCHEMA, SPLITS, write_manifest
from avsc.data.segments import segment_offsets, segment_records
from avsc.errors import ConfigError, DataError, MediaError
from avsc.labels import LABEL_INDEX
from avsc.media.ffmpeg import FFmpegCrash
from avsc.storage import locations

log = logging.getLogger(__name__)

_STEM = re.compile(r"^(?P<scene>[a-z_]+)-(?P<city>[a-z]+)-(?P<location>\d+)-(?P<segment>\d+)$")
AUDIO_SOURCES = ("auto", "wav", "video")  # data.audio_source


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest_dataset` wrote.

    Attributes:
        manifest_path: the Parquet manifest (a Path, or an ``s3://`` URI).
        n_clips: clips in it.
        counts: clips per split (``train``, ``val``, ``test``).
        rejected: rows left out, each ``{"file": ..., "reason": ...}``.
        notes: things worth knowing that did not exclude a clip (a missing WAV, several
            audio tracks, picture and sound of different lengths, ...).
        rejected_path: the JSON report beside the manifest.
    """

    manifest_path: Path | str
    n_clips: int
    counts: dict[str, int]
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected_path: Path | str | None = None


@dataclass
class _Findings:
    """The rows left out (with the file and the reason) and the notes, as ingest goes."""

    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def reject(self, row: ListRow, reason: str) -> None:
        self.rejected.append({"file": row.video or f"({row.source})", "reason": f"{reason} [{row.source}]"})


def ingest_dataset(
    dataset_root: str | Path,
    manifest_path: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    decode_check: bool = False,
    workers: int | None = None,
    segment_seconds: float | None = None,
    progress: bool = True,
    audio_source: str = "auto",
) -> IngestResult:
    """Validate a dataset's clips, split them by location and write the manifest.

    Args:
        dataset_root: the dataset folder (``audio/``, ``video/`` and the metadata,
            possibly a folder or two deeper), or an ``s3://`` prefix holding the same: its
            lists are read and its videos probed in place (presigned URLs), nothing copied.
        manifest_path: the Parquet manifest to write (a path or ``s3://`` URI).
        val_fraction: share of each scene's fold1_train locations held out for validation.
        seed: chooses the validation locations.
        decode_check: also decode the first second of every video (slower).
        workers: videos probed at once (default: twice the CPU count, at most 16).
        segment_seconds: cut every clip into segments of this many seconds after the split
            (:mod:`avsc.data.segments`; 1 = the DCASE 2021 Task 1B protocol); None keeps
            whole clips.
        progress: show a progress bar.
        audio_source: where each clip's sound comes from (``data.audio_source``): ``wav``
            the dataset's WAV (a clip without one is rejected), ``video`` the video's audio
            track (a video without one is rejected), ``auto`` the WAV when the list names one
            and it exists, else the track. Recorded per clip (``audio_source``), with the
            chosen source's ``audio_channels`` and ``audio_rate``.

    Returns:
        An :class:`IngestResult`; rejected rows are listed, not raised.

    Raises:
        DataError: metadata missing or unreadable, no usable clip, or a location in both
            train and test.
    """
    _check_arguments(val_fraction, segment_seconds, audio_source)
    files = DatasetFiles(dataset_root)
    lists = find_lists(files)
    identifiers = read_identifiers(files, lists)
    rows = read_list_rows(files, lists)
    findings = _Findings()
    pending = _check_rows(rows, files, media_root(files, lists, rows), identifiers, audio_source, findings)
    kept = _probe_clips(
        files,
        pending,
        findings,
        decode_check=decode_check,
        workers=workers,
        progress=progress,
        audio_source=audio_source,
    )
    if not kept:
        first = "; ".join(f"{r['file']}: {r['reason']}" for r in findings.rejected[:3])
        raise DataError(
            files.root,
            f"no usable clip ({len(findings.rejected)} rejected; first: {first})",
            "check that the videos are extracted next to the metadata",
        )
    _log_sound_sources(kept, audio_source)
    assign_val(kept, val_fraction, seed)
    check_locations_disjoint(kept, files.location(lists["evaluate"]))
    if segment_seconds is not None:  # after the split, so it stays by location and parent clip
        kept, too_short = segment_records(kept, segment_seconds)
        findings.rejected.extend(too_short)
        if not kept:
            raise DataError(files.root, f"no clip is at least {segment_seconds:g} s long", "use shorter segments")
    kept.sort(key=lambda r: r["clip_id"])
    return _write_manifest_and_report(
        kept, findings, files, manifest_path, val_fraction=val_fraction, seed=seed, segment_seconds=segment_seconds
    )


def _check_arguments(val_fraction: float, segment_seconds: float | None, audio_source: str) -> None:
    """Refuse impossible settings before any file is read."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(str(val_fraction), "val_fraction must be in [0, 1)")
    if segment_seconds is not None:
        segment_offsets(None, segment_seconds)  # checks the length before any work
    if audio_source not in AUDIO_SOURCES:
        raise ConfigError(f"data.audio_source must be one of {', '.join(AUDIO_SOURCES)}, not {audio_source!r}")


def _check_rows(
    rows: list[ListRow],
    files: DatasetFiles,
    root: str,
    identifiers: dict[str, str],
    audio_source: str,
    findings: _Findings,
) -> list[tuple[ListRow, dict[str, Any]]]:
    """The rows whose name, label and files are in order, each with its manifest record so far.

    ``root`` is the folder the lists' paths are relative to; the others are rejected in
    ``findings`` (a missing WAV under ``auto`` is a note).
    """
    seen: dict[str, str] = {}
    pending: list[tuple[ListRow, dict[str, Any]]] = []
    for row in rows:
        stem = Path(row.video).stem
        match = _STEM.match(stem)
        problem = _row_problem(row, match, seen)
        if problem:
            findings.reject(row, problem)
            continue
        assert match is not None  # _row_problem rejects a name that does not match
        seen[stem] = row.source
        video_rel = posixpath.normpath(posixpath.join(root, row.video))
        if not files.is_file(video_rel):
            findings.reject(row, "video file not found")
            continue
        audio_rel = None
        if row.audio and files.is_file(posixpath.join(root, row.audio)):
            audio_rel = posixpath.normpath(posixpath.join(root, row.audio))
        elif audio_source == "wav":
            findings.reject(row, f"WAV {row.audio or '(none listed)'} not found (data.audio_source = wav)")
            continue
        elif audio_source == "auto":
            findings.notes.append(f"{row.audio or stem}: WAV not found; the video's own audio track will be used")
        pending.append(
            (
                row,
                {
                    "clip_id": stem,
                    "video": video_rel,
                    "audio": audio_rel,
                    "label": row.label,
                    "city": match["city"],
                    "location": identifiers.get(stem) or f"{match['city']}-{match['location']}",
                    "split": "test" if row.fold == "evaluate" else "train",
                    "audio_source": "wav" if audio_rel and audio_source != "video" else "video",
                },
            )
        )
    return pending


def _row_problem(row: ListRow, match: re.Match[str] | None, seen: dict[str, str]) -> str | None:
    """Why a list row's name or label cannot be used (None: it can)."""
    if not row.video:
        return "no video file name"
    if not match:
        return "malformed file name (expected <scene>-<city>-<location>-<segment>)"
    if row.label not in LABEL_INDEX:
        return f"unknown label '{row.label}' (expected one of {', '.join(LABEL_INDEX)})"
    if match["scene"] != row.label:
        return f"label '{row.label}' does not match the file name's scene '{match['scene']}'"
    stem = match.string
    if stem in seen:
        return f"duplicate clip id '{stem}' (first listed at {seen[stem]})"
    return None


def _probe_clips(
    files: DatasetFiles,
    pending: list[tuple[ListRow, dict[str, Any]]],
    findings: _Findings,
    *,
    decode_check: bool,
    workers: int | None,
    progress: bool,
    audio_source: str,
) -> list[dict[str, Any]]:
    """The records of the clips whose media probe well, completed with their media facts.

    A clip whose video does not probe, or that has no sound where its sound must come from
    the video, is rejected in ``findings``; the probe's warnings become notes.
    """
    from tqdm import tqdm

    from avsc.media.probe import probe_media, probe_wav

    def probe(item: tuple[ListRow, dict[str, Any]]) -> tuple[Any, str | None]:
        _, record = item
        try:
            if record["audio_source"] == "wav":  # its sound: the WAV's header
                wav = probe_wav(files.location(record["audio"]))
                record.update(wav_channels=wav.channels, wav_rate=wav.sample_rate)
            return probe_media(files.location(record["video"]), decode_check=decode_check), None
        except FFmpegCrash as exc:
            return None, f"{exc.problem} ({exc.hint})"
        except MediaError as exc:
            return None, exc.problem
        except Exception as exc:  # one bad file never stops the run (logged with its traceback)
            log.exception("unexpected error probing %s", record["video"])
            return None, f"unexpected error while probing it ({type(exc).__name__}: {exc})"

    kept: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=workers or _probe_threads()) as pool:
        results = pool.map(probe, pending)
        for (row, record), (info, problem) in tqdm(
            zip(pending, results, strict=True),
            total=len(pending),
            desc="probing videos",
            unit="clip",
            disable=not progress,
        ):
            if info is None:
                findings.reject(row, problem or "")
                continue
            if not info.has_audio and record["audio_source"] == "video":
                findings.reject(
                    row,
                    "video has no audio track"
                    + (" and no WAV is listed or found" if audio_source == "auto" else " (data.audio_source = video)"),
                )
                continue
            record.update(
                duration_s=info.duration_s,
                fps=info.fps,
                width=info.width,
                height=info.height,
                audio_channels=info.audio_channels,
                audio_rate=info.audio_rate,
                audio_track=info.audio_track,
                audio_tracks=info.audio_tracks,
            )
            if record["audio_source"] == "wav":  # the sound every later stage reads
                record.update(audio_channels=record.pop("wav_channels"), audio_rate=record.pop("wav_rate"))
            findings.notes.extend(f"{row.video}: {warning}" for warning in info.warnings)
            kept.append(record)
    return kept


def _probe_threads() -> int:
    """Two probes per usable CPU (each mostly waits on ffprobe or the store), never the
    node's core count; at most 16."""
    from avsc.runtime import detect_limits

    limits = detect_limits()
    workers = min(16, 2 * limits.cpus)
    log.info("probing with %d thread(s) (%s)", workers, limits.describe())
    return workers


def _log_sound_sources(kept: list[dict[str, Any]], audio_source: str) -> None:
    """Log how many clips take their sound from a WAV and how many from their video."""
    wavs = sum(r["audio_source"] == "wav" for r in kept)
    log.info(
        "sound: %d clip(s) from the dataset's WAVs, %d from the videos' own audio tracks (data.audio_source = %s)",
        wavs,
        len(kept) - wavs,
        audio_source,
    )


def _write_manifest_and_report(
    kept: list[dict[str, Any]],
    findings: _Findings,
    files: DatasetFiles,
    manifest_path: str | Path,
    *,
    val_fraction: float,
    seed: int,
    segment_seconds: float | None,
) -> IngestResult:
    """Write the manifest of ``kept`` and ``<manifest stem>.rejected.json`` beside it."""
    root = files.root
    rejected, notes = findings.rejected, findings.notes
    rows_out = [{name: r.get(name) for name in MANIFEST_SCHEMA.names} for r in kept]
    if not locations.is_remote(str(manifest_path)):
        manifest_path = Path(manifest_path)
    write_manifest(
        rows_out,
        manifest_path,
        dataset_root=root,
        extra_metadata={
            "rejected": rejected,
            "val_fraction": val_fraction,
            "seed": seed,
            "segment_seconds": segment_seconds,
            "dataset": describe_dataset(root),
        },
    )
    counts = {split: sum(r["split"] == split for r in kept) for split in SPLITS}
    rejected_path = _beside(manifest_path, ".rejected.json")
    dataset_name = root if files.remote else str(Path(root).resolve())
    locations.write_json(
        rejected_path, {"dataset_root": dataset_name, "counts": counts, "rejected": rejected, "notes": notes}
    )
    log.debug("manifest %s: %s; %d rejected", manifest_path, counts, len(rejected))
    return IngestResult(
        manifest_path=manifest_path,
        n_clips=len(kept),
        counts=counts,
        rejected=rejected,
        notes=notes,
        rejected_path=rejected_path,
    )


def _beside(path: str | Path, suffix: str) -> str | Path:
    """``manifest.parquet`` -> ``manifest<suffix>`` in the same folder (or prefix)."""
    if isinstance(path, Path):
        return path.with_name(f"{path.stem}{suffix}")
    head, _, name = str(path).rpartition("/")
    return f"{head}/{name.rsplit('.', 1)[0]}{suffix}"

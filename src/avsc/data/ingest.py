"""From a dataset folder to a validated clip manifest: ``avsc ingest``.

Reads the TAU Urban Audio-Visual Scenes 2021 metadata wherever the archives put it,
checks every clip (label, file name, video present and decodable, with sound), probes its
media facts, and splits it three ways without leaking locations:

- ``test``  = ``fold1_evaluate.csv`` (the paper reports accuracy on it);
- ``val``   = about ``val_fraction`` of the *locations* of ``fold1_train.csv`` (at least one
  per scene where a scene has two or more), for model selection;
- ``train`` = the rest of ``fold1_train.csv``.

A bad row never stops the run: it is left out of the manifest and reported with its file
name and the reason, in the result, in the manifest's metadata and in
``<manifest stem>.rejected.json`` beside it.

Example:
    >>> result = ingest_dataset("TAU-urban-audio-visual-scenes-2021-development", "manifest.parquet")
    >>> result.counts
    {'train': 7780, 'val': 866, 'test': 3645}
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avsc.data.manifest import MANIFEST_SCHEMA, SPLITS, write_manifest
from avsc.data.provenance import describe_dataset
from avsc.data.segments import segment_offsets, segment_records
from avsc.errors import ConfigError, DataError, MediaError
from avsc.labels import LABEL_INDEX
from avsc.media.ffmpeg import FFmpegCrash
from avsc.storage import locations

log = logging.getLogger(__name__)

_FOLD_FILES = {"train": "fold1_train.csv", "evaluate": "fold1_evaluate.csv"}
_STEM = re.compile(r"^(?P<scene>[a-z_]+)-(?P<city>[a-z]+)-(?P<location>\d+)-(?P<segment>\d+)$")
_SEARCH_DEPTH = 3  # how far below the root the metadata may sit
AUDIO_SOURCES = ("auto", "wav", "video")  # data.audio_source


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest_dataset` wrote.

    Attributes:
        manifest_path: the Parquet manifest.
        n_clips: clips in it.
        counts: clips per split (``train``, ``val``, ``test``).
        rejected: rows left out, each ``{"file": ..., "reason": ...}``.
        notes: things worth knowing that did not exclude a clip (a missing WAV, several
            audio tracks, picture and sound of different lengths, ...).
        rejected_path: the JSON report beside the manifest.
    """

    manifest_path: Path
    n_clips: int
    counts: dict[str, int]
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected_path: Path | None = None


@dataclass
class _Row:
    source: str  # which list, and line, e.g. "fold1_train.csv:12"
    fold: str  # train | evaluate
    video: str  # as written in the list
    audio: str
    label: str


class _DatasetFiles:
    """The files of a dataset, listed once: a local folder or an ``s3://`` prefix.

    Paths are relative POSIX paths below the root; nothing is copied. A remote dataset's
    lists are read with GETs and its media probed through presigned URLs.
    """

    def __init__(self, root: str | Path):
        from avsc.storage import locations

        self.root = str(root)
        self.remote = locations.is_remote(self.root)
        if not self.remote and not Path(self.root).is_dir():
            raise DataError(root, "dataset folder not found",
                            "give the folder that holds audio/, video/ and the metadata")
        base = self.root.rstrip("/")
        self.files = {location[len(base):].lstrip("/").replace(os.sep, "/")
                      for location in locations.list_files(self.root)}
        if self.remote and not self.files:
            raise DataError(root, "no objects under this prefix",
                            "check the URI (`avsc data ls`), or push the dataset first (`avsc data push`)")

    def location(self, relative: str) -> Path | str:
        """The file as a local Path or an ``s3://`` URI."""
        from avsc.storage import locations

        if self.remote:
            return locations.join(self.root, *relative.split("/"))
        return Path(self.root, *relative.split("/"))

    def is_file(self, relative: str) -> bool:
        return posixpath.normpath(relative) in self.files


def find_metadata(dataset_root: str | Path) -> dict[str, Path | str]:
    """Where the split lists (and ``meta.csv``, if any) are below ``dataset_root``.

    Returns a dict with keys ``train``, ``evaluate`` and, when found, ``meta``: Paths, or
    ``s3://`` URIs for a remote dataset. The shallowest match wins, so
    ``<root>/evaluation_setup/`` beats a copy deeper down.

    Raises:
        DataError: the root is missing, or no ``fold1_train.csv``/``fold1_evaluate.csv``.
    """
    files = _DatasetFiles(dataset_root)
    return {key: files.location(relative) for key, relative in _find_lists(files).items()}


def _find_lists(files: _DatasetFiles) -> dict[str, str]:
    wanted = {"train": _FOLD_FILES["train"], "evaluate": _FOLD_FILES["evaluate"], "meta": "meta.csv"}
    found: dict[str, str] = {}
    for depth in range(_SEARCH_DEPTH + 1):
        for key, name in wanted.items():
            if key in found:
                continue
            matches = sorted(f for f in files.files
                             if f.count("/") == depth and posixpath.basename(f) == name)
            if matches:
                found[key] = matches[0]
    missing = [wanted[k] for k in ("train", "evaluate") if k not in found]
    if missing:
        raise DataError(files.root, f"no {' or '.join(missing)} found in it or up to "
                                    f"{_SEARCH_DEPTH} folders below",
                        "extract the dataset's meta archive (evaluation_setup/) into this folder")
    return found


def _read_tsv(files: _DatasetFiles, relative: str,
              required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a TAB-separated list with a header, as (line number, row)."""
    path = files.location(relative)
    try:
        # utf-8-sig: lists saved by Excel or other Windows tools start with a byte-order
        # mark, which would otherwise become part of the first column's name.
        text = locations.read_bytes(path).decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(path, f"lacks column(s) {', '.join(missing)} (has: "
                                  f"{', '.join(header) or 'no header'})",
                            "the lists must be TAB-separated with a header line")
        return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k})
                for row in reader]
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text file") from None


def _media_root(files: _DatasetFiles, lists: dict[str, str], rows: list[_Row]) -> str:
    """The folder (relative to the root, "" for the root) the lists' paths are relative to."""
    candidates = [""]
    for relative in lists.values():
        parent = posixpath.dirname(relative)
        while parent:
            candidates.append(parent)
            parent = posixpath.dirname(parent)
    for candidate in candidates:
        if any(files.is_file(posixpath.join(candidate, r.video)) for r in rows[:50] if r.video):
            return candidate
    return ""


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
    from tqdm import tqdm

    from avsc.media.probe import probe_media, probe_wav

    if not 0.0 <= val_fraction < 1.0:
        raise DataError(str(val_fraction), "val_fraction must be in [0, 1)")
    if segment_seconds is not None:
        segment_offsets(None, segment_seconds)  # checks the length before any work
    if audio_source not in AUDIO_SOURCES:
        raise ConfigError(f"data.audio_source must be one of {', '.join(AUDIO_SOURCES)}, not {audio_source!r}")
    files = _DatasetFiles(dataset_root)
    root = files.root
    lists = _find_lists(files)
    required = ("filename_audio", "filename_video", "scene_label")

    identifiers: dict[str, str] = {}
    if "meta" in lists:
        try:
            meta_rows = _read_tsv(files, lists["meta"], ("filename_video", "identifier"))
        except DataError as exc:
            log.warning("ignoring meta.csv: %s", exc)
            meta_rows = []
        for _, row in meta_rows:
            if row.get("filename_video") and row.get("identifier"):
                identifiers[Path(row["filename_video"]).stem] = row["identifier"]

    rows: list[_Row] = []
    for fold in ("train", "evaluate"):
        for line, row in _read_tsv(files, lists[fold], required):
            rows.append(_Row(source=f"{posixpath.basename(lists[fold])}:{line}", fold=fold,
                             video=row.get("filename_video", ""), audio=row.get("filename_audio", ""),
                             label=row.get("scene_label", "")))
    if not rows:
        raise DataError(files.location(posixpath.dirname(lists["train"])), "the split lists have no rows")
    media_root = _media_root(files, lists, rows)

    rejected: list[dict[str, str]] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    pending: list[tuple[_Row, dict]] = []

    def reject(row: _Row, reason: str) -> None:
        rejected.append({"file": row.video or f"({row.source})", "reason": f"{reason} [{row.source}]"})

    for row in rows:
        if not row.video:
            reject(row, "no video file name")
            continue
        stem = Path(row.video).stem
        match = _STEM.match(stem)
        if not match:
            reject(row, "malformed file name (expected <scene>-<city>-<location>-<segment>)")
            continue
        if row.label not in LABEL_INDEX:
            reject(row, f"unknown label '{row.label}' (expected one of {', '.join(LABEL_INDEX)})")
            continue
        if match["scene"] != row.label:
            reject(row, f"label '{row.label}' does not match the file name's scene '{match['scene']}'")
            continue
        if stem in seen:
            reject(row, f"duplicate clip id '{stem}' (first listed at {seen[stem]})")
            continue
        seen[stem] = row.source
        video_rel = posixpath.normpath(posixpath.join(media_root, row.video))
        if not files.is_file(video_rel):
            reject(row, "video file not found")
            continue
        audio_rel = None
        if row.audio and files.is_file(posixpath.join(media_root, row.audio)):
            audio_rel = posixpath.normpath(posixpath.join(media_root, row.audio))
        elif audio_source == "wav":
            reject(row, f"WAV {row.audio or '(none listed)'} not found (data.audio_source = wav)")
            continue
        elif audio_source == "auto":
            notes.append(f"{row.audio or stem}: WAV not found; the video's own audio track will be used")
        record = {
            "clip_id": stem,
            "video": video_rel,
            "audio": audio_rel,
            "label": row.label,
            "city": match["city"],
            "location": identifiers.get(stem) or f"{match['city']}-{match['location']}",
            "split": "test" if row.fold == "evaluate" else "train",
            "audio_source": "wav" if audio_rel and audio_source != "video" else "video",
        }
        pending.append((row, record))

    def probe(item: tuple[_Row, dict]):
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
        except Exception as exc:  # noqa: BLE001 -- one bad file never stops the run
            log.exception("unexpected error probing %s", record["video"])
            return None, f"unexpected error while probing it ({type(exc).__name__}: {exc})"

    if not workers:
        # Two probes per usable CPU (each mostly waits on ffprobe or the store), never the
        # node's core count.
        from avsc.runtime import detect_limits

        limits = detect_limits()
        workers = min(16, 2 * limits.cpus)
        log.info("probing with %d thread(s) (%s)", workers, limits.describe())
    kept: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(probe, pending)
        for (row, record), (info, problem) in tqdm(zip(pending, results), total=len(pending),
                                                   desc="probing videos", unit="clip",
                                                   disable=not progress):
            if info is None:
                reject(row, problem)
                continue
            if not info.has_audio and record["audio_source"] == "video":
                reject(row, "video has no audio track" + (" and no WAV is listed or found" if audio_source == "auto"
                                                          else " (data.audio_source = video)"))
                continue
            record.update(duration_s=info.duration_s, fps=info.fps, width=info.width,
                          height=info.height, audio_channels=info.audio_channels,
                          audio_rate=info.audio_rate, audio_track=info.audio_track,
                          audio_tracks=info.audio_tracks)
            if record["audio_source"] == "wav":  # the sound every later stage reads
                record.update(audio_channels=record.pop("wav_channels"), audio_rate=record.pop("wav_rate"))
            notes.extend(f"{row.video}: {warning}" for warning in info.warnings)
            kept.append(record)

    if not kept:
        first = "; ".join(f"{r['file']}: {r['reason']}" for r in rejected[:3])
        raise DataError(root, f"no usable clip ({len(rejected)} rejected; first: {first})",
                        "check that the videos are extracted next to the metadata")
    wavs = sum(r["audio_source"] == "wav" for r in kept)
    log.info("sound: %d clip(s) from the dataset's WAVs, %d from the videos' own audio tracks "
             "(data.audio_source = %s)", wavs, len(kept) - wavs, audio_source)
    _assign_val(kept, val_fraction, seed)
    train_locs = {r["location"] for r in kept if r["split"] in ("train", "val")}
    test_locs = {r["location"] for r in kept if r["split"] == "test"}
    shared = sorted(train_locs & test_locs)
    if shared:
        raise DataError(files.location(lists["evaluate"]), f"location(s) {', '.join(shared[:10])}"
                        f"{' ...' if len(shared) > 10 else ''} appear in both fold1_train and "
                        "fold1_evaluate; test results would be inflated",
                        "use the official split lists, or remove those clips from one list")

    if segment_seconds is not None:  # after the split, so it stays by location and parent clip
        kept, too_short = segment_records(kept, segment_seconds)
        rejected.extend(too_short)
        if not kept:
            raise DataError(root, f"no clip is at least {segment_seconds:g} s long", "use shorter segments")
    kept.sort(key=lambda r: r["clip_id"])
    rows_out = [{name: r.get(name) for name in MANIFEST_SCHEMA.names} for r in kept]
    if not locations.is_remote(str(manifest_path)):
        manifest_path = Path(manifest_path)
    write_manifest(rows_out, manifest_path, dataset_root=root,
                   extra_metadata={"rejected": rejected, "val_fraction": val_fraction, "seed": seed,
                                   "segment_seconds": segment_seconds, "dataset": describe_dataset(root)})
    counts = {split: sum(r["split"] == split for r in kept) for split in SPLITS}
    rejected_path = _beside(manifest_path, ".rejected.json")
    dataset_name = root if files.remote else str(Path(root).resolve())
    locations.write_json(rejected_path, {"dataset_root": dataset_name, "counts": counts,
                                         "rejected": rejected, "notes": notes})
    log.debug("manifest %s: %s; %d rejected", manifest_path, counts, len(rejected))
    return IngestResult(manifest_path=manifest_path, n_clips=len(kept), counts=counts,
                        rejected=rejected, notes=notes, rejected_path=rejected_path)


def _beside(path: str | Path, suffix: str) -> str | Path:
    """``manifest.parquet`` -> ``manifest<suffix>`` in the same folder (or prefix)."""
    if isinstance(path, Path):
        return path.with_name(f"{path.stem}{suffix}")
    head, _, name = str(path).rpartition("/")
    return f"{head}/{name.rsplit('.', 1)[0]}{suffix}"


def _assign_val(records: list[dict], val_fraction: float, seed: int) -> None:
    """Move about ``val_fraction`` of each scene's train locations (all their clips) to val.

    A scene with a single train location keeps it for training. Locations are drawn in
    sorted order with a seeded generator, so the split is the same for the same data.
    """
    if val_fraction <= 0:
        return
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for r in records:
        if r["split"] == "train":
            locs = by_label.setdefault(r["label"], [])
            if r["location"] not in locs:
                locs.append(r["location"])
    chosen: set[str] = set()
    for label in sorted(by_label):
        locations = sorted(set(by_label[label]) - chosen)
        if len(by_label[label]) < 2 or not locations:
            continue
        n_val = max(1, int(round(val_fraction * len(by_label[label]))))
        n_val = min(n_val, len(by_label[label]) - 1, len(locations))
        order = rng.permutation(len(locations))[:n_val]
        chosen.update(locations[i] for i in order)
    for r in records:
        if r["split"] == "train" and r["location"] in chosen:
            r["split"] = "val"

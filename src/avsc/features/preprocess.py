"""From a clip manifest to a feature store: demux, frames, spectrograms, parts of 32 clips.

``preprocess`` takes shard ``i`` of ``n`` of a manifest (clips sorted by id, every n-th
from position i: disjoint, together complete, the same on every machine), skips the clips
the store already holds under the same fingerprint (:mod:`avsc.features.shards`: id, video
size and modification time, segment; a re-run resumes, a changed video is processed again;
the store may be a folder or an ``s3://`` prefix), and processes the rest in a pool of
worker processes, one clip per task:

1. :func:`avsc.media.probe.probe_media` -- which audio track and video stream a player
   presents, and where they lie on the timeline;
2. :func:`avsc.media.decode.demux_audio` -- that track at 32 kHz, 2 channels, padded or
   cropped to the clip length (the separate WAV, when the dataset has one, is not used:
   a video must carry its own sound, as at prediction time); a clip whose sound is
   digital silence is rejected (:func:`avsc.media.decode.is_silent`);
3. :func:`avsc.media.decode.sample_frames` -- 2 frames a second, ``size x size`` RGB;
4. :func:`avsc.features.spectrograms.compute_clip_features` -- MEL, GAM, CQT;
5. :func:`avsc.features.part_writer.encode_clip` -- float16 bytes and JPEG frames.

A video may be a local file or an ``s3://`` object: ffmpeg then decodes it straight from
the store through a presigned URL, so a shard reads only its own videos (never the WAVs)
and needs no scratch disk. The parent collects the encoded clips and writes a part file
(:class:`avsc.features.part_writer.PartWriter`) every 32 clips of a split, and whatever it
holds every ``flush_seconds`` (60) and on SIGTERM, atomically: a killed run loses at most the
last interval, an evicted one nothing finished.

A clip whose video is missing, corrupt, truncated, without sound, digitally silent or
holding non-finite samples is recorded as rejected (the reason names the file and the
problem), and so is any clip on which something unexpected fails; the rest completes. Then
the shard's index (``index/shard-I-of-N.parquet``: every clip of the shard that has
features, processed now or before, with the label and split of THIS manifest, and the
manifest's lineage), its summary (``summary-shard-I-of-N.json``) and the store's merged
``summary.json`` (:class:`avsc.records.StoreSummary`) are written, each atomically. Shards
may run at the same time on different machines sharing the store: each writes only its own
parts, index and summary, and ``summary.json`` is re-merged from every shard summary by
whichever finishes.

Start-up does not grow with the number of workers: the workers are forked from one warm
fork server (:mod:`avsc.features.clip_workers`), so each starts in milliseconds.

Example::

    result = preprocess("manifest.parquet", "s3://avsc/features/1a2b3c", config=FeatureConfig(),
                        shard=(0, 4), workers=16)
    result.processed, len(result.rejected), result.shapes["mel"]  # (3071, 2, [128, 715, 2])
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsc.config import FeatureConfig, config_hash
from avsc.errors import ConfigError, DataError, Preempted
from avsc.features.clip_workers import run_tasks, start_worker_server
from avsc.features.part_writer import PART_CLIPS, PartWriter
from avsc.features.shards import check_shard, clip_fingerprints, clips_to_process, shard_index_rows, shard_rows
from avsc.features.store_format import shard_name
from avsc.features.store_writer import init_store, merge_summaries, scan_parts, write_index
from avsc.records.lineage import Lineage
from avsc.storage import locations

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0  # finished clips are written at least this often


@dataclass(frozen=True)
class PreprocessResult:
    """What one ``preprocess`` run did.

    Attributes:
        processed: clips whose features were computed and written in this run.
        skipped_existing: clips of the shard that already had features (resume).
        rejected: ``{"clip_id", "reason"}`` for each clip that could not be processed.
        shapes: feature name -> shape of one clip's array.
        out_dir: the feature store (a path or an ``s3://`` URI).
        shard: ``(index, count)`` of the shard processed.
        clips_in_shard: clips of the manifest that fall in this shard.
    """

    processed: int
    skipped_existing: int
    rejected: list[dict]
    shapes: dict
    out_dir: Path | str | None = None
    shard: tuple[int, int] = (0, 1)
    clips_in_shard: int = 0
    index_path: Path | str | None = field(default=None, repr=False)

    @property
    def all_rejected(self) -> bool:
        """Every clip this run attempted was rejected and the shard had none from before."""
        return bool(self.rejected) and self.processed == 0 and self.skipped_existing == 0

    def raise_if_all_rejected(self, reasons: int = 3) -> None:
        """Fail a shard that produced nothing, so later steps never train on an empty store.

        Raises:
            DataError: :attr:`all_rejected`; the message gives the first ``reasons`` reasons
                (all of them are in the shard's summary file).
        """
        if not self.all_rejected:
            return
        first = "; ".join(f"{item['clip_id']}: {item['reason']}" for item in self.rejected[:reasons])
        more = f"; and {len(self.rejected) - reasons} more" if len(self.rejected) > reasons else ""
        summary = f"summary-{shard_name(self.shard)}.json"
        raise DataError(
            self.out_dir or summary,
            f"all {len(self.rejected)} clips of shard {self.shard[0]}/{self.shard[1]} were rejected: {first}{more}",
            f"every reason is in {summary}; fix or replace those files, or point "
            "the dataset root at where the media are now",
        )


# --------------------------------------------------------------------------- a shard


def preprocess(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    config: FeatureConfig,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    dataset_root: str | Path | None = None,
    progress: bool = True,
    part_clips: int = PART_CLIPS,
    flush_seconds: float = FLUSH_SECONDS,
) -> PreprocessResult:
    """Compute the features of one shard of a manifest into a feature store.

    Args:
        manifest: Parquet manifest written by ``avsc ingest`` (a path or ``s3://``).
        out_dir: feature store folder or ``s3://`` prefix (created; an existing store must
            have the same config, and the clips it holds are skipped).
        config: feature settings.
        shard: ``(i, n)``: process the i-th of n disjoint parts (0-based).
        workers: worker processes; 1 runs in this process.
        dataset_root: where the dataset's media are now (a folder or ``s3://`` prefix), if
            not where ingest found them.
        progress: show a progress bar.
        part_clips: clips per part file.
        flush_seconds: finished clips are written (as shorter parts) at least this often, so
            a killed run loses at most the clips of the last ``flush_seconds``; SIGTERM
            writes them at once and ends the run with :class:`~avsc.errors.Preempted`.

    Returns:
        A :class:`PreprocessResult` for this run.

    Raises:
        ConfigError: bad shard, worker count or feature settings.
        DataError: unreadable manifest, or ``out_dir`` holds a store with another config.
        StoreError: the object store refused or could not be reached.
    """
    shapes = _start_run(config, shard, workers)
    frame = _read_manifest(manifest, dataset_root, config)
    out = str(out_dir)
    specs = init_store(out, config, shapes)
    rows = shard_rows(frame, shard)
    sources = clip_fingerprints(rows)
    stored = {row["source"]: row for row in scan_parts(out)}
    todo = clips_to_process(rows, sources, stored, shard)
    skipped = len(rows) - len(todo)
    audio_sources = {row.clip_id: row.audio_source for row, _ in todo}
    tasks = _clip_tasks(todo, config, specs, workers, shard=shard, clips=len(rows))
    writer = PartWriter(out, specs, shard, part_clips, flush_seconds=flush_seconds)
    processed, rejected = _process_shard(tasks, workers, writer, out=out, shard=shard, progress=progress)
    stored.update((row["source"], row) for row in writer.rows)
    index_rows = shard_index_rows(rows, sources, stored)
    index_path = write_index(out, shard, index_rows, lineage=frame.attrs["lineage"], features=list(specs))
    _remove_other_shardings(out, shard)
    result = PreprocessResult(
        processed=processed,
        skipped_existing=skipped,
        rejected=rejected,
        shapes=shapes,
        out_dir=out if locations.is_remote(out) else Path(out),
        shard=(shard[0], shard[1]),
        clips_in_shard=len(rows),
        index_path=index_path,
    )
    _write_shard_summary(
        out,
        result,
        clips_with_features=len(index_rows),
        config=config,
        lineage=frame.attrs["lineage"],
        audio_sources={row["clip_id"]: audio_sources[row["clip_id"]] for row in writer.rows},
    )
    merge_summaries(out)
    return result


def _start_run(config: FeatureConfig, shard: tuple[int, int], workers: int) -> dict[str, list[int]]:
    """Check ``shard`` and ``workers``, then start what the run needs before it reads the
    manifest; returns the feature shapes ``config`` gives (name -> one clip's shape).

    Raises:
        ConfigError: bad shard, worker count or feature settings.
    """
    from avsc.features.spectrograms import feature_shapes
    from avsc.runtime import use_writable_caches

    use_writable_caches()  # before librosa (numba) loads here or in the workers, who inherit it
    check_shard(shard)
    _check_workers(workers)
    shapes = feature_shapes(config)
    if workers > 1:
        start_worker_server(config)  # its imports and warm-up overlap with the reads that follow
    return shapes


def _check_workers(workers: int) -> None:
    """Refuse a worker count below one (:class:`~avsc.errors.ConfigError`)."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, not {workers}")


def _read_manifest(manifest: str | Path, dataset_root: str | Path | None, config: FeatureConfig) -> Any:
    """The manifest's rows, checked before anything is written: its segments must be as long
    as the clips ``config`` cuts (:func:`avsc.data.segments.check_segment_length`)."""
    from avsc.data.manifest import read_manifest
    from avsc.data.segments import check_segment_length

    frame = read_manifest(manifest, dataset_root=dataset_root)
    segments = frame["segment_s"].dropna().unique()
    check_segment_length(float(segments[0]) if len(segments) else None, config.audio.clip_seconds, manifest)
    return frame


def _clip_tasks(
    todo: list[tuple[Any, str]],
    config: FeatureConfig,
    specs: dict[str, Any],
    workers: int,
    *,
    shard: tuple[int, int],
    clips: int,
) -> list[tuple[Any, ...]]:
    """The pool tasks (:func:`avsc.features.clip_workers.run_tasks`) of the manifest rows in
    ``todo``, each with its fingerprint; ``clips`` is the number of clips in the shard."""
    from avsc.runtime import detect_limits

    # The CPUs of the pod (its CFS quota, the affinity mask), not the node's: ffmpeg's own
    # default ("auto") starts one decoder thread per core it sees.
    limits = detect_limits()
    decoder_threads = max(1, limits.cpus // workers)
    tasks = [
        (
            row.clip_id,
            row.label,
            row.split,
            row.video_path,
            config,
            specs,
            decoder_threads,
            float(row.offset_s),
            row.audio_path if row.audio_source == "wav" else None,
            source,
        )
        for row, source in todo
    ]
    wavs = sum(row.audio_source == "wav" for row, _ in todo)
    log.info("sound: %d clip(s) from the dataset's WAVs, %d from the videos' own audio tracks", wavs, len(todo) - wavs)
    log.info(
        "shard %d/%d: %d clips, %d already done, %d to process with %d worker(s), %d decoder thread(s) each (%s)",
        shard[0],
        shard[1],
        clips,
        clips - len(todo),
        len(tasks),
        workers,
        decoder_threads,
        limits.describe(),
    )
    return tasks


def _process_shard(
    tasks: list[tuple[Any, ...]], workers: int, writer: PartWriter, *, out: str, shard: tuple[int, int], progress: bool
) -> tuple[int, list[dict[str, str]]]:
    """Run ``tasks``, writing each finished clip through ``writer``; returns how many were
    processed and the rejected clips (``{"clip_id", "reason"}``, sorted by clip id).

    Finished clips are written even when the run is interrupted.

    Raises:
        Preempted: SIGTERM arrived (the clips finished so far are written).
        StoreError: the object store failed while a clip was read or a part written.
    """
    from tqdm.auto import tqdm

    rejected: list[dict[str, str]] = []
    processed = 0
    bar = tqdm(
        total=len(tasks), desc=f"preprocess {shard[0]}/{shard[1]}", unit="clip", disable=not progress or not tasks
    )
    try:
        with _sigterm_as_interrupt():
            for clip_id, encoded, reason in run_tasks(tasks, workers):
                if reason is None:
                    writer.add(encoded)
                    processed += 1
                    log.debug("finished %s", clip_id)
                else:
                    rejected.append({"clip_id": clip_id, "reason": reason})
                    log.warning("rejected %s: %s", clip_id, reason)
                    writer.flush_if_due()
                bar.update(1)
                bar.set_postfix(rejected=len(rejected), refresh=False)
    except Terminated:
        raise Preempted(
            f"{out}: shard {shard[0]}/{shard[1]} stopped by SIGTERM; its {processed} clip(s) "
            "finished in this run are written, re-run to resume"
        ) from None
    finally:
        bar.close()
        writer.flush()  # finished clips are kept even when the run is interrupted
    rejected.sort(key=lambda item: item["clip_id"])
    return processed, rejected


def _write_shard_summary(
    out: str,
    result: PreprocessResult,
    *,
    clips_with_features: int,
    config: FeatureConfig,
    lineage: Lineage,
    audio_sources: dict[str, str],
) -> None:
    """Write ``summary-shard-I-of-N.json``, which
    :func:`avsc.features.store_writer.merge_summaries` reads: what the run did (``result``),
    how many clips of the shard have features, the config hash and the manifest's lineage.

    ``audio_sources``: where each clip processed in this run took its sound, ``wav`` or
    ``video`` (the manifest's).
    """
    fields = {
        "shard": list(result.shard),
        "clips_in_shard": result.clips_in_shard,
        "clips_with_features": clips_with_features,
        "processed": result.processed,
        "skipped_existing": result.skipped_existing,
        "rejected": result.rejected,
        "shapes": result.shapes,
        "config_hash": config_hash(config),
        "lineage": json.loads(lineage.to_json()),
        "audio_sources": audio_sources,
    }
    locations.write_json(locations.join(out, f"summary-{shard_name(result.shard)}.json"), fields)


def _remove_other_shardings(out: str, shard: tuple[int, int]) -> None:
    """Delete shard indexes of an earlier run with another shard count: this sharding covers
    every clip, and an index of another manifest would make the store unreadable."""
    suffix = f"-of-{shard[1]:05d}.parquet"
    for location in locations.list_files(locations.join(out, "index"), suffix=".parquet"):
        if not location.endswith(suffix):
            log.info("removing %s, the index of an earlier run with other shards", location)
            locations.remove(location)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a Kubernetes eviction, ``kill``) arrived; raised so finished clips are written
    (then :class:`~avsc.errors.Preempted` is raised: ``avsc`` exits 143)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While preprocessing, SIGTERM stops the run: the clips finished so far are written as
    parts (well within Kubernetes' 30-s grace period) and a re-run resumes."""
    from avsc.runtime import on_sigterm

    def stop(signum, frame):
        raise Terminated(f"signal {signum}")

    with on_sigterm(stop):
        yield

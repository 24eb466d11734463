"""From a clip manifest to a feature store: demux, frames, spectrograms, one file per clip.

``preprocess`` takes shard ``i`` of ``n`` of a manifest (clips sorted by id, every n-th
from position i: disjoint, together complete, the same on every machine), skips the clips
whose feature file already exists (a re-run resumes), and processes the rest in a pool of
worker processes, one clip per task:

1. :func:`avsc.media.probe.probe_media` -- which audio track and video stream a player
   presents, and where they lie on the timeline;
2. :func:`avsc.media.decode.demux_audio` -- that track at 32 kHz, 2 channels, padded or
   cropped to the clip length (the separate WAV, when the dataset has one, is not used:
   a video must carry its own sound, as at prediction time); a clip whose sound is
   digital silence is rejected (:func:`avsc.media.decode.is_silent`);
3. :func:`avsc.media.decode.sample_frames` -- 2 frames a second, ``size x size`` RGB;
4. :func:`avsc.features.spectrograms.compute_clip_features` -- MEL, GAM, CQT;
5. :func:`avsc.features.store.write_clip` -- ``clips/<clip_id>.npz``, written atomically.

A clip whose video is missing, corrupt, truncated, without sound, digitally silent or
holding non-finite samples is recorded as rejected (the reason names the file and the
problem), and so is any clip on which something unexpected fails; the rest completes. Then the shard's index
(``index/shard-I-of-N.parquet``: every clip of the shard that has features, processed now
or before), its summary (``summary-shard-I-of-N.json``) and the store's merged
``summary.json`` are written, each atomically. Shards may run at the same time on
different machines sharing the folder: each writes only its own clip, index and summary
files, and ``summary.json`` is re-merged from every shard summary by whichever finishes.

Example:
    >>> result = preprocess("manifest.parquet", "features", config=FeatureConfig(),
    ...                     shard=(0, 4), workers=2)
    >>> result.processed, len(result.rejected), result.shapes["mel"]
    (3071, 2, [128, 715, 2])
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from avsc.config import FeatureConfig, config_hash
from avsc.errors import AvscError, ConfigError, DataError, MediaError
from avsc.storage.files import read_json, write_json

log = logging.getLogger(__name__)

# Native thread pools a worker must not multiply by the number of workers.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class PreprocessResult:
    """What one ``preprocess`` run did.

    Attributes:
        processed: clips whose features were computed and written in this run.
        skipped_existing: clips of the shard that already had features (resume).
        rejected: ``{"clip_id", "reason"}`` for each clip that could not be processed.
        shapes: feature name -> shape of one clip's array.
        out_dir: the feature store.
        shard: ``(index, count)`` of the shard processed.
        clips_in_shard: clips of the manifest that fall in this shard.
    """

    processed: int
    skipped_existing: int
    rejected: list[dict]
    shapes: dict
    out_dir: Path | None = None
    shard: tuple[int, int] = (0, 1)
    clips_in_shard: int = 0
    index_path: Path | None = field(default=None, repr=False)

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
        raise DataError(self.out_dir or summary,
                        f"all {len(self.rejected)} clips of shard {self.shard[0]}/{self.shard[1]} "
                        f"were rejected: {first}{more}",
                        f"every reason is in {summary}; fix or replace those files, or point "
                        "the dataset root at where the media are now")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        ConfigError: not of that form.
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), not {text!r}") from None
    check_shard((index, count))
    return index, count


def check_shard(shard: tuple[int, int]) -> None:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need 0 <= I < N (shards are numbered from 0)")


def shard_rows(manifest, shard: tuple[int, int]):
    """Rows of shard ``(i, n)``: sorted by clip id, those at positions ``p`` with ``p % n == i``."""
    index, count = shard
    ordered = manifest.sort_values("clip_id", kind="stable").reset_index(drop=True)
    return ordered.iloc[index::count].reset_index(drop=True)


def shard_name(shard: tuple[int, int]) -> str:
    """``shard-00002-of-00004``: the name :func:`avsc.features.store.write_index` gives a shard's index."""
    return f"shard-{shard[0]:05d}-of-{shard[1]:05d}"


# --------------------------------------------------------------------------- one clip


def process_clip(video_path: str | Path, clip_id: str, out_dir: str | Path, config: FeatureConfig,
                 *, decoder_threads: int = 0, offset_s: float = 0.0) -> Path:
    """Demux, sample frames, compute features and write one clip's file.

    ``offset_s``: where the clip starts in the video (a segment's offset); it lasts
    ``config.audio.clip_seconds``.

    Raises:
        MediaError: the video cannot be used, or its sound is digital silence (the
            message names the file).
    """
    from avsc.features.spectrograms import compute_clip_features
    from avsc.features.store import write_clip
    from avsc.media.decode import demux_audio, is_silent, sample_frames
    from avsc.media.probe import probe_media

    info = probe_media(video_path)
    audio = demux_audio(video_path, config.audio, offset_s=offset_s, info=info)
    if is_silent(audio):
        # Training on it would teach the audio backbones that silence is a scene.
        span = f"{config.audio.clip_seconds:g} s from {offset_s:g} s" if offset_s else \
            f"clip's {config.audio.clip_seconds:g} s"
        raise MediaError(video_path, f"the sound (audio track {info.audio_track}) is digital silence over "
                                     f"the {span} (peak below -90 dBFS)",
                         "a clip without sound cannot train the audio models; it is left out")
    frames = sample_frames(video_path, config.frames, seconds=config.audio.clip_seconds, offset_s=offset_s,
                           info=info, threads=decoder_threads)
    return write_clip(out_dir, clip_id, compute_clip_features(audio, frames, config))


def _task(args: tuple) -> tuple[str, str | None]:
    """Pool task: ``(clip_id, None)`` on success, ``(clip_id, reason)`` on a rejected clip."""
    clip_id, video_path, out_dir, config, decoder_threads, offset_s = args
    try:
        process_clip(video_path, clip_id, out_dir, config, decoder_threads=decoder_threads, offset_s=offset_s)
        return clip_id, None
    except AvscError as exc:
        return clip_id, str(exc)
    except MemoryError:
        return clip_id, f"{video_path}: out of memory while processing it"
    except Exception as exc:  # noqa: BLE001 -- a bad clip must not stop thousands of others
        log.exception("unexpected error on %s", video_path)
        return clip_id, (f"{video_path}: an unexpected error stopped its processing ({type(exc).__name__}: "
                         f"{exc}); the clip is left out (the log has the traceback)")


def _init_worker() -> None:
    """Keep each worker's native libraries to one thread: the pool is the parallelism."""
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (librosa)
        pass


@contextlib.contextmanager
def _single_threaded_env() -> Iterator[None]:
    """Set one-thread limits in the environment while worker processes are started.

    Spawned workers read these before importing NumPy; restored afterwards so the
    calling process is unaffected.
    """
    saved = {name: os.environ.get(name) for name in _THREAD_ENV}
    os.environ.update({name: "1" for name in _THREAD_ENV})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
) -> PreprocessResult:
    """Compute the features of one shard of a manifest into a feature store.

    Args:
        manifest: Parquet manifest written by ``avsc ingest``.
        out_dir: feature store folder (created; an existing one must have the same config).
        config: feature settings.
        shard: ``(i, n)``: process the i-th of n disjoint parts (0-based).
        workers: worker processes; 1 runs in this process.
        dataset_root: where the dataset's media are now, if not where ingest found them.
        progress: show a progress bar.

    Returns:
        A :class:`PreprocessResult` for this run.

    Raises:
        ConfigError: bad shard, worker count or feature settings.
        DataError: unreadable manifest, or ``out_dir`` holds a store with another config.
    """
    from tqdm.auto import tqdm

    from avsc.data.manifest import read_manifest
    from avsc.data.segments import check_segment_length
    from avsc.features.spectrograms import feature_shapes
    from avsc.features.store import clip_file, init_store, write_index
    from avsc.runtime import use_writable_caches

    use_writable_caches()  # before librosa (numba) loads here or in the workers, who inherit it
    check_shard(shard)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, not {workers}")
    shapes = feature_shapes(config)
    if workers > 1:
        _start_worker_server()  # its imports overlap with reading the manifest below
    frame = read_manifest(manifest, dataset_root=dataset_root)
    segments = frame["segment_s"].dropna().unique()  # before anything is written
    check_segment_length(float(segments[0]) if len(segments) else None, config.audio.clip_seconds, manifest)
    out_dir = Path(out_dir)
    init_store(out_dir, config, shapes)
    rows = shard_rows(frame, shard)

    todo = [row for row in rows.itertuples(index=False) if not clip_file(out_dir, row.clip_id).exists()]
    skipped = len(rows) - len(todo)
    cpus = os.cpu_count() or 1
    decoder_threads = max(1, cpus // workers) if workers > 1 else 0
    tasks = [(row.clip_id, row.video_path, str(out_dir), config, decoder_threads, float(row.offset_s))
             for row in todo]
    log.info("shard %d/%d: %d clips, %d already done, %d to process with %d worker(s)",
             shard[0], shard[1], len(rows), skipped, len(tasks), workers)

    rejected: list[dict] = []
    processed = 0
    bar = tqdm(total=len(tasks), desc=f"preprocess {shard[0]}/{shard[1]}", unit="clip",
               disable=not progress or not tasks)
    try:
        for clip_id, reason in _run_tasks(tasks, workers):
            if reason is None:
                processed += 1
            else:
                rejected.append({"clip_id": clip_id, "reason": reason})
                log.warning("rejected %s: %s", clip_id, reason)
            bar.update(1)
            bar.set_postfix(rejected=len(rejected), refresh=False)
    finally:
        bar.close()
    rejected.sort(key=lambda item: item["clip_id"])

    present = [row for row in rows.itertuples(index=False) if clip_file(out_dir, row.clip_id).exists()]
    index_path = write_index(out_dir, shard, [
        {"clip_id": row.clip_id, "label": row.label, "split": row.split, "file": f"clips/{row.clip_id}.npz"}
        for row in present])
    write_json(out_dir / f"summary-{shard_name(shard)}.json", {
        "shard": list(shard),
        "clips_in_shard": len(rows),
        "clips_with_features": len(present),
        "processed": processed,
        "skipped_existing": skipped,
        "rejected": rejected,
        "shapes": shapes,
        "config_hash": config_hash(config),
    })
    merge_summaries(out_dir)
    return PreprocessResult(processed=processed, skipped_existing=skipped, rejected=rejected,
                            shapes=shapes, out_dir=out_dir, shard=tuple(shard), clips_in_shard=len(rows),
                            index_path=index_path)


def _run_tasks(tasks: list[tuple], workers: int) -> Iterator[tuple[str, str | None]]:
    if not tasks:
        return
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            yield _task(task)
        return
    with _single_threaded_env():
        pool = _worker_context().Pool(min(workers, len(tasks)), initializer=_init_worker)
    try:
        yield from pool.imap_unordered(_task, tasks, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


# Imported once by the fork server, before it forks the workers: a worker starts in
# milliseconds instead of each paying the seconds librosa's import costs.
_PRELOAD = ("avsc.features.preprocess", "avsc.features.spectrograms", "avsc.media.decode", "avsc.features.store", "librosa.core.constantq",
            "librosa.core.spectrum", "librosa.filters", "gammatone.fftweight")


def _worker_context():
    """``forkserver`` (workers forked from a clean, preloaded server; safe whatever threads
    the caller runs, e.g. TensorFlow's), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


def _start_worker_server() -> None:
    """Start the fork server (and its preloading) now, without waiting for it."""
    context = _worker_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _single_threaded_env():
            forkserver.ensure_running()


def merge_summaries(out_dir: str | Path) -> dict:
    """Rebuild ``summary.json`` of a store from its shard indexes and shard summaries.

    ``processed`` counts the clips that have features in the store (over every shard, from
    every run); ``rejected`` lists the clips the latest run of each shard could not
    process and that still have no features; ``shapes`` are the store's feature shapes.
    """
    import pyarrow.parquet as pq

    from avsc.features.store import write_summary

    out_dir = Path(out_dir)
    clip_ids: set[str] = set()
    for index_file in sorted((out_dir / "index").glob("shard-*.parquet")):
        clip_ids.update(pq.read_table(index_file, columns=["clip_id"]).column("clip_id").to_pylist())
    rejected: dict[str, str] = {}
    shapes: dict = {}
    shards = []
    for summary_file in sorted(out_dir.glob("summary-shard-*.json")):
        part = read_json(summary_file)
        shards.append(part.get("shard"))
        shapes = shapes or part.get("shapes", {})
        for item in part.get("rejected", []):
            if item["clip_id"] not in clip_ids:
                rejected[item["clip_id"]] = item["reason"]
    if not shapes and (out_dir / "store.json").is_file():
        shapes = {name: spec["shape"] for name, spec in read_json(out_dir / "store.json")["features"].items()}
    summary = {
        "processed": len(clip_ids),
        "rejected": [{"clip_id": key, "reason": rejected[key]} for key in sorted(rejected)],
        "shapes": shapes,
        "shards": shards,
    }
    write_summary(out_dir, summary)
    return summary

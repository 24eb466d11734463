"""From a clip manifest to a feature store: demux, frames, spectrograms, parts of 32 clips.

``preprocess`` takes shard ``i`` of ``n`` of a manifest (clips sorted by id, every n-th
from position i: disjoint, together complete, the same on every machine), skips the clips
the store already holds under the same fingerprint (:func:`clip_fingerprints`: id, video
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
5. :func:`avsc.features.store_writer.encode_clip` -- float16 bytes and JPEG frames.

A video may be a local file or an ``s3://`` object: ffmpeg then decodes it straight from
the store through a presigned URL, so a shard reads only its own videos (never the WAVs)
and needs no scratch disk. The parent collects the encoded clips and writes a part file
(:class:`avsc.features.store_writer.PartWriter`) every 32 clips of a split, and whatever it
holds every ``flush_seconds`` (60) and on SIGTERM, atomically: a killed run loses at most the
last interval, an evicted one nothing finished.

A clip whose video is missing, corrupt, truncated, without sound, digitally silent or
holding non-finite samples is recorded as rejected (the reason names the file and the
problem), and so is any clip on which something unexpected fails; the rest completes. Then the shard's index
(``index/shard-I-of-N.parquet``: every clip of the shard that has features, processed now
or before, with the label and split of THIS manifest, and the manifest's lineage), its summary (``summary-shard-I-of-N.json``) and the store's merged
``summary.json`` are written, each atomically. Shards may run at the same time on
different machines sharing the store: each writes only its own parts, index and summary,
and ``summary.json`` is re-merged from every shard summary by whichever finishes.

Start-up does not grow with the number of workers: the workers are forked from one fork
server that has imported the libraries and run one clip's worth of every computation
(:mod:`avsc.features.worker_warmup`), so each starts warm in milliseconds.

Example::

    result = preprocess("manifest.parquet", "s3://avsc/features/1a2b3c", config=FeatureConfig(),
                        shard=(0, 4), workers=16)
    result.processed, len(result.rejected), result.shapes["mel"]  # (3071, 2, [128, 715, 2])
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avsc.config import FeatureConfig, config_hash, to_dict
from avsc.errors import AvscError, ConfigError, DataError, MediaError, Preempted, StoreError
from avsc.features.store_writer import PART_CLIPS, merge_summaries, shard_name
from avsc.storage import locations

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0  # finished clips are written at least this often

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


# --------------------------------------------------------------------------- one clip


def process_clip(video: str | Path, config: FeatureConfig, *, decoder_threads: int = 0,
                 offset_s: float = 0.0, wav: str | Path | None = None) -> dict:
    """Demux, sample frames and compute the features of one clip.

    Args:
        video: the clip's video: a local path or an ``s3://`` URI.
        wav: the clip's own audio file (the manifest's ``audio`` when its ``audio_source``
            is ``wav``), read instead of the video's audio track; None reads the track.

    Returns:
        feature name -> array (see :func:`avsc.features.spectrograms.compute_clip_features`).

    ``offset_s``: where the clip starts in the video (a segment's offset); it lasts
    ``config.audio.clip_seconds``.

    Raises:
        MediaError: the video cannot be used, or its sound is digital silence (the
            message names the file).
    """
    from avsc.features.spectrograms import compute_clip_features
    from avsc.media.decode import demux_audio, is_silent, read_wav, sample_frames
    from avsc.media.probe import probe_media

    info = probe_media(video)
    if wav is not None:
        audio = read_wav(wav, config.audio, offset_s=offset_s)
    else:
        audio = demux_audio(video, config.audio, offset_s=offset_s, info=info)
    if is_silent(audio):
        # Training on it would teach the audio backbones that silence is a scene.
        span = f"{config.audio.clip_seconds:g} s from {offset_s:g} s" if offset_s else \
            f"clip's {config.audio.clip_seconds:g} s"
        raise MediaError(wav if wav is not None else video,
                         f"the sound ({'the WAV' if wav is not None else f'audio track {info.audio_track}'}) "
                         f"is digital silence over the {span} (peak below -90 dBFS)",
                         "a clip without sound cannot train the audio models; it is left out")
    frames = sample_frames(video, config.frames, seconds=config.audio.clip_seconds, offset_s=offset_s,
                           info=info, threads=decoder_threads)
    return compute_clip_features(audio, frames, config)


def _task(args: tuple):
    """Pool task: ``(clip_id, EncodedClip, None)``, or ``(clip_id, None, reason)`` when rejected.

    ``args``: clip_id, label, split, video, config, specs, decoder threads, offset and,
    optionally, the WAV to read the sound from and the clip's fingerprint
    (:func:`clip_fingerprints`)."""
    from avsc.features.store_writer import encode_clip

    clip_id, label, split, video, config, specs, decoder_threads, offset_s, *rest = args
    wav = rest[0] if rest else None
    source = rest[1] if len(rest) > 1 else None  # None: a hash of the encoded values
    try:
        arrays = _process_clip_checked(video, config, decoder_threads=decoder_threads, offset_s=offset_s,
                                       wav=wav)
        return clip_id, encode_clip(clip_id, label, split, arrays, specs, source=source), None
    except StoreError:
        raise  # the store, not the clip: the run stops (finished clips kept) and a re-run resumes
    except AvscError as exc:
        return clip_id, None, str(exc)
    except MemoryError:
        return clip_id, None, f"{video}: out of memory while processing it"
    except Exception as exc:  # noqa: BLE001 -- a bad clip must not stop thousands of others
        log.exception("unexpected error on %s", video)
        return clip_id, None, (f"{video}: an unexpected error stopped its processing ({type(exc).__name__}: "
                               f"{exc}); the clip is left out (the log has the traceback)")


def _process_clip_checked(video: str | Path, config: FeatureConfig, *, decoder_threads: int,
                          offset_s: float, wav: str | Path | None = None, attempts: int = 2) -> dict:
    """:func:`process_clip`, telling a fault of the object store from a bad clip.

    ffmpeg reports a store that is down, stalls or answers 5xx as a failure to read the
    file. Before such a failure of an ``s3://`` video (or WAV) counts against the clip, the
    store is asked for the files (with the client's bounded retries): if it cannot answer, the
    :class:`~avsc.errors.StoreError` is raised, never a rejection; if it answers, the clip
    is tried once more, since the fault may have passed in between.

    Raises:
        StoreError: the store could not be reached (or refused) while the clip was read.
        MediaError: the clip itself is unusable (also: the object does not exist).
    """
    for attempt in range(1, attempts + 1):
        try:
            return process_clip(video, config, decoder_threads=decoder_threads, offset_s=offset_s, wav=wav)
        except MediaError:
            remote = [str(f) for f in (video, wav) if f is not None and locations.is_remote(str(f))]
            if not remote:
                raise
            # StoreError when the store cannot answer; a missing file is the clip's fault
            if not all(locations.exists(f) for f in remote) or attempt == attempts:
                raise
            log.info("%s: reading failed while the store answers; trying the clip again", video)
    raise AssertionError("unreachable")


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
def _single_threaded_env(extra: dict[str, str] | None = None) -> Iterator[None]:
    """Set one-thread limits (and ``extra``) in the environment while workers are started.

    The fork server and spawned workers read these before importing NumPy; restored
    afterwards so the calling process is unaffected.
    """
    values = {name: "1" for name in _THREAD_ENV} | dict(extra or {})
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
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
    from tqdm.auto import tqdm

    from avsc.data.manifest import read_manifest
    from avsc.data.segments import check_segment_length
    from avsc.features.spectrograms import feature_shapes
    from avsc.features.store_writer import PartWriter, init_store, scan_parts, write_index
    from avsc.runtime import detect_limits, use_writable_caches

    use_writable_caches()  # before librosa (numba) loads here or in the workers, who inherit it
    check_shard(shard)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, not {workers}")
    shapes = feature_shapes(config)
    if workers > 1:
        _start_worker_server(config)  # its imports and warm-up overlap with the reads below
    frame = read_manifest(manifest, dataset_root=dataset_root)
    segments = frame["segment_s"].dropna().unique()  # before anything is written
    check_segment_length(float(segments[0]) if len(segments) else None, config.audio.clip_seconds, manifest)
    out = str(out_dir)
    specs = init_store(out, config, shapes)
    rows = shard_rows(frame, shard)
    sources = clip_fingerprints(rows)
    existing = scan_parts(out)  # every clip the store holds, from any run of any shard
    # A clip is done when a part holds its fingerprint: same id, same source file (size and
    # modification time), same segment. Its label and split are the manifest's, whatever
    # the part says (they go into the index below).
    stored = {row["source"]: row for row in existing}

    todo = [(row, source) for row, source in zip(rows.itertuples(index=False), sources) if source not in stored]
    skipped = len(rows) - len(todo)
    # In a random (seeded) order: each part then holds clips of many scenes and locations,
    # not 32 neighbours in clip-id order (one location's segments), which a training
    # stream's shuffle buffer of a few parts could not mix.
    todo = [todo[i] for i in np.random.default_rng([shard[0], shard[1]]).permutation(len(todo))]
    # The CPUs of the pod (its CFS quota, the affinity mask), not the node's: ffmpeg's own
    # default ("auto") starts one decoder thread per core it sees.
    limits = detect_limits()
    decoder_threads = max(1, limits.cpus // workers)
    tasks = [(row.clip_id, row.label, row.split, row.video_path, config, specs, decoder_threads,
              float(row.offset_s), row.audio_path if row.audio_source == "wav" else None, source)
             for row, source in todo]
    audio_sources = {row.clip_id: row.audio_source for row, _ in todo}
    wavs = sum(source == "wav" for source in audio_sources.values())
    log.info("sound: %d clip(s) from the dataset's WAVs, %d from the videos' own audio tracks",
             wavs, len(audio_sources) - wavs)
    log.info("shard %d/%d: %d clips, %d already done, %d to process with %d worker(s), %d decoder "
             "thread(s) each (%s)", shard[0], shard[1], len(rows), skipped, len(tasks), workers,
             decoder_threads, limits.describe())

    rejected: list[dict] = []
    processed = 0
    writer = PartWriter(out, specs, shard, part_clips, flush_seconds=flush_seconds)
    bar = tqdm(total=len(tasks), desc=f"preprocess {shard[0]}/{shard[1]}", unit="clip",
               disable=not progress or not tasks)
    try:
        with _sigterm_as_interrupt():
            for clip_id, encoded, reason in _run_tasks(tasks, workers):
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
        raise Preempted(f"{out}: shard {shard[0]}/{shard[1]} stopped by SIGTERM; its {processed} clip(s) "
                        "finished in this run are written, re-run to resume") from None
    finally:
        bar.close()
        writer.flush()  # finished clips are kept even when the run is interrupted
    rejected.sort(key=lambda item: item["clip_id"])

    stored.update((row["source"], row) for row in writer.rows)
    index_rows = [dict(stored[source], clip_id=row.clip_id, label=row.label, split=row.split)
                  for row, source in zip(rows.itertuples(index=False), sources) if source in stored]
    index_path = write_index(out, shard, index_rows, lineage=frame.attrs["lineage"], features=list(specs))
    _remove_other_shardings(out, shard)
    locations.write_json(locations.join(out, f"summary-{shard_name(shard)}.json"), {
        "shard": list(shard),
        "clips_in_shard": len(rows),
        "clips_with_features": len(index_rows),
        "processed": processed,
        "skipped_existing": skipped,
        "rejected": rejected,
        "shapes": shapes,
        "config_hash": config_hash(config),
        "lineage": json.loads(frame.attrs["lineage"].to_json()),
        # Where each clip processed in this run took its sound: "wav" or "video" (the manifest's).
        "audio_sources": {row["clip_id"]: audio_sources[row["clip_id"]] for row in writer.rows},
    })
    merge_summaries(out)
    return PreprocessResult(processed=processed, skipped_existing=skipped, rejected=rejected,
                            shapes=shapes, out_dir=out if locations.is_remote(out) else Path(out),
                            shard=tuple(shard), clips_in_shard=len(rows), index_path=index_path)


def clip_fingerprints(rows) -> list[str]:
    """Each manifest row's fingerprint: what the clip is, so a changed source is processed again.

    A hash of the clip id, its media path relative to the dataset root, its video's size and
    modification time (local ``st_mtime``, or an object's Last-Modified on ``s3://``), its
    segment offset and length, and, for a clip whose sound is its WAV (``audio_source`` =
    ``wav``), the WAV's path, size and modification time; a missing file gets a fingerprint
    no part holds. Labels and
    splits are not part of it: they do not change the features (the index takes them from
    the manifest).

    Args:
        rows: manifest rows as :func:`avsc.data.manifest.read_manifest` returns them.
    """
    from avsc.records.lineage import hash_value

    wavs = [row.audio_path for row in rows.itertuples(index=False) if row.audio_source == "wav"]
    stats = locations.file_stats(list(rows["video_path"]) + wavs)
    out = []
    for row in rows.itertuples(index=False):
        segment = None if row.segment_s is None or np.isnan(row.segment_s) else float(row.segment_s)
        sound = [row.audio, stats[row.audio_path]] if row.audio_source == "wav" else None
        out.append(hash_value([row.clip_id, row.video, stats[row.video_path], float(row.offset_s), segment,
                               sound]))
    return out


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


def _run_tasks(tasks: list[tuple], workers: int) -> Iterator[tuple]:
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


# Imported by the fork server before it forks any worker. "__main__" first: otherwise every
# worker re-runs the parent's main module (the ``avsc`` script, a test runner) on start.
# The warm-up module imports the libraries and runs one clip's worth of every computation
# (lazy imports, numba compilation of librosa's kernels, filter banks), once for all workers.
_PRELOAD = ("__main__", "avsc.features.worker_warmup")
WARMUP_ENV = "AVSC_WARMUP_FEATURES"  # the feature config (JSON) the fork server warms up with


def warm_up(config: FeatureConfig | None = None, *, seconds: float = 1.0) -> float:
    """Run a short synthetic clip through every computation a worker does; return the seconds.

    The first call in a process pays the lazy imports, numba's compilation of librosa's
    kernels (from its cache, or from scratch in a fresh container: tens of seconds) and the
    JPEG encoder's set-up; no later clip does. The fork server calls this once, so each
    forked worker starts warm. ``seconds`` of sound is enough for that (the compiled code
    does not depend on the length); the full clip's filter banks cost a worker milliseconds.
    """
    import time
    from dataclasses import replace

    import numpy as np

    from avsc.features.spectrograms import compute_clip_features, feature_shapes
    from avsc.features.store import feature_specs
    from avsc.features.store_writer import encode_clip

    began = time.perf_counter()
    config = config or FeatureConfig()
    config = replace(config, audio=replace(config.audio, clip_seconds=min(seconds, config.audio.clip_seconds),
                                           frames=None))
    shapes = feature_shapes(config)
    noise = np.random.default_rng(0).normal(0, 0.01, (config.audio.n_samples, config.audio.channels))
    frames = np.zeros(shapes["frames"], np.uint8)
    arrays = compute_clip_features(noise.astype(np.float32), frames, config)
    encode_clip("warm-up", "", "", arrays, feature_specs(config, shapes))
    import avsc.media.decode  # noqa: F401  (ffmpeg-python, the decoder's command builder)

    return time.perf_counter() - began


def _worker_context():
    """``forkserver`` (workers forked from a clean, preloaded, warmed server; safe whatever
    threads the caller runs, e.g. TensorFlow's), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


def _start_worker_server(config: FeatureConfig) -> None:
    """Start the fork server (its imports and warm-up for ``config``) now, without waiting."""
    import json

    context = _worker_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _single_threaded_env({WARMUP_ENV: json.dumps(to_dict(config))}):
            forkserver.ensure_running()

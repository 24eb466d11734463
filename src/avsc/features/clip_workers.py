"""Processing clips in worker processes: one clip's features, and the pool that runs them.

:func:`process_clip` demuxes one clip, samples its frames and computes its features; a pool
task (:func:`_task`) also encodes them for the store and turns a bad clip into a rejection
with its reason. :func:`run_tasks` runs the tasks in this process or in a pool of worker
processes forked from one fork server (:func:`start_worker_server`) that has imported the
libraries and run one clip's worth of every computation (:func:`warm_up`, from
:mod:`avsc.features.worker_warmup`), so each worker starts warm in milliseconds and keeps
its native libraries to one thread: the pool is the parallelism.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avsc.config import FeatureConfig, to_dict
from avsc.errors import AvscError, MediaError, StoreError
from avsc.storage import locations

log = logging.getLogger(__name__)

# Native thread pools a worker must not multiply by the number of workers.
_THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
# Imported by the fork server before it forks any worker. "__main__" first: otherwise every
# worker re-runs the parent's main module (the ``avsc`` script, a test runner) on start.
# The warm-up module imports the libraries and runs one clip's worth of every computation
# (lazy imports, numba compilation of librosa's kernels, filter banks), once for all workers.
_PRELOAD = ("__main__", "avsc.features.worker_warmup")
WARMUP_ENV = "AVSC_WARMUP_FEATURES"  # the feature config (JSON) the fork server warms up with


def process_clip(
    video: str | Path,
    config: FeatureConfig,
    *,
    decoder_threads: int = 0,
    offset_s: float = 0.0,
    wav: str | Path | None = None,
) -> dict:
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
        span = (
            f"{config.audio.clip_seconds:g} s from {offset_s:g} s"
            if offset_s
            else f"clip's {config.audio.clip_seconds:g} s"
        )
        raise MediaError(
            wav if wav is not None else video,
            f"the sound ({'the WAV' if wav is not None else f'audio track {info.audio_track}'}) "
            f"is digital silence over the {span} (peak below -90 dBFS)",
            "a clip without sound cannot train the audio models; it is left out",
        )
    frames = sample_frames(
        video, config.frames, seconds=config.audio.clip_seconds, offset_s=offset_s, info=info, threads=decoder_threads
    )
    return compute_clip_features(audio, frames, config)


def _task(args: tuple):
    """Pool task: ``(clip_id, EncodedClip, None)``, or ``(clip_id, None, reason)`` when rejected.

    ``args``: clip_id, label, split, video, config, specs, decoder threads, offset and,
    optionally, the WAV to read the sound from and the clip's fingerprint
    (:func:`avsc.features.shards.clip_fingerprints`)."""
    from avsc.features.store_writer import encode_clip

    clip_id, label, split, video, config, specs, decoder_threads, offset_s, *rest = args
    wav = rest[0] if rest else None
    source = rest[1] if len(rest) > 1 else None  # None: a hash of the encoded values
    try:
        arrays = _process_clip_checked(video, config, decoder_threads=decoder_threads, offset_s=offset_s, wav=wav)
        return clip_id, encode_clip(clip_id, label, split, arrays, specs, source=source), None
    except StoreError:
        raise  # the store, not the clip: the run stops (finished clips kept) and a re-run resumes
    except AvscError as exc:
        return clip_id, None, str(exc)
    except MemoryError:
        return clip_id, None, f"{video}: out of memory while processing it"
    except Exception as exc:  # a bad clip must not stop thousands of others (logged with its traceback)
        log.exception("unexpected error on %s", video)
        return (
            clip_id,
            None,
            (
                f"{video}: an unexpected error stopped its processing ({type(exc).__name__}: "
                f"{exc}); the clip is left out (the log has the traceback)"
            ),
        )


def _process_clip_checked(
    video: str | Path,
    config: FeatureConfig,
    *,
    decoder_threads: int,
    offset_s: float,
    wav: str | Path | None = None,
    attempts: int = 2,
) -> dict:
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
    values = dict.fromkeys(_THREAD_ENV, "1") | dict(extra or {})
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


def run_tasks(tasks: list[tuple], workers: int) -> Iterator[tuple]:
    """``(clip_id, EncodedClip, None)`` or ``(clip_id, None, reason)`` for each task, as they
    finish: in this process when ``workers`` is 1 (or there is one task), else in a pool of
    worker processes forked from the warm fork server.

    Raises:
        StoreError: the object store failed while a clip was read (the pool is stopped).
    """
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


def _worker_context():
    """``forkserver`` (workers forked from a clean, preloaded, warmed server; safe whatever
    threads the caller runs, e.g. TensorFlow's), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


def start_worker_server(config: FeatureConfig) -> None:
    """Start the fork server (its imports and warm-up for ``config``) now, without waiting."""
    import json

    context = _worker_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _single_threaded_env({WARMUP_ENV: json.dumps(to_dict(config))}):
            forkserver.ensure_running()


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

    from avsc.features.part_writer import encode_clip
    from avsc.features.spectrograms import compute_clip_features, feature_shapes
    from avsc.features.store_format import feature_specs

    began = time.perf_counter()
    config = config or FeatureConfig()
    config = replace(
        config, audio=replace(config.audio, clip_seconds=min(seconds, config.audio.clip_seconds), frames=None)
    )
    shapes = feature_shapes(config)
    noise = np.random.default_rng(0).normal(0, 0.01, (config.audio.n_samples, config.audio.channels))
    frames = np.zeros(shapes["frames"], np.uint8)
    arrays = compute_clip_features(noise.astype(np.float32), frames, config)
    encode_clip("warm-up", "", "", arrays, feature_specs(config, shapes))
    import avsc.media.decode  # noqa: F401  (ffmpeg-python, the decoder's command builder)

    return time.perf_counter() - began

"""Ingest: the dataset (a local folder or ``s3://bucket/prefix``) -> a validated clip manifest."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.artifacts import HELPERS, save_metrics
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def ingest_dataset(
    dataset: str,
    manifest: Output[Dataset],
    metrics: Output[Metrics],
    segment_seconds: float = 0.0,
    audio_source: str = "auto",
):
    """Validate every clip of ``dataset`` and split it train/val/test by location.

    Args:
        dataset: the dataset in the TAU 2021 layout: a local folder or ``s3://bucket/prefix``
            (its lists read and its videos probed in place, in parallel, through presigned
            URLs: nothing is copied; credentials from ``AVSC_S3_*``).
        segment_seconds: the run's ``data.segment_seconds``, an output of *Resolve config*
            (0 when unset): > 0 cuts every clip into segments of that length after the split
            (1 = the DCASE 2021 Task 1B protocol); 0 keeps whole clips.
        audio_source: the run's ``data.audio_source``, an output of *Resolve config*: each
            clip's sound from the dataset's WAV (``wav``), the video's track (``video``), or
            the WAV when there is one (``auto``); recorded per clip in the manifest.

    Returns:
        manifest: a folder holding ``manifest.parquet`` (media paths relative to
            the dataset root; one row per segment on a segment run) and ``manifest.rejected.json``.
        metrics: clips (or segments) per split (``train_clips``, ...), ``rejected_clips``,
            ``segment_seconds`` (0: whole clips), ``seconds``.
    """
    import os
    import time

    import avsc.data.ingest

    began = time.perf_counter()
    os.makedirs(manifest.path, exist_ok=True)
    result = avsc.data.ingest.ingest_dataset(
        dataset,
        os.path.join(manifest.path, "manifest.parquet"),
        segment_seconds=segment_seconds or None,
        progress=False,
        audio_source=audio_source,
    )
    save_metrics(
        metrics,
        {
            **{f"{split}_clips": count for split, count in result.counts.items()},
            "rejected_clips": len(result.rejected),
            "segment_seconds": segment_seconds,
            "seconds": round(time.perf_counter() - began, 3),
        },
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def list_shards(shard_count: int) -> list[int]:
    """The shard indices the preprocessing fans out over.

    Args:
        shard_count: how many preprocessing tasks (at least 1).

    Returns:
        Output: the list ``[0, 1, ..., shard_count - 1]``.
    """
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    return list(range(shard_count))

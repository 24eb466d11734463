"""Ingest: the dataset (a local folder or ``s3://bucket/prefix``) -> a validated clip manifest."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest_dataset(dataset: str, manifest: Output[Dataset], metrics: Output[Metrics], segment_seconds: float = 0.0):
    """Validate every clip of ``dataset`` and split it train/val/test by location.

    ``segment_seconds`` > 0 cuts each clip into segments of that length (1 = the DCASE
    protocol); the steps' feature config must then have ``features.audio.clip_seconds`` = it.

    A remote dataset is pulled into a scratch folder first (credentials from the
    ``AVSC_S3_*`` environment). ``manifest`` becomes a folder holding ``manifest.parquet``
    (media paths relative to the dataset root) and ``manifest.rejected.json``.
    """
    import os
    import tempfile
    import time

    import avsc.data.ingest
    from avsc.storage.s3 import is_remote
    from avsc.storage.sync import pull_dir

    began = time.perf_counter()
    os.makedirs(manifest.path, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="avsc-dataset-") as scratch:  # removed afterwards
        root = dataset
        if is_remote(dataset):
            root = scratch
            pull_dir(dataset, root, progress=False)
        result = avsc.data.ingest.ingest_dataset(root, os.path.join(manifest.path, "manifest.parquet"),
                                            segment_seconds=segment_seconds or None, progress=False)
    for split, count in result.counts.items():
        metrics.log_metric(f"{split}_clips", count)
    metrics.log_metric("rejected_clips", len(result.rejected))
    metrics.log_metric("seconds", round(time.perf_counter() - began, 3))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def list_shards(shard_count: int) -> List[int]:
    """The shard indices ``0 .. shard_count - 1`` the preprocessing fans out over."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    return list(range(shard_count))

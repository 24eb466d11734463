"""Preprocess one shard of the manifest: demux audio, spectrograms (mel, gammatone, CQT), frames."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.artifacts import HELPERS, read_config, save_metrics
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def preprocess_shard(
    config: Input[Artifact],
    manifest: Input[Dataset],
    dataset: str,
    shard_index: int,
    shard_count: int,
    workers: int,
    features: Output[Dataset],
    metrics: Output[Metrics],
):
    """Write the features of shard ``shard_index`` of ``shard_count`` to a feature store.

    Args:
        config: the run's config (its ``features`` section: sample rate, bins, frames, ...).
        manifest: the ingest step's manifest folder.
        dataset: the dataset the manifest's paths are relative to (folder or ``s3://``);
            from a remote dataset only this shard's media are pulled.
        shard_index: this shard, ``0 <= shard_index < shard_count`` (clips dealt round-robin).
        shard_count: how many shards the manifest is split into.
        workers: clips decoded at once.

    Returns:
        features: one feature store (store.json, clips/, index/, summary.json);
            the training steps open the stores of all shards together.
        metrics: ``processed_clips``, ``rejected_clips``, ``seconds``.
    """
    import os
    import tempfile
    import time

    import avsc.features.preprocess
    from avsc.data.manifest import read_manifest
    from avsc.storage.s3 import is_remote
    from avsc.storage.sync import pull_dir

    began = time.perf_counter()
    manifest_path = os.path.join(manifest.path, "manifest.parquet")
    with tempfile.TemporaryDirectory(prefix="avsc-dataset-") as scratch:  # removed afterwards
        root = dataset
        if is_remote(dataset):
            rows = avsc.features.preprocess.shard_rows(read_manifest(manifest_path), (shard_index, shard_count))
            wanted = [p for p in list(rows["video"]) + list(rows["audio"]) if isinstance(p, str) and p]
            root = scratch
            pull_dir(dataset, root, include=wanted, progress=False)
        result = avsc.features.preprocess.preprocess(
            manifest_path, features.path, config=read_config(config).features,
            shard=(shard_index, shard_count), workers=workers, dataset_root=root, progress=False)
    save_metrics(metrics, {"processed_clips": result.processed, "rejected_clips": len(result.rejected),
                           "seconds": round(time.perf_counter() - began, 3)})

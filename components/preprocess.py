"""Preprocess one shard of the manifest: demux audio, spectrograms (mel, gammatone, CQT), frames."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess_shard(
    manifest: Input[Dataset],
    dataset: str,
    shard_index: int,
    shard_count: int,
    preset: str,
    workers: int,
    features: Output[Dataset],
    metrics: Output[Metrics],
):
    """Write the features of shard ``shard_index`` of ``shard_count`` to a feature store.

    ``features`` becomes one feature store directory; the training steps open the stores of
    all shards together. From a remote dataset only this shard's media are pulled.
    """
    import os
    import tempfile
    import time

    import avsc.features.preprocess
    from avsc.config import load_config
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
            manifest_path, features.path, config=load_config(preset=preset).features,
            shard=(shard_index, shard_count), workers=workers, dataset_root=root, progress=False)
        result.raise_if_all_rejected()  # a shard of nothing but rejected clips fails its task
    metrics.log_metric("processed_clips", result.processed)
    metrics.log_metric("rejected_clips", len(result.rejected))
    metrics.log_metric("seconds", round(time.perf_counter() - began, 3))

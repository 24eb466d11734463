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
    output_uri: str,
    features: Output[Dataset],
    metrics: Output[Metrics],
):
    """Write the features of shard ``shard_index`` of ``shard_count`` to a feature store.

    Args:
        config: the run's config (its ``features`` section: sample rate, bins, frames, ...).
        manifest: the ingest step's manifest folder.
        dataset: the dataset the manifest's paths are relative to (folder or ``s3://``);
            this shard's videos (and the WAVs of clips whose sound is a WAV, as the manifest
            records) are decoded from it in place, no copy.
        shard_index: this shard, ``0 <= shard_index < shard_count`` (clips dealt round-robin).
        shard_count: how many shards the manifest is split into.
        workers: clips decoded at once.
        output_uri: the run's output location; when set, the features go to the store
            ``<output_uri>/features/<features config hash>`` (``...-audio-auto`` or
            ``...-audio-wav`` unless ``data.audio_source`` is ``video``), shared by the shards
            and reused by every run with the same feature and sound settings (clips already
            there are skipped).

    Returns:
        features: with ``output_uri``, a reference to that store (``feature-store.json``: a
            few bytes, which is all a later step downloads); without, the shard's own store.
            The training and embedding steps open the shards' stores together.
        metrics: ``processed_clips``, ``rejected_clips``, ``seconds``.
    """
    import os
    import time

    import avsc.features.preprocess
    import avsc.features.store_writer as writer

    began = time.perf_counter()
    run_config = read_config(config)
    settings = run_config.features
    store = features.path
    if output_uri:
        store = writer.store_location(output_uri, settings)
        if run_config.data.audio_source != "video":  # features of other sound: a store of their own
            store = f"{store}-audio-{run_config.data.audio_source}"
    result = avsc.features.preprocess.preprocess(
        os.path.join(manifest.path, "manifest.parquet"),
        store,
        config=settings,
        shard=(shard_index, shard_count),
        workers=workers,
        dataset_root=dataset,
        progress=False,
    )
    if output_uri:
        writer.write_store_ref(features.path, store, settings)
    features.metadata.update(store=str(store), shard=f"{shard_index}/{shard_count}")
    result.raise_if_all_rejected()  # a shard of nothing but rejected clips fails its task
    save_metrics(
        metrics,
        {
            "processed_clips": result.processed,
            "rejected_clips": len(result.rejected),
            "skipped_clips": result.skipped_existing,
            "seconds": round(time.perf_counter() - began, 3),
        },
    )

"""The avsc Kubeflow pipeline: config -> dataset -> manifest -> features -> five models ->
embeddings -> fusion -> evaluation -> published outputs.

Commands::

    python pipeline.py compile -o avsc_pipeline.yaml [--no-gpu]
    python pipeline.py run --local [--dataset DIR|s3://bucket/prefix] [--preset quick] \\
        [--config FILE] [--set section.key=value ...] [--output DIR] [--cache]
    python pipeline.py submit --host URL --dataset s3://... --output-uri s3://... [--preset ...]

The DAG (see docs/pipeline.md)::

    resolve config -> ingest (whole clips, or segments of data.segment_seconds)
        -> list shards -> ParallelFor(shard): preprocess
        -> train and embed: ParallelFor(backbone): train (one GPU) -> embed
        -> ParallelFor(method f1..f6): fuse (audio+visual, audio, visual)
        -> evaluate (metrics.json, report.html, report.md, figures, bundle) -> publish

Every step is a lightweight component of ``components/`` wrapping one :mod:`avsc` function;
the tasks' cluster settings (GPUs, CPU and memory, node selector, toleration, retries, the
object-store secret, the image) are one table, :data:`components.cluster.STEPS`. This module
only wires the steps together; the command line is :mod:`components.cli`.
"""

# No `from __future__ import annotations`: kfp reads the pipeline function's annotations as types.
import sys
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from avsc.config import BACKBONES, DEFAULT_PRESET, FUSION_METHODS
from components import (
    embed_backbone,
    evaluate_fusions,
    fuse_method,
    ingest_dataset,
    list_shards,
    preprocess_shard,
    publish_outputs,
    resolve_config,
    train_backbone,
)
from components.cluster import ClusterOptions, configure

PIPELINE_NAME = "avsc"


class BackboneOutputs(NamedTuple):
    """What the backbone loop hands on: one artifact per backbone, tagged ``metadata["backbone"]``."""

    models: list[Model]
    embeddings: list[Dataset]


def build_pipeline(options: ClusterOptions = ClusterOptions()):
    """The pipeline function for ``options`` (compile it, or call it under ``kfp.local``)."""

    # A pipeline of its own, because kfp 2.17 cannot hand a dsl.Collected list (the shards'
    # features) to a task inside another loop; as an input of this sub-pipeline it is an
    # ordinary artifact list that the loop body reads.
    @dsl.pipeline(name="train-and-embed", description="Phase I: each backbone trained and embedded.")
    def train_and_embed(
        backbones: list[str],
        config: Input[Artifact],
        features: Input[list[Dataset]],
        output_uri: str,
    ) -> BackboneOutputs:
        with dsl.ParallelFor(backbones, name="Each backbone", parallelism=options.parallel_trainings) as backbone:
            # Streams its own feature from the store and checkpoints every epoch under
            # output_uri, so a retried pod resumes after the last finished epoch.
            train = configure(
                train_backbone(backbone=backbone, config=config, features=features, output_uri=output_uri),
                "train",
                options,
            )
            embed = configure(embed_backbone(model=train.outputs["model"], features=features), "embed", options)
        return BackboneOutputs(
            models=dsl.Collected(train.outputs["model"]), embeddings=dsl.Collected(embed.outputs["embeddings"])
        )

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Audio-visual scene classification: five backbones (phase I), six fusion "
        "methods on their embeddings (phase II), evaluated on the test split.",
    )
    def avsc_pipeline(
        dataset: str,
        output_uri: str = "",
        preset: str = DEFAULT_PRESET,
        config: str = "",
        shard_count: int = 4,
    ):
        """Args:
        dataset: dataset folder (local runs) or ``s3://bucket/prefix``.
        output_uri: where to publish config.json, metrics.json, report.html, embeddings
            and the bundle: ``s3://bucket/prefix`` or a local folder; empty publishes nothing.
            Also where the feature store (``features/<hash>``, reused by runs with the same
            feature settings) and the training checkpoints (``checkpoints/``) live, so no
            pod's disk holds the dataset or its features and a retried pod resumes.
        preset: ``paper`` (the paper's settings) or ``quick`` (CPU-sized).
        config: settings over the preset, as TOML text (``train.epochs = 3``) or a JSON
            object (``{"features": {"audio": {"frames": 309}}}``); empty for none.
        shard_count: preprocessing tasks (the dataset split round-robin).
        """
        settings = configure(resolve_config(preset=preset, overrides=config), "config", options)
        ingest = configure(
            ingest_dataset(
                dataset=dataset,
                segment_seconds=settings.outputs["segment_seconds"],
                audio_source=settings.outputs["audio_source"],
            ),
            "ingest",
            options,
        )
        shards = configure(list_shards(shard_count=shard_count), "shards", options)

        with dsl.ParallelFor(shards.output, name="Each shard") as shard_index:
            shard = configure(
                preprocess_shard(
                    config=settings.outputs["config"],
                    manifest=ingest.outputs["manifest"],
                    dataset=dataset,
                    shard_index=shard_index,
                    shard_count=shard_count,
                    workers=options.preprocess_workers,
                    output_uri=output_uri,
                ),
                "preprocess",
                options,
            )

        phase_one = train_and_embed(
            backbones=list(BACKBONES),
            config=settings.outputs["config"],
            features=dsl.Collected(shard.outputs["features"]),
            output_uri=output_uri,
        ).set_display_name("Train and embed backbones")

        with dsl.ParallelFor(list(FUSION_METHODS), name="Each fusion method") as method:
            fuse = configure(
                fuse_method(
                    method=method,
                    config=settings.outputs["config"],
                    embeddings=phase_one.outputs["embeddings"],
                    output_uri=output_uri,
                ),
                "fuse",
                options,
            )

        evaluate = configure(
            evaluate_fusions(
                fusions=dsl.Collected(fuse.outputs["fusions"]),
                models=phase_one.outputs["models"],
                embeddings=phase_one.outputs["embeddings"],
                manifest=ingest.outputs["manifest"],
            ),
            "evaluate",
            options,
        )

        configure(
            publish_outputs(
                output_uri=output_uri,
                config=settings.outputs["config"],
                report=evaluate.outputs["report"],
                bundle=evaluate.outputs["bundle"],
                embeddings=phase_one.outputs["embeddings"],
            ),
            "publish",
            options,
        )

    return avsc_pipeline


def main(argv: list[str] | None = None) -> int:
    """``python pipeline.py compile|run|submit ...`` (see :mod:`components.cli`)."""
    from components.cli import main as cli_main

    return cli_main(argv, build_pipeline)


if __name__ == "__main__":
    sys.exit(main())

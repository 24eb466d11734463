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
object-store secret) are in :mod:`components.cluster`. This module wires the steps together
and holds the command line.
"""

# No `from __future__ import annotations`: kfp reads the pipeline function's annotations as types.
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import List, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from avsc.config import BACKBONES, DEFAULT_PRESET, FUSION_METHODS, PRESETS
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
from components.cluster import (
    LOCAL_OPTIONS,
    REGISTRY_PATTERN,
    RESOURCES,
    ClusterOptions,
    on_accelerator,
    retarget_images,
    with_resources,
    with_retries,
    with_store_access,
)
from components.local_runner import add_runner_flags, local_runner

PIPELINE_NAME = "avsc"
# What `run --local` publishes into its output folder (cleared before a run).
PUBLISHED = ("config.json", "metrics.json", "report.html", "report.md", "bundle", "embeddings",
             "confusion-*.png", "calibration-*.png", "training-curves.png", "submission-*.csv")


class BackboneOutputs(NamedTuple):
    """What the backbone loop hands on: one artifact per backbone, tagged ``metadata["backbone"]``."""

    models: List[Model]
    embeddings: List[Dataset]


def build_pipeline(options: ClusterOptions = ClusterOptions()):
    """The pipeline function for ``options`` (compile it, or call it under ``kfp.local``)."""

    # A pipeline of its own, because kfp 2.17 cannot hand a dsl.Collected list (the shards'
    # features) to a task inside another loop; as an input of this sub-pipeline it is an
    # ordinary artifact list that the loop body reads.
    @dsl.pipeline(name="train-and-embed", description="Phase I: each backbone trained and embedded.")
    def train_and_embed(
        backbones: List[str], config: Input[Artifact], features: Input[List[Dataset]], output_uri: str,
    ) -> BackboneOutputs:
        with dsl.ParallelFor(backbones, name="Each backbone") as backbone:
            # Streams its own feature from the store and checkpoints every epoch under
            # output_uri, so a retried pod resumes after the last finished epoch.
            train = train_backbone(backbone=backbone, config=config, features=features, output_uri=output_uri)
            train.set_display_name("Train backbone")
            with_resources(train, options, "train")
            with_retries(with_store_access(on_accelerator(train, options), options), options, 2)
            train.set_caching_options(True)

            embed = embed_backbone(model=train.outputs["model"], features=features)
            embed.set_display_name("Embed backbone")
            with_resources(embed, options, "embed")
            with_retries(with_store_access(on_accelerator(embed, options), options), options, 1)
            embed.set_caching_options(True)
        return BackboneOutputs(models=dsl.Collected(train.outputs["model"]),
                               embeddings=dsl.Collected(embed.outputs["embeddings"]))

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
        settings = resolve_config(preset=preset, overrides=config).set_display_name("Resolve config")
        with_resources(settings, options, "config").set_caching_options(True)

        ingest = ingest_dataset(dataset=dataset, segment_seconds=settings.outputs["segment_seconds"])
        ingest.set_display_name("Ingest dataset")
        with_resources(ingest, options, "ingest")
        with_retries(with_store_access(ingest, options), options, 3).set_caching_options(True)

        shards = list_shards(shard_count=shard_count).set_display_name("List shards")
        with_resources(shards, options, "shards").set_caching_options(True)

        with dsl.ParallelFor(shards.output, name="Each shard") as shard_index:
            shard = preprocess_shard(
                config=settings.outputs["config"], manifest=ingest.outputs["manifest"], dataset=dataset,
                shard_index=shard_index, shard_count=shard_count, workers=options.preprocess_workers,
                output_uri=output_uri,
            ).set_display_name("Preprocess shard")
            with_resources(shard, options, "preprocess")
            with_retries(with_store_access(shard, options), options, 3).set_caching_options(True)

        phase_one = train_and_embed(
            backbones=list(BACKBONES), config=settings.outputs["config"],
            features=dsl.Collected(shard.outputs["features"]), output_uri=output_uri,
        ).set_display_name("Train and embed backbones")

        with dsl.ParallelFor(list(FUSION_METHODS), name="Each fusion method") as method:
            fuse = fuse_method(method=method, config=settings.outputs["config"],
                               embeddings=phase_one.outputs["embeddings"],
                               output_uri=output_uri).set_display_name("Fuse embeddings")
            with_resources(fuse, options, "fuse").set_caching_options(True)
            with_retries(with_store_access(fuse, options), options, 2)

        evaluate = evaluate_fusions(
            fusions=dsl.Collected(fuse.outputs["fusions"]), models=phase_one.outputs["models"],
            embeddings=phase_one.outputs["embeddings"], manifest=ingest.outputs["manifest"],
        ).set_display_name("Evaluate and bundle")
        with_resources(evaluate, options, "evaluate").set_caching_options(True)

        publish = publish_outputs(
            output_uri=output_uri, config=settings.outputs["config"], report=evaluate.outputs["report"],
            bundle=evaluate.outputs["bundle"], embeddings=phase_one.outputs["embeddings"],
        ).set_display_name("Publish outputs")
        with_resources(publish, options, "publish")
        # Never cached: publishing must land the files even when every other step is reused.
        with_retries(with_store_access(publish, options), options, 5).set_caching_options(False)

    return avsc_pipeline


def compile_pipeline(path: str | Path, options: ClusterOptions = ClusterOptions()) -> Path:
    """Write the compiled pipeline (IR YAML) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(path))
    if options.registry or not options.gpu:  # without GPUs every step runs in the CPU image
        path.write_text(retarget_images(path.read_text(), options.registry, gpu=options.gpu))
    return path


def config_parameter(preset: str, config_file: str | None, settings: list[str] | None) -> str:
    """The ``config`` pipeline parameter for ``--config FILE`` and ``--set`` flags.

    Resolved here first (so a typo, or a segment length other than the clip length, fails
    before anything is submitted) with the library's one resolution, then written as the
    JSON object of the settings that differ from the preset; empty when none do.

    Raises:
        ConfigError: an unreadable file, an unknown setting or a wrong type (named); a
            ``data.segment_seconds`` other than ``features.audio.clip_seconds``.
    """
    from avsc.config import load_config, preset_dict, to_dict
    from avsc.data.segments import check_segment_setting

    config = load_config(config_file, preset=preset, overrides=settings)
    check_segment_setting(config)
    resolved = to_dict(config)

    def changed(base: dict, new: dict) -> dict:
        out = {}
        for key, value in new.items():
            if isinstance(value, dict):
                if inner := changed(base.get(key, {}), value):
                    out[key] = inner
            elif base.get(key) != value:
                out[key] = value
        return out

    overrides = changed(preset_dict(preset), resolved)
    return json.dumps(overrides, sort_keys=True) if overrides else ""


# ---------------------------------------------------------------------------------------------
# Command line


def _options(args: argparse.Namespace) -> ClusterOptions:
    selector = None
    if args.node_selector:
        key, sep, value = args.node_selector.partition("=")
        if not sep or not key:
            raise SystemExit(f"--node-selector must be LABEL=VALUE, got {args.node_selector!r}")
        selector = (key, value)
    if args.registry and not re.fullmatch(REGISTRY_PATTERN, args.registry.rstrip("/")):
        raise SystemExit(f"--registry must look like host[:port][/path], got {args.registry!r}")
    resources = args.resources or ("small" if args.no_gpu else "standard")
    return ClusterOptions(gpu=not args.no_gpu, accelerator=args.accelerator, node_selector=selector,
                          toleration=args.toleration or None, secret=args.secret, resources=resources,
                          registry=args.registry)


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    defaults = ClusterOptions()
    group = parser.add_argument_group("cluster settings (compiled into the pipeline)")
    group.add_argument("--no-gpu", action="store_true",
                       help="no accelerator request, node selector or toleration (CPU-only clusters)")
    group.add_argument("--accelerator", default=defaults.accelerator,
                       help="accelerator resource each training/embedding task requests (default %(default)s)")
    group.add_argument("--node-selector", default="=".join(defaults.node_selector), metavar="LABEL=VALUE",
                       help="node label GPU tasks select (default %(default)s; empty for none)")
    group.add_argument("--toleration", default=defaults.toleration, metavar="TAINT_KEY",
                       help="taint key GPU tasks tolerate (default %(default)s; empty for none)")
    group.add_argument("--resources", choices=sorted(RESOURCES),
                       help="CPU/memory requests and limits (default: small with --no-gpu, else standard)")
    group.add_argument("--registry", metavar="HOST[/PATH]",
                       help="take the avsc images from this registry (as pushed by `make push REGISTRY=...`; "
                            "default: the names in components/images.py)")
    group.add_argument("--secret", default=defaults.secret,
                       help="Kubernetes Secret with the object-store endpoint and keys (default %(default)s)")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run settings (pipeline parameters)")
    group.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                       help="settings to start from: paper or quick (CPU-sized) (default %(default)s)")
    group.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings over the preset")
    group.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="settings",
                       help="one setting, applied last; repeatable (e.g. --set features.audio.frames=309)")
    group.add_argument("--shards", type=int, default=4, help="preprocessing tasks (default %(default)s)")


def pipeline_arguments(args: argparse.Namespace, dataset: str, output_uri: str) -> dict:
    """The pipeline parameters a ``run`` or ``submit`` command line asks for.

    Raises:
        SystemExit: ``--shards`` below 1.
        ConfigError: see :func:`config_parameter`.
    """
    if args.shards < 1:
        raise SystemExit("--shards must be at least 1")
    return {"dataset": dataset, "output_uri": output_uri, "preset": args.preset,
            "config": config_parameter(args.preset, args.config, args.settings), "shard_count": args.shards}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline.py", description="Compile, run locally or submit the avsc Kubeflow pipeline.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    comp = commands.add_parser("compile", help="compile the pipeline to a YAML package")
    comp.add_argument("-o", "--output", default="avsc_pipeline.yaml", help="default %(default)s")
    _cluster_flags(comp)
    comp.set_defaults(handler=_cmd_compile)

    run = commands.add_parser("run", help="run the whole pipeline here with kfp.local (no cluster)")
    run.add_argument("--local", action="store_true", required=True,
                     help="run every step on this machine (see --runner; submit runs on a cluster)")
    run.add_argument("--dataset", help="dataset folder or s3://bucket/prefix "
                                       "(default: generate the demo dataset into OUTPUT/dataset)")
    run.add_argument("--output", default="runs/local", help="output folder (default %(default)s)")
    run.add_argument("--cache", action="store_true",
                     help="reuse results of unchanged steps from earlier runs into the same OUTPUT")
    _run_flags(run)
    add_runner_flags(run)
    run.set_defaults(handler=_cmd_run)

    sub = commands.add_parser("submit", help="compile and submit a run to Kubeflow Pipelines")
    sub.add_argument("--host", required=True, help="KFP API/UI URL, e.g. http://localhost:8080")
    sub.add_argument("--experiment", default="avsc", help="default %(default)s")
    sub.add_argument("--namespace", help="profile namespace (full Kubeflow)")
    sub.add_argument("--token", help="bearer token (full Kubeflow)")
    sub.add_argument("--cookies", help="session cookies, e.g. 'authservice_session=...' (full Kubeflow)")
    sub.add_argument("--service-account", default="avsc-pipeline-runner", help="default %(default)s")
    sub.add_argument("--pipeline-root", help="s3://... artifact root (default: the cluster's kfp-launcher)")
    sub.add_argument("--dataset", required=True, help="s3://bucket/prefix of the dataset")
    sub.add_argument("--output-uri", default="", help="s3://bucket/prefix to publish the outputs to")
    sub.add_argument("--run-name", help="default: avsc-<preset>-<time>")
    sub.add_argument("--no-cache", action="store_true", help="re-run every step (ignore cached results)")
    sub.add_argument("--wait", action="store_true", help="wait for the run; exit non-zero unless it succeeds")
    sub.add_argument("--timeout", type=int, default=86400, help="seconds to wait (default %(default)s)")
    _run_flags(sub)
    _cluster_flags(sub)
    sub.set_defaults(handler=_cmd_submit)
    return parser


def _cmd_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, _options(args))
    print(f"compiled pipeline {PIPELINE_NAME!r} to {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from kfp import local

    from avsc.evaluation.report import results_table
    from avsc.storage.files import read_json
    from avsc.storage.s3 import is_remote

    output = Path(args.output).resolve()
    dataset = args.dataset
    if dataset is not None and not is_remote(dataset):
        dataset = str(Path(dataset).resolve())
    arguments = pipeline_arguments(args, dataset or "", str(output))  # settings checked before any work
    if dataset is None:
        from avsc.data.demo import make_demo_dataset

        arguments["dataset"] = str(make_demo_dataset(output / "dataset").root)
    for pattern in PUBLISHED:  # results of an earlier run must not pass for this one's
        for stale in output.glob(pattern):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # kfp.local warns for every task that its cluster settings (resources, display name) have no
    # effect here: said once instead.
    warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect in the current local runner",
                            category=UserWarning)
    print("pipeline.py run: running every step here; the cluster settings (resources, GPUs, retries) "
          "apply only on a cluster", flush=True)
    try:
        with local_runner(args.runner, dataset=arguments["dataset"], output=output, registry=args.registry,
                          gpu=not args.no_gpu) as runner:
            local.init(runner=runner, pipeline_root=str(output / "pipeline-root"),
                       enable_caching=args.cache, cache_root=str(output / "cache") if args.cache else None)
            build_pipeline(LOCAL_OPTIONS)(**arguments)
    except RuntimeError as exc:
        print(f"pipeline.py run: error: {exc} Its log is above.", file=sys.stderr)
        return 1
    metrics_path = output / "metrics.json"
    if not metrics_path.is_file():
        print(f"pipeline.py run: error: the run published no {metrics_path}", file=sys.stderr)
        return 1
    print()
    print(results_table(read_json(metrics_path)))
    print()
    print(f"config:  {output / 'config.json'}")
    print(f"metrics: {metrics_path}")
    print(f"report:  {output / 'report.html'}")
    print(f"bundle:  {output / 'bundle'}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    import kfp

    arguments = pipeline_arguments(args, args.dataset, args.output_uri)
    client_kwargs = {"host": args.host, "existing_token": args.token, "cookies": args.cookies}
    if args.namespace:
        client_kwargs["namespace"] = args.namespace
    with tempfile.TemporaryDirectory(prefix="avsc-pipeline-") as tmp:
        package = compile_pipeline(Path(tmp) / "avsc_pipeline.yaml", _options(args))
        client = kfp.Client(**client_kwargs)
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments,
            run_name=args.run_name or f"avsc-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=args.experiment,
            namespace=args.namespace, pipeline_root=args.pipeline_root,
            enable_caching=False if args.no_cache else None, service_account=args.service_account)
    print(f"{args.host.rstrip('/')}/#/runs/details/{run.run_id}", flush=True)
    if not args.wait:
        return 0
    try:
        detail = client.wait_for_run_completion(run.run_id, timeout=args.timeout)
    except TimeoutError:
        print(f"pipeline.py submit: error: run {run.run_id} not finished after {args.timeout} s",
              file=sys.stderr)
        return 1
    state = str(detail.state or "unknown").upper()
    print(f"run {run.run_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def main(argv: list[str] | None = None) -> int:
    from avsc.errors import AvscError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except AvscError as exc:
        print(f"pipeline.py {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The avsc Kubeflow pipeline: dataset -> manifest -> features -> five models -> embeddings ->
fusion -> evaluation -> published outputs.

Commands::

    python pipeline.py compile -o avsc_pipeline.yaml [--no-gpu]
    python pipeline.py run --local [--dataset DIR|s3://bucket/prefix] [--preset quick] [--output DIR]
    python pipeline.py submit --host URL [--experiment NAME] --dataset s3://... --output-uri s3://...

The DAG (see docs/pipeline.md)::

    ingest -> list shards -> ParallelFor(shard): preprocess
           -> 5 x train (one per backbone, in parallel, one GPU each) -> 5 x embed
           -> ParallelFor(method f1..f6): fuse (audio+visual, audio, visual)
           -> evaluate (metrics.json, report.html, bundle) -> publish

Every step is a lightweight component of ``components/`` wrapping one :mod:`avsc` function;
this module only wires them together and sets the cluster settings (GPUs, CPU and memory,
node selector, toleration, retries, caching, the object-store secret).
"""

# No `from __future__ import annotations`: kfp reads the pipeline function's annotations as types.
import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from avsc.config import BACKBONES, FUSION_METHODS, PRESETS
from components import (
    embed_backbone,
    evaluate_fusions,
    fuse_method,
    ingest_dataset,
    list_shards,
    preprocess_shard,
    publish_outputs,
    train_backbone,
)
from components.images import CPU_IMAGE, GPU_IMAGE, resolve_image
from components.local_runner import add_runner_flags, local_runner

PIPELINE_NAME = "avsc"
# Secret keys -> environment variables read by avsc.storage.s3.S3Settings.from_env.
SECRET_ENV = {
    "endpoint": "AVSC_S3_ENDPOINT",
    "access_key": "AVSC_S3_ACCESS_KEY",
    "secret_key": "AVSC_S3_SECRET_KEY",
    "region": "AVSC_S3_REGION",
    "secure": "AVSC_S3_SECURE",
}
# What `run --local` publishes into its output folder (cleared before a run).
PUBLISHED = ("metrics.json", "report.html", "report.md", "bundle", "embeddings", "confusion-*.png",
             "submission-*.csv")


@dataclass(frozen=True)
class ClusterOptions:
    """Compile-time settings of the pipeline's tasks (they are not pipeline parameters).

    Attributes:
        gpu: training and embedding tasks request one accelerator each, with the node
            selector and toleration below; False (``--no-gpu``) drops all three.
        accelerator: the resource name the tasks request, e.g. ``nvidia.com/gpu``.
        node_selector: ``(label, value)`` GPU nodes carry, or None.
        toleration: taint key GPU nodes carry (tolerated with ``Exists``/``NoSchedule``), or None.
        secret: the Kubernetes Secret whose keys become ``AVSC_S3_*`` in tasks touching the store.
        retries: retry with backoff on transient faults (off for fail-fast local runs).
        preprocess_workers: clips each preprocessing shard decodes at once (= its CPU request).
        resources: CPU/memory profile of :data:`RESOURCES`: ``standard`` (GPU nodes, the paper
            preset) or ``small`` (a CPU-only test cluster such as kind, the quick preset).
        registry: where the avsc images were pushed (``make push REGISTRY=...``); the
            components' ``ghcr.io/avsc/avsc-{cpu,gpu}:VERSION`` become ``REGISTRY/avsc-...``.
    """

    gpu: bool = True
    accelerator: str = "nvidia.com/gpu"
    node_selector: tuple[str, str] | None = ("nvidia.com/gpu.present", "true")
    toleration: str | None = "nvidia.com/gpu"
    secret: str = "avsc-s3"
    retries: bool = True
    preprocess_workers: int = 2
    resources: str = "standard"
    registry: str | None = None


# CPU request, memory request, CPU limit, memory limit per step and profile.
RESOURCES: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "standard": {
        "ingest": ("1", "2Gi", "2", "4Gi"),
        "shards": ("100m", "128Mi", "500m", "512Mi"),
        "preprocess": ("2", "4Gi", "2", "8Gi"),
        "train": ("4", "16Gi", "8", "32Gi"),
        "embed": ("2", "8Gi", "4", "16Gi"),
        "fuse": ("1", "2Gi", "2", "4Gi"),
        "evaluate": ("1", "4Gi", "2", "8Gi"),
        "publish": ("500m", "1Gi", "1", "2Gi"),
    },
    "small": {
        "ingest": ("250m", "512Mi", "1", "2Gi"),
        "shards": ("100m", "128Mi", "500m", "512Mi"),
        "preprocess": ("500m", "1Gi", "2", "3Gi"),
        "train": ("500m", "2Gi", "2", "4Gi"),
        "embed": ("250m", "1Gi", "2", "3Gi"),
        "fuse": ("250m", "512Mi", "1", "2Gi"),
        "evaluate": ("250m", "1Gi", "1", "3Gi"),
        "publish": ("100m", "256Mi", "1", "1Gi"),
    },
}

# kfp.local ignores Kubernetes settings; these keep a local run quiet and fail-fast.
LOCAL_OPTIONS = ClusterOptions(gpu=False, retries=False, preprocess_workers=1)


def display_backbone(backbone: str) -> str:
    """``aud-mel`` -> ``Aud-MEL``, the paper's spelling."""
    family, _, kind = backbone.partition("-")
    return f"{family.capitalize()}-{kind.upper()}"


def _argument(backbone: str) -> str:
    """``aud-mel`` -> ``aud_mel``: the component input named after a backbone."""
    return backbone.replace("-", "_")


def _resources(task: dsl.PipelineTask, options: ClusterOptions, step: str) -> dsl.PipelineTask:
    cpu, memory, cpu_limit, memory_limit = RESOURCES[options.resources][step]
    if step == "preprocess" and options.resources == "standard":
        cpu = cpu_limit = str(options.preprocess_workers)
    return (task.set_cpu_request(cpu).set_cpu_limit(cpu_limit)
            .set_memory_request(memory).set_memory_limit(memory_limit))


def _retry(task: dsl.PipelineTask, options: ClusterOptions, times: int) -> dsl.PipelineTask:
    if options.retries:
        task.set_retry(num_retries=times, backoff_duration="30s", backoff_factor=2.0,
                       backoff_max_duration="600s")
    return task


def _store_access(task: dsl.PipelineTask, options: ClusterOptions) -> dsl.PipelineTask:
    """Object-store endpoint and credentials from the Secret, by name only."""
    return kubernetes.use_secret_as_env(task, secret_name=options.secret, secret_key_to_env=SECRET_ENV)


def _on_accelerator(task: dsl.PipelineTask, options: ClusterOptions) -> dsl.PipelineTask:
    if not options.gpu:
        return task
    task.set_accelerator_type(options.accelerator).set_accelerator_limit(1)
    if options.node_selector:
        kubernetes.add_node_selector(task, label_key=options.node_selector[0],
                                     label_value=options.node_selector[1])
    if options.toleration:
        kubernetes.add_toleration(task, key=options.toleration, operator="Exists", effect="NoSchedule")
    return task


def build_pipeline(options: ClusterOptions = ClusterOptions()):
    """The pipeline function for ``options`` (compile it, or call it under ``kfp.local``)."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Audio-visual scene classification: five backbones (phase I), six fusion "
                    "methods on their embeddings (phase II), evaluated on the test split.",
    )
    def avsc_pipeline(
        dataset: str,
        output_uri: str = "",
        preset: str = "paper",
        epochs: int = 0,
        image_size: int = 0,
        shard_count: int = 4,
        fusion_epochs: int = 0,
        seed: int = 0,
    ):
        """Args:
            dataset: dataset folder (local runs) or ``s3://bucket/prefix``.
            output_uri: where to publish metrics.json, report.html, embeddings and the
                bundle: ``s3://bucket/prefix`` or a local folder; empty publishes nothing.
            preset: ``quick`` (CPU-sized) or ``paper``.
            epochs: backbone training epochs; 0 keeps the preset's.
            image_size: visual backbones' input side; 0 keeps the preset's.
            shard_count: preprocessing tasks (the dataset split round-robin).
            fusion_epochs: fusion training epochs; 0 keeps the preset's.
            seed: training and fusion seed.
        """
        ingest = ingest_dataset(dataset=dataset).set_display_name("Ingest dataset")
        _resources(ingest, options, "ingest")
        _retry(_store_access(ingest, options), options, 3).set_caching_options(True)

        shards = list_shards(shard_count=shard_count).set_display_name("List shards")
        _resources(shards, options, "shards").set_caching_options(True)

        with dsl.ParallelFor(shards.output) as shard_index:
            shard = preprocess_shard(
                manifest=ingest.outputs["manifest"], dataset=dataset, shard_index=shard_index,
                shard_count=shard_count, preset=preset, workers=options.preprocess_workers,
            ).set_display_name("Preprocess shard")
            _resources(shard, options, "preprocess")
            _retry(_store_access(shard, options), options, 3).set_caching_options(True)

        models, embeddings = {}, {}
        for backbone in BACKBONES:
            # Each consumer takes its own Collected (sharing one breaks the compiler).
            train = train_backbone(
                backbone=backbone, features=dsl.Collected(shard.outputs["features"]), preset=preset,
                epochs=epochs, image_size=image_size, seed=seed,
            ).set_display_name(f"Train {display_backbone(backbone)}")
            _resources(train, options, "train")
            _retry(_on_accelerator(train, options), options, 2).set_caching_options(True)
            models[backbone] = train.outputs["model"]

            embed = embed_backbone(
                model=train.outputs["model"], features=dsl.Collected(shard.outputs["features"]),
            ).set_display_name(f"Embed {display_backbone(backbone)}")
            _resources(embed, options, "embed")
            _retry(_on_accelerator(embed, options), options, 1).set_caching_options(True)
            embeddings[_argument(backbone)] = embed.outputs["embeddings"]

        with dsl.ParallelFor(list(FUSION_METHODS)) as method:
            fuse = fuse_method(method=method, preset=preset, fusion_epochs=fusion_epochs, seed=seed,
                               **embeddings).set_display_name("Fuse embeddings")
            _resources(fuse, options, "fuse").set_caching_options(True)

        evaluate = evaluate_fusions(
            fusions=dsl.Collected(fuse.outputs["fusions"]),
            **{f"model_{_argument(b)}": model for b, model in models.items()},
            **embeddings,
        ).set_display_name("Evaluate and bundle")
        _resources(evaluate, options, "evaluate").set_caching_options(True)

        publish = publish_outputs(
            output_uri=output_uri, report=evaluate.outputs["report"], bundle=evaluate.outputs["bundle"],
            **embeddings,
        ).set_display_name("Publish outputs")
        _resources(publish, options, "publish")
        _retry(_store_access(publish, options), options, 5).set_caching_options(False)

    return avsc_pipeline


def compile_pipeline(path: str | Path, options: ClusterOptions = ClusterOptions()) -> Path:
    """Write the compiled pipeline (IR YAML) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(path))
    if options.registry or not options.gpu:  # without GPUs every step runs in the CPU image
        path.write_text(retarget_images(path.read_text(), options.registry, gpu=options.gpu))
    return path


def retarget_images(package: str, registry: str | None, gpu: bool = True) -> str:
    """The compiled package with every avsc image as :func:`components.images.resolve_image`
    names it: taken from ``registry`` (same name and tag), the CPU image for all if not ``gpu``."""
    import re

    if registry and not re.fullmatch(r"[a-z0-9.\-]+(:[0-9]+)?(/[a-z0-9._\-]+)*", registry.rstrip("/")):
        raise SystemExit(f"--registry must look like host[:port][/path], got {registry!r}")
    for image in (CPU_IMAGE, GPU_IMAGE):
        package = package.replace(f"image: {image}", f"image: {resolve_image(image, registry=registry, gpu=gpu)}")
    return package


# ---------------------------------------------------------------------------------------------
# Command line


def _options(args: argparse.Namespace) -> ClusterOptions:
    selector = None
    if args.node_selector:
        key, sep, value = args.node_selector.partition("=")
        if not sep or not key:
            raise SystemExit(f"--node-selector must be LABEL=VALUE, got {args.node_selector!r}")
        selector = (key, value)
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


def _run_flags(parser: argparse.ArgumentParser, preset: str) -> None:
    parser.add_argument("--preset", choices=PRESETS, default=preset, help="default %(default)s")
    parser.add_argument("--epochs", type=int, default=0, help="backbone epochs (0: the preset's)")
    parser.add_argument("--image-size", type=int, default=0, help="visual input side (0: the preset's)")
    parser.add_argument("--shards", type=int, default=4, help="preprocessing shards (default %(default)s)")
    parser.add_argument("--fusion-epochs", type=int, default=0, help="fusion epochs (0: the preset's)")
    parser.add_argument("--seed", type=int, default=0)


def pipeline_arguments(args: argparse.Namespace, dataset: str, output_uri: str) -> dict:
    """The pipeline parameters a ``run`` or ``submit`` command line asks for."""
    for name in ("epochs", "image_size", "fusion_epochs"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be 0 (the preset's) or more")
    if args.shards < 1:
        raise SystemExit("--shards must be at least 1")
    return {"dataset": dataset, "output_uri": output_uri, "preset": args.preset, "epochs": args.epochs,
            "image_size": args.image_size, "shard_count": args.shards,
            "fusion_epochs": args.fusion_epochs, "seed": args.seed}


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
    _run_flags(run, preset="quick")
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
    _run_flags(sub, preset="paper")
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
    if dataset is None:
        from avsc.data.demo import make_demo_dataset

        dataset = str(make_demo_dataset(output / "dataset").root)
    elif not is_remote(dataset):
        dataset = str(Path(dataset).resolve())
    arguments = pipeline_arguments(args, dataset, str(output))
    for pattern in PUBLISHED:  # results of an earlier run must not pass for this one's
        for stale in output.glob(pattern):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with local_runner(args.runner, dataset=dataset, output=output, registry=args.registry,
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

"""The command line of ``pipeline.py``: compile the pipeline, run it here, or submit it.

::

    python pipeline.py compile -o avsc_pipeline.yaml [--no-gpu] [--registry HOST/PATH]
    python pipeline.py run --local [--dataset DIR|s3://bucket/prefix] [--preset quick] \\
        [--config FILE] [--set section.key=value ...] [--output DIR] [--cache] [-v]
    python pipeline.py submit --host URL --dataset s3://... --output-uri s3://... [--preset ...]

:func:`main` takes the pipeline's builder (``pipeline.build_pipeline``: a function of
:class:`~components.cluster.ClusterOptions` returning the pipeline function), so this module
holds no wiring and ``pipeline.py`` no command line.
The flags of the pipeline's settings, and what they become, are in
:mod:`components.pipeline_settings`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from components.cluster import LOCAL_OPTIONS, STEPS, ClusterOptions
from components.local_runner import add_runner_flags, local_runner
from components.pipeline_settings import add_cluster_flags, add_run_flags, cluster_options, pipeline_arguments

if TYPE_CHECKING:
    from avsc.config import Config
    from components.progress import RunProgress

# What `run --local` publishes into its output folder (cleared before a run).
PUBLISHED = (
    "config.json",
    "metrics.json",
    "report.html",
    "report.md",
    "bundle",
    "embeddings",
    "confusion-*.png",
    "calibration-*.png",
    "training-curves.png",
    "submission-*.csv",
)
# The pipeline's builder: ClusterOptions -> the pipeline function (pipeline.build_pipeline).
Builder = Callable[[ClusterOptions], Callable]


def compile_pipeline(path: str | Path, build: Builder, options: ClusterOptions = ClusterOptions()) -> Path:
    """Write the pipeline ``build(options)`` makes, compiled (IR YAML), to ``path``."""
    from kfp import compiler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build(options), str(path))
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline.py", description="Compile, run locally or submit the avsc Kubeflow pipeline."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    comp = commands.add_parser("compile", help="compile the pipeline to a YAML package")
    comp.add_argument("-o", "--output", default="avsc_pipeline.yaml", help="default %(default)s")
    add_cluster_flags(comp)
    comp.set_defaults(handler=_cmd_compile)

    run = commands.add_parser("run", help="run the whole pipeline here with kfp.local (no cluster)")
    run.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="run every step on this machine (see --runner; submit runs on a cluster)",
    )
    run.add_argument(
        "--dataset",
        help="dataset folder or s3://bucket/prefix (default: generate the demo dataset into OUTPUT/dataset)",
    )
    run.add_argument("--output", default="runs/local", help="output folder (default %(default)s)")
    run.add_argument(
        "--cache", action="store_true", help="reuse results of unchanged steps from earlier runs into the same OUTPUT"
    )
    run.add_argument(
        "--parallel",
        type=int,
        choices=(1, 2),
        default=2,
        help="backbones trained at once (kfp.local runs at most 2; default %(default)s)",
    )
    run.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="start even when the steps' estimated memory exceeds this machine's",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show every step's full output (kfp's executor input, TensorFlow's log), not only its start and end",
    )
    add_run_flags(run)
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
    add_run_flags(sub)
    add_cluster_flags(sub)
    sub.set_defaults(handler=_cmd_submit)
    return parser


def _cmd_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, args.build, cluster_options(args))
    print(f"compiled the pipeline to {path}")
    return 0


def local_step_count(shards: int) -> int:
    """The steps of a local run: config, ingest, shard list, ``shards`` preprocessing steps,
    a training and an embedding per backbone, a fusion per method, evaluate, publish."""
    from avsc.config import BACKBONES, FUSION_METHODS

    return 3 + shards + 2 * len(BACKBONES) + len(FUSION_METHODS) + 2


def _local_run_inputs(args: argparse.Namespace, output: Path) -> tuple[dict, Config]:
    """The pipeline's arguments and the resolved settings of a local run into ``output``.

    Checks the settings and (unless ``--skip-memory-check``) this machine's memory before
    any work, makes the demo dataset when no ``--dataset`` is given, and removes what an
    earlier run published into ``output``.

    Raises:
        ConfigError: a wrong setting (named).
        ResourceError: the run would not fit this machine's memory
            (:func:`avsc.preflight.check_local_run`).
    """
    from avsc.config import load_config
    from avsc.preflight import check_local_run
    from avsc.storage.s3 import is_remote

    dataset = args.dataset
    if dataset is not None and not is_remote(dataset):
        dataset = str(Path(dataset).resolve())
    arguments = pipeline_arguments(args, dataset or "", str(output))  # settings checked before any work
    config = load_config(args.config, preset=args.preset, overrides=args.settings)
    if not args.skip_memory_check:  # before the demo data or any step: a run that cannot fit says so now
        check_local_run(config, parallel_trainings=args.parallel)
    if dataset is None:
        from avsc.data.demo import make_demo_dataset

        demo = make_demo_dataset(output / "dataset", progress=False)
        arguments["dataset"] = str(demo.root)
        print(f"demo dataset: {demo.n_clips} clips in {demo.root}", flush=True)
    for pattern in PUBLISHED:  # results of an earlier run must not pass for this one's
        for stale in output.glob(pattern):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return arguments, config


def _run_progress(args: argparse.Namespace, names: dict[str, str], config: Config, logs: Path) -> RunProgress:
    """The progress of a local run, announced: its steps (``names``: component name -> display
    name), its logs, and the memory each step is estimated to need (for the message when one
    is killed)."""
    from avsc.preflight import step_needs
    from components.progress import RunProgress

    total = local_step_count(args.shards)
    print(
        f"pipeline.py run: {total} steps here, {args.parallel} training(s) at once; step logs in {logs} "
        "(-v shows them); cluster settings (resources, GPUs, retries) apply only on a cluster",
        flush=True,
    )
    needs = {
        " ".join(filter(None, (STEPS[need.step].display_name, need.item))): need.bytes for need in step_needs(config)
    }
    return RunProgress(total=total, logs=logs, names=names, needs=needs, verbose=args.verbose)


def _cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from kfp import local

    from avsc.evaluation.report import results_table
    from avsc.records import EvaluationResult
    from components.progress import quiet_steps
    from components.step_report import display_names, duration

    began = time.perf_counter()
    output = Path(args.output).resolve()
    arguments, config = _local_run_inputs(args, output)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # kfp.local warns for every task that its cluster settings (resources, display name) have no
    # effect here: said once instead.
    warnings.filterwarnings(
        "ignore", message=r"Task '.*': settings .* have no effect in the current local runner", category=UserWarning
    )
    options = replace(LOCAL_OPTIONS, parallel_trainings=args.parallel)
    pipeline = args.build(options)
    logs = output / "logs" / time.strftime("%Y%m%d-%H%M%S")
    progress = _run_progress(args, display_names(pipeline.pipeline_spec), config, logs)
    quiet = quiet_steps(progress) if args.runner == "subprocess" else contextlib.nullcontext()
    try:
        with (
            local_runner(
                args.runner, dataset=arguments["dataset"], output=output, registry=args.registry, gpu=not args.no_gpu
            ) as runner,
            quiet,
        ):
            local.init(
                runner=runner,
                pipeline_root=str(output / "pipeline-root"),
                enable_caching=args.cache,
                cache_root=str(output / "cache") if args.cache else None,
            )
            pipeline(**arguments)
    except RuntimeError as exc:
        failure = progress.failure
        if failure is not None:
            print(
                f"pipeline.py run: error: step {failure.label!r} failed: {failure.detail}; "
                f"the run stopped there. Its log: {failure.log}",
                file=sys.stderr,
            )
        else:
            print(
                f"pipeline.py run: error: {exc} The log: {logs if args.runner == 'subprocess' else 'above'}",
                file=sys.stderr,
            )
        return 1
    metrics_path = output / EvaluationResult.FILE_NAME
    if not metrics_path.is_file():
        print(f"pipeline.py run: error: the run published no {metrics_path}", file=sys.stderr)
        return 1
    reused = f", {len(progress.reused)} of them reused from the cache" if progress.reused else ""
    print(f"pipeline.py run: {progress.started} steps done in {duration(time.perf_counter() - began)}{reused}")
    print(results_table(EvaluationResult.read(output)))
    print(f"outputs: {output / 'config.json'}, {metrics_path}, {output / 'report.html'}, {output / 'bundle'}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    import kfp

    arguments = pipeline_arguments(args, args.dataset, args.output_uri)
    client_kwargs = {"host": args.host, "existing_token": args.token, "cookies": args.cookies}
    if args.namespace:
        client_kwargs["namespace"] = args.namespace
    with tempfile.TemporaryDirectory(prefix="avsc-pipeline-") as tmp:
        package = compile_pipeline(Path(tmp) / "avsc_pipeline.yaml", args.build, cluster_options(args))
        client = kfp.Client(**client_kwargs)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=args.run_name or f"avsc-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=args.experiment,
            namespace=args.namespace,
            pipeline_root=args.pipeline_root,
            enable_caching=False if args.no_cache else None,
            service_account=args.service_account,
        )
    print(f"{args.host.rstrip('/')}/#/runs/details/{run.run_id}", flush=True)
    if not args.wait:
        return 0
    try:
        detail = client.wait_for_run_completion(run.run_id, timeout=args.timeout)
    except TimeoutError:
        print(f"pipeline.py submit: error: run {run.run_id} not finished after {args.timeout} s", file=sys.stderr)
        return 1
    state = str(detail.state or "unknown").upper()
    print(f"run {run.run_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def main(argv: list[str] | None, build: Builder) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run its command with the pipeline ``build`` makes.

    Returns:
        The exit status: 0 on success, 1 when a run or submission failed, 2 for bad settings.
    """
    from avsc.errors import AvscError

    args = build_parser().parse_args(argv)
    args.build = build
    try:
        return int(args.handler(args) or 0)
    except AvscError as exc:
        print(f"pipeline.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pipeline.py {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["PUBLISHED", "build_parser", "compile_pipeline", "main"]

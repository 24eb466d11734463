"""The flags of ``pipeline.py`` that set up the pipeline, and what they become.

Cluster settings (``--no-gpu``, ``--accelerator``, ``--registry``, ...) are compiled into the
pipeline as :class:`~components.cluster.ClusterOptions` (:func:`cluster_options`); run
settings (``--preset``, ``--config``, ``--set``, ``--shards``) become its parameters
(:func:`pipeline_arguments`), resolved with the library's own configuration first, so a
wrong setting fails before anything runs or is submitted.
"""

from __future__ import annotations

import argparse
import json
import re

from avsc.config import DEFAULT_PRESET, PRESETS
from components.cluster import REGISTRY_PATTERN, RESOURCES, ClusterOptions


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


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    """The cluster settings the flags of :func:`add_cluster_flags` ask for.

    Raises:
        SystemExit: a malformed ``--node-selector`` or ``--registry``.
    """
    selector = None
    if args.node_selector:
        key, sep, value = args.node_selector.partition("=")
        if not sep or not key:
            raise SystemExit(f"--node-selector must be LABEL=VALUE, got {args.node_selector!r}")
        selector = (key, value)
    if args.registry and not re.fullmatch(REGISTRY_PATTERN, args.registry.rstrip("/")):
        raise SystemExit(f"--registry must look like host[:port][/path], got {args.registry!r}")
    resources = args.resources or ("small" if args.no_gpu else "standard")
    return ClusterOptions(
        gpu=not args.no_gpu,
        accelerator=args.accelerator,
        node_selector=selector,
        toleration=args.toleration or None,
        secret=args.secret,
        resources=resources,
        registry=args.registry,
    )


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the cluster settings (read by :func:`cluster_options`)."""
    defaults = ClusterOptions()
    group = parser.add_argument_group("cluster settings (compiled into the pipeline)")
    group.add_argument(
        "--no-gpu", action="store_true", help="no accelerator request, node selector or toleration (CPU-only clusters)"
    )
    group.add_argument(
        "--accelerator",
        default=defaults.accelerator,
        help="accelerator resource each training/embedding task requests (default %(default)s)",
    )
    group.add_argument(
        "--node-selector",
        default="=".join(defaults.node_selector or ()),
        metavar="LABEL=VALUE",
        help="node label GPU tasks select (default %(default)s; empty for none)",
    )
    group.add_argument(
        "--toleration",
        default=defaults.toleration,
        metavar="TAINT_KEY",
        help="taint key GPU tasks tolerate (default %(default)s; empty for none)",
    )
    group.add_argument(
        "--resources",
        choices=sorted(RESOURCES),
        help="CPU/memory requests and limits (default: small with --no-gpu, else standard)",
    )
    group.add_argument(
        "--registry",
        metavar="HOST[/PATH]",
        help="take the avsc images from this registry (as pushed by `make push REGISTRY=...`; "
        "default: the names in components/images.py)",
    )
    group.add_argument(
        "--secret",
        default=defaults.secret,
        help="Kubernetes Secret with the object-store endpoint and keys (default %(default)s)",
    )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the run's settings (read by :func:`pipeline_arguments`)."""
    group = parser.add_argument_group("run settings (pipeline parameters)")
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default=DEFAULT_PRESET,
        help="settings to start from: paper or quick (CPU-sized) (default %(default)s)",
    )
    group.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings over the preset")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="settings",
        help="one setting, applied last; repeatable (e.g. --set features.audio.frames=309)",
    )
    group.add_argument("--shards", type=int, default=4, help="preprocessing tasks (default %(default)s)")


def pipeline_arguments(args: argparse.Namespace, dataset: str, output_uri: str) -> dict:
    """The pipeline parameters a ``run`` or ``submit`` command line asks for.

    Raises:
        SystemExit: ``--shards`` below 1.
        ConfigError: see :func:`config_parameter`.
    """
    if args.shards < 1:
        raise SystemExit("--shards must be at least 1")
    return {
        "dataset": dataset,
        "output_uri": output_uri,
        "preset": args.preset,
        "config": config_parameter(args.preset, args.config, args.settings),
        "shard_count": args.shards,
    }


__all__ = ["add_cluster_flags", "add_run_flags", "cluster_options", "config_parameter", "pipeline_arguments"]

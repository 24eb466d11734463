"""The run's first step: resolve its settings once into the config artifact every later step reads."""

from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Output

from components.artifacts import HELPERS
from components.images import CPU_IMAGE


def config_markdown(record: dict[str, Any]) -> str:
    """The config record as Markdown for the Kubeflow UI: hashes, overrides, every setting."""
    from tabulate import tabulate

    def flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    def table(rows, headers) -> str:
        return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

    overrides = flat(record["overrides"])
    every = [(key, value, "yes" if key in overrides else "") for key, value in flat(record["config"]).items()]
    lines = [
        "# Run configuration",
        "",
        f"Preset **{record['preset']}**, config hash `{record['config_hash']}` (avsc {record['avsc_version']}).",
        "",
        table(sorted(record["hashes"].items()), ["section", "hash"]),
        "",
        "## Overrides (applied over the preset)",
        "",
        table(sorted(overrides.items()), ["setting", "value"]) if overrides else "None: the preset as it is.",
        "",
        "## Every setting",
        "",
        table(every, ["setting", "value", "overridden"]),
        "",
    ]
    return "\n".join(lines)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=[*HELPERS, config_markdown])
def resolve_config(
    preset: str,
    overrides: str,
    config: Output[Artifact],
    summary: Output[Markdown],
) -> NamedTuple("Settings", [("segment_seconds", float), ("audio_source", str)]):  # type: ignore[valid-type]
    """Resolve the run's settings once: the preset, then the overrides, validated.

    Every later step reads ``config`` instead of resolving settings itself, so a run's
    settings are decided in one place and recorded with their hashes. Ingest reads only
    ``data.segment_seconds`` and ``data.audio_source``, handed on as parameters so that a
    change to any other setting leaves the ingest step cached. A ``data.segment_seconds`` that differs from
    ``features.audio.clip_seconds`` fails this step, before any work.

    Args:
        preset: ``paper`` (the paper's settings) or ``quick`` (a CPU-sized run).
        overrides: settings applied over the preset, as TOML text (``"[train]\\nepochs = 3"``
            or ``"train.epochs = 3"``) or a JSON object (``{"train": {"epochs": 3}}``);
            empty for none. Unknown settings and wrong types fail this step.

    Returns:
        config: the config record, JSON: ``format``, ``avsc_version``, ``preset``,
            ``overrides`` (nested), ``config`` (every setting), ``config_hash`` and
            ``hashes`` (of ``features``, ``train``, ``fusion``: the hashes feature stores,
            models and fusion models record). Its metadata holds the preset and hashes.
        summary: the same as Markdown (hashes, overrides, every setting) for the UI.
        segment_seconds: ``data.segment_seconds``, 0 when unset (whole clips).
        audio_source: ``data.audio_source``: ``auto``, ``wav`` or ``video``.
    """
    import json
    from collections import namedtuple

    from avsc import __version__
    from avsc.config import config_hash, load_config, to_dict
    from avsc.config.sources import parse_overrides
    from avsc.data.segments import check_segment_setting

    resolved = load_config(preset=preset, overrides=overrides)
    check_segment_setting(resolved)
    hashes = {name: config_hash(getattr(resolved, name)) for name in ("features", "train", "fusion")}
    record = {
        "format": "avsc-pipeline-config/1",
        "avsc_version": __version__,
        "preset": preset,
        "overrides": parse_overrides(overrides),
        "config": to_dict(resolved),
        "config_hash": config_hash(resolved),
        "hashes": hashes,
    }
    with open(config.path, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    config.metadata.update(
        preset=preset, config_hash=record["config_hash"], **{f"{name}_hash": value for name, value in hashes.items()}
    )
    with open(summary.path, "w") as handle:
        handle.write(config_markdown(record))
    Settings = namedtuple("Settings", ["segment_seconds", "audio_source"])
    return Settings(float(resolved.data.segment_seconds or 0.0), resolved.data.audio_source)

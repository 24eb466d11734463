"""How ``pipeline.py run --local`` names its steps and words how each ended.

Functions of what kfp.local hands a step (its executor input, the compiled pipeline spec)
and of what the step leaves behind (its exit status and peak memory, its ``Metrics``
outputs, its log): :mod:`components.progress` prints its step lines with them.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path

GB = 1e9
# The inputs that tell iterations of one step apart, shown after its name.
_LABEL_INPUTS = ("backbone", "method")


def duration(seconds: float) -> str:
    """``42.3 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def step_label(component: str, executor_input: Mapping, names: Mapping[str, str]) -> str:
    """The step's display name, with the input that tells its iterations apart
    (``Train backbone aud-mel``, ``Preprocess shard 2/4``)."""
    name = names.get(f"comp-{component}", component)
    params = dict(executor_input.get("inputs", {}).get("parameterValues", {}))
    for key in _LABEL_INPUTS:  # the step's own parameter first (the fusion step's method)
        if params.get(key):
            return f"{name} {params[key]}"
    # Else an input that is ONE artifact tagged with its backbone (the embedding step's model);
    # a collected list (the fusion and evaluation steps' five embeddings) tells nothing.
    for output in executor_input.get("inputs", {}).get("artifacts", {}).values():
        artifacts = output.get("artifacts", [])
        if len(artifacts) != 1:
            continue
        backbone = (artifacts[0].get("metadata") or {}).get("backbone")  # the bundle's "method" names no step
        if backbone:
            return f"{name} {backbone}"
    if "shard_index" in params and "shard_count" in params:
        return f"{name} {int(params['shard_index'])}/{int(params['shard_count'])}"
    return name


def step_figures(output_file: str | None, limit: int = 4) -> str:
    """The numbers a step logged in its ``Metrics`` artifacts (``seconds`` left out), as
    ``name=value`` pairs; empty when it logged none."""
    if not output_file or not os.path.isfile(output_file):
        return ""
    try:
        with open(output_file) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return ""
    figures: dict[str, str] = {}  # an output and its copy for the UI carry the same numbers once
    for output in record.get("artifacts", {}).values():
        for artifact in output.get("artifacts", []):
            for key, value in (artifact.get("metadata") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seconds":
                    figures.setdefault(key, f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(list(figures.values())[:limit])


def describe_exit(code: int, peak: int | None, need: int | None) -> tuple[str, str]:
    """``(status, detail)`` for a step's exit code ``code`` (negative: ended by that signal),
    its peak resident memory and the memory it was estimated to need (bytes, or None).

    SIGKILL is reported as out of memory: it is how the kernel's out-of-memory killer (and a
    pod's memory limit) ends a process, and nothing in a local run sends it otherwise.
    """
    if code == 0:
        return "done", ""
    if 128 < code < 128 + signal.NSIG:  # a shell's way of saying its child was ended by a signal
        code = 128 - code
    if code == -signal.SIGKILL:
        reached = f" (it had reached {peak / GB:.1f} GB)" if peak else ""
        needed = max(need or 0, peak or 0)
        return "killed", (
            f"killed: out of memory, needed ~{max(1, round(needed / GB))} GB{reached}; use "
            "--preset quick, or a machine with more memory"
        )
    if code < 0:
        return "failed", f"ended by signal {signal.Signals(-code).name}"
    return "failed", f"exited with status {code}"


_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?P<error>[A-Za-z_]\w*(?:Error|Exception|Exit|Crash)): (?P<text>.+)$")


def last_error(log_path: Path, tail: int = 200) -> str:
    """The error a failed step's log ends with (``DataError: /data: no fold1_train.csv ...``,
    the exception's class without its module), or "" when there is none."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-tail:]
    except OSError:
        return ""
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return f"{match['error']}: {match['text']}"
    return ""


def display_names(pipeline_spec) -> dict[str, str]:
    """Component name -> display name of every task of a compiled pipeline spec (the proto of
    a ``@dsl.pipeline`` function's ``.pipeline_spec``), nested DAGs included."""
    from google.protobuf import json_format

    spec = json_format.MessageToDict(pipeline_spec)
    names: dict[str, str] = {}
    pending = [spec["root"]["dag"]["tasks"]]
    while pending:
        for task in pending.pop().values():
            component = task["componentRef"]["name"]
            names.setdefault(component, task.get("taskInfo", {}).get("name", component))
            inner = spec["components"].get(component, {}).get("dag")
            if inner:
                pending.append(inner["tasks"])
    return names


__all__ = [
    "GB",
    "describe_exit",
    "display_names",
    "duration",
    "last_error",
    "step_figures",
    "step_label",
]

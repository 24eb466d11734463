"""Wall time of the whole local pipeline, per stage and in total (target: under 10 minutes
for the quick preset on the default demo dataset on 2 cores).

Runs ``pipeline.py run --local -v`` as a user would and times every task from kfp.local's own
log lines ("Executing task ..." / "Task ... finished"; ``-v`` shows them), so each figure includes the task's
process start and library imports. Stages whose tasks overlap (preprocessing shards, fusion
methods: kfp.local runs at most two at a time) are reported as their span and as the sum
of their tasks.

Usage:
    python bench/pipeline.py [--output runs/bench-pipeline] [--shards 4] [-- extra run flags]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
START = re.compile(r"^(?P<time>\d\d:\d\d:\d\d\.\d+) - INFO - Executing task '(?P<task>[^']+)'")
# Written by each task's own process as it ends; unlike kfp.local's "Task ... finished" line
# (which can be lost when two loop iterations end together) there is one per task run.
END = re.compile(
    r"^\[KFP Executor \d{4}-\d\d-\d\d (?P<time>\d\d:\d\d:\d\d,\d+) INFO\]: Wrote executor "
    r"output file to .*/(?P<task>[^/]+)/executor_output\.json"
)
STAGES = (  # task name prefix -> stage, in DAG order
    ("resolve-config", "config"),
    ("ingest-dataset", "ingest"),
    ("list-shards", "list shards"),
    ("preprocess-shard", "preprocess"),
    ("train-backbone", "train"),
    ("embed-backbone", "embed"),
    ("fuse-method", "fusion"),
    ("evaluate-fusions", "evaluate"),
    ("publish-outputs", "publish"),
)


def task_times(log: str) -> list[tuple[str, datetime, datetime]]:
    """(task, start, end) for every finished task of a kfp.local log, in start order."""
    starts: dict[str, list[datetime]] = defaultdict(list)
    ends: dict[str, list[datetime]] = defaultdict(list)
    day, last = datetime(2000, 1, 1), None
    for raw in log.splitlines():
        line = ANSI.sub("", raw).strip()
        match = START.match(line) or END.match(line)
        if not match:
            continue
        clock = datetime.strptime(match["time"].replace(",", "."), "%H:%M:%S.%f").time()
        stamp = datetime.combine(day.date(), clock)
        if last is not None and stamp < last - timedelta(hours=12):  # past midnight
            day += timedelta(days=1)
            stamp += timedelta(days=1)
        last = stamp
        (starts if match.re is START else ends)[match["task"]].append(stamp)
    done = []
    for task, begun in starts.items():  # runs of one loop task pair up in time order
        ended = sorted(ends.get(task, []))  # a run may not have ended
        done.extend((task, start, end) for start, end in zip(sorted(begun), ended, strict=False))
    return sorted(done, key=lambda t: t[1])


def stage_of(task: str) -> str:
    for prefix, stage in STAGES:
        if task == prefix or task.startswith(prefix + "-"):
            return stage
    return task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="runs/bench-pipeline")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("extra", nargs="*", help="more `run --local` flags (after --)")
    args = parser.parse_args(argv)

    from avsc.data.demo import make_demo_dataset

    output = Path(args.output).resolve()
    began = time.perf_counter()
    make_demo_dataset(output / "dataset", progress=False)  # the default demo dataset (reused if there)
    demo_s = time.perf_counter() - began

    command = [
        sys.executable,
        "pipeline.py",
        "run",
        "--local",
        "-v",
        "--output",
        str(output),
        "--preset",
        "quick",
        "--shards",
        str(args.shards),
        *args.extra,
    ]
    began = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    total_s = time.perf_counter() - began
    (output / "bench.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        print(f"run --local failed (exit {done.returncode}); full log in {output / 'bench.log'}")
        return 1

    tasks = task_times(done.stdout + "\n" + done.stderr)
    by_stage: dict[str, list[tuple[str, datetime, datetime]]] = defaultdict(list)
    for task in tasks:
        by_stage[stage_of(task[0])].append(task)
    print(f"cores: {os.cpu_count()}  shards: {args.shards}  preset: quick")
    print(f"demo dataset (generate or reuse): {demo_s:7.1f} s")
    print(f"{'stage':<12} {'tasks':>5} {'span s':>8} {'sum s':>8}")
    for _, stage in STAGES:
        items = by_stage.get(stage, [])
        if not items:
            continue
        span = (max(t[2] for t in items) - min(t[1] for t in items)).total_seconds()
        busy = sum((t[2] - t[1]).total_seconds() for t in items)
        print(f"{stage:<12} {len(items):>5} {span:>8.1f} {busy:>8.1f}")
    # The five backbones are iterations of one loop: their tasks share a name, so each one's
    # time is the "seconds" its step measured, found by the backbone in its artifact's metadata.
    run = max((output / "pipeline-root").iterdir())
    for stage, task, artifact in (("train", "train-backbone", "model"), ("embed", "embed-backbone", "embeddings")):
        for path in sorted(run.glob(f"*/{task}/executor_output.json")):
            artifacts = json.loads(path.read_text())["artifacts"]
            backbone = artifacts[artifact]["artifacts"][0]["metadata"]["backbone"]
            seconds = artifacts["metrics"]["artifacts"][0]["metadata"]["seconds"]
            print(f"  {stage} {backbone:<9} {seconds:8.1f} s (inside the task)")
    print(f"run --local total:           {total_s:7.1f} s  ({total_s / 60:.1f} min; target < 10 min)")
    table = done.stdout[done.stdout.rfind("method") :] if "method" in done.stdout else ""
    if table:
        print(table.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``pipeline.py run --local`` prints: a line per step as it starts and ends, each step's
output in its own log file, a step killed for memory named as such, and a run that stops at
its first failed step. Real kfp.local runs of small pipelines of pure-Python steps."""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.

import io
import signal
from pathlib import Path

import pytest
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics, Output

from components.progress import RunProgress, quiet_steps
from components.step_report import describe_exit, display_names, step_label

GB = 10**9


@dsl.component(base_image="ghcr.io/avsc/avsc-cpu:0.1.0", install_kfp_package=False)
def chatty(item: str, table: Output[Dataset], metrics: Output[Metrics]):
    """Prints a lot, writes a file, logs one figure."""
    for number in range(200):
        print(f"noise {number} of {item}")
    with open(table.path, "w") as handle:
        handle.write(item)
    metrics.log_metric("clips", 42)
    with open(metrics.path, "w") as handle:  # kfp.local's cache counts an output without a file as absent
        handle.write("{}")


@dsl.component(base_image="ghcr.io/avsc/avsc-cpu:0.1.0", install_kfp_package=False)
def flaky(method: str, metrics: Output[Metrics]):
    """``bad`` fails at once, ``slow`` sleeps, others pass."""
    import os
    import signal
    import time

    if method == "bad":
        os.kill(os.getpid(), signal.SIGKILL)
    if method == "slow":
        time.sleep(30)
    metrics.log_metric("done", 1)


@dsl.pipeline(name="chatty")
def chatty_pipeline(item: str = "a"):
    chatty(item=item).set_display_name("Chatty step")


@dsl.pipeline(name="flaky")
def flaky_pipeline():
    with dsl.ParallelFor(["slow", "bad", "never", "also-never"], parallelism=2) as method:
        flaky(method=method).set_display_name("Flaky step")


def _progress(tmp_path: Path, pipeline, total: int, **kwargs) -> RunProgress:
    return RunProgress(
        total=total, logs=tmp_path / "logs", names=display_names(pipeline.pipeline_spec), out=io.StringIO(), **kwargs
    )


def _init(tmp_path: Path, cache: bool = False) -> None:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        enable_caching=cache,
        cache_root=str(tmp_path / "cache") if cache else None,
    )


def test_a_step_prints_two_lines_and_its_output_goes_to_its_log(tmp_path, capsys):
    _init(tmp_path, cache=True)
    progress = _progress(tmp_path, chatty_pipeline, total=1)
    with quiet_steps(progress):
        chatty_pipeline(item="park")
    lines = progress.out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "[1/1] Chatty step ..."
    assert lines[1].startswith("[1/1] Chatty step: done in ") and "clips=42" in lines[1] and "peak" in lines[1]
    printed = capsys.readouterr()
    assert "noise" not in printed.out + printed.err and "executor_input" not in printed.out + printed.err
    log = (tmp_path / "logs" / "01-chatty-step.log").read_text()
    assert "noise 199 of park" in log and "executor_input" in log

    again = _progress(tmp_path, chatty_pipeline, total=1)  # the same run: every step from the cache
    with quiet_steps(again):
        chatty_pipeline(item="park")
    assert again.out.getvalue().splitlines() == ["[1/1] Chatty step: reused (cached)"]
    assert again.reused == ["chatty"]


def test_a_killed_step_is_out_of_memory_and_the_run_stops_there(tmp_path):
    _init(tmp_path)
    progress = _progress(tmp_path, flaky_pipeline, total=4, needs={"Flaky step bad": 30 * GB})
    with quiet_steps(progress), pytest.raises(RuntimeError):
        flaky_pipeline()
    out = progress.out.getvalue()
    assert "Flaky step bad: killed: out of memory, needed ~30 GB" in out
    assert progress.failure is not None and progress.failure.label == "Flaky step bad"
    # The step beside it was stopped rather than left to finish, and no other step started.
    assert "Flaky step slow: stopped: Flaky step bad failed" in out
    assert "never" not in out
    assert progress.started == 2


def test_exit_codes_read_as_a_person_would_say_them():
    assert describe_exit(0, GB, None) == ("done", "")
    state, detail = describe_exit(-signal.SIGKILL, int(9.5 * GB), 12 * GB)
    assert state == "killed" and detail.startswith("killed: out of memory, needed ~12 GB (it had reached 9.5 GB)")
    assert "--preset quick" in detail
    assert describe_exit(1, None, None) == ("failed", "exited with status 1")
    assert describe_exit(-signal.SIGTERM, None, None) == ("failed", "ended by signal SIGTERM")


def test_iterations_are_told_apart_by_their_inputs():
    names = {"comp-train-backbone": "Train backbone", "comp-preprocess-shard": "Preprocess shard"}
    assert (
        step_label("train-backbone", {"inputs": {"parameterValues": {"backbone": "aud-mel"}}}, names)
        == "Train backbone aud-mel"
    )
    shard = {"inputs": {"parameterValues": {"shard_index": 2, "shard_count": 4.0}}}
    assert step_label("preprocess-shard", shard, names) == "Preprocess shard 2/4"
    assert step_label("other", {}, names) == "other"
    names["comp-embed-backbone"] = "Embed backbone"  # its model artifact carries the backbone
    model = {"inputs": {"artifacts": {"model": {"artifacts": [{"metadata": {"backbone": "vis-inc"}}]}}}}
    assert step_label("embed-backbone", model, names) == "Embed backbone vis-inc"


def test_a_failed_step_is_named_with_the_error_its_log_ends_with(tmp_path):
    from components.step_report import last_error

    log = tmp_path / "03-ingest-dataset.log"
    log.write_text(
        'Traceback (most recent call last):\n  File "x", line 1\n'
        "avsc.errors.DataError: /data: no fold1_train.csv or fold1_evaluate.csv found in it\n\n"
    )
    assert last_error(log) == "DataError: /data: no fold1_train.csv or fold1_evaluate.csv found in it"
    log.write_text("all fine\n")
    assert last_error(log) == "" and last_error(tmp_path / "missing.log") == ""


def test_verbose_shows_every_line_with_kfp_timestamps(tmp_path):
    import re

    _init(tmp_path)
    progress = _progress(tmp_path, chatty_pipeline, total=1, verbose=True)
    with quiet_steps(progress):
        chatty_pipeline(item="tram")
    out = progress.out.getvalue()
    assert "noise 199 of tram" in out and "executor_input" in out
    # kfp.local's own lines keep its format (bench/pipeline.py times the steps from them).
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} - INFO - Executing task", out, re.M)
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} - INFO - Executing task", (progress.logs / "run.log").read_text(), re.M)


def test_a_step_is_labelled_by_its_own_parameter_not_by_a_collected_list():
    """The fusion steps read all five embeddings (a collected list, the first one tagged
    aud-mel): each is named by its method; a step with only lists is named alone; an untagged
    input before the tagged model does not hide the model's backbone."""
    names = {
        "comp-fuse-embeddings": "Fuse embeddings",
        "comp-evaluate": "Evaluate and bundle",
        "comp-embed-backbone": "Embed backbone",
    }
    five = {"artifacts": [{"metadata": {"backbone": b}} for b in ("aud-mel", "aud-gam", "aud-cqt")]}
    fuse = {"inputs": {"parameterValues": {"method": "f3"}, "artifacts": {"embeddings": five}}}
    assert step_label("fuse-embeddings", fuse, names) == "Fuse embeddings f3"
    assert (
        step_label("evaluate", {"inputs": {"artifacts": {"models": five, "embeddings": five}}}, names)
        == "Evaluate and bundle"
    )
    embed = {
        "inputs": {
            "artifacts": {
                "features": {"artifacts": [{"metadata": {}}]},
                "model": {"artifacts": [{"metadata": {"backbone": "vis-conv"}}]},
            }
        }
    }
    assert step_label("embed-backbone", embed, names) == "Embed backbone vis-conv"
    bundle = {"inputs": {"artifacts": {"bundle": {"artifacts": [{"metadata": {"method": "f4"}}]}}}}
    assert step_label("publish-outputs", bundle, {"comp-publish-outputs": "Publish outputs"}) == "Publish outputs"

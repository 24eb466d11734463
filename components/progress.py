"""What ``pipeline.py run --local`` shows: one line per step as it starts and ends, a counter for
the whole run, what a cached run reused; each step's own output in a log file of its own.

kfp.local (2.17) prints every step's full output, its ``executor_input`` (a JSON dump of
100+ lines per step), a "custom or non-Python base image" warning per step and TensorFlow's
start-up banners: thousands of lines around the few a person wants. While a run lasts,
:func:`quiet_steps` replaces kfp.local's subprocess task handler with one that

- writes the step's output (stdout and stderr) to ``<logs>/<NN>-<step>.log`` (and to the
  terminal as well when ``verbose``);
- prints ``[ n/total] <step>`` when it starts and, when it ends, its time, peak memory (the
  largest resident set of the step's process, from ``wait4``) and the figures it logged
  (its ``Metrics`` artifacts);
- reports a step the kernel killed (SIGKILL, how the out-of-memory killer ends a process) as
  ``killed: out of memory``, with the memory the step needed;
- stops the run at the first failed step: the steps running beside it are stopped and no
  other starts (kfp.local itself carries on with other loop iterations after a failure).

kfp.local's own log (task started, outputs, cache hits) goes to ``<logs>/run.log``; each
cache hit is also printed as a reused step.

How a step is named and how its end is worded: :mod:`components.step_report`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from components.step_report import GB, describe_exit, duration, last_error, step_figures, step_label


@dataclass
class StepOutcome:
    """How one step ended: ``status`` is ``done``, ``failed``, ``killed`` (SIGKILL: out of
    memory) or ``stopped`` (ended because another step failed)."""

    label: str
    status: str
    seconds: float
    peak_bytes: int | None
    log: Path
    detail: str = ""


@dataclass
class RunProgress:
    """The state of one local run, shared by the task handlers of its steps (threads).

    Attributes:
        total: steps the run has (for the counter).
        logs: the folder of the per-step log files.
        names: component name (``comp-train-backbone``) -> the step's display name.
        needs: step label (``Train backbone aud-mel``) -> the memory (bytes) it is estimated
            to need, for the message when it is killed.
        verbose: also stream every step's output to the terminal.
        out: where the step lines go.
    """

    total: int
    logs: Path
    names: Mapping[str, str] = field(default_factory=dict)
    needs: Mapping[str, int] = field(default_factory=dict)
    verbose: bool = False
    out: TextIO = sys.stdout
    started: int = 0
    reused: list[str] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)
    failure: StepOutcome | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: dict[int, subprocess.Popen] = field(default_factory=dict)
    _began: float = field(default_factory=time.perf_counter)

    def say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def counter(self) -> str:
        width = len(str(self.total))
        return f"[{self.started:>{width}}/{self.total}]"

    def elapsed(self) -> str:
        return duration(time.perf_counter() - self._began)

    def fail(self, outcome: StepOutcome) -> None:
        """Record the run's first failure and stop every other running step."""
        with self._lock:
            if self.failure is None:
                self.failure = outcome
            running = list(self._running.values())
        for process in running:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the step's process group: the shell kfp starts and the Python under it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)


def _executor_input(command: list[str]) -> dict:
    for flag, value in itertools.pairwise(command):
        if flag == "--executor_input":
            return json.loads(value)
    return {}


def _task_handler(progress: RunProgress):
    """kfp.local's subprocess task handler, writing each step's output to its log file."""
    from kfp.local import status, subprocess_task_handler

    class LoggedSubprocessTaskHandler(subprocess_task_handler.SubprocessTaskHandler):
        def validate_image(self, image: str) -> None:
            """Our images hold this library; locally this Python does (no warning per step)."""

        def run(self) -> status.Status:
            executor_input = _executor_input(self.full_command)
            output_file = executor_input.get("outputs", {}).get("outputFile")
            component = Path(output_file).parent.name if output_file else "step"
            label = step_label(component, executor_input, progress.names)
            with progress._lock:
                if progress.failure is not None:  # a step failed: start nothing more
                    return status.Status.FAILURE
                progress.started += 1
                number = progress.started
                log_path = progress.logs / f"{number:02d}-{re.sub(r'[^A-Za-z0-9.-]+', '-', label.lower())}.log"
                counter = progress.counter()
            progress.say(f"{counter} {label} ...")
            began = time.perf_counter()
            command = subprocess_task_handler.replace_python_executable(self.full_command, sys.executable)
            code, peak = _run_logged(command, {**os.environ, **self.env_vars}, log_path, progress)
            seconds = time.perf_counter() - began
            state, detail = describe_exit(code, peak, progress.needs.get(label))
            if state != "done" and progress.failure is not None:  # ended by fail() below
                state, detail = "stopped", f"stopped: {progress.failure.label} failed"
            elif state == "failed":
                cause = last_error(log_path)
                detail = f"{detail}: {cause}" if cause else detail
            outcome = StepOutcome(label, state, seconds, peak, log_path, detail)
            progress.outcomes.append(outcome)
            memory = f", peak {peak / GB:.1f} GB" if peak else ""
            if state == "done":
                figures = step_figures(output_file)
                progress.say(
                    f"{counter} {label}: done in {duration(seconds)}{memory}{', ' + figures if figures else ''}"
                )
                return status.Status.SUCCESS
            progress.say(f"{counter} {label}: {detail} (log: {log_path})")
            if state != "stopped":
                progress.fail(outcome)
            return status.Status.FAILURE

    return LoggedSubprocessTaskHandler


def _run_logged(command: list[str], env: dict, log_path: Path, progress: RunProgress) -> tuple[int, int | None]:
    """Run ``command`` with its output in ``log_path`` (and on the terminal when verbose);
    its exit code (negative: the signal that ended it) and peak resident memory in bytes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log:
        # A session of its own: stopping the step stops the shell kfp starts and the Python under it.
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        with progress._lock:
            progress._running[process.pid] = process
            stopped = progress.failure is not None  # a step failed while this one was starting
        if stopped:
            _stop(process)
        try:
            assert process.stdout is not None  # stdout=PIPE
            for line in process.stdout:
                log.write(line)
                if progress.verbose:
                    progress.say(line.rstrip("\n"))
            process.stdout.close()
            # wait4, not wait: the child's resource use comes with its exit status.
            _, wait_status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C: the step is in a session of its own, so end it here
            _stop(process)
            raise
        finally:
            with progress._lock:
                progress._running.pop(process.pid, None)
        process.returncode = os.waitstatus_to_exitcode(wait_status)
    peak = usage.ru_maxrss * 1024 if usage.ru_maxrss else None  # Linux reports KiB
    return process.returncode, peak


class _RunLog(logging.Handler):
    """kfp.local's log records into ``run.log``; cache hits also reported as reused steps."""

    _HIT = re.compile(r"Task (?P<task>\S+) cache hit")

    def __init__(self, path: Path, progress: RunProgress):
        from kfp.local import logging_utils

        super().__init__(logging.INFO)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 -- closed by close()
        self.progress = progress
        # kfp.local's own format ("10:15:02.123 - INFO - Executing task ..."): tools that read
        # its log (bench/pipeline.py, with -v) read these lines the same.
        self.setFormatter(
            logging_utils.MillisecondFormatter(fmt="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S.%f")
        )

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        line = self.format(record)
        self.file.write(re.sub(r"\x1b\[[0-9;]*m", "", line) + "\n")
        if self.progress.verbose:
            self.progress.say(line)
        hit = self._HIT.search(message)
        if hit:
            task = re.sub(r"-iteration-\d+$", "", re.sub(r"\x1b\[[0-9;]*m", "", hit["task"]))
            with self.progress._lock:
                self.progress.started += 1
                counter = self.progress.counter()
                self.progress.reused.append(task)
            self.progress.say(f"{counter} {self.progress.names.get(f'comp-{task}', task)}: reused (cached)")

    def close(self) -> None:
        self.file.close()
        super().close()


@contextlib.contextmanager
def quiet_steps(progress: RunProgress) -> Iterator[RunProgress]:
    """Run the steps of a kfp.local run through :class:`RunProgress` while the block lasts
    (subprocess runner only): kfp.local's task handler, its log and its dividers replaced,
    Python warnings into ``run.log``. Everything is restored afterwards."""
    from kfp.local import logging_utils, subprocess_task_handler

    saved = (
        subprocess_task_handler.SubprocessTaskHandler,
        logging_utils.local_logger_context,
        logging_utils.print_horizontal_line,
        logging_utils.indented_print,
    )
    root = logging.getLogger()
    handler = _RunLog(progress.logs / "run.log", progress)
    level = root.level
    subprocess_task_handler.SubprocessTaskHandler = _task_handler(progress)
    logging_utils.local_logger_context = contextlib.nullcontext
    logging_utils.print_horizontal_line = lambda: None
    logging_utils.indented_print = lambda *args, **kwargs: contextlib.nullcontext()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield progress
    finally:
        # Steps still running here (Ctrl-C reaches only the main thread, and each step runs in a
        # session of its own, away from the terminal's signals) are stopped with the run.
        with progress._lock:
            running = list(progress._running.values())
        for process in running:
            _stop(process)
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        (
            subprocess_task_handler.SubprocessTaskHandler,
            logging_utils.local_logger_context,
            logging_utils.print_horizontal_line,
            logging_utils.indented_print,
        ) = saved


__all__ = [
    "RunProgress",
    "StepOutcome",
    "quiet_steps",
]

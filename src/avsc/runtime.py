"""What this process may use, and writable cache folders, whatever the machine or pod.

**CPUs and memory.** In a Kubernetes pod ``os.cpu_count()`` is the node's core count (64 on a
64-core node), not the pod's limit: a pod limited to 2 CPUs that sizes its pools from it runs
32 decoder threads per ffmpeg, all throttled by the CFS quota. :func:`usable_cpus` reads the
limit the kernel enforces (cgroup v2 ``cpu.max``, cgroup v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``) and the CPUs the process may run on (``os.sched_getaffinity``:
``taskset``, cpusets); :func:`memory_limit` reads cgroup v2 ``memory.max``, v1
``memory.limit_in_bytes`` and ``/proc/meminfo``. Every worker pool, ffmpeg decoder thread
count and TensorFlow thread pool is sized from them; :func:`describe_limits` is the log line
that says what was found.

**Caches.**

numba (librosa's compiled functions) and matplotlib (the report's figures) keep caches in the
user's home (``~/.cache/numba``, ``~/.config/matplotlib``) unless told otherwise. In a container
run as an arbitrary UID (OpenShift, ``docker run --user``) or with a read-only root file system
the home is not writable: numba then refuses to load librosa (``cannot cache function ...: no
locator available``; with worker processes an ``EOFError``) and matplotlib rebuilds its font
cache on every start. :func:`use_writable_caches` points each at a folder under the temporary
directory (``/tmp``) when it is not set and its default is not writable.

It is called at the start of work (the CLI, :func:`avsc.features.preprocess.preprocess`), never
when a module is imported; worker processes started afterwards inherit the setting. The images
set the same variables (``docker/*.Dockerfile``).

A cache under ``/tmp`` is empty in every new container, and numba then compiles librosa's
kernels again: about 16 s of CPU before a preprocessing pod decodes its first clip. The images
therefore ship the compiled kernels, made at build time by
:func:`avsc.features.clip_workers.warm_up` for a generic x86-64 CPU (``NUMBA_CPU_NAME=generic``,
so they are valid on any node), in a read-only folder named by ``AVSC_NUMBA_CACHE_SEED``;
:func:`use_writable_caches` copies them into an empty ``NUMBA_CACHE_DIR`` (3 MB, milliseconds).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
# cgroup v1 writes "no limit" as a huge page-aligned number (2**63 rounded down to a page).
_V1_UNLIMITED = 2**60


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroup(root: Path, controller: str) -> list[Path]:
    """The folders to look in for ``controller``'s limits: this process's own cgroup (from
    ``/proc/self/cgroup``, when it lies under ``root``) and ``root`` itself (a container sees
    its own cgroup mounted at the root), innermost first."""
    found = []
    lines = (_read(Path("/proc/self/cgroup")) or "").splitlines() if root == CGROUP_ROOT else []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" or controller in controllers.split(","):
            base = root if controllers == "" else root / controller
            candidate = base / path.lstrip("/")
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
    for base in (root, root / controller, root / "cpu,cpuacct"):
        if base.is_dir() and base not in found:
            found.append(base)
    return found


def cgroup_cpu_limit(root: str | Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``1.5`` for ``cpu: 1500m``), or None
    when there is none.

    Reads cgroup v2 ``cpu.max`` (``"150000 100000"``; ``"max 100000"`` is no limit), else
    cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1 is no limit).

    Args:
        root: where the cgroup file system is mounted (a test passes a folder of fake files).
    """
    root = Path(root)
    for folder in _own_cgroup(root, "cpu"):
        text = _read(folder / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            if quota != "max" and period:
                try:
                    return int(quota) / int(period)
                except (ValueError, ZeroDivisionError):
                    return None
            return None
        quota_us, period_us = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota_us and period_us:
            try:
                q, p = int(quota_us), int(period_us)
            except ValueError:
                return None
            return q / p if q > 0 and p > 0 else None
    return None


def usable_cpus(root: str | Path = CGROUP_ROOT) -> int:
    """The CPUs this process can use at once: the fewest of the CPUs it may run on
    (``os.sched_getaffinity``) and its cgroup's CPU quota rounded up (at least 1).

    This, not ``os.cpu_count()``, sizes worker pools and thread counts: in a pod limited to
    2 CPUs on a 64-core node it is 2, under ``taskset -c 0`` it is 1.

    Args:
        root: where the cgroup file system is mounted (see :func:`cgroup_cpu_limit`).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(1, cpus)


def cgroup_memory_limit(root: str | Path = CGROUP_ROOT) -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when there is none.

    Reads cgroup v2 ``memory.max`` (``"max"`` is no limit), else cgroup v1
    ``memory.limit_in_bytes`` (a huge value is no limit).
    """
    root = Path(root)
    for folder in _own_cgroup(root, "memory"):
        text = _read(folder / "memory.max")
        if text:
            return int(text) if text.isdigit() else None
        text = _read(folder / "memory.limit_in_bytes")
        if text and text.isdigit():
            return int(text) if int(text) < _V1_UNLIMITED else None
    return None


def physical_memory(meminfo: str | Path = MEMINFO) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` in bytes, or None when it cannot be read."""
    for line in (_read(Path(meminfo)) or "").splitlines():
        name, _, value = line.partition(":")
        if name == "MemTotal" and value.split():
            return int(value.split()[0]) * 1024
    return None


def memory_limit(root: str | Path = CGROUP_ROOT, meminfo: str | Path = MEMINFO) -> int | None:
    """The memory this process may use in bytes: the smaller of its cgroup's limit (a pod's
    ``limits.memory``; past it the kernel kills the process) and the machine's RAM; None when
    neither can be read."""
    known = [value for value in (cgroup_memory_limit(root), physical_memory(meminfo)) if value]
    return min(known) if known else None


@dataclass(frozen=True)
class Limits:
    """What :func:`detect_limits` found: ``cpus`` usable at once, of ``visible`` (the node's
    ``os.cpu_count()``); ``memory`` in bytes (None: unknown), ``memory_source`` where from."""

    cpus: int
    visible: int
    memory: int | None
    memory_source: str

    def describe(self) -> str:
        """One log line, e.g. ``using 2 of 64 CPUs (cgroup quota), 8.0 GB memory (cgroup limit)``."""
        memory = f"{self.memory / 1e9:.1f} GB memory ({self.memory_source})" if self.memory else "memory unknown"
        return f"using {self.cpus} of {self.visible} CPUs, {memory}"


def detect_limits(root: str | Path = CGROUP_ROOT, meminfo: str | Path = MEMINFO) -> Limits:
    """The CPUs and memory this process may use (see :func:`usable_cpus`, :func:`memory_limit`)."""
    cgroup = cgroup_memory_limit(root)
    physical = physical_memory(meminfo)
    memory: int | None
    if cgroup and (not physical or cgroup < physical):
        memory, source = cgroup, "cgroup limit"
    else:
        memory, source = physical, "physical"
    return Limits(cpus=usable_cpus(root), visible=os.cpu_count() or 1, memory=memory, memory_source=source)


def describe_limits() -> str:
    """:meth:`Limits.describe` of this process, for the log of a step that sizes pools."""
    return detect_limits().describe()


def limit_tensorflow_threads(cpus: int | None = None) -> bool:
    """Size TensorFlow's inter- and intra-op thread pools to ``cpus`` (default
    :func:`usable_cpus`) instead of the node's core count.

    TensorFlow fixes its pools when it runs its first operation: call this before. Imports
    TensorFlow.

    Returns:
        True when set; False when TensorFlow had already started (its pools stay as they are)
        or Keras runs on another backend.
    """
    keras = sys.modules.get("keras")
    backend = keras.backend.backend() if keras else os.environ.get("KERAS_BACKEND") or "tensorflow"
    if backend != "tensorflow":
        return False  # Keras runs on JAX (or PyTorch): TensorFlow is not used here, nor imported
    import tensorflow as tf

    cpus = cpus or usable_cpus()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:
        log.debug("TensorFlow already started: its thread pools keep their size")
        return False
    return True


@contextlib.contextmanager
def on_sigterm(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Call ``handler(signum, frame)`` on SIGTERM (what Kubernetes sends a pod it evicts or
    preempts, 30 s before SIGKILL) while the block runs; the previous handler is restored
    afterwards. Outside the main thread, where Python cannot install handlers, nothing is
    installed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _home_folder(variable: str, fallback: str) -> Path:
    """``$variable`` (an XDG base folder) if set, else ``~/fallback``."""
    return Path(os.environ.get(variable) or Path("~").expanduser() / fallback)


def _defaults() -> dict[str, Path]:
    """Environment variable -> the folder its library uses when it is unset."""
    return {
        # numba's user-wide cache locator (numba.misc.appdirs.user_cache_dir on Linux).
        "NUMBA_CACHE_DIR": _home_folder("XDG_CACHE_HOME", ".cache") / "numba",
        # matplotlib.get_configdir() without MPLCONFIGDIR.
        "MPLCONFIGDIR": _home_folder("XDG_CONFIG_HOME", ".config") / "matplotlib",
    }


def is_writable(folder: str | Path) -> bool:
    """Whether ``folder`` exists and is writable, or could be created (its nearest existing
    ancestor is a writable folder). False on a read-only file system."""
    path = Path(folder).absolute()
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def use_writable_caches() -> dict[str, str]:
    """Set ``NUMBA_CACHE_DIR`` and ``MPLCONFIGDIR`` where unset and the default is unwritable.

    Each becomes ``<tempdir>/avsc-<uid>/<numba|matplotlib>`` (created, mode 0700). A variable
    already set is kept as it is, as is one whose default folder is writable. Call before
    librosa (numba) or matplotlib are imported: numba reads ``NUMBA_CACHE_DIR`` once, on import.
    Then fills an empty numba cache from ``$AVSC_NUMBA_CACHE_SEED`` (:func:`seed_numba_cache`).

    Returns:
        The variables set by this call, name -> folder (empty when nothing was needed).
    """
    changed: dict[str, str] = {}
    for variable, default in _defaults().items():
        if os.environ.get(variable) or is_writable(default):
            continue
        user = os.getuid() if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"avsc-{user}" / default.name
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("%s unset and %s not writable; could not create %s either (%s)", variable, default, folder, exc)
            continue
        os.environ[variable] = changed[variable] = str(folder)
        log.debug("%s=%s (%s is not writable)", variable, folder, default)
    seed_numba_cache()
    return changed


SEED_VARIABLE = "AVSC_NUMBA_CACHE_SEED"


def seed_numba_cache(seed: str | Path | None = None) -> bool:
    """Copy prebuilt numba kernels from ``seed`` (default ``$AVSC_NUMBA_CACHE_SEED``) into the
    numba cache folder (``$NUMBA_CACHE_DIR``, else numba's default) when that holds no file yet.

    Kernels made for another CPU are not used by numba (it compiles again, as without them):
    build the seed with ``NUMBA_CPU_NAME=generic`` and run with the same setting. Call before
    librosa is imported.

    Returns:
        True when files were copied; False when there is no seed, or the cache already has
        files (it is never overwritten), or the copy failed (logged as a warning).
    """
    seed = seed or os.environ.get(SEED_VARIABLE)
    if not seed or not Path(seed).is_dir():
        return False
    target = Path(os.environ.get("NUMBA_CACHE_DIR") or _defaults()["NUMBA_CACHE_DIR"])
    if target.is_dir() and any(p.is_file() for p in target.rglob("*")):
        return False
    try:
        shutil.copytree(seed, target, dirs_exist_ok=True)
    except OSError as exc:
        log.warning(
            "could not copy the prebuilt numba kernels from %s to %s (%s); librosa's "
            "kernels will be compiled on first use",
            seed,
            target,
            exc,
        )
        return False
    log.debug("numba cache %s seeded from %s", target, seed)
    return True


__all__ = [
    "SEED_VARIABLE",
    "Limits",
    "cgroup_cpu_limit",
    "cgroup_memory_limit",
    "describe_limits",
    "detect_limits",
    "is_writable",
    "limit_tensorflow_threads",
    "memory_limit",
    "physical_memory",
    "seed_numba_cache",
    "usable_cpus",
    "use_writable_caches",
]

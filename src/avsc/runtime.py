"""Writable cache folders for the libraries avsc uses, whatever the user and the file system.

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
:func:`avsc.features.preprocess.warm_up` for a generic x86-64 CPU (``NUMBA_CPU_NAME=generic``,
so they are valid on any node), in a read-only folder named by ``AVSC_NUMBA_CACHE_SEED``;
:func:`use_writable_caches` copies them into an empty ``NUMBA_CACHE_DIR`` (3 MB, milliseconds).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


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
            log.warning("%s unset and %s not writable; could not create %s either (%s)",
                        variable, default, folder, exc)
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
        log.warning("could not copy the prebuilt numba kernels from %s to %s (%s); librosa's "
                    "kernels will be compiled on first use", seed, target, exc)
        return False
    log.debug("numba cache %s seeded from %s", target, seed)
    return True


__all__ = ["SEED_VARIABLE", "is_writable", "seed_numba_cache", "use_writable_caches"]

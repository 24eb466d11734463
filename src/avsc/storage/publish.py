"""Publishing an output folder whole: readers see the previous run's folder or this run's,
never a mix of the two, and never a half-written one.

A command that writes several files that belong together (``avsc evaluate``'s report,
``avsc bundle``'s bundle) writes them into a staging folder through :func:`staged_output`,
which, when the block succeeds, records them in an :class:`~avsc.records.OutputManifest`
(``outputs.json``: the run id and each file's size and SHA-256) and publishes the folder:

- a local target is swapped in with one ``rename`` (``renameat2(RENAME_EXCHANGE)`` when the
  target exists, on Linux; elsewhere two renames, between which the folder is briefly
  absent, never mixed). A process killed at any moment leaves the previous folder intact
  (plus a hidden ``.NAME.staging-*`` folder beside it, which a later run may delete);
- an ``s3://`` target cannot be swapped (objects appear one by one): the old manifest is
  deleted first, then the files are uploaded, then the manifest, last, then the objects it
  does not list are deleted. A prefix without ``outputs.json`` holds no finished output.

A target that exists, is not empty and has no ``outputs.json`` is refused before any work
(it holds someone's files, or the output of an older avsc): nothing there is overwritten.

Example::

    with staged_output("runs/report", kind="evaluate", run_id="20260101-000000-1a2b3c4d") as folder:
        (folder / "metrics.json").write_text("{}")
    # runs/report now holds metrics.json and outputs.json
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from avsc.errors import DataError
from avsc.storage import locations
from avsc.storage.files import file_digest

if TYPE_CHECKING:
    from avsc.records import OutputManifest

log = logging.getLogger(__name__)

__all__ = ["staged_output", "output_manifest", "merge_output"]


def output_manifest(folder: Path, *, kind: str, run_id: str) -> OutputManifest:
    """The :class:`~avsc.records.OutputManifest` of every file under ``folder``."""
    from avsc.records import OutputFile, OutputManifest

    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative != OutputManifest.FILE_NAME:
            files[relative] = OutputFile(size=path.stat().st_size, sha256=file_digest(path))
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return OutputManifest(kind=kind, run_id=run_id, created=created, files=files)


@contextlib.contextmanager
def staged_output(
    target: str | os.PathLike[str], *, kind: str, run_id: str, replaces: str | None = None
) -> Iterator[Path]:
    """A local staging folder that replaces ``target`` (a folder or ``s3://`` prefix) whole
    when the block succeeds; on an error or a kill ``target`` keeps what it held.

    Args:
        target: the output folder.
        kind: the command writing it (recorded, and checked against an existing output).
        run_id: recorded in ``outputs.json`` (e.g. :func:`avsc.records.output_manifest.new_run_id`).
        replaces: a file that marks an output of this kind written before ``outputs.json``
            existed (``bundle.json``): a folder holding it may be replaced too.

    Raises:
        DataError: ``target`` holds files that no avsc run of this ``kind`` published.
        StoreError: the object store refused or could not be reached.
    """
    target = str(target)
    _check_replaceable(target, kind, replaces)
    if locations.is_remote(target):
        with tempfile.TemporaryDirectory(prefix="avsc-out-") as scratch:
            yield Path(scratch)
            _publish_remote(Path(scratch), target, output_manifest(Path(scratch), kind=kind, run_id=run_id))
        return
    path = Path(os.path.abspath(target))  # "." or "out/" name the folder itself
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        yield staging
        output_manifest(staging, kind=kind, run_id=run_id).write(staging)
        _check_replaceable(target, kind, replaces)  # again: another process may have written there meanwhile
        _swap_into_place(staging, path)
        log.debug("published %s (%s run %s)", path, kind, run_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a swap: the previous folder


def merge_output(folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy a published output folder into ``target``, a folder that holds other outputs too
    (a pipeline's output root: the report's files beside ``bundle/`` and ``embeddings/``).

    The files that ``target``'s previous ``outputs.json`` listed and this one does not (an
    earlier report's submissions) are deleted, and ``outputs.json`` is written last, so the
    files it lists are this run's. A ``folder`` without ``outputs.json`` is copied as it is.

    Raises:
        StoreError: the object store refused or could not be reached.
    """
    from avsc.records import OutputManifest

    folder, target = Path(folder), str(target)
    if OutputManifest.exists_in(folder):
        manifest = OutputManifest.read(folder)
        names = list(manifest.files)
    else:
        manifest = None
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    previous = OutputManifest.read(target) if OutputManifest.exists_in(target) else None
    locations.remove(OutputManifest.path_in(target))
    for name in names:
        locations.copy(folder / name, locations.join(target, *name.split("/")))
    if manifest is not None:
        manifest.write(target)
    for name in sorted(set(previous.files) - set(names)) if previous else []:
        locations.remove(locations.join(target, *name.split("/")))


def _check_replaceable(target: str, kind: str, replaces: str | None) -> None:
    from avsc.records import OutputManifest

    hint = "write into a new or empty folder, or delete this one"
    if locations.is_remote(target):
        found = locations.list_files(target)
        if not found:
            return
    else:
        path = Path(target)
        if not path.exists():
            return
        if not path.is_dir():
            raise DataError(path, "exists and is not a folder", hint)
        if not any(path.iterdir()):
            return
    if not OutputManifest.exists_in(target):
        if replaces and locations.exists(locations.join(target, replaces)):
            return
        raise DataError(
            target,
            f"holds files that no `avsc {kind}` run published (no "
            f"{OutputManifest.FILE_NAME}); refusing to mix them with this run's",
            hint,
        )
    previous = OutputManifest.read(target)
    if previous.kind != kind:
        raise DataError(target, f"holds the output of `avsc {previous.kind}`, not of `avsc {kind}`", hint)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Make ``staging`` the folder at ``target``; afterwards ``staging`` holds the old one."""
    if not target.exists():
        os.rename(staging, target)  # fails if ``target`` appeared meanwhile and is not empty
        return
    if _exchange(staging, target):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / "previous")
    os.rename(staging, target)
    os.rename(old, staging)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a filesystem or kernel without it
        return False
    raise OSError(code, f"cannot publish {a} as {b}: {os.strerror(code)}")


def _publish_remote(folder: Path, uri: str, manifest: OutputManifest) -> None:
    from avsc.records import OutputManifest
    from avsc.storage.sync import push_dir

    (folder / OutputManifest.FILE_NAME).unlink(missing_ok=True)  # one of a nested publish: rewritten last
    locations.remove(OutputManifest.path_in(uri))  # from now on the prefix holds no finished output
    push_dir(folder, uri, progress=False)
    manifest.write(uri)
    keep = set(manifest.files) | {OutputManifest.FILE_NAME}
    prefix = uri.rstrip("/") + "/"
    for location in locations.list_files(uri):
        if location[len(prefix) :] not in keep:
            locations.remove(location)  # a file of an earlier run

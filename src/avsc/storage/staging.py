"""Local stand-ins for locations, for tools that read and write local files only.

Keras models, a bundle, fusion outputs, a report and (for some readers) a manifest are
used through a local path; :mod:`avsc.storage.locations` reads and writes everything else in
place. Here an ``s3://`` input is copied into a temporary folder for the length of a block
(:func:`local_copy`, :func:`local_inputs`), and an ``s3://`` output is written into one and
pushed when the block succeeds (:func:`output_folder`); both go through
:mod:`avsc.storage.sync`, verified. A local location is used as it is, nothing copied. An
output folder that must replace the previous one whole goes through
:func:`avsc.storage.publish.staged_output` instead.

Example::

    with local_copy("s3://avsc/runs/r1/bundle") as folder:
        load_bundle(folder)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from avsc.storage.locations import copy, exists, list_files, name_of
from avsc.storage.s3 import S3Settings, is_remote

__all__ = ["any_remote", "local_copy", "local_inputs", "output_folder"]


@contextlib.contextmanager
def local_copy(
    location: str | os.PathLike, *, include: list[str] | None = None, settings: S3Settings | None = None
) -> Iterator[Path]:
    """A local path holding what is at ``location``, for tools that read local files only
    (Keras models, a bundle, fusion outputs, a manifest): the one way avsc reads an ``s3://``
    input it cannot read in place.

    A local ``location`` is itself, nothing copied. An ``s3://`` object is downloaded into a
    temporary file of the same name, an ``s3://`` prefix into a temporary folder (only the keys
    of ``include``, relative to it, when given); both are verified
    (:mod:`avsc.storage.sync`) and removed when the block ends.

    Raises:
        StoreError: nothing at ``location``, a key of ``include`` missing, or the object
            store refused or could not be reached.

    Example::

        with local_copy("s3://avsc/runs/r1/bundle") as folder:
            load_bundle(folder)
    """
    location = str(location)
    if not is_remote(location):
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="avsc-in-") as scratch:
        if include is None and exists(location, settings=settings):  # one object
            local = Path(scratch) / name_of(location)
            copy(location, local, settings=settings)
            yield local
            return
        from avsc.storage import sync

        sync.pull_dir(location, scratch, include=include, settings=settings, progress=False)
        yield Path(scratch)


def any_remote(*values: Any) -> bool:
    """Whether any of ``values`` (locations, or mappings of them) is an ``s3://`` URI."""
    flat = [v for value in values for v in (value.values() if isinstance(value, Mapping) else [value])]
    return any(is_remote(str(v)) for v in flat if v is not None)


def local_inputs(stack: contextlib.ExitStack, value: Any, *, settings: S3Settings | None = None) -> Any:
    """``value`` (a location, or a mapping name -> location) with each ``s3://`` entry replaced
    by its :func:`local_copy`, which lives as long as ``stack``. Local entries (and None) are
    passed through as they are."""
    if isinstance(value, Mapping):
        return {key: local_inputs(stack, v, settings=settings) for key, v in value.items()}
    if value is None or not is_remote(str(value)):
        return value
    return stack.enter_context(local_copy(value, settings=settings))


@contextlib.contextmanager
def output_folder(
    location: str | os.PathLike, *, pull_existing: bool = False, settings: S3Settings | None = None
) -> Iterator[Path]:
    """A local folder to write outputs into; pushed to ``location`` if the block succeeds.

    A local ``location`` is used as it is (created). For ``s3://`` a temporary folder is
    yielded (holding a copy of what is already there when ``pull_existing``, so work done
    before can be found and skipped), and every file in it is uploaded (atomically per
    object; unchanged ones are skipped) once the block returns.
    """
    location = str(location)
    if not is_remote(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    from avsc.storage import sync

    with tempfile.TemporaryDirectory(prefix="avsc-out-") as scratch:
        if pull_existing and list_files(location, settings=settings):
            sync.pull_dir(location, scratch, settings=settings, progress=False)
        yield Path(scratch)
        sync.push_dir(scratch, location, settings=settings, progress=False)

"""OutputManifest: the files of one run's output folder, so a folder never mixes two runs."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from collections.abc import Mapping
from typing import ClassVar

from avsc.records._base import Record

__all__ = ["OutputManifest", "OutputFile", "new_run_id"]


def new_run_id(now: _dt.datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxxxxxx``: the UTC time and 8 random hex digits.

    >>> new_run_id(_dt.datetime(2026, 1, 2, 3, 4, 5))[:16]
    '20260102-030405-'
    """
    now = now or _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class OutputFile:
    """One file of an output folder: its size in bytes and the SHA-256 of its content."""

    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class OutputManifest(Record):
    """``outputs.json``: which run wrote an output folder (a report, a fusion model, a bundle)
    and every file it wrote, written last.

    On a local folder the whole folder is published at once (:mod:`avsc.storage.publish`), so
    the manifest and the files always agree. On an ``s3://`` prefix, where objects appear one
    by one, the manifest is uploaded after every file it lists and objects it does not list
    are deleted afterwards: a reader that finds the manifest reads the files it names (and can
    check their hashes); a prefix without one holds no finished output.

    Attributes:
        kind: the command that wrote the folder (``evaluate``, ``fuse``, ``bundle``).
        run_id: the run that wrote it (the same id as in its provenance, where it has one).
        created: when it was published (UTC, ISO 8601).
        files: path relative to the folder (``/``-separated) -> :class:`OutputFile`.
    """

    FILE_NAME: ClassVar[str] = "outputs.json"
    FORMAT: ClassVar[str] = "avsc-outputs"
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "the avsc command that wrote the folder"

    kind: str
    run_id: str
    created: str
    files: Mapping[str, OutputFile]

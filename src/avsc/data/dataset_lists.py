"""A dataset's files and split lists: where they are below the root and what they list.

The TAU Urban Audio-Visual Scenes 2021 archives put ``evaluation_setup/fold1_train.csv``,
``fold1_evaluate.csv`` and ``meta.csv`` wherever they were extracted; this module finds them
(the shallowest match wins), reads them as TAB-separated lists with a header, and finds the
folder their media paths are relative to. A dataset is a local folder or an ``s3://``
prefix, listed once; nothing is copied.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from avsc.errors import DataError
from avsc.storage import locations

log = logging.getLogger(__name__)

FOLD_FILES = {"train": "fold1_train.csv", "evaluate": "fold1_evaluate.csv"}
_SEARCH_DEPTH = 3  # how far below the root the metadata may sit
_LIST_COLUMNS = ("filename_audio", "filename_video", "scene_label")


@dataclass
class ListRow:
    """One row of a split list.

    Attributes:
        source: which list, and line, e.g. ``"fold1_train.csv:12"``.
        fold: ``train`` or ``evaluate``.
        video, audio: the file names as written in the list.
        label: the scene label as written.
    """

    source: str
    fold: str
    video: str
    audio: str
    label: str


class DatasetFiles:
    """The files of a dataset, listed once: a local folder or an ``s3://`` prefix.

    Paths are relative POSIX paths below the root; nothing is copied. A remote dataset's
    lists are read with GETs and its media probed through presigned URLs.

    Raises:
        DataError: the folder does not exist, or the prefix holds no object.
    """

    def __init__(self, root: str | Path):
        self.root = str(root)
        self.remote = locations.is_remote(self.root)
        if not self.remote and not Path(self.root).is_dir():
            raise DataError(
                root, "dataset folder not found", "give the folder that holds audio/, video/ and the metadata"
            )
        base = self.root.rstrip("/")
        self.files = {
            location[len(base) :].lstrip("/").replace(os.sep, "/") for location in locations.list_files(self.root)
        }
        if self.remote and not self.files:
            raise DataError(
                root,
                "no objects under this prefix",
                "check the URI (`avsc data ls`), or push the dataset first (`avsc data push`)",
            )

    def location(self, relative: str) -> Path | str:
        """The file as a local Path or an ``s3://`` URI."""
        if self.remote:
            return locations.join(self.root, *relative.split("/"))
        return Path(self.root, *relative.split("/"))

    def is_file(self, relative: str) -> bool:
        return posixpath.normpath(relative) in self.files


def find_metadata(dataset_root: str | Path) -> dict[str, Path | str]:
    """Where the split lists (and ``meta.csv``, if any) are below ``dataset_root``.

    Returns a dict with keys ``train``, ``evaluate`` and, when found, ``meta``: Paths, or
    ``s3://`` URIs for a remote dataset. The shallowest match wins, so
    ``<root>/evaluation_setup/`` beats a copy deeper down.

    Raises:
        DataError: the root is missing, or no ``fold1_train.csv``/``fold1_evaluate.csv``.
    """
    files = DatasetFiles(dataset_root)
    return {key: files.location(relative) for key, relative in find_lists(files).items()}


def find_lists(files: DatasetFiles) -> dict[str, str]:
    """:func:`find_metadata`'s answer as paths relative to the dataset's root."""
    wanted = {"train": FOLD_FILES["train"], "evaluate": FOLD_FILES["evaluate"], "meta": "meta.csv"}
    found: dict[str, str] = {}
    for depth in range(_SEARCH_DEPTH + 1):
        for key, name in wanted.items():
            if key in found:
                continue
            matches = sorted(f for f in files.files if f.count("/") == depth and posixpath.basename(f) == name)
            if matches:
                found[key] = matches[0]
    missing = [wanted[k] for k in ("train", "evaluate") if k not in found]
    if missing:
        raise DataError(
            files.root,
            f"no {' or '.join(missing)} found in it or up to {_SEARCH_DEPTH} folders below",
            "extract the dataset's meta archive (evaluation_setup/) into this folder",
        )
    return found


def read_tsv(files: DatasetFiles, relative: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a TAB-separated list with a header, as (line number, row).

    Raises:
        DataError: not UTF-8 text, or a required column is missing (naming the file).
    """
    path = files.location(relative)
    try:
        # utf-8-sig: lists saved by Excel or other Windows tools start with a byte-order
        # mark, which would otherwise become part of the first column's name.
        text = locations.read_bytes(path).decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(
                path,
                f"lacks column(s) {', '.join(missing)} (has: {', '.join(header) or 'no header'})",
                "the lists must be TAB-separated with a header line",
            )
        return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text file") from None


def read_identifiers(files: DatasetFiles, lists: dict[str, str]) -> dict[str, str]:
    """Clip id -> recording location (``meta.csv``'s ``identifier``); empty without a usable
    ``meta.csv`` (a broken one is logged and ignored: the file names name the location too)."""
    if "meta" not in lists:
        return {}
    try:
        meta_rows = read_tsv(files, lists["meta"], ("filename_video", "identifier"))
    except DataError as exc:
        log.warning("ignoring meta.csv: %s", exc)
        return {}
    return {
        Path(row["filename_video"]).stem: row["identifier"]
        for _, row in meta_rows
        if row.get("filename_video") and row.get("identifier")
    }


def read_list_rows(files: DatasetFiles, lists: dict[str, str]) -> list[ListRow]:
    """Every row of ``fold1_train.csv``, then of ``fold1_evaluate.csv``.

    Raises:
        DataError: a list is unreadable or lacks a column, or both lists are empty.
    """
    rows: list[ListRow] = []
    for fold in ("train", "evaluate"):
        for line, row in read_tsv(files, lists[fold], _LIST_COLUMNS):
            rows.append(
                ListRow(
                    source=f"{posixpath.basename(lists[fold])}:{line}",
                    fold=fold,
                    video=row.get("filename_video", ""),
                    audio=row.get("filename_audio", ""),
                    label=row.get("scene_label", ""),
                )
            )
    if not rows:
        raise DataError(files.location(posixpath.dirname(lists["train"])), "the split lists have no rows")
    return rows


def media_root(files: DatasetFiles, lists: dict[str, str], rows: list[ListRow]) -> str:
    """The folder (relative to the root, "" for the root) the lists' paths are relative to."""
    candidates = [""]
    for relative in lists.values():
        parent = posixpath.dirname(relative)
        while parent:
            candidates.append(parent)
            parent = posixpath.dirname(parent)
    for candidate in candidates:
        if any(files.is_file(posixpath.join(candidate, r.video)) for r in rows[:50] if r.video):
            return candidate
    return ""

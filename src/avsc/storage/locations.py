"""One way to read and write a *location*: a local path or an ``s3://bucket/key`` URI.

Every stage that takes a dataset, manifest, feature store, model folder or output folder
goes through these functions, so each accepts both kinds of location:

- reads use pyarrow's filesystems (:class:`pyarrow.fs.LocalFileSystem`,
  :class:`pyarrow.fs.S3FileSystem` built from :class:`avsc.storage.s3.S3Settings`), which
  read objects with HTTP range requests: :func:`open_input` gives a seekable file, so a
  Parquet reader fetches only the byte ranges it needs (one feature's column chunk, never
  the whole object);
- writes are atomic per file: a local file is written beside its target and renamed
  (:func:`avsc.storage.files.atomic_path`); an object is sent with the ``minio`` client as one
  PUT (or a multipart upload that is aborted on failure), so readers see the whole object
  or nothing;
- ffmpeg reads a media object through a presigned URL (:func:`ffmpeg_input`), with range
  requests too;
- files and folders the library only knows how to use locally (a Keras model, a bundle, a
  report) are staged through a local copy (:mod:`avsc.storage.staging`).

Credentials come from ``AVSC_S3_*`` (:meth:`~avsc.storage.s3.S3Settings.from_env`), read when a
remote location is first used, never at import; the clients are shared
(:mod:`avsc.storage.connections`).

Example::

    write_bytes("s3://avsc/runs/r1/notes.txt", b"hello")
    read_bytes("s3://avsc/runs/r1/notes.txt")  # b'hello'
    with open_input("features/parts/train/shard-00000-of-00001-00000.parquet") as f: ...
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
from pathlib import Path
from typing import Any

from avsc.errors import StoreError
from avsc.storage.connections import filesystem_of, mapped_errors, session_for
from avsc.storage.files import atomic_path
from avsc.storage.s3 import S3Settings, is_remote, parse_uri

log = logging.getLogger(__name__)

__all__ = [
    "join",
    "is_remote",
    "name_of",
    "exists",
    "list_files",
    "file_stats",
    "read_bytes",
    "open_input",
    "write_bytes",
    "read_json",
    "write_json",
    "copy",
    "remove",
    "ffmpeg_input",
    "read_parquet",
]


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location`` with ``parts`` appended: ``/`` for a URI, the OS separator for a path."""
    location = str(location)
    if is_remote(location):
        return posixpath.join(location.rstrip("/"), *[p.strip("/") for p in parts])
    return os.path.join(location, *parts)


def name_of(location: str | os.PathLike) -> str:
    """The last component of a location (``s3://b/x/y.parquet`` -> ``y.parquet``)."""
    return posixpath.basename(str(location).rstrip("/"))


# ---------------------------------------------------------------- reading


def exists(location: str | os.PathLike, *, settings: S3Settings | None = None) -> bool:
    """Whether a file (or object) exists at ``location``."""
    import pyarrow.fs as pafs

    fs, path = filesystem_of(location, settings)
    with mapped_errors(str(location), settings):
        return fs.get_file_info(path).type == pafs.FileType.File


def list_files(location: str | os.PathLike, *, suffix: str = "", settings: S3Settings | None = None) -> list[str]:
    """Every file below ``location`` (recursive) whose name ends with ``suffix``, sorted.

    Returns full locations of the same kind as ``location``; an absent folder lists nothing.
    Temporary files of atomic writes (names starting with ``.``) are left out.
    """
    import pyarrow.fs as pafs

    location = str(location)
    fs, path = filesystem_of(location, settings)
    with mapped_errors(location, settings):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.base_name.endswith(suffix):
            continue
        if info.base_name.startswith("."):
            continue
        relative = info.path[len(path) :].lstrip("/")
        out.append(join(location, *relative.split("/")))
    return sorted(out)


def file_stats(files: list[str], *, settings: S3Settings | None = None) -> dict[str, tuple[int, int] | None]:
    """``(size in bytes, modification time in ns)`` of each file (None when absent).

    Files of one folder are listed together (one LIST per folder on ``s3://``, where the
    time is the object's Last-Modified), so thousands of clips cost a few requests.
    """
    import pyarrow.fs as pafs

    by_folder: dict[str, list[str]] = {}
    for location in files:
        by_folder.setdefault(posixpath.dirname(str(location).replace(os.sep, "/")), []).append(str(location))
    out: dict[str, tuple[int, int] | None] = {}
    for folder, members in by_folder.items():
        fs, path = filesystem_of(folder, settings)
        with mapped_errors(folder, settings):
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        found = {info.base_name: info for info in infos if info.type == pafs.FileType.File}
        for location in members:
            info = found.get(posixpath.basename(location.replace(os.sep, "/")))
            out[location] = None if info is None else (int(info.size), int(info.mtime_ns or 0))
    return out


def open_input(location: str | os.PathLike, *, settings: S3Settings | None = None):
    """A seekable, read-only pyarrow file at ``location``: a memory map of a local file (its
    pages are read as they are touched, without copies), ranged GETs on a remote object.

    Raises:
        FileNotFoundError: nothing there.
        StoreError: the object store refused or could not be reached.
    """
    location = str(location)
    if not is_remote(location):
        import pyarrow as pa

        if not os.path.isfile(location):
            raise FileNotFoundError(location)
        return pa.memory_map(location, "r")
    fs, path = filesystem_of(location, settings)
    with mapped_errors(location, settings):
        return fs.open_input_file(path)


def read_bytes(location: str | os.PathLike, *, settings: S3Settings | None = None) -> bytes:
    """The whole content of a file or object (for small files: JSON, manifests, lists).

    An object is fetched with one GET, so a file that is rewritten while it is read (a
    checkpoint's ``state.json``) comes back as one whole version, never a mix of two.

    Raises:
        FileNotFoundError: nothing there.
        StoreError: the object store refused or could not be reached.
    """
    location = str(location)
    if not is_remote(location):
        return Path(location).read_bytes()
    from minio.error import S3Error

    bucket, key = parse_uri(location)
    session = session_for(bucket, settings)

    def fetch() -> bytes:
        try:
            response = session.client.get_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise FileNotFoundError(location) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    try:
        return session.call(fetch, key)
    except StoreError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise FileNotFoundError(location) from None
        raise


def read_json(location: str | os.PathLike, *, settings: S3Settings | None = None) -> Any:
    """The JSON document in a file or object (read whole, with :func:`read_bytes`).

    Raises:
        FileNotFoundError: nothing there.
        json.JSONDecodeError: not JSON.
        StoreError: the object store refused or could not be reached.
    """
    return json.loads(read_bytes(location, settings=settings))


def read_parquet(
    location: str | os.PathLike, *, what: str, hint: str, kind: str = "Parquet file", settings: S3Settings | None = None
):
    """The whole Parquet table at ``location`` (a file or ``s3://`` object), read through
    :func:`open_input`.

    Raises:
        DataError: nothing there (``"<what> not found"`` with ``hint``), or not a readable
            ``kind`` (the reader's reason).
        StoreError: the object store refused or could not be reached.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from avsc.errors import DataError

    if not exists(location, settings=settings):
        raise DataError(location, f"{what} not found", hint)
    try:
        with open_input(location, settings=settings) as handle:
            return pq.read_table(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(location, f"not a readable {kind} ({exc})") from None


# ---------------------------------------------------------------- writing


def write_bytes(location: str | os.PathLike, data: bytes, *, settings: S3Settings | None = None) -> None:
    """Write ``data`` to ``location`` atomically (readers see all of it or nothing).

    A remote object is one PUT, or a multipart upload the client aborts if any part fails.
    """
    location = str(location)
    if not is_remote(location):
        with atomic_path(location) as tmp:
            tmp.write_bytes(data)
        return
    bucket, key = parse_uri(location)
    if not key:
        raise StoreError(f"{location}: names a bucket, not an object")
    session = session_for(bucket, settings)
    session.call(lambda: session.client.put_object(bucket, key, io.BytesIO(data), len(data)), key)


def write_json(location: str | os.PathLike, data: Any, *, settings: S3Settings | None = None) -> None:
    """``data`` as indented, key-sorted JSON, written atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes(location, text.encode(), settings=settings)


def copy(source: str | os.PathLike, target: str | os.PathLike, *, settings: S3Settings | None = None) -> None:
    """Copy a file from one location to another, atomically: a local copy, a server-side copy
    between two ``s3://`` objects, or a verified upload (:func:`avsc.storage.sync.push_file`)
    or download (:func:`avsc.storage.sync.pull_file`) between the two kinds.

    Raises:
        StoreError: the object store refused or could not be reached; no such object.
    """
    source, target = str(source), str(target)
    if is_remote(source) != is_remote(target):
        from avsc.storage import sync

        if is_remote(target):
            sync.push_file(source, target, settings=settings)
        else:
            sync.pull_file(source, target, settings=settings)
        return
    if not is_remote(source):
        import shutil

        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        return
    from minio.commonconfig import CopySource

    src_bucket, src_key = parse_uri(source)
    bucket, key = parse_uri(target)
    session = session_for(bucket, settings)
    session.call(lambda: session.client.copy_object(bucket, key, CopySource(src_bucket, src_key)), key)


def remove(location: str | os.PathLike, *, settings: S3Settings | None = None) -> None:
    """Delete a file or object; nothing happens when it is not there."""
    location = str(location)
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    bucket, key = parse_uri(location)
    session = session_for(bucket, settings)
    session.call(lambda: session.client.remove_object(bucket, key), key)


def ffmpeg_input(location: str | os.PathLike, *, expires_s: int = 6 * 3600, settings: S3Settings | None = None) -> str:
    """What to give ffmpeg's ``-i`` for a media file: the local path, or a presigned URL.

    ffmpeg reads the URL with HTTP range requests (it seeks to an MP4's index and reads only
    what it decodes), so nothing is copied to disk. The URL carries a signature: never log
    it or write it to a file; name the ``s3://`` location in messages instead.
    """
    location = str(location)
    if not is_remote(location):
        return location
    from datetime import timedelta

    bucket, key = parse_uri(location)
    session = session_for(bucket, settings)
    return session.call(
        lambda: session.client.presigned_get_object(bucket, key, expires=timedelta(seconds=expires_s)), key
    )

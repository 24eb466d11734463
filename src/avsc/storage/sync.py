"""Copying folders to and from an S3-compatible object store: parallel, resumable, verified.

Transfers are parallel, resumable and verified:

- ``push_dir`` skips objects whose size and SHA-256 (kept in the object's user metadata
  ``x-amz-meta-sha256``; for objects written by other tools, the single-part ETag, an MD5)
  match the local file, hashes the bytes while it sends them and refuses to complete an
  upload whose bytes changed under it, and checks the stored size afterwards. A single PUT
  is atomic; a failed multipart upload is aborted, so no partial object is left behind.
- ``pull_dir`` downloads each object with ``Minio.fget_object`` into a temporary file beside the
  target and renames it into place after checking size and SHA-256, so a killed pull never
  leaves a truncated file; files that are already there with the same size (and hash, when the
  object records one) are skipped.
- Transient faults (connection errors, timeouts, HTTP 5xx, ``SlowDown``) are retried with
  exponential backoff; wrong credentials, a missing bucket or an unreachable endpoint end in a
  one-line :class:`~avsc.errors.StoreError` that says what to check.

Example:
    >>> settings = S3Settings.from_env()
    >>> push_dir("TAU-demo", "s3://avsc/datasets/demo", settings=settings)
    TransferResult(uploaded=241, skipped=0, bytes=30512345)
    >>> pull_dir("s3://avsc/datasets/demo", "local-copy", include=["meta.csv"])
    TransferResult(uploaded=1, skipped=0, bytes=5120)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from avsc.errors import StoreError
from avsc.storage.files import atomic_path, file_digest
from avsc.storage.s3 import (
    SHA256_META,
    S3Settings,
    Session,
    is_transient,
    join_key,
    parse_uri,
)

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TransferResult:
    """What a push or pull did.

    Attributes:
        uploaded: objects transferred (uploaded by a push, downloaded by a pull).
        skipped: objects already identical at the destination.
        bytes: bytes transferred (skipped objects not counted).
    """

    uploaded: int = 0
    skipped: int = 0
    bytes: int = 0


# ---------------------------------------------------------------- comparing

def _stored_sha256(stat) -> str | None:
    metadata = stat.metadata or {}
    value = metadata.get(f"x-amz-meta-{SHA256_META}") or metadata.get(f"X-Amz-Meta-{SHA256_META}")
    return value.strip().lower() if value else None


def _same_content(stat, path: Path, size: int, sha256: str) -> bool:
    """Does the object hold the bytes of ``path``? Size, then SHA-256, then single-part ETag."""
    if stat is None or stat.size != size:
        return False
    stored = _stored_sha256(stat)
    if stored:
        return stored == sha256
    etag = (stat.etag or "").strip('"').lower()
    if etag and "-" not in etag:  # a multipart ETag is not an MD5 of the content
        return etag == file_digest(path, "md5")
    return False


class _HashingReader:
    """A file reader for uploads: hashes what it hands out and reports progress.

    When the last expected byte has been read, the hash must equal the one recorded before
    the upload started; if the file changed in between, reading fails, so the single PUT is
    never sent or the multipart upload is aborted before completion.
    """

    def __init__(self, handle, path: Path, size: int, sha256: str, on_bytes: Callable[[int], Any]):
        self._handle, self._path, self._size = handle, path, size
        self._expected, self._on_bytes = sha256, on_bytes
        self._digest = hashlib.sha256()
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        self._read += len(data)
        self._on_bytes(len(data))
        if self._read >= self._size and self._digest.hexdigest() != self._expected:
            raise OSError(f"{self._path}: file changed while it was being uploaded")
        return data


# ---------------------------------------------------------------- progress

class _Progress:
    """A thread-safe tqdm byte counter (or nothing when disabled)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        self._lock = threading.Lock()
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                             unit_divisor=1024, dynamic_ncols=True)

    def add(self, n: int) -> None:
        if self._bar is not None and n:
            with self._lock:
                self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------- push

def _local_files(local_dir: Path) -> list[tuple[Path, str]]:
    """Every regular file under ``local_dir`` with its key relative to it (POSIX separators)."""
    files = []
    for root, dirs, names in os.walk(local_dir, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file():
                files.append((path, path.relative_to(local_dir).as_posix()))
    return files



class _LocalFileError(StoreError):
    """A local file could not be read or changed while it was sent; other files may go on."""


def _upload(session: Session, path: Path, key: str, progress: _Progress) -> tuple[bool, int]:
    """Upload one file unless the object already holds it: (uploaded?, bytes sent)."""
    try:
        size = path.stat().st_size
        sha256 = file_digest(path)
    except OSError as exc:
        raise _LocalFileError(f"{path}: cannot read ({exc.strerror or exc}); "
                              f"fix it and re-run to upload the rest") from exc
    if _same_content(session.stat(key), path, size, sha256):
        progress.add(size)
        return False, 0

    def put() -> None:
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            progress.add(n)
        try:
            with open(path, "rb") as handle:
                reader = _HashingReader(handle, path, size, sha256, counted)
                session.client.put_object(session.bucket, key, reader, size,
                                          metadata={SHA256_META: sha256})
        except BaseException:
            progress.add(-sent)  # a retried attempt counts its bytes again
            raise

    try:
        session.call(put, key)
    except StoreError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and not is_transient(cause):
            raise _LocalFileError(f"{path}: not uploaded ({cause.strerror or cause}); "
                                  f"re-run to retry it") from cause
        raise
    stat = session.stat(key)
    if stat is None or stat.size != size or _stored_sha256(stat) != sha256:
        found = "missing" if stat is None else f"{stat.size} bytes"
        raise StoreError(f"s3://{session.bucket}/{key}: stored object does not match {path} "
                         f"after upload ({found}, expected {size} bytes); re-run the push")
    return True, size


def push_file(path: str | Path, uri: str, *, settings: S3Settings | None = None) -> TransferResult:
    """Upload one file to the object ``uri`` (``s3://bucket/key``) unless it is already there.

    Raises:
        StoreError: ``path`` is not a file or the upload failed (the message says why).
    """
    path = Path(path)
    bucket, key = parse_uri(uri)
    if not key:
        raise StoreError(f"{uri}: names a bucket, not an object (expected s3://bucket/key)")
    if not path.is_file():
        raise StoreError(f"{path}: not a file, nothing to upload")
    session = Session(settings, bucket)
    session.check_bucket(key)
    uploaded, sent = _upload(session, path, key, _Progress(0, "", enabled=False))
    return TransferResult(uploaded=int(uploaded), skipped=int(not uploaded), bytes=sent)


def push_dir(local_dir: str | Path, uri: str, *, settings: S3Settings | None = None,
             workers: int = 8, progress: bool = True) -> TransferResult:
    """Upload every file under ``local_dir`` to ``uri`` (``s3://bucket/prefix``), in parallel.

    ``local_dir/a/b.wav`` becomes ``s3://bucket/prefix/a/b.wav``. Objects that already hold the
    same bytes (size and SHA-256) are skipped, so an interrupted push resumes where it stopped.
    A file that cannot be read, or changes while it is sent, leaves no object behind; the
    other files are still uploaded and the error lists the files to fix.

    Args:
        local_dir: folder to upload (a dataset, a feature store, a model bundle).
        uri: destination ``s3://bucket/prefix``; the bucket must exist.
        settings: endpoint and credentials; default from ``AVSC_S3_*``.
        workers: files uploaded at the same time.
        progress: show a tqdm bar in bytes.

    Raises:
        StoreError: bad credentials, missing bucket, unreachable endpoint, or files left out.
    """
    local_dir = Path(local_dir)
    bucket, prefix = parse_uri(uri)
    if not local_dir.is_dir():
        raise StoreError(f"{local_dir}: not a folder, nothing to push")
    files = _local_files(local_dir)
    session = Session(settings, bucket)
    session.check_bucket(prefix)
    total = sum(path.stat().st_size for path, _ in files)
    bar = _Progress(total, f"push {uri}", enabled=progress)
    stop = threading.Event()

    def one(path: Path, relative: str) -> tuple[bool, int] | None:
        if stop.is_set():
            return None
        try:
            return _upload(session, path, join_key(prefix, relative), bar)
        except _LocalFileError:
            raise
        except BaseException:
            stop.set()  # the store itself failed: do not hammer it with the remaining files
            raise

    uploaded = skipped = sent = 0
    local_failures: list[str] = []
    store_failure: StoreError | None = None
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(one, path, relative) for path, relative in files]
            for future in concurrent.futures.as_completed(futures):
                try:
                    outcome = future.result()
                except _LocalFileError as exc:
                    local_failures.append(str(exc))
                    continue
                except StoreError as exc:
                    store_failure = store_failure or exc
                    continue
                if outcome is None:
                    continue
                done, nbytes = outcome
                uploaded += done
                skipped += not done
                sent += nbytes
    finally:
        bar.close()
    if store_failure is not None:
        raise StoreError(f"{store_failure} ({uploaded} uploaded, {skipped} already there; "
                         f"re-run to resume)")
    if local_failures:
        more = f" and {len(local_failures) - 1} more" if len(local_failures) > 1 else ""
        raise StoreError(f"{len(local_failures)} of {len(files)} files not pushed to {uri}: "
                         f"{local_failures[0]}{more}")
    log.debug("pushed %s to %s: %d uploaded, %d skipped, %d bytes", local_dir, uri,
             uploaded, skipped, sent)
    return TransferResult(uploaded=uploaded, skipped=skipped, bytes=sent)


# ---------------------------------------------------------------- pull and list

@dataclass(frozen=True)
class StoredObject:
    """One object under a prefix: ``key`` relative to the prefix, ``size`` in bytes."""

    key: str
    size: int
    etag: str
    last_modified: Any


def list_objects(uri: str, *, settings: S3Settings | None = None) -> list[StoredObject]:
    """Every object under ``uri`` (recursive), with keys relative to its prefix, sorted.

    Raises:
        StoreError: bad credentials, missing bucket or unreachable endpoint.
    """
    bucket, prefix = parse_uri(uri)
    session = Session(settings, bucket)
    session.check_bucket(prefix)
    return _relative_objects(session, prefix)


def _relative_objects(session: Session, prefix: str) -> list[StoredObject]:
    cut = len(prefix) + 1 if prefix else 0
    objects = [StoredObject(key=obj.object_name[cut:], size=int(obj.size or 0),
                            etag=(obj.etag or "").strip('"'), last_modified=obj.last_modified)
               for obj in session.list(prefix)]
    return sorted(objects, key=lambda obj: obj.key)


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted.

    Its parts take space in the bucket (and are billed) but are no object: a process killed
    during a large upload leaves one behind. ``key`` is the object's full key.
    """

    key: str
    upload_id: str
    initiated: Any  # datetime (UTC) or None when the service does not say


def list_incomplete_uploads(uri: str, *, settings: S3Settings | None = None) -> list[IncompleteUpload]:
    """Every incomplete multipart upload of an object under ``uri`` (``s3://bucket/prefix``),
    oldest first.

    Raises:
        StoreError: bad credentials, missing bucket or unreachable endpoint.
    """
    bucket, prefix = parse_uri(uri)
    session = Session(settings, bucket)
    uploads: list[IncompleteUpload] = []
    key_marker = upload_id_marker = None
    while True:
        # ListMultipartUploads has no public wrapper in the minio client; its private one
        # builds and signs the request, which is all that is needed here.
        page = session.call(lambda key_marker=key_marker, upload_id_marker=upload_id_marker:
                            session.client._list_multipart_uploads(
                                bucket, prefix=f"{prefix}/" if prefix else None, key_marker=key_marker,
                                upload_id_marker=upload_id_marker))
        uploads += [IncompleteUpload(key=up.object_name, upload_id=up.upload_id or "",
                                     initiated=up.initiated_time) for up in page.uploads]
        if not page.is_truncated or not page.uploads:
            break
        key_marker, upload_id_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id
    return sorted(uploads, key=lambda up: (up.initiated is None, up.initiated or 0, up.key))


def abort_incomplete_uploads(uri: str, *, older_than_s: float = 3600.0,
                             settings: S3Settings | None = None) -> list[IncompleteUpload]:
    """Abort the incomplete multipart uploads under ``uri`` started more than ``older_than_s``
    seconds ago, freeing their parts; returns those aborted.

    A younger upload may belong to a transfer still running (aborting it would make that
    transfer fail and start over), so it is kept unless ``older_than_s`` is 0. An upload
    whose start time the service does not report is aborted only when ``older_than_s`` is 0.

    Raises:
        StoreError: bad credentials, missing bucket, unreachable endpoint, or an abort refused.
    """
    import datetime

    bucket, _ = parse_uri(uri)
    session = Session(settings, bucket)
    now = datetime.datetime.now(datetime.timezone.utc)
    aborted = []
    for up in list_incomplete_uploads(uri, settings=settings):
        if older_than_s > 0 and (up.initiated is None or
                                 (now - up.initiated).total_seconds() < older_than_s):
            continue
        session.call(lambda up=up: session.client._abort_multipart_upload(
            bucket, up.key, up.upload_id), up.key)
        aborted.append(up)
    return aborted


def _safe_target(local_dir: Path, relative: str, uri: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(part in ("..", ".") for part in parts):
        raise StoreError(f"{uri}/{relative}: key does not map to a path inside {local_dir}; "
                         f"refusing to write it")
    return local_dir.joinpath(*parts)


class _Received:
    """What ``Minio.fget_object`` reports as it writes: counted here and on the progress bar."""

    def __init__(self, progress: _Progress):
        self.bytes = 0
        self._progress = progress

    def set_meta(self, object_name: str, total_length: int) -> None:
        pass  # the bar's total is the whole pull, set before the first file

    def update(self, length: int) -> None:
        self.bytes += length
        self._progress.add(length)


def _download(session: Session, key: str, target: Path, size: int,
              progress: _Progress) -> tuple[bool, int]:
    """Fetch one object into ``target`` unless it is already there: (downloaded?, bytes)."""
    if target.is_file() and target.stat().st_size == size:
        stat = session.stat(key)
        stored = _stored_sha256(stat) if stat is not None else None
        if stat is not None and stat.size == size and (stored is None or
                                                       stored == file_digest(target)):
            progress.add(size)
            return False, 0

    def fetch() -> int:
        received = _Received(progress)
        try:
            with atomic_path(target) as tmp:
                part = tmp.with_name(tmp.name + ".part")
                try:
                    stat = session.client.fget_object(session.bucket, key, str(tmp),
                                                      tmp_file_path=str(part), progress=received)
                finally:
                    part.unlink(missing_ok=True)  # left behind when the transfer breaks off
                if received.bytes != size:
                    raise StoreError(f"s3://{session.bucket}/{key}: received {received.bytes} of "
                                     f"{size} bytes; re-run the pull")
                expected = _stored_sha256(stat)
                if expected and file_digest(tmp) != expected:
                    raise StoreError(f"s3://{session.bucket}/{key}: content does not match its "
                                     f"recorded SHA-256; re-upload it")
            return received.bytes
        except BaseException:
            progress.add(-received.bytes)  # a retried attempt counts its bytes again
            raise

    return True, session.call(fetch, key)


def pull_file(uri: str, path: str | Path, *,
              settings: S3Settings | None = None) -> TransferResult:
    """Download the object ``uri`` (``s3://bucket/key``) to ``path``, atomically.

    Raises:
        StoreError: the object does not exist, or the download failed.
    """
    path = Path(path)
    bucket, key = parse_uri(uri)
    if not key:
        raise StoreError(f"{uri}: names a bucket, not an object (expected s3://bucket/key)")
    session = Session(settings, bucket)
    session.check_bucket(key)
    stat = session.stat(key)
    if stat is None:
        raise StoreError(f"{uri}: no such object at {session.settings.url}; check the key "
                         f"(`avsc data ls s3://{bucket}/{key.rpartition('/')[0]}`)")
    downloaded, received = _download(session, key, path, int(stat.size),
                                     _Progress(0, "", enabled=False))
    return TransferResult(uploaded=int(downloaded), skipped=int(not downloaded), bytes=received)


def pull_dir(uri: str, local_dir: str | Path, *, settings: S3Settings | None = None,
             include: Iterable[str] | None = None, workers: int = 8,
             progress: bool = True) -> TransferResult:
    """Download every object under ``uri`` (``s3://bucket/prefix``) into ``local_dir``.

    ``s3://bucket/prefix/a/b.wav`` becomes ``local_dir/a/b.wav``. Each file is written to a
    temporary name and renamed after its size (and SHA-256, when recorded) checks out; files
    already present with the same size and hash are skipped, so a re-run resumes.

    Args:
        uri: source ``s3://bucket/prefix``.
        local_dir: destination folder (created if needed).
        settings: endpoint and credentials; default from ``AVSC_S3_*``.
        include: keys relative to the prefix to fetch (e.g. ``["meta.csv", "video/x.mp4"]``);
            None fetches everything. A key that is not in the store is an error.
        workers: objects downloaded at the same time.
        progress: show a tqdm bar in bytes.

    Returns:
        TransferResult whose ``uploaded`` counts the files downloaded.

    Raises:
        StoreError: nothing under the prefix, a requested key missing, bad credentials,
            missing bucket, unreachable endpoint.
    """
    local_dir = Path(local_dir)
    bucket, prefix = parse_uri(uri)
    session = Session(settings, bucket)
    session.check_bucket(prefix)
    objects = _relative_objects(session, prefix)
    if include is not None:
        wanted = {"/".join(p for p in str(key).replace("\\", "/").split("/") if p)
                  for key in include}
        available = {obj.key for obj in objects}
        missing = sorted(wanted - available)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                               if len(missing) > 5 else "")
            raise StoreError(f"{uri}: {len(missing)} requested object(s) not in the store: "
                             f"{shown}")
        objects = [obj for obj in objects if obj.key in wanted]
    elif not objects:
        raise StoreError(f"{uri}: no objects under this prefix at {session.settings.url}; "
                         f"check the URI (`avsc data ls s3://{bucket}`)")
    targets = [(obj, _safe_target(local_dir, obj.key, uri)) for obj in objects]
    local_dir.mkdir(parents=True, exist_ok=True)
    bar = _Progress(sum(obj.size for obj in objects), f"pull {uri}", enabled=progress)
    stop = threading.Event()

    def one(obj: StoredObject, target: Path) -> tuple[bool, int] | None:
        if stop.is_set():
            return None
        try:
            return _download(session, join_key(prefix, obj.key), target, obj.size, bar)
        except BaseException:
            stop.set()
            raise

    downloaded = skipped = received = 0
    failure: StoreError | None = None
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(one, obj, target) for obj, target in targets]
            for future in concurrent.futures.as_completed(futures):
                try:
                    outcome = future.result()
                except StoreError as exc:
                    failure = failure or exc
                    continue
                except OSError as exc:
                    failure = failure or StoreError(f"{local_dir}: cannot write "
                                                    f"({exc.strerror or exc})")
                    continue
                if outcome is None:
                    continue
                done, nbytes = outcome
                downloaded += done
                skipped += not done
                received += nbytes
    finally:
        bar.close()
    if failure is not None:
        raise StoreError(f"{failure} ({downloaded} downloaded, {skipped} already there; "
                         f"re-run to resume)")
    log.debug("pulled %s to %s: %d downloaded, %d skipped, %d bytes", uri, local_dir,
             downloaded, skipped, received)
    return TransferResult(uploaded=downloaded, skipped=skipped, bytes=received)

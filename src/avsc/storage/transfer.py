"""Moving one file to or from one object, verified: what push and pull do per object.

- :func:`upload` skips an object whose size and SHA-256 (kept in the object's user metadata
  ``x-amz-meta-sha256``; for objects written by other tools, the single-part ETag, an MD5)
  match the local file, hashes the bytes while it sends them and refuses to complete an
  upload whose bytes changed under it, and checks the stored size afterwards.
- :func:`download` writes into a temporary file beside the target and renames it into place
  after checking size and SHA-256, so a killed pull never leaves a truncated file.

Both retry through :meth:`avsc.storage.s3.Session.call` and report bytes to a
:class:`Progress`; :mod:`avsc.storage.sync` runs many of them in parallel.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from avsc.errors import StoreError
from avsc.storage.files import atomic_path, file_digest
from avsc.storage.s3 import SHA256_META, Session, is_transient

__all__ = ["Progress", "LocalFileError", "upload", "download"]


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


class Progress:
    """A thread-safe tqdm byte counter (or nothing when disabled)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        self._lock = threading.Lock()
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)

    def add(self, n: int) -> None:
        if self._bar is not None and n:
            with self._lock:
                self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LocalFileError(StoreError):
    """A local file could not be read or changed while it was sent; other files may go on."""


def upload(session: Session, path: Path, key: str, progress: Progress) -> tuple[bool, int]:
    """Upload one file unless the object already holds it: (uploaded?, bytes sent)."""
    try:
        size = path.stat().st_size
        sha256 = file_digest(path)
    except OSError as exc:
        raise LocalFileError(
            f"{path}: cannot read ({exc.strerror or exc}); fix it and re-run to upload the rest"
        ) from exc
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
                session.client.put_object(
                    session.bucket, key, cast(BinaryIO, reader), size, metadata={SHA256_META: sha256}
                )
        except BaseException:
            progress.add(-sent)  # a retried attempt counts its bytes again
            raise

    try:
        session.call(put, key)
    except StoreError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and not is_transient(cause):
            raise LocalFileError(f"{path}: not uploaded ({cause.strerror or cause}); re-run to retry it") from cause
        raise
    stat = session.stat(key)
    if stat is None or stat.size != size or _stored_sha256(stat) != sha256:
        found = "missing" if stat is None else f"{stat.size} bytes"
        raise StoreError(
            f"s3://{session.bucket}/{key}: stored object does not match {path} "
            f"after upload ({found}, expected {size} bytes); re-run the push"
        )
    return True, size


class _Received:
    """What ``Minio.fget_object`` reports as it writes: counted here and on the progress bar."""

    def __init__(self, progress: Progress):
        self.bytes = 0
        self._progress = progress

    def set_meta(self, object_name: str, total_length: int) -> None:
        pass  # the bar's total is the whole pull, set before the first file

    def update(self, length: int) -> None:
        self.bytes += length
        self._progress.add(length)


def download(session: Session, key: str, target: Path, size: int, progress: Progress) -> tuple[bool, int]:
    """Fetch one object into ``target`` unless it is already there: (downloaded?, bytes)."""
    if target.is_file() and target.stat().st_size == size:
        stat = session.stat(key)
        stored = _stored_sha256(stat) if stat is not None else None
        if stat is not None and stat.size == size and (stored is None or stored == file_digest(target)):
            progress.add(size)
            return False, 0

    def fetch() -> int:
        received = _Received(progress)
        try:
            with atomic_path(target) as tmp:
                part = tmp.with_name(tmp.name + ".part")
                try:
                    stat = session.client.fget_object(
                        session.bucket, key, str(tmp), tmp_file_path=str(part), progress=received
                    )
                finally:
                    part.unlink(missing_ok=True)  # left behind when the transfer breaks off
                if received.bytes != size:
                    raise StoreError(
                        f"s3://{session.bucket}/{key}: received {received.bytes} of {size} bytes; re-run the pull"
                    )
                expected = _stored_sha256(stat)
                if expected and file_digest(tmp) != expected:
                    raise StoreError(
                        f"s3://{session.bucket}/{key}: content does not match its recorded SHA-256; re-upload it"
                    )
            return received.bytes
        except BaseException:
            progress.add(-received.bytes)  # a retried attempt counts its bytes again
            raise

    return True, session.call(fetch, key)

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

One object's transfer and its checks: :mod:`avsc.storage.transfer`.

Example::

    settings = S3Settings.from_env()
    push_dir("TAU-demo", "s3://avsc/datasets/demo", settings=settings)
    # TransferResult(transferred=241, skipped=0, bytes=30512345)
    pull_dir("s3://avsc/datasets/demo", "local-copy", include=["meta.csv"])
    # TransferResult(transferred=1, skipped=0, bytes=5120)

Listing a prefix and cleaning up unfinished multipart uploads: :mod:`avsc.storage.objects`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from avsc.errors import StoreError
from avsc.storage.objects import StoredObject, objects_under
from avsc.storage.s3 import S3Settings, Session, join_key, parse_uri
from avsc.storage.transfer import LocalFileError, Progress, download, upload

log = logging.getLogger(__name__)

__all__ = ["TransferResult", "push_file", "push_dir", "pull_file", "pull_dir"]


@dataclass(frozen=True)
class TransferResult:
    """What a push or pull did.

    Attributes:
        transferred: objects transferred (uploaded by a push, downloaded by a pull).
        skipped: objects already identical at the destination.
        bytes: bytes transferred (skipped objects not counted).
    """

    transferred: int = 0
    skipped: int = 0
    bytes: int = 0


# ---------------------------------------------------------------- the transfer loop
def _object_key(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of one object's ``uri``; a URI naming only a bucket is refused."""
    bucket, key = parse_uri(uri)
    if not key:
        raise StoreError(f"{uri}: names a bucket, not an object (expected s3://bucket/key)")
    return bucket, key


def _transfer_all(
    tasks: Sequence[Callable[[], tuple[bool, int]]],
    *,
    workers: int,
    bar: Progress,
    done: str,
    write_error: Callable[[OSError], StoreError] | None = None,
) -> tuple[TransferResult, list[str]]:
    """Run ``tasks`` (each moves one object: ``(transferred?, bytes)``), ``workers`` at a time.

    A failure of the store stops the tasks not yet started (retrying them would only hammer
    it) and is raised with the counts so far (``done``: "uploaded", "downloaded"). A local
    file's :class:`LocalFileError` leaves the other files going on; their messages are
    returned. An ``OSError`` becomes ``write_error(exc)`` when given, else propagates.

    Returns:
        The counts, and the messages of the files left out.

    Raises:
        StoreError: the store failed (the message ends with how to resume).
    """
    stop = threading.Event()

    def one(task: Callable[[], tuple[bool, int]]) -> tuple[bool, int] | None:
        if stop.is_set():
            return None
        try:
            return task()
        except LocalFileError:
            raise
        except BaseException:
            stop.set()
            raise

    transferred = skipped = sent = 0
    left_out: list[str] = []
    failure: StoreError | None = None
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for future in concurrent.futures.as_completed([pool.submit(one, task) for task in tasks]):
                try:
                    outcome = future.result()
                except LocalFileError as exc:
                    left_out.append(str(exc))
                    continue
                except StoreError as exc:
                    failure = failure or exc
                    continue
                except OSError as exc:
                    if write_error is None:
                        raise
                    failure = failure or write_error(exc)
                    continue
                if outcome is not None:
                    transferred += outcome[0]
                    skipped += not outcome[0]
                    sent += outcome[1]
    finally:
        bar.close()
    if failure is not None:
        raise StoreError(f"{failure} ({transferred} {done}, {skipped} already there; re-run to resume)")
    return TransferResult(transferred=transferred, skipped=skipped, bytes=sent), left_out


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


def push_file(path: str | Path, uri: str, *, settings: S3Settings | None = None) -> TransferResult:
    """Upload one file to the object ``uri`` (``s3://bucket/key``) unless it is already there.

    Raises:
        StoreError: ``path`` is not a file or the upload failed (the message says why).
    """
    path = Path(path)
    bucket, key = _object_key(uri)
    if not path.is_file():
        raise StoreError(f"{path}: not a file, nothing to upload")
    session = Session(settings, bucket)
    session.check_bucket(key)
    uploaded, sent = upload(session, path, key, Progress(0, "", enabled=False))
    return TransferResult(transferred=int(uploaded), skipped=int(not uploaded), bytes=sent)


def push_dir(
    local_dir: str | Path, uri: str, *, settings: S3Settings | None = None, workers: int = 8, progress: bool = True
) -> TransferResult:
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
    bar = Progress(sum(path.stat().st_size for path, _ in files), f"push {uri}", enabled=progress)
    tasks = [
        lambda path=path, relative=relative: upload(session, path, join_key(prefix, relative), bar)
        for path, relative in files
    ]
    result, left_out = _transfer_all(tasks, workers=workers, bar=bar, done="uploaded")
    if left_out:
        more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
        raise StoreError(f"{len(left_out)} of {len(files)} files not pushed to {uri}: {left_out[0]}{more}")
    log.debug("pushed %s to %s: %s", local_dir, uri, result)
    return result


# ---------------------------------------------------------------- pull


def _safe_target(local_dir: Path, relative: str, uri: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(part in ("..", ".") for part in parts):
        raise StoreError(f"{uri}/{relative}: key does not map to a path inside {local_dir}; refusing to write it")
    return local_dir.joinpath(*parts)


def pull_file(uri: str, path: str | Path, *, settings: S3Settings | None = None) -> TransferResult:
    """Download the object ``uri`` (``s3://bucket/key``) to ``path``, atomically.

    Raises:
        StoreError: the object does not exist, or the download failed.
    """
    bucket, key = _object_key(uri)
    session = Session(settings, bucket)
    session.check_bucket(key)
    stat = session.stat(key)
    if stat is None:
        raise StoreError(
            f"{uri}: no such object at {session.settings.url}; check the key "
            f"(`avsc data ls s3://{session.bucket}/{key.rpartition('/')[0]}`)"
        )
    downloaded, received = download(session, key, Path(path), int(stat.size or 0), Progress(0, "", enabled=False))
    return TransferResult(transferred=int(downloaded), skipped=int(not downloaded), bytes=received)


def _chosen(
    objects: list[StoredObject], include: Iterable[str] | None, uri: str, session: Session
) -> list[StoredObject]:
    """The objects ``include`` names (keys relative to the prefix), or all of them.

    Raises:
        StoreError: a named key is not there; nothing there at all.
    """
    if include is None:
        if not objects:
            raise StoreError(
                f"{uri}: no objects under this prefix at {session.settings.url}; "
                f"check the URI (`avsc data ls s3://{session.bucket}`)"
            )
        return objects
    wanted = {"/".join(p for p in str(key).replace("\\", "/").split("/") if p) for key in include}
    missing = sorted(wanted - {obj.key for obj in objects})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise StoreError(f"{uri}: {len(missing)} requested object(s) not in the store: {shown}")
    return [obj for obj in objects if obj.key in wanted]


def pull_dir(
    uri: str,
    local_dir: str | Path,
    *,
    settings: S3Settings | None = None,
    include: Iterable[str] | None = None,
    workers: int = 8,
    progress: bool = True,
) -> TransferResult:
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
        TransferResult whose ``transferred`` counts the files downloaded.

    Raises:
        StoreError: nothing under the prefix, a requested key missing, bad credentials,
            missing bucket, unreachable endpoint.
    """
    local_dir = Path(local_dir)
    bucket, prefix = parse_uri(uri)
    session = Session(settings, bucket)
    session.check_bucket(prefix)
    objects = _chosen(objects_under(session, prefix), include, uri, session)
    targets = [(obj, _safe_target(local_dir, obj.key, uri)) for obj in objects]
    local_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(sum(obj.size for obj in objects), f"pull {uri}", enabled=progress)
    tasks = [
        lambda obj=obj, target=target: download(session, join_key(prefix, obj.key), target, obj.size, bar)
        for obj, target in targets
    ]
    result, _ = _transfer_all(
        tasks,
        workers=workers,
        bar=bar,
        done="downloaded",
        write_error=lambda exc: StoreError(f"{local_dir}: cannot write ({exc.strerror or exc})"),
    )
    log.debug("pulled %s to %s: %s", uri, local_dir, result)
    return result

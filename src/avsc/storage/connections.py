"""The connections behind a location, shared by every call of :mod:`avsc.storage.locations`.

- Reads go through pyarrow's filesystems (:func:`filesystem_of`): the local one, or one
  :class:`pyarrow.fs.S3FileSystem` per settings (ranged GETs, so a Parquet reader fetches only
  the byte ranges it needs); pyarrow's ``OSError`` on a remote location becomes a one-line
  :class:`~avsc.errors.StoreError` naming the URI and what to check (:func:`mapped_errors`).
- Writes, deletes, copies and presigned URLs go through one ``minio`` :class:`~avsc.storage.s3.Session`
  per settings and bucket (:func:`session_for`), which retries transient faults.

Settings default to ``AVSC_S3_*`` (:meth:`~avsc.storage.s3.S3Settings.from_env`), read when a remote
location is first used and again whenever those variables change, never at import.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from avsc.errors import StoreError
from avsc.storage.s3 import ENV_VARS, S3Settings, Session, is_remote, parse_uri

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["s3_filesystem", "filesystem_of", "mapped_errors", "session_for", "settings_or_env"]


@functools.lru_cache(maxsize=4)
def s3_filesystem(settings: S3Settings) -> pyarrow.fs.S3FileSystem:
    """A pyarrow S3 filesystem for ``settings`` (one per settings, shared by threads).

    Retries transient faults ``settings.retries`` times (AWS standard strategy) with the
    same connect and request timeouts as the ``minio`` client of :mod:`avsc.storage.s3`.
    """
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        region=settings.region or "us-east-1",
        scheme="https" if settings.secure else "http",
        endpoint_override=settings.endpoint,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max(1, settings.retries)),
        connect_timeout=settings.connect_timeout_s,
        request_timeout=settings.read_timeout_s,
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
    )


def settings_or_env(settings: S3Settings | None) -> S3Settings:
    """``settings``, or those of the environment (``AVSC_S3_*``)."""
    # Re-read when the variables change (tests set them per test); cached otherwise.
    return settings or _env_settings(tuple(os.environ.get(name) for name in ENV_VARS))


@functools.lru_cache(maxsize=1)
def _env_settings(key: tuple[str | None, ...]) -> S3Settings:
    """Settings from the environment, cached per value of the variables (``key``)."""
    return S3Settings.from_env()


def filesystem_of(location: str | os.PathLike, settings: S3Settings | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` of a location: the S3 filesystem and ``bucket/key``, or the local one."""
    import pyarrow.fs as pafs

    location = str(location)
    if is_remote(location):
        bucket, key = parse_uri(location)
        return s3_filesystem(settings_or_env(settings)), f"{bucket}/{key}" if key else bucket
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _remote_error(exc: BaseException, location: str, settings: S3Settings | None) -> StoreError:
    """A one-line StoreError for a pyarrow S3 failure, naming the URI and what to check."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    url = settings_or_env(settings).url
    if "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return StoreError(
            f"{location}: access denied by {url}; check AVSC_S3_ACCESS_KEY and "
            f"AVSC_S3_SECRET_KEY (Secret avsc-s3) and the key's rights on the bucket"
        )
    if "NETWORK_CONNECTION" in text or "Couldn't connect" in text or "curlCode" in text:
        return StoreError(
            f"cannot reach the object store at {url} ({text}); check AVSC_S3_ENDPOINT, AVSC_S3_SECURE and the network"
        )
    return StoreError(f"{location}: {text} ({url})")


@contextlib.contextmanager
def mapped_errors(location: str, settings: S3Settings | None = None) -> Iterator[None]:
    """Turn pyarrow's OSErrors on a remote location into StoreErrors; local ones pass."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if is_remote(location):
            raise _remote_error(exc, location, settings) from exc
        raise


def session_for(bucket: str, settings: S3Settings | None = None) -> Session:
    """The ``minio`` session of ``bucket`` (one per settings and bucket, shared)."""
    return _session(settings_or_env(settings), bucket)


@functools.lru_cache(maxsize=8)
def _session(settings: S3Settings, bucket: str) -> Session:
    return Session(settings, bucket)

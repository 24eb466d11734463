"""Datasets and outputs in an S3-compatible object store (MinIO, SeaweedFS, AWS S3).

Locations are URIs ``s3://bucket/prefix``. The endpoint and credentials come from environment
variables (in a cluster, set from the Kubernetes Secret ``avsc-s3``), never from arguments that
could end up in a compiled pipeline:

======================  =========================================================================
``AVSC_S3_ENDPOINT``    ``host:port`` or ``http(s)://host:port`` (the scheme sets ``secure``)
``AVSC_S3_ACCESS_KEY``  access key
``AVSC_S3_SECRET_KEY``  secret key
``AVSC_S3_REGION``      region (optional; e.g. ``us-east-1``)
``AVSC_S3_SECURE``      ``true`` (https, the default) or ``false`` (http); overrides the scheme
======================  =========================================================================

Transfers are parallel, resumable and verified:

- ``push_dir`` skips objects whose size and SHA-256 (kept in the object's user metadata
  ``x-amz-meta-sha256``; for objects written by other tools, the single-part ETag, an MD5)
  match the local file, hashes the bytes while it sends them and refuses to complete an
  upload whose bytes changed under it, and checks the stored size afterwards. A single PUT
  is atomic; a failed multipart upload is aborted, so no partial object is left behind.
- ``pull_dir`` downloads into a temporary file beside the target and renames it into place
  after checking size and SHA-256, so a killed pull never leaves a truncated file; files that
  are already there with the same size (and hash, when the object records one) are skipped.
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
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from avsc.errors import StoreError
from avsc.fileio import atomic_path

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger(__name__)

SCHEME = "s3://"
SHA256_META = "sha256"  # stored as the user metadata header x-amz-meta-sha256
ENV_VARS = ("AVSC_S3_ENDPOINT", "AVSC_S3_ACCESS_KEY", "AVSC_S3_SECRET_KEY",
            "AVSC_S3_REGION", "AVSC_S3_SECURE")
_SETUP_HINT = ("set them from the Secret avsc-s3 in a cluster, or export them for local use; "
               "see docs/objectstore.md")
# S3 error codes worth another try: the service is busy or hiccupped, not refusing.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed",
    "OperationAborted", "XMinioServerNotInitialized", "XMinioStorageFull",
})
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch",
                               "InvalidToken", "ExpiredToken"})
_CHUNK = 1 << 20

T = TypeVar("T")


# ---------------------------------------------------------------- locations and settings

def is_remote(location: str | os.PathLike | None) -> bool:
    """True when ``location`` is an ``s3://`` URI rather than a local path."""
    return isinstance(location, str) and location.startswith(SCHEME)


def parse_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix/`` into ``("bucket", "some/prefix")``.

    The prefix has no leading or trailing slash and is ``""`` for the whole bucket.

    Raises:
        StoreError: ``uri`` does not start with ``s3://`` or names no bucket.
    """
    if not is_remote(uri):
        raise StoreError(f"{uri}: not an object-store location "
                         f"(expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise StoreError(f"{uri}: no bucket name (expected s3://bucket/prefix)")
    prefix = "/".join(part for part in prefix.split("/") if part)
    return bucket, prefix


def _join_key(prefix: str, relative: str) -> str:
    return f"{prefix}/{relative}" if prefix else relative


@dataclass(frozen=True)
class S3Settings:
    """Where the object store is and how to talk to it.

    Attributes:
        endpoint: ``host[:port]`` without scheme.
        access_key, secret_key: credentials (left out of ``repr`` so they never reach a log).
        region: region name, or None to let the client ask the service.
        secure: https when True, http when False.
        retries: attempts per request for transient faults (connection errors, 5xx, SlowDown).
        backoff_s: delay before the second attempt; doubles for each further one.
        connect_timeout_s: how long to wait for a TCP connection before counting an attempt
            as failed (an unreachable endpoint fails after ``retries`` of these, not minutes).
        read_timeout_s: how long a started request may go without receiving data.
    """

    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str | None = None
    secure: bool = True
    retries: int = 4
    backoff_s: float = 0.5
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 120.0

    @property
    def url(self) -> str:
        """The endpoint as a URL, e.g. ``https://s3.example.internal:9000`` (no credentials)."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> S3Settings:
        """Read ``AVSC_S3_*`` from ``environ`` (default ``os.environ``).

        ``overrides`` replace fields after reading (e.g. ``retries=2`` in tests).

        Raises:
            StoreError: a required variable is missing or a value is malformed; the message
                names the variables, never their values.
        """
        env = os.environ if environ is None else environ
        missing = [name for name in ENV_VARS[:3] if not env.get(name, "").strip()]
        if missing:
            raise StoreError(f"object store not configured: {', '.join(missing)} not set "
                             f"({_SETUP_HINT})")
        endpoint, scheme_secure = _split_endpoint(env["AVSC_S3_ENDPOINT"].strip())
        secure_text = env.get("AVSC_S3_SECURE", "").strip().lower()
        if secure_text:
            if secure_text not in ("true", "false", "1", "0", "yes", "no"):
                raise StoreError(f"AVSC_S3_SECURE={secure_text!r}: expected true or false")
            secure = secure_text in ("true", "1", "yes")
        else:
            secure = True if scheme_secure is None else scheme_secure
        settings = cls(endpoint=endpoint,
                       access_key=env["AVSC_S3_ACCESS_KEY"].strip(),
                       secret_key=env["AVSC_S3_SECRET_KEY"].strip(),
                       region=env.get("AVSC_S3_REGION", "").strip() or None,
                       secure=secure)
        if overrides:
            import dataclasses
            settings = dataclasses.replace(settings, **overrides)
        return settings


def _split_endpoint(text: str) -> tuple[str, bool | None]:
    """``"https://h:9000/"`` -> ``("h:9000", True)``; ``"h:9000"`` -> ``("h:9000", None)``."""
    secure: bool | None = None
    for scheme, is_secure in (("https://", True), ("http://", False)):
        if text.lower().startswith(scheme):
            text, secure = text[len(scheme):], is_secure
            break
    host = text.rstrip("/")
    if not host or "/" in host or "://" in host:
        raise StoreError(f"AVSC_S3_ENDPOINT={text!r}: expected host[:port] or "
                         f"http(s)://host[:port], without a path")
    return host, secure


def make_client(settings: S3Settings | None = None) -> Minio:
    """A ``minio.Minio`` client for ``settings`` (default: from the environment).

    Its connection pool makes a single attempt per call with short connect timeouts; the
    retries with backoff happen in this module, so every failure is mapped to a clear message
    and an unreachable endpoint fails within seconds.
    """
    import certifi
    import urllib3
    from minio import Minio

    settings = settings or S3Settings.from_env()
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
        maxsize=32,  # one connection per worker thread and multipart part, without warnings
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=0, redirect=0, raise_on_status=False),
    )
    return Minio(settings.endpoint, access_key=settings.access_key,
                 secret_key=settings.secret_key, region=settings.region,
                 secure=settings.secure, http_client=http)


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

    @property
    def transferred(self) -> int:
        return self.uploaded


# ---------------------------------------------------------------- errors and retries

def _is_transient(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    return isinstance(exc, (Urllib3Error, ConnectionError, TimeoutError))


def _store_error(exc: BaseException, settings: S3Settings, bucket: str,
                 key: str | None = None) -> StoreError:
    """Turn a client or network exception into a one-line, actionable StoreError."""
    from minio.error import InvalidResponseError, S3Error, ServerError
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import MaxRetryError, SSLError

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, S3Error):
        code = exc.code or "error"
        if code in _CREDENTIAL_CODES:
            return StoreError(
                f"{settings.url} rejected the credentials ({code}): check AVSC_S3_ACCESS_KEY "
                f"and AVSC_S3_SECRET_KEY (Secret avsc-s3)")
        if code == "AccessDenied":
            return StoreError(
                f"{where}: access denied by {settings.url} (AccessDenied): check that "
                f"AVSC_S3_ACCESS_KEY/AVSC_S3_SECRET_KEY are right and the key may read and "
                f"write bucket {bucket}")
        if code == "NoSuchBucket":
            return StoreError(
                f"bucket {bucket!r} does not exist at {settings.url}: create it first "
                f"(e.g. `mc mb ALIAS/{bucket}` or `aws s3 mb s3://{bucket}`) or fix the URI")
        if code in ("NoSuchKey", "NoSuchObject"):
            return StoreError(f"{where}: no such object at {settings.url}")
        return StoreError(f"{where}: {code}: {exc.message or 'request failed'} "
                          f"({settings.url})")
    if isinstance(exc, ServerError):
        return StoreError(f"{where}: {settings.url} answered HTTP {exc.status_code} "
                          f"after {settings.retries} attempts; try again later")
    if isinstance(exc, InvalidResponseError):
        return StoreError(f"{settings.url} did not answer like an S3 service; check "
                          f"AVSC_S3_ENDPOINT (host:port of the S3 API) and AVSC_S3_SECURE")
    if isinstance(exc, (Urllib3Error, ConnectionError, TimeoutError)):
        reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        tls = isinstance(reason, SSLError) or "SSL" in type(reason).__name__
        hint = ("TLS handshake failed: set AVSC_S3_SECURE=false for a plain-http endpoint"
                if tls else "check AVSC_S3_ENDPOINT, AVSC_S3_SECURE and the network")
        return StoreError(f"cannot reach the object store at {settings.url} after "
                          f"{settings.retries} attempts ({type(reason).__name__}); {hint}")
    if isinstance(exc, ValueError) and "bucket name" in str(exc):
        return StoreError(f"{where}: {exc} (bucket names are 3-63 lowercase letters, digits, "
                          f"dots and hyphens)")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def _with_retries(call: Callable[[], T], settings: S3Settings, what: str) -> T:
    """Run ``call``; on a transient fault wait ``backoff_s * 2**n`` and try again."""
    attempts = max(1, settings.retries)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not _is_transient(exc):
                raise
            delay = settings.backoff_s * 2 ** (attempt - 1)
            log.debug("%s: %s (attempt %d/%d), retrying in %.2fs", what, type(exc).__name__,
                      attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class _Session:
    """One client, its settings and a bucket, with error mapping and retries."""

    def __init__(self, settings: S3Settings | None, bucket: str):
        self.settings = settings or S3Settings.from_env()
        self.bucket = bucket
        self.client = make_client(self.settings)

    def call(self, fn: Callable[[], T], key: str | None = None) -> T:
        what = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        try:
            return _with_retries(fn, self.settings, what)
        except Exception as exc:
            raise _store_error(exc, self.settings, self.bucket, key) from exc

    def check_bucket(self, prefix: str) -> None:
        """Fail early, with the precise reason, on bad credentials or a missing bucket.

        A listing (GET) is used rather than a HEAD: the service's XML error body tells wrong
        keys (InvalidAccessKeyId, SignatureDoesNotMatch) apart from denied access.
        """
        listing = lambda: next(iter(self.client.list_objects(  # noqa: E731
            self.bucket, prefix=prefix or None)), None)
        self.call(listing)

    def stat(self, key: str):
        """The object's stat, or None when it does not exist."""
        from minio.error import S3Error

        def stat_or_none():
            try:
                return self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise
        return self.call(stat_or_none, key)

    def list(self, prefix: str) -> list:
        listed = lambda: [obj for obj in self.client.list_objects(  # noqa: E731
            self.bucket, prefix=f"{prefix}/" if prefix else None, recursive=True)
            if not obj.is_dir]
        return self.call(listed)


# ---------------------------------------------------------------- hashing and comparing

def _hash_file(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        return etag == _hash_file(path, "md5")
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


def _upload(session: _Session, path: Path, key: str, progress: _Progress) -> tuple[bool, int]:
    """Upload one file unless the object already holds it: (uploaded?, bytes sent)."""
    try:
        size = path.stat().st_size
        sha256 = _hash_file(path)
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
        if isinstance(cause, OSError) and not _is_transient(cause):
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
    session = _Session(settings, bucket)
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
    session = _Session(settings, bucket)
    session.check_bucket(prefix)
    total = sum(path.stat().st_size for path, _ in files)
    bar = _Progress(total, f"push {uri}", enabled=progress)
    stop = threading.Event()

    def one(path: Path, relative: str) -> tuple[bool, int] | None:
        if stop.is_set():
            return None
        try:
            return _upload(session, path, _join_key(prefix, relative), bar)
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
    log.info("pushed %s to %s: %d uploaded, %d skipped, %d bytes", local_dir, uri,
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
    session = _Session(settings, bucket)
    session.check_bucket(prefix)
    return _relative_objects(session, prefix)


def _relative_objects(session: _Session, prefix: str) -> list[StoredObject]:
    cut = len(prefix) + 1 if prefix else 0
    objects = [StoredObject(key=obj.object_name[cut:], size=int(obj.size or 0),
                            etag=(obj.etag or "").strip('"'), last_modified=obj.last_modified)
               for obj in session.list(prefix)]
    return sorted(objects, key=lambda obj: obj.key)


def _safe_target(local_dir: Path, relative: str, uri: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(part in ("..", ".") for part in parts):
        raise StoreError(f"{uri}/{relative}: key does not map to a path inside {local_dir}; "
                         f"refusing to write it")
    return local_dir.joinpath(*parts)


def _download(session: _Session, key: str, target: Path, size: int,
              progress: _Progress) -> tuple[bool, int]:
    """Fetch one object into ``target`` unless it is already there: (downloaded?, bytes)."""
    if target.is_file() and target.stat().st_size == size:
        stat = session.stat(key)
        stored = _stored_sha256(stat) if stat is not None else None
        if stat is not None and stat.size == size and (stored is None or
                                                       stored == _hash_file(target)):
            progress.add(size)
            return False, 0

    def fetch() -> int:
        received = 0
        response = session.client.get_object(session.bucket, key)
        try:
            expected = (response.headers.get(f"x-amz-meta-{SHA256_META}") or "").strip().lower()
            digest = hashlib.sha256()
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as handle:
                    for chunk in response.stream(_CHUNK):
                        handle.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        progress.add(len(chunk))
                if received != size:
                    raise StoreError(f"s3://{session.bucket}/{key}: received {received} of "
                                     f"{size} bytes; re-run the pull")
                if expected and digest.hexdigest() != expected:
                    raise StoreError(f"s3://{session.bucket}/{key}: content does not match its "
                                     f"recorded SHA-256; re-upload it")
            return received
        except BaseException:
            progress.add(-received)
            raise
        finally:
            response.close()
            response.release_conn()

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
    session = _Session(settings, bucket)
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
    session = _Session(settings, bucket)
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
            return _download(session, _join_key(prefix, obj.key), target, obj.size, bar)
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
    log.info("pulled %s to %s: %d downloaded, %d skipped, %d bytes", uri, local_dir,
             downloaded, skipped, received)
    return TransferResult(uploaded=downloaded, skipped=skipped, bytes=received)

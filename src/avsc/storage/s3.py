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

Transfers of whole folders are in :mod:`avsc.storage.sync`.

Example::

    client = make_client(S3Settings.from_env())
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from avsc.errors import StoreError

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger(__name__)

SCHEME = "s3://"
SHA256_META = "sha256"  # stored as the user metadata header x-amz-meta-sha256
ENV_VARS = ("AVSC_S3_ENDPOINT", "AVSC_S3_ACCESS_KEY", "AVSC_S3_SECRET_KEY", "AVSC_S3_REGION", "AVSC_S3_SECURE")
_SETUP_HINT = "set them from the Secret avsc-s3 in a cluster, or export them for local use; see docs/objectstore.md"
# S3 error codes worth another try: the service is busy or hiccupped, not refusing.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "OperationAborted",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
    }
)
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"})
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
        raise StoreError(f"{uri}: not an object-store location (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise StoreError(f"{uri}: no bucket name (expected s3://bucket/prefix)")
    prefix = "/".join(part for part in prefix.split("/") if part)
    return bucket, prefix


def join_key(prefix: str, relative: str) -> str:
    return f"{prefix}/{relative}" if prefix else relative


@dataclass(frozen=True)
class S3Settings:
    """Where the object store is and how to talk to it.

    Attributes:
        endpoint: ``host[:port]`` without scheme.
        access_key, secret_key: credentials (left out of ``repr`` so they never reach a log).
        region: region name, or None to let the client ask the service.
        secure: https when True, http when False.
        retries: attempts per request for transient faults (connection errors, timeouts,
            5xx, SlowDown).
        backoff_s: delay before the second attempt; doubles for each further one.
        connect_timeout_s: how long to wait for a TCP connection before counting an attempt
            as failed (an unreachable endpoint fails after ``retries`` of these, not minutes).
        read_timeout_s: how long a started request may go without sending or receiving a
            byte before the attempt counts as failed (a stalled store, not a slow transfer:
            a transfer that keeps moving is never cut).
        retry_budget_s: no new attempt starts once this many seconds have passed since the
            first one. With the defaults a stalled or unreachable store is reported within
            ``retries * (connect_timeout_s + read_timeout_s) + backoffs`` = 55.5 s at most.
    """

    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str | None = None
    secure: bool = True
    retries: int = 4
    backoff_s: float = 0.5
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    retry_budget_s: float = 45.0

    @property
    def give_up_after_s(self) -> float:
        """The longest a call can take to report a store that is down or stalled: every
        attempt waiting out both timeouts, the backoffs between them, within the budget."""
        attempts = max(1, self.retries)
        per_attempt = self.connect_timeout_s + self.read_timeout_s
        total, began = 0.0, 0.0
        for attempt in range(1, attempts + 1):
            total += per_attempt
            if attempt == attempts:
                break
            delay = self.backoff_s * 2 ** (attempt - 1)
            if total - began + delay > self.retry_budget_s:
                break
            total += delay
        return total

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
            raise StoreError(f"object store not configured: {', '.join(missing)} not set ({_SETUP_HINT})")
        endpoint, scheme_secure = _split_endpoint(env["AVSC_S3_ENDPOINT"].strip())
        secure_text = env.get("AVSC_S3_SECURE", "").strip().lower()
        if secure_text:
            if secure_text not in ("true", "false", "1", "0", "yes", "no"):
                raise StoreError(f"AVSC_S3_SECURE={secure_text!r}: expected true or false")
            secure = secure_text in ("true", "1", "yes")
        else:
            secure = True if scheme_secure is None else scheme_secure
        settings = cls(
            endpoint=endpoint,
            access_key=env["AVSC_S3_ACCESS_KEY"].strip(),
            secret_key=env["AVSC_S3_SECRET_KEY"].strip(),
            region=env.get("AVSC_S3_REGION", "").strip() or None,
            secure=secure,
        )
        if overrides:
            import dataclasses

            settings = dataclasses.replace(settings, **overrides)
        return settings


def _split_endpoint(text: str) -> tuple[str, bool | None]:
    """``"https://h:9000/"`` -> ``("h:9000", True)``; ``"h:9000"`` -> ``("h:9000", None)``."""
    secure: bool | None = None
    for scheme, is_secure in (("https://", True), ("http://", False)):
        if text.lower().startswith(scheme):
            text, secure = text[len(scheme) :], is_secure
            break
    host = text.rstrip("/")
    if not host or "/" in host or "://" in host:
        raise StoreError(f"AVSC_S3_ENDPOINT={text!r}: expected host[:port] or http(s)://host[:port], without a path")
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
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        region=settings.region,
        secure=settings.secure,
        http_client=http,
    )


# ---------------------------------------------------------------- errors and retries


def is_transient(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    return isinstance(exc, (Urllib3Error, ConnectionError, TimeoutError))


def _store_error(exc: BaseException, settings: S3Settings, bucket: str, key: str | None = None) -> StoreError:
    """Turn a client or network exception into a one-line, actionable StoreError."""
    from minio.error import InvalidResponseError, S3Error, ServerError
    from urllib3.exceptions import HTTPError as Urllib3Error, MaxRetryError, SSLError

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, S3Error):
        code = exc.code or "error"
        if code in _CREDENTIAL_CODES:
            return StoreError(
                f"{settings.url} rejected the credentials ({code}): check AVSC_S3_ACCESS_KEY "
                f"and AVSC_S3_SECRET_KEY (Secret avsc-s3)"
            )
        if code == "AccessDenied":
            return StoreError(
                f"{where}: access denied by {settings.url} (AccessDenied): check that "
                f"AVSC_S3_ACCESS_KEY/AVSC_S3_SECRET_KEY are right and the key may read and "
                f"write bucket {bucket}"
            )
        if code == "NoSuchBucket":
            return StoreError(
                f"bucket {bucket!r} does not exist at {settings.url}: create it first "
                f"(e.g. `mc mb ALIAS/{bucket}` or `aws s3 mb s3://{bucket}`) or fix the URI"
            )
        if code in ("NoSuchKey", "NoSuchObject"):
            return StoreError(f"{where}: no such object at {settings.url}")
        return StoreError(f"{where}: {code}: {exc.message or 'request failed'} ({settings.url})")
    if isinstance(exc, ServerError):
        return StoreError(
            f"{where}: {settings.url} answered HTTP {exc.status_code} "
            f"after {settings.retries} attempts; try again later"
        )
    if isinstance(exc, InvalidResponseError):
        return StoreError(
            f"{settings.url} did not answer like an S3 service; check "
            f"AVSC_S3_ENDPOINT (host:port of the S3 API) and AVSC_S3_SECURE"
        )
    if isinstance(exc, (Urllib3Error, ConnectionError, TimeoutError)):
        reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        tls = isinstance(reason, SSLError) or "SSL" in type(reason).__name__
        hint = (
            "TLS handshake failed: set AVSC_S3_SECURE=false for a plain-http endpoint"
            if tls
            else "check AVSC_S3_ENDPOINT, AVSC_S3_SECURE and the network"
        )
        return StoreError(
            f"cannot reach the object store at {settings.url} after "
            f"{settings.retries} attempts ({type(reason).__name__}); {hint}"
        )
    if isinstance(exc, ValueError) and "bucket name" in str(exc):
        return StoreError(f"{where}: {exc} (bucket names are 3-63 lowercase letters, digits, dots and hyphens)")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def _with_retries(call: Callable[[], T], settings: S3Settings, what: str) -> T:
    """Run ``call``; on a transient fault wait ``backoff_s * 2**n`` and try again.

    At most ``settings.retries`` attempts, and none started after ``retry_budget_s``: the
    caller hears of a store that stays down within a bounded time, whatever the fault.
    """
    attempts = max(1, settings.retries)
    began = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            delay = settings.backoff_s * 2 ** (attempt - 1)
            spent = time.monotonic() - began
            if attempt == attempts or not is_transient(exc) or spent + delay > settings.retry_budget_s:
                raise
            log.debug("%s: %s (attempt %d/%d), retrying in %.2fs", what, type(exc).__name__, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class Session:
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

        def listing() -> object:
            return next(iter(self.client.list_objects(self.bucket, prefix=prefix or None)), None)

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
        def listed() -> list:
            objects = self.client.list_objects(self.bucket, prefix=f"{prefix}/" if prefix else None, recursive=True)
            return [obj for obj in objects if not obj.is_dir]

        return self.call(listed)

"""A real S3-compatible server on 127.0.0.1 for object-store tests (moto's standalone server).

Test modules import the fixtures they use:

    >>> from s3_server import s3_server, s3_store  # noqa: F401  (pytest fixtures)

``s3_server`` is one server for the session; ``s3_store`` gives each test its own empty bucket
and settings with short retry delays. ``iam_auth`` switches the server to checking signatures
and IAM permissions for one test, and ``FlakyProxy`` sits in front of it and answers the first
requests with ``503 SlowDown``, as a busy store does.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from avsc.storage.s3 import S3Settings, make_client

_REGION = "us-east-1"
_buckets = itertools.count()


@dataclass(frozen=True)
class S3Server:
    host: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def settings(self, **overrides) -> S3Settings:
        """Settings for this server: any key is accepted unless ``iam_auth`` is on."""
        values = dict(
            endpoint=self.endpoint,
            access_key="test-access",
            secret_key="test-secret",
            region=_REGION,
            secure=False,
            retries=3,
            backoff_s=0.01,
        )
        values.update(overrides)
        return S3Settings(**values)


@dataclass(frozen=True)
class S3Store:
    server: S3Server
    settings: S3Settings
    bucket: str

    @property
    def client(self):
        return make_client(self.settings)

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def keys(self, prefix: str = "") -> dict[str, int]:
        """Every object name under ``prefix`` with its size."""
        return {
            obj.object_name: obj.size
            for obj in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
        }

    def pending_multipart_uploads(self) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted."""
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.server.url,
            region_name=_REGION,
            aws_access_key_id="test-access",
            aws_secret_access_key="test-secret",
        )
        return [up["Key"] for up in s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(host=host, port=port)
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server) -> S3Store:
    """An empty bucket of its own for each test."""
    settings = s3_server.settings()
    bucket = f"test-{next(_buckets):04d}"
    make_client(settings).make_bucket(bucket)
    return S3Store(server=s3_server, settings=settings, bucket=bucket)


@dataclass(frozen=True)
class IamKeys:
    allowed: tuple[str, str]  # access key, secret key of a user that may use S3
    no_policy: tuple[str, str]  # a valid key of a user without any permission


@pytest.fixture
def s3_env(s3_store, monkeypatch):
    """The store's endpoint and keys as the Secret puts them into a task's environment."""
    monkeypatch.setenv("AVSC_S3_ENDPOINT", s3_store.server.url)
    monkeypatch.setenv("AVSC_S3_ACCESS_KEY", s3_store.settings.access_key)
    monkeypatch.setenv("AVSC_S3_SECRET_KEY", s3_store.settings.secret_key)
    monkeypatch.setenv("AVSC_S3_REGION", "us-east-1")
    monkeypatch.delenv("AVSC_S3_SECURE", raising=False)
    return s3_store


@pytest.fixture
def iam_auth(s3_server) -> Iterator[IamKeys]:
    """Make the server check signatures and IAM permissions for one test.

    Two IAM users are created first (while the server still accepts anything); afterwards an
    unknown key gets InvalidAccessKeyId, a wrong secret SignatureDoesNotMatch, and a user
    without a policy AccessDenied, as on AWS.
    """
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=s3_server.url,
        region_name=_REGION,
        aws_access_key_id="test-access",
        aws_secret_access_key="test-secret",
    )
    suffix = next(_buckets)
    keys = []
    for name, policy in ((f"allowed-{suffix}", True), (f"no-policy-{suffix}", False)):
        iam.create_user(UserName=name)
        if policy:
            iam.put_user_policy(
                UserName=name,
                PolicyName="s3",
                PolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
                ),
            )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys.append((key["AccessKeyId"], key["SecretAccessKey"]))
    _reset_auth(s3_server, "0")
    try:
        yield IamKeys(allowed=keys[0], no_policy=keys[1])
    finally:
        _reset_auth(s3_server, "inf")


def _reset_auth(server: S3Server, count: str) -> None:
    request = urllib.request.Request(
        f"{server.url}/moto-api/reset-auth", data=count.encode(), headers={"Content-Type": "text/plain"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FlakyProxy:
    """An HTTP proxy to ``target`` that answers its first ``failures`` requests with 503.

    Use as a context manager; ``endpoint`` is its ``host:port``, ``requests`` counts every
    request it received and ``refused`` those it answered with SlowDown.
    """

    def __init__(self, target: S3Server, failures: int):
        self.target, self.failures = target, failures
        self.requests = self.refused = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests += 1
                    refuse = proxy.refused < proxy.failures
                    proxy.refused += refuse
                if refuse:
                    self._reply(503, {"Content-Type": "application/xml"}, _SLOW_DOWN)
                    return
                upstream = http.client.HTTPConnection(target.host, target.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    response = upstream.getresponse()
                    data = response.read()
                    headers = {
                        k: v
                        for k, v in response.getheaders()
                        if k.lower() not in ("content-length", "connection", "transfer-encoding")
                    }
                    length = (
                        response.getheader("Content-Length") if self.command == "HEAD" else None
                    )  # a HEAD's length is the object's, not its empty body's
                    self._reply(response.status, headers, data, length)
                finally:
                    upstream.close()

            def _reply(self, status: int, headers: dict, data: bytes, length: str | None = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FlakyProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

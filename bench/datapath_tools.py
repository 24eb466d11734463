"""Measuring tools of the data-path benchmarks: scratch-disk and memory watchers, an S3 test
server in a process of its own, and a proxy that counts every byte a step reads and writes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


class _PeakWatcher:
    """The peak of :meth:`measure`, polled every ``interval_s`` on a thread while in a
    ``with`` block (and once more on leaving it)."""

    interval_s = 0.05

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def measure(self) -> int:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure())


class ScratchWatcher(_PeakWatcher):
    """Peak bytes under a folder (a step's TMPDIR), polled every 50 ms."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def measure(self) -> int:
        total = 0
        for root, _, names in os.walk(self.folder):
            for name in names:
                with contextlib.suppress(OSError):  # removed while walking
                    total += os.lstat(os.path.join(root, name)).st_size
        return total


class RssWatcher(_PeakWatcher):
    """Peak resident memory of this process (VmRSS), polled every 20 ms; ``start`` is the
    resident memory when it was made."""

    interval_s = 0.02

    def __init__(self):
        super().__init__()
        self.start = self.peak = self.measure()

    def measure(self) -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


class CountingProxy:
    """An HTTP proxy to the S3 server counting the bytes it carries: request bodies (writes)
    and response bodies (reads). Everything the library and ffmpeg do goes through it."""

    def __init__(self, host: str, port: int):
        import http.client
        import http.server

        self.read = self.written = self.requests = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(host, port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    response = upstream.getresponse()
                    data = response.read()
                    with proxy._lock:
                        proxy.requests += 1
                        proxy.written += len(body)
                        proxy.read += len(data) if self.command == "GET" else 0
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                            self.send_header(key, value)
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.read = self.written = self.requests = 0


class MotoProcess:
    """moto's S3 server in a process of its own (it shares the CPU, not this process's GIL)."""

    def __init__(self):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto server did not start")

    def get_host_and_port(self):
        return "127.0.0.1", self.port

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def start_s3(bucket: str, *, counted: bool = True):
    """A moto S3 server (its own process) with ``bucket`` and a counting proxy before it;
    AVSC_S3_* name the proxy (``counted``) or the server itself (no proxy, for throughput)."""
    from avsc.storage.s3 import S3Settings, make_client

    server = MotoProcess()
    host, port = server.get_host_and_port()
    direct = S3Settings(
        endpoint=f"{host}:{port}", access_key="bench", secret_key="bench", region="us-east-1", secure=False
    )
    make_client(direct).make_bucket(bucket)
    proxy = CountingProxy(host, port)
    endpoint = proxy.endpoint if counted else f"{host}:{port}"
    os.environ.update(
        {
            "AVSC_S3_ENDPOINT": f"http://{endpoint}",
            "AVSC_S3_ACCESS_KEY": "bench",
            "AVSC_S3_SECRET_KEY": "bench",
            "AVSC_S3_REGION": "us-east-1",
        }
    )
    return server, proxy, direct

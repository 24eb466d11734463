"""A TCP forwarder on 127.0.0.1 that can take a server down, stall it or reset its connections.

It sits in front of the S3 test server (or any TCP server on the loopback) and forwards
bytes both ways until told otherwise:

- :meth:`TcpForwarder.stop`: the port refuses connections and open ones are reset, as a
  store that is down (a restarting pod, a lost node);
- :meth:`TcpForwarder.start`: it listens again on the same port;
- :meth:`TcpForwarder.stall`: connections are accepted and open ones stay open, but no byte
  moves either way, as a store that hangs (a full disk, a stuck load balancer);
- :meth:`TcpForwarder.resume`: bytes move again.

Every socket has a timeout and every thread is a daemon, so a test that forgets to resume
never hangs the run; :meth:`close` ends everything.

Example:
    >>> with TcpForwarder("127.0.0.1", 9000) as forwarder:
    ...     settings = S3Settings(endpoint=forwarder.endpoint, ...)
    ...     forwarder.stop(); ...; forwarder.start()
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time

_POLL_S = 0.1


class TcpForwarder:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0  # accepted so far
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        """Whether the port accepts connections (False after :meth:`stop`)."""
        return self._listener is not None

    # ------------------------------------------------------------ faults

    def start(self) -> None:
        """Listen (again, on the same port once one was chosen) and forward."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_POLL_S)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._flowing.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def stall(self) -> None:
        """Keep accepting and keep connections open, but move no bytes."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.stop()

    def __enter__(self) -> TcpForwarder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ forwarding

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener and not self._closed:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            self.connections += 1
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._track(client)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        self._track(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        sock.settimeout(5.0)  # a send that cannot go on for this long ends the connection
        with self._lock:
            self._open.add(sock)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._closed:
            if not self._flowing.is_set():
                time.sleep(_POLL_S)  # stalled: hold the bytes where they are
                continue
            try:
                if not select.select([source], [], [], _POLL_S)[0]:
                    continue
                data = source.recv(65536)
            except (OSError, ValueError):  # reset, or closed by stop()
                break
            if not data:
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            with self._lock:
                self._open.discard(sock)
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0), as a crashed peer does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()

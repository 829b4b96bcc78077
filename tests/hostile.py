"""Tiny raw-socket HTTP servers on 127.0.0.1 that misbehave on purpose (bombs, drips, silence, echoed keys).

Each accepted connection gets one request, read by :class:`HostileServer` and recorded in ``requests``, then
handed to a handler ``handler(request, conn)`` that writes whatever raw bytes it likes; the connection is
closed when the handler returns. Traffic is bounded: at most ``max_connections`` connections are served,
every wait ends when the server stops, and :meth:`HostileServer.stop` closes everything it opened.
Used by ``tests/integration/hooks/test_hostile_service.py`` and ``tests/integration/triggers/
test_hostile_trigger.py``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.conftest import API_KEY, CONN_ENV, connection_json

MIB = 1024 * 1024


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, values stripped
    body: bytes = b""
    #: (name, value) as sent, the value not stripped: to tell a trimmed header from one with spaces
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Conn:
    """The server's side of one connection, for a handler to write to."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self.sock, self.stopping = sock, stopping

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self, status: int, headers: dict[str, str] | None = None, reason: str = "X") -> None:
        lines = [f"HTTP/1.1 {status} {reason}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.head(status, {**(headers or {}), "Content-Length": str(len(body))})
        self.send(body)

    def json(self, payload: Any, status: int = 200) -> None:
        self.respond(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the server is stopping (the handler should return)."""
        return not self.stopping.wait(seconds)


Handler = Callable[[Seen, Conn], None]


class HostileServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (ephemeral port), one request per connection."""

    def __init__(self, handler: Handler, *, max_connections: int = 40) -> None:
        self.handler, self.max_connections = handler, max_connections
        self.requests: list[Seen] = []
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # closing a listener does not wake accept(): poll for the stop
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str | None = None) -> int:
        return sum(1 for r in self.requests if method is None or r.method == method)

    def start(self) -> HostileServer:
        self._acceptor.start()
        return self

    def _accept(self) -> None:
        served = 0
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            served += 1
            with self._lock:
                if self._stopping.is_set() or served > self.max_connections:
                    sock.close()
                    continue
                self._socks.append(sock)
                thread = threading.Thread(target=self._serve, args=(sock,), name="hostile-conn", daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(10)
            seen = _read_request(sock)
            if seen is None:
                return
            self.requests.append(seen)
            self.handler(seen, Conn(sock, self._stopping))
        except OSError:
            pass  # the client went away: expected when it gives up on a hostile answer
        except BaseException as exc:  # pragma: no cover - a bug in a test's handler
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in threads:
            thread.join(5)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        if self.errors:  # pragma: no cover
            raise self.errors[0]


def _read_request(sock: socket.socket) -> Seen | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 256 * 1024:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    raw: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
        raw.append((name, value))
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Seen(method, target, headers, rest[:length], raw)


@contextlib.contextmanager
def servers() -> Iterator[Callable[..., HostileServer]]:
    """``start(handler)`` starts a server; all of them are stopped on exit (a fixture's teardown)."""
    started: list[HostileServer] = []

    def start(handler: Handler, **kwargs: Any) -> HostileServer:
        server = HostileServer(handler, **kwargs).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def point_connection(monkeypatch: Any, base_url: str, api_key: str = API_KEY, **extra: object) -> None:
    """The default connection (an env var) pointing at ``base_url``."""
    monkeypatch.setenv(CONN_ENV, connection_json(base_url, api_key, **extra))


# --------------------------------------------------------------------------- bodies


def compress(data: bytes, coding: str) -> bytes:
    """``data`` as sent with ``Content-Encoding: coding``: ``gzip``, ``deflate`` (zlib) or ``raw-deflate``."""
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


#: ``Content-Encoding`` header value of each coding :func:`compress` knows.
HEADER_OF = {"gzip": "gzip", "deflate": "deflate", "raw-deflate": "deflate"}


@cache
def bomb(coding: str, inflated: int = 64 * MIB) -> bytes:
    """A progress answer that inflates to ``inflated`` bytes: ``{"progressValue": 100`` + spaces + ``}``.

    Valid JSON saying "complete" once inflated whole, so a client that inflates it all would report success;
    built in 1 MiB steps (never holds the inflated body), ~64 KiB on the wire.
    """
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw-deflate": -zlib.MAX_WBITS}[coding]
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    head = b'{"progressValue": 100'
    parts = [packer.compress(head)]
    spaces = b" " * MIB
    for _ in range((inflated - len(head)) // MIB):
        parts.append(packer.compress(spaces))
    parts += [packer.compress(b"}"), packer.flush()]
    return b"".join(parts)


# --------------------------------------------------------------------------- what a user would see


class Logged:
    """Everything logged during a test: Airflow 2.11 logs through ``logging`` (caplog), Airflow 3 through
    structlog to stdout (capsys); both are read."""

    def __init__(self, caplog: Any, capsys: Any) -> None:
        self.caplog, self.capsys = caplog, capsys
        self._printed = ""
        caplog.set_level(logging.DEBUG)

    def text(self) -> str:
        out, err = self.capsys.readouterr()
        self._printed += out + err
        records: list[logging.LogRecord] = self.caplog.records
        parts = [self.caplog.text, self._printed]
        for record in records:
            parts.append(record.getMessage())
            if record.exc_text:
                parts.append(record.exc_text)
        return "\n".join(parts)

    def count(self, words: str) -> int:
        """How many times a line holding ``words`` was logged (the same line seen by both channels: once)."""
        self.text()
        in_records = sum(words in record.getMessage() for record in self.caplog.records)
        printed = sum(words in line for line in self._printed.splitlines())
        return max(in_records, printed)


class PeakMemory:
    """Peak growth of Python allocations (tracemalloc) inside ``with``: ``growth`` in bytes afterwards."""

    def __enter__(self) -> PeakMemory:
        self._was_tracing = tracemalloc.is_tracing()
        if not self._was_tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        self.growth = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = tracemalloc.get_traced_memory()[1] - self._base
        if not self._was_tracing:
            tracemalloc.stop()

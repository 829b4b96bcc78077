"""Tiny raw-socket HTTP servers on 127.0.0.1 that misbehave on purpose (bombs, drips, silence, echoed keys).

Each accepted connection gets one request, read by :class:`HostileServer` and recorded in ``requests``, then
handed to a handler ``handler(request, conn)`` that writes whatever raw bytes it likes; the connection is
closed when the handler returns. Traffic is bounded: at most ``max_connections`` connections are served,
every wait ends when the server stops, and :meth:`HostileServer.stop` closes everything it opened.

Used by ``tests/integration/hooks/test_hostile_service.py`` and ``tests/integration/triggers/
test_hostile_trigger.py``, which play the same hostile answers to the two transports: what both need lives
here (the ``serve`` and ``logs`` fixtures, which a test module takes in as module attributes of those names,
the handlers, the keys and bodies, the checks that the key went nowhere); each module keeps its tests and
how its transport is driven.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_cex.policy import RetryPolicy
from tests.conftest import API_KEY, CONN_ENV, connection_json

MIB = 1024 * 1024

#: A key with characters that percent-encoding changes ('+', '/', '='): its encoded forms differ from it.
SPECIAL_KEY = "cexk+4f9a/8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e="
HASH = "h0st1le"
NO_RETRIES = RetryPolicy(max_retries=0)
#: Words of the warning logged when the key is pasted with spaces or a line break around it.
TRIMMED = "had spaces or a line break around it"


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


#: What :func:`servers` yields (and the ``serve`` fixture is): ``start(handler, **kwargs)`` starts a server.
Serve = Callable[..., HostileServer]


@contextlib.contextmanager
def servers() -> Iterator[Serve]:
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


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(handler, **kwargs)`` starts a :class:`HostileServer`; all of them stop when the test ends."""
    with servers() as start:
        yield start


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
CODINGS = list(HEADER_OF)

#: JSON nested 100,000 deep: a recursive parser would raise RecursionError.
DEEP = b"[" * 100_000 + b"]" * 100_000
#: Progress values that are not finite numbers (never "complete"), and readable ones with what they read as.
NOT_FINITE = ["Infinity", "-Infinity", "NaN", "1e999", '"inf"', '"1e999"', '"1_0_0"', r'"\u0661\u0660\u0660"']
READABLE = {'"42%"': 42.0, "42": 42.0, '" 42.5 "': 42.5}


def progress_json(value: object) -> bytes:
    """A progress answer whose ``progressValue`` is ``value`` written as is (a raw JSON value)."""
    return b'{"progressValue": ' + str(value).encode() + b"}"


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


# --------------------------------------------------------------------------- handlers


def answering(body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> Handler:
    """``body`` with ``status``, as JSON unless ``headers`` say otherwise."""

    def handle(_req: Seen, conn: Conn) -> None:
        conn.respond(status, body, {"Content-Type": "application/json", **(headers or {})})

    return handle


def progress_server(
    serve: Serve,
    monkeypatch: Any,
    body: bytes,
    headers: dict[str, str] | None = None,
    api_key: str = API_KEY,
    **extra: object,
) -> HostileServer:
    """A server answering every request with ``body`` (see :func:`answering`); the connection points at it."""
    server = serve(answering(body, headers))
    point_connection(monkeypatch, server.base_url, api_key, **extra)
    return server


def first_byte_alone(body: bytes, coding: str, pause: float) -> Handler:
    """The compressed body's first byte in its own read, the rest ``pause`` seconds later."""

    def handle(_req: Seen, conn: Conn) -> None:
        headers = {"Content-Type": "application/json", "Content-Encoding": coding}
        conn.head(200, {**headers, "Content-Length": str(len(body))})
        conn.send(body[:1])
        if conn.wait(pause):
            conn.send(body[1:])

    return handle


def first_byte_alone_server(serve: Serve, monkeypatch: Any, coding: str) -> HostileServer:
    """A server answering progress 100 compressed with ``coding`` (one of :data:`CODINGS`), its first byte
    sent alone; the connection points at it, with 5 s timeouts."""
    body = compress(progress_json(100), coding)
    pause = 1.0 if coding == "raw-deflate" else 0.2  # long enough that byte 0 is surely read alone
    server = serve(first_byte_alone(body, HEADER_OF[coding], pause))
    point_connection(monkeypatch, server.base_url, timeout=[5, 5])
    return server


def silent(_req: Seen, conn: Conn) -> None:
    """Accepts, reads the request, never answers (until the server stops)."""
    conn.wait(60)


def dripping(_req: Seen, conn: Conn) -> None:
    """Headers at once (Content-Length: 1000), then one body byte every 0.3 s."""
    conn.head(200, {"Content-Type": "application/json", "Content-Length": "1000"})
    for _ in range(1000):
        conn.send(b" ")
        if not conn.wait(0.3):
            return


def dripping_headers(_req: Seen, conn: Conn) -> None:
    """The status line and headers one byte every 0.2 s (a 1,000-byte header), giving up after 6.5 s."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 1000 + b"\r\n\r\n"
    for offset in range(33):
        conn.send(head[offset : offset + 1])
        if not conn.wait(0.2):
            return


def short_timeouts_server(serve: Serve, monkeypatch: Any, handler: Handler) -> HostileServer:
    """A server running ``handler``; the connection points at it with connect and read timeouts of 1 s."""
    server = serve(handler)
    point_connection(monkeypatch, server.base_url, timeout=[1, 1])
    return server


def assert_ended_at_connect_plus_read(error: BaseException, elapsed: float, server: HostileServer) -> None:
    """One attempt at a :func:`dripping` answer (:func:`short_timeouts_server`) gave up after ``elapsed``
    seconds with ``error``: at connect + read seconds (2 s) in all, never sent again."""
    assert "took longer than 2 s in all" in str(error)
    assert 1.9 <= elapsed < 6  # the 1 s read timeout never fired: a byte came every 0.3 s
    assert server.count() == 1


# --------------------------------------------------------------------------- the key


#: Locations of a redirect holding the key (``location(key, port)``): none of them may be followed.
REDIRECTS_WITH_THE_KEY: dict[str, Callable[[str, int], str]] = {
    "query": lambda key, port: f"/x?k={key}",
    "userinfo": lambda key, port: f"http://{key}@127.0.0.1:{port}/x",
    "file": lambda key, port: f"file:///{key}",
    "percent-encoded": lambda key, port: f"/x?k={quote(key, safe='')}",
    "percent-encoded-lower-case": lambda key, port: f"/x?k={lower_hex(quote(key, safe=''))}",
}


def lower_hex(text: str) -> str:
    """``text`` with its percent-escapes in lower case (``%2B`` -> ``%2b``)."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


def redirecting_with_the_key(serve: Serve, monkeypatch: Any, kind: str) -> tuple[HostileServer, str]:
    """A server answering the progress request with a 302 to a location holding the key (``kind``: one of
    :data:`REDIRECTS_WITH_THE_KEY`) and any other request (which must not come) with progress 100; the
    connection pointing at it with that key: :data:`SPECIAL_KEY` for the percent-encoded kinds, else the
    usual one. Returns the server and the key."""
    key = SPECIAL_KEY if kind.startswith("percent-encoded") else API_KEY

    def handle(req: Seen, conn: Conn) -> None:
        if req.target.endswith("/progress"):
            port = conn.sock.getsockname()[1]  # the server's own port
            conn.respond(302, b"", {"Location": REDIRECTS_WITH_THE_KEY[kind](key, port)})
        else:
            conn.json({"progressValue": 100})

    server = serve(handle)
    point_connection(monkeypatch, server.base_url, key)
    return server, key


def redirecting_with_user_info(serve: Serve, monkeypatch: Any) -> tuple[HostileServer, HostileServer]:
    """``first`` redirects to ``elsewhere`` (progress 100) by a URL with ``user:pw@``; the connection points
    at ``first``. Returns both servers."""
    elsewhere = serve(lambda req, conn: conn.json({"progressValue": 100}))
    target = f"http://user:pw@127.0.0.1:{elsewhere.port}/elsewhere"
    first = serve(lambda req, conn: conn.respond(302, b"", {"Location": target}))
    point_connection(monkeypatch, first.base_url)
    return first, elsewhere


def assert_followed_without_user_info(first: HostileServer, elsewhere: HostileServer, logs: Logged) -> None:
    """The redirect of :func:`redirecting_with_user_info` was followed once, without the key, user or
    password, and logged without them."""
    (seen,) = elsewhere.requests
    assert seen.target == "/elsewhere"
    assert seen.header("authorization") is None and seen.header("cex-api-key") is None
    assert first.requests[0].header("cex-api-key") == API_KEY
    text = logs.text()
    assert f"Following redirect to 127.0.0.1:{elsewhere.port}" in text  # the capture sees the hook's lines
    assert "user:pw" not in text and "pw@" not in text


#: An error body echoing :data:`SPECIAL_KEY`, as is and percent-encoded.
KEY_ECHO = f"bad key {SPECIAL_KEY} (sent as k={quote(SPECIAL_KEY, safe='')})".encode()

#: How a server may echo the key (a key with '+', '/', '='): as is, or percent-encoded as URLs carry it.
ECHOED_FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda key: key,
    "percent-encoded": lambda key: quote(key, safe=""),
    "percent-encoded-keeping-slash": quote,
    "percent-encoded-lower-case": lambda key: lower_hex(quote(key, safe="")),
}


def key_cut_by_the_snippet(form: str) -> bytes:
    """An error body of blanks, then the echoed key, placed so snippet's bounded head ends one character
    before the key's end (the blanks collapse, so the key would be the quoted text)."""
    head = 8 * 200 + 4 * len(SPECIAL_KEY)  # redaction.snippet's head for the default limit
    echoed = ECHOED_FORMS[form](SPECIAL_KEY)
    return (" " * (head - len(echoed) + 1) + echoed + " and more" * 20).encode()


def key_echoing_server(serve: Serve, monkeypatch: Any, body: bytes) -> HostileServer:
    """A server answering HTTP 400 with ``body`` as text; the connection points at it, with
    :data:`SPECIAL_KEY`."""
    server = serve(answering(body, {"Content-Type": "text/plain"}, status=400))
    point_connection(monkeypatch, server.base_url, SPECIAL_KEY)
    return server


def keys_sent(server: HostileServer) -> list[str]:
    """The ``CEX-API-KEY`` header of each request ``server`` received, as sent (not stripped)."""
    return [value for r in server.requests for name, value in r.raw_headers if name.lower() == "cex-api-key"]


#: Keys that cannot be sent as an HTTP header, and keys of blanks only: both refused before any request.
UNSENDABLE_KEYS = ["ab\ncd-key", "kéy-123456", "abc\x7fdef-key"]
BLANK_KEYS = [" ", " \n\t "]


def assert_no_key(text: str, key: str = API_KEY) -> None:
    """``text`` holds ``key`` in none of its forms: as is, percent-encoded, percent-encoded keeping '/'."""
    for form in {key, quote(key, safe=""), quote(key)}:
        assert form not in text


def assert_no_part_of_the_key(text: str) -> None:
    """``text`` holds not even the first 16 characters of :data:`SPECIAL_KEY` in any of :data:`ECHOED_FORMS`
    (case-insensitively)."""
    for echo in ECHOED_FORMS.values():
        assert echo(SPECIAL_KEY)[:16].lower() not in text.lower()


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


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Logged:
    """What the test logged (:class:`Logged`)."""
    return Logged(caplog, capsys)


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

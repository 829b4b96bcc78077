"""A forwarding HTTP proxy on loopback for tests: counts what it forwards and whether the API key went along.

Plain HTTP only: absolute-form requests (``GET http://127.0.0.1:PORT/path HTTP/1.1``) to a loopback target
are forwarded with ``Connection: close`` and the answer streamed back; ``CONNECT`` (what a client sends for
an ``https://`` URL) is answered by the proxy itself (407 without valid credentials, else 502: it opens no
tunnels). It listens on 127.0.0.1 only, on a free port, on its own thread and event loop, and reads
bounded headers and bodies with timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from testkit.loopback import LoopbackServer

API_KEY_HEADER = "cex-api-key"
#: Request headers meant for the proxy or this one connection, not for the target.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "upgrade"}
)
LOOPBACK = frozenset({"127.0.0.1", "localhost"})
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
IO_TIMEOUT = 10.0
PHRASES = {
    400: "Bad Request",
    407: "Proxy Authentication Required",
    411: "Length Required",
    502: "Bad Gateway",
}


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy received (``forwarded`` False: the proxy answered it itself)."""

    method: str
    target: str  # host:port
    path: str
    had_api_key: bool
    had_proxy_auth: bool
    forwarded: bool


class ForwardingProxy(LoopbackServer):
    """The proxy; use as a context manager (``with ForwardingProxy() as proxy: ... proxy.url``).

    :param credentials: ``(user, password)`` the proxy requires (``Proxy-Authorization: Basic``), else 407.
    :param answer_status: answer every request with this status (e.g. 407, 502) instead of forwarding it.
    """

    thread_name = "test-forwarding-proxy"
    stream_limit = MAX_HEAD

    def __init__(self, *, credentials: tuple[str, str] | None = None, answer_status: int | None = None):
        super().__init__()
        self.credentials = credentials
        self.answer_status = answer_status
        self._requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ what tests read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with_credentials(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Every request received, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def forwarded(self) -> list[ProxiedRequest]:
        return [r for r in self.requests if r.forwarded]

    @property
    def counts(self) -> Counter[str]:
        """Forwarded requests per target ``host:port``."""
        return Counter(r.target for r in self.forwarded)

    # ------------------------------------------------------------------ life cycle

    async def _close_connections(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the proxy

    def _authorized(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        user, password = self.credentials
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return header is not None and header.strip() == expected

    def _record(self, method: str, target: str, path: str, headers: dict[str, str], forwarded: bool) -> None:
        request = ProxiedRequest(
            method, target, path, API_KEY_HEADER in headers, "proxy-authorization" in headers, forwarded
        )
        with self._lock:
            self._requests.append(request)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_one(reader, writer)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: list[tuple[str, str]] = []
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        lower = {name.lower(): value for name, value in headers}
        authorized = self._authorized(lower.get("proxy-authorization"))
        if method == "CONNECT":  # no tunnels: the emulator speaks plain HTTP
            self._record(method, target, "", lower, forwarded=False)
            await self._answer(writer, self.answer_status or (502 if authorized else 407))
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK or not parts.port:
            await self._answer(writer, 400)
            return
        if "transfer-encoding" in lower:
            await self._answer(writer, 411)
            return
        length = int(lower.get("content-length") or 0)
        if length > MAX_BODY:
            await self._answer(writer, 400)
            return
        body = await asyncio.wait_for(reader.readexactly(length), IO_TIMEOUT) if length else b""
        status = self.answer_status or (None if authorized else 407)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._record(method, f"{parts.hostname}:{parts.port}", parts.path, lower, forwarded=status is None)
        if status is not None:
            await self._answer(writer, status)
            return
        await self._forward(writer, method, parts.hostname, parts.port, path, headers, body)

    async def _forward(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        host: str,
        port: int,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), IO_TIMEOUT)
        try:
            kept = [f"{name}: {value}" for name, value in headers if name.lower() not in HOP_BY_HOP]
            up_writer.write(
                "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""]).encode(
                    "latin-1"
                )
                + body
            )
            await up_writer.drain()
            # The answer's head with "Connection: close" (this proxy keeps no connection alive), then the
            # body, streamed as it comes.
            answer_head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
            status_line, *answer_lines = answer_head.decode("latin-1").split("\r\n")
            kept_answer = [
                line
                for line in answer_lines
                if line and line.partition(":")[0].strip().lower() not in ("connection", "keep-alive")
            ]
            writer.write(
                "\r\n".join([status_line, *kept_answer, "Connection: close", "", ""]).encode("latin-1")
            )
            while chunk := await asyncio.wait_for(up_reader.read(64 * 1024), IO_TIMEOUT):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int) -> None:
        phrase = PHRASES.get(status, "Error")
        body = f"<html><body><h1>{status} {phrase}</h1><p>test proxy</p></body></html>\n".encode()
        extra = 'Proxy-Authenticate: Basic realm="test proxy"\r\n' if status == 407 else ""
        writer.write(
            (
                f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
                f"{extra}Connection: close\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        await writer.drain()

"""An in-process emulator of the Content Exporter Remote API (start, progress, download) built on aiohttp.web.

Tests steer it from their own thread: export speed, failing pages, injected 429/5xx answers, outages,
redirected and truncated downloads; it counts and logs every request it receives.

Redirected downloads: ``emu_a.redirect_downloads_to(emu_b.base_url)`` makes A answer a finished download
with ``302 Location: <emu_b.base_url>/api/remoteExport/<hash>/download``.
``emu_b.accept_foreign_downloads(emu_a)`` makes B act like a pre-signed URL host: its download route serves
A's artifact for *any* hash and never checks ``CEX-API-KEY``; ``RequestRecord.had_api_key`` on B then shows
whether a client leaked the key across origins.

Spread completion times: ``export_seconds_spread=S`` makes each export take ``export_seconds`` plus a
deterministic fraction of ``S`` derived from its page id (:func:`spread_fraction`, uniform over [0, S)), so a
batch of exports finishes over a window instead of all at once, reproducibly across emulators and runs.

Emulator-only admin routes (not part of the Content Exporter API; they need no ``CEX-API-KEY``, answer
loopback peers only, and are neither counted in :attr:`ContentExporterEmulator.counts` nor logged in
:attr:`ContentExporterEmulator.requests`), for benchmarks and demos watching an emulator in another process:

- ``GET /_emulator/exports``: ``{hash: {"page_id": ..., "started_at": epoch, "done_at": epoch | null}}`` in
  wall-clock ``time.time()`` seconds; ``done_at`` is when progress reaches 100, null for a failing export.
- ``GET /_emulator/counts``: the per-endpoint request counts, as :attr:`ContentExporterEmulator.counts`.
- ``GET /openapi.json``: an OpenAPI 3.0 descriptor of the three paths this emulator serves (which may be
  non-default), with vendor-style parameter names; see :mod:`.descriptor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import ipaddress
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web

from airflow_provider_cex.endpoints import DEFAULT_PATHS, DOWNLOAD_EXPORT, EXPORT_PROGRESS, START_EXPORT

from . import chaos as _chaos
from .artifacts import Artifact, write_artifact
from .chaos import Chaos, ChaosSchedule, scheduled_chaos
from .descriptor import OPENAPI_PATH, describe

API_KEY_HEADER = "CEX-API-KEY"
DEMO_API_KEY = "cex-demo-key-0123456789abcdefghijklmnopqrstuv"
"""Key the CLI uses when neither ``--api-key`` nor ``CEX_EMULATOR_API_KEY`` is given. Not a secret."""
DEFAULT_FAILURE_MESSAGE = "Export failed: page tree could not be rendered"

ENDPOINTS: tuple[str, ...] = (START_EXPORT, EXPORT_PROGRESS, DOWNLOAD_EXPORT)
UNKNOWN_ENDPOINT = "unknown"
"""Endpoint name recorded for requests that match no route (they are logged but not counted)."""

DEFAULT_ENDPOINTS: dict[str, str] = dict(DEFAULT_PATHS)

FAILURE_PROGRESS = 50
"""A failing export fails once its progress would reach this value (at once when export_seconds is 0)."""

ADMIN_EXPORTS = "emulator_exports"
ADMIN_COUNTS = "emulator_counts"
ADMIN_OPENAPI = "emulator_openapi"
ADMIN_PATHS: dict[str, str] = {
    ADMIN_EXPORTS: "/_emulator/exports",
    ADMIN_COUNTS: "/_emulator/counts",
    ADMIN_OPENAPI: OPENAPI_PATH,
}
"""Emulator-only admin routes (see the module docstring): no key, loopback peers only, never counted."""

LISTEN_BACKLOG = 2048
"""Listen queue length (aiohttp's default is 128), so a burst of ~1,000 connects cannot overflow the accept
queue (an overflow drops the SYN and costs the client a 1 s retransmit); the kernel caps it at
``net.core.somaxconn``. The server itself sets no connection limit."""

_HandlerType = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint_of(request: web.BaseRequest) -> str:
    route_name = request.match_info.route.name if isinstance(request, web.Request) else None
    if route_name is not None and route_name in ENDPOINTS:
        return route_name
    return UNKNOWN_ENDPOINT


def _is_admin(request: web.BaseRequest) -> bool:
    route_name = request.match_info.route.name if isinstance(request, web.Request) else None
    return route_name in ADMIN_PATHS


def _from_loopback(request: web.BaseRequest) -> bool:
    remote = request.remote
    return remote is not None and is_loopback_host(remote)


def spread_fraction(page_id: str) -> float:
    """Deterministic pseudo-random fraction in [0, 1) for a page id: the top 53 bits of its SHA-256 / 2**53.

    An export of that page takes ``export_seconds + spread_fraction(page_id) * export_seconds_spread``; over
    many page ids the fractions are uniform, and the same page id gets the same one in every emulator.
    """
    digest = hashlib.sha256(str(page_id).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def is_loopback_host(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered.

    :param endpoint: ``start_export``, ``export_progress``, ``download_export``, or ``unknown`` (no route).
    :param method: HTTP method.
    :param path: request path, without the query string.
    :param had_api_key: whether a ``CEX-API-KEY`` header was present at all, whatever its value.
    :param status: HTTP status of the answer.
    """

    endpoint: str
    method: str
    path: str
    had_api_key: bool
    status: int


@dataclass(frozen=True)
class ExportInfo:
    """An export the emulator started.

    :param export_hash: the hash returned to the client.
    :param page_id: the page id from the URL.
    :param body: the JSON request body.
    :param started_at: ``time.monotonic()`` when it was started.
    """

    export_hash: str
    page_id: str
    body: dict[str, Any]
    started_at: float


@dataclass
class _ExportState:
    info: ExportInfo
    started_wall: float  # time.time() at start, for the admin route (info.started_at is monotonic)
    spread_fraction: float  # spread_fraction(page_id), computed once
    failure_message: str | None = None  # set once the failure was observed, so it sticks


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    remaining: int = 1
    chaos: Chaos | None = None  # None: a plain status answer (inject/outage)


@dataclass
class _Outage:
    status: int
    retry_after: str | None
    until: float


#: Ways a download can go wrong (see :meth:`ContentExporterEmulator.download_fault`).
DOWNLOAD_FAULTS = ("truncate", "stall", "ignore_range", "wrong_range", "chunked", "chunked_truncate")


@dataclass
class _Truncation:
    after_bytes: int
    remaining: int
    kind: str = "truncate"
    seconds: float = 0.0


@dataclass
class _State:
    export_seconds: float
    export_seconds_spread: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    records: list[RequestRecord] = field(default_factory=list)
    exports: dict[str, _ExportState] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)
    faults: dict[str, deque[_Fault]] = field(default_factory=lambda: {name: deque() for name in ENDPOINTS})
    outages: dict[str, _Outage] = field(default_factory=dict)
    redirect_origin: str | None = None
    redirect_status: int = 302
    foreign_source: ContentExporterEmulator | None = None
    truncations: deque[_Truncation] = field(default_factory=deque)
    schedule: ChaosSchedule | None = None
    schedule_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    refusing_until: float = 0.0


def _json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _fault_response(status: int, retry_after: str | None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status >= 500:
        # What a load balancer in front of the real service answers: an HTML page, not JSON.
        html = (
            f"<html><head><title>{status} {phrase}</title></head>"
            f"<body><h1>{status} {phrase}</h1><p>The server is temporarily unable to service your request."
            f"</p></body></html>\n"
        )
        return web.Response(status=status, text=html, content_type="text/html", headers=headers)
    return _json_error(status, phrase.lower(), headers)


def _normalise_retry_after(retry_after: str | float | None) -> str | None:
    if retry_after is None or isinstance(retry_after, str):
        return retry_after
    return str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)


def _check_fault_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"injected status must be a 4xx or 5xx code, got {status}")


class ContentExporterEmulator:
    """A local Content Exporter Remote API; every setter is safe to call from any thread while it runs.

    Use :func:`run_emulator` (a context manager running it on a background thread), ``start()``/``stop()``,
    or ``await start_async()``/``await stop_async()`` inside a running event loop.

    :param api_key: the only value of ``CEX-API-KEY`` accepted.
    :param export_seconds: how long an export takes to climb from 0 to 100 (0: done at once). Mutable.
    :param export_seconds_spread: each export takes ``export_seconds`` plus a deterministic fraction of this
        many seconds derived from its page id (:func:`spread_fraction`); 0 (default): all take
        ``export_seconds``. Mutable.
    :param artifact_bytes: serve that many deterministic pseudo-random bytes; None serves a small valid PDF.
    :param host: loopback address to bind (127.x.x.x, ::1 or localhost, which binds 127.0.0.1).
    :param port: TCP port; 0 picks a free one.
    :param fail_page_ids: page ids whose exports fail (see :meth:`fail_pages`).
    :param failure_message: the ``errorMessage`` of those failures.
    :param endpoints: path templates overriding :data:`DEFAULT_ENDPOINTS` (keys as there), like the
        connection extra ``endpoints``.
    :param artifact_dir: parent directory for the temporary artifact directory (default: system temp dir).
    """

    def __init__(
        self,
        api_key: str,
        *,
        export_seconds: float = 2.0,
        export_seconds_spread: float = 0.0,
        artifact_bytes: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_page_ids: Iterable[str | int] = (),
        failure_message: str = DEFAULT_FAILURE_MESSAGE,
        endpoints: Mapping[str, str] | None = None,
        artifact_dir: str | Path | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if not is_loopback_host(host):
            raise ValueError(f"refusing to bind {host!r}: the emulator listens on loopback addresses only")
        if export_seconds < 0:
            raise ValueError(f"export_seconds must be >= 0, got {export_seconds}")
        if export_seconds_spread < 0:
            raise ValueError(f"export_seconds_spread must be >= 0, got {export_seconds_spread}")
        if artifact_bytes is not None and artifact_bytes < 0:
            raise ValueError(f"artifact_bytes must be >= 0, got {artifact_bytes}")
        self._api_key = api_key
        self._host = "127.0.0.1" if host.lower() == "localhost" else host
        self._requested_port = port
        self._artifact_bytes = artifact_bytes
        self._artifact_parent = Path(artifact_dir) if artifact_dir is not None else None
        self._paths = dict(DEFAULT_ENDPOINTS)
        for name, template in (endpoints or {}).items():
            if name not in DEFAULT_ENDPOINTS:
                raise ValueError(f"unknown endpoint {name!r}; expected one of {', '.join(ENDPOINTS)}")
            self._paths[name] = template
        self._lock = threading.Lock()
        self._state = _State(
            export_seconds=float(export_seconds), export_seconds_spread=float(export_seconds_spread)
        )
        self.fail_pages(fail_page_ids, message=failure_message)
        self._artifact: Artifact | None = None
        self._tmpdir: Path | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        # Set when running on a background thread (start/stop).
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._listening = threading.Event()
        self._listening.set()

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and test failure output.
        where = self.base_url if self._port is not None else "not running"
        return f"<ContentExporterEmulator {where}>"

    # ---------------------------------------------------------------- properties

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` without a trailing slash."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def endpoints(self) -> dict[str, str]:
        """Path templates in use, keyed by endpoint name."""
        return dict(self._paths)

    def _require_artifact(self) -> Artifact:
        if self._artifact is None:
            raise RuntimeError("the emulator is not running, so it has no artifact")
        return self._artifact

    @property
    def artifact_path(self) -> Path:
        return self._require_artifact().path

    @property
    def artifact_sha256(self) -> str:
        return self._require_artifact().sha256

    @property
    def artifact_size(self) -> int:
        return self._require_artifact().size

    @property
    def export_seconds(self) -> float:
        with self._lock:
            return self._state.export_seconds

    @export_seconds.setter
    def export_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"export_seconds must be >= 0, got {value}")
        with self._lock:
            self._state.export_seconds = float(value)

    @property
    def export_seconds_spread(self) -> float:
        with self._lock:
            return self._state.export_seconds_spread

    @export_seconds_spread.setter
    def export_seconds_spread(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"export_seconds_spread must be >= 0, got {value}")
        with self._lock:
            self._state.export_seconds_spread = float(value)

    @property
    def counts(self) -> dict[str, int]:
        """Requests received per endpoint (a copy), including those answered 401, 429 or 5xx."""
        with self._lock:
            return dict(self._state.counts)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request, oldest first (a copy)."""
        with self._lock:
            return list(self._state.records)

    @property
    def exports(self) -> dict[str, ExportInfo]:
        """Started exports by hash (a copy; bodies are deep copies)."""
        with self._lock:
            states = list(self._state.exports.values())
        return {
            s.info.export_hash: ExportInfo(
                export_hash=s.info.export_hash,
                page_id=s.info.page_id,
                body=copy.deepcopy(s.info.body),
                started_at=s.info.started_at,
            )
            for s in states
        }

    def export_timeline(self) -> dict[str, dict[str, Any]]:
        """What ``GET /_emulator/exports`` answers: per hash, page id, start and completion (``time.time()``).

        ``done_at`` follows the current ``export_seconds`` and ``export_seconds_spread``; it is None for an
        export that fails (already failed, or of a page currently in :meth:`fail_pages`).
        """
        with self._lock:
            timeline: dict[str, dict[str, Any]] = {}
            for export_hash, state in self._state.exports.items():
                failing = state.failure_message is not None or state.info.page_id in self._state.failing
                duration = self._duration(state)
                timeline[export_hash] = {
                    "page_id": state.info.page_id,
                    "started_at": state.started_wall,
                    "done_at": None if failing else state.started_wall + duration,
                }
        return timeline

    # ---------------------------------------------------------------- knobs

    def reset_counters(self) -> None:
        """Zero the per-endpoint counts and empty the request log."""
        with self._lock:
            self._state.counts = dict.fromkeys(ENDPOINTS, 0)
            self._state.records = []

    def fail_pages(self, page_ids: Iterable[str | int], message: str = DEFAULT_FAILURE_MESSAGE) -> None:
        """Make exports of these page ids (started before or after this call) fail with ``message``.

        A failing export reports ``status: FAILED`` with ``errorMessage`` once its progress would reach
        :data:`FAILURE_PROGRESS` (at once when ``export_seconds`` is 0); downloads then answer 409.
        """
        with self._lock:
            for page_id in page_ids:
                self._state.failing[str(page_id)] = message

    def clear_failing_pages(self) -> None:
        """Stop failing new exports; exports already reported as failed stay failed."""
        with self._lock:
            self._state.failing.clear()

    def inject(
        self,
        endpoint: str,
        *,
        status: int,
        times: int = 1,
        retry_after: str | float | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with ``status`` instead of serving them.

        Queued after any faults already injected for that endpoint. ``retry_after`` becomes the
        ``Retry-After`` header verbatim (a number of seconds or an HTTP date); None sends none.
        5xx answers carry a small HTML page, 4xx a JSON ``{"error": ...}``.
        """
        self._check_endpoint(endpoint)
        _check_fault_status(status)
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        fault = _Fault(status=status, retry_after=_normalise_retry_after(retry_after), remaining=times)
        with self._lock:
            self._state.faults[endpoint].append(fault)

    def outage(
        self,
        endpoint: str,
        seconds: float,
        *,
        status: int = 503,
        retry_after: str | float | None = None,
    ) -> None:
        """Answer every call of ``endpoint`` with ``status`` for ``seconds`` (replaces a running outage)."""
        self._check_endpoint(endpoint)
        _check_fault_status(status)
        outage = _Outage(
            status=status,
            retry_after=_normalise_retry_after(retry_after),
            until=time.monotonic() + seconds,
        )
        with self._lock:
            self._state.outages[endpoint] = outage

    def clear_faults(self) -> None:
        """Drop every injected fault and chaos, outage, chaos schedule and pending download truncation."""
        with self._lock:
            for queue in self._state.faults.values():
                queue.clear()
            self._state.outages.clear()
            self._state.truncations.clear()
            self._state.schedule = None

    def chaos(self, endpoint: str, chaos: Chaos | str, *, times: int = 1, **params: Any) -> None:
        """Spoil the next ``times`` calls of ``endpoint`` with a :class:`~.chaos.Chaos` (or a kind + params).

        ``emu.chaos("export_progress", "wrong_json", variant=3)`` is
        ``emu.chaos("export_progress", Chaos("wrong_json", variant=3))``. Queued with :meth:`inject`'s faults.
        """
        self._check_endpoint(endpoint)
        spec = chaos if isinstance(chaos, Chaos) else Chaos(chaos, **params)
        if endpoint not in _chaos.APPLIES_TO[spec.kind]:
            raise ValueError(f"chaos kind {spec.kind!r} does not apply to {endpoint!r}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        with self._lock:
            self._state.faults[endpoint].append(
                _Fault(status=0, retry_after=None, remaining=times, chaos=spec)
            )

    def wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait for the end of a :meth:`refuse_connections` window; True once the port listens again."""
        return self._listening.wait(timeout)

    def chaos_schedule(self, schedule: ChaosSchedule | None) -> None:
        """Spoil requests per a seeded :class:`~.chaos.ChaosSchedule` (after queued faults); None stops it.

        The per-endpoint request numbering restarts at 0, so the same schedule replays the same faults.
        """
        with self._lock:
            self._state.schedule = schedule
            self._state.schedule_counts = dict.fromkeys(ENDPOINTS, 0)

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (clients get "connection refused"), then listen again, same port.

        Kept-alive connections are reset when they send a request during the window.
        """
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        loop = self._serving_loop
        if loop is None or self._runner is None:
            raise RuntimeError("the emulator is not running")
        with self._lock:
            self._state.refusing_until = time.monotonic() + seconds
        done = threading.Event()
        self._listening.clear()

        async def close_then_reopen() -> None:
            runner = self._runner
            if runner is None:
                done.set()
                return
            for site in list(runner.sites):
                await site.stop()
            done.set()
            await asyncio.sleep(seconds)
            try:
                if self._runner is runner:
                    site = web.TCPSite(
                        runner, self._host, self.port, backlog=LISTEN_BACKLOG, reuse_address=True
                    )
                    await site.start()
            finally:
                self._listening.set()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(close_then_reopen())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        asyncio.run_coroutine_threadsafe(close_then_reopen(), loop)
        if not done.wait(10.0):
            raise RuntimeError("the emulator did not stop listening within 10 s")

    def redirect_downloads_to(self, origin: str | None, *, status: int = 302) -> None:
        """Answer finished downloads with a redirect to ``origin`` + the same path; None turns it off.

        The key and export checks happen first, as on a service that hands out pre-signed URLs.
        """
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirect status must be 301, 302, 303, 307 or 308, got {status}")
        with self._lock:
            self._state.redirect_origin = origin.rstrip("/") if origin is not None else None
            self._state.redirect_status = status

    def accept_foreign_downloads(self, artifact_from: ContentExporterEmulator | None) -> None:
        """Serve ``artifact_from``'s artifact on the download route for any hash, without a key check.

        This makes the emulator the target of another one's :meth:`redirect_downloads_to`. ``artifact_from``
        must keep running while downloads are served (its artifact file is removed when it stops).
        None turns it off.
        """
        with self._lock:
            self._state.foreign_source = artifact_from

    def truncate_downloads(self, after_bytes: int, *, times: int = 1) -> None:
        """Cut the next ``times`` artifact downloads: send the full headers, then close after ``after_bytes``.

        The answer is a 200 (or 206 for a Range request) whose ``Content-Length`` promises more than is sent,
        as when a connection breaks mid-download.
        """
        self.download_fault("truncate", after_bytes=after_bytes, times=times)

    def download_fault(
        self, kind: str, *, after_bytes: int = 0, times: int = 1, seconds: float = 0.0
    ) -> None:
        """Spoil the next ``times`` artifact downloads in one of the :data:`DOWNLOAD_FAULTS` ways.

        - ``truncate``: full headers (``Accept-Ranges: bytes`` included), then the connection closes
          after ``after_bytes`` of the body.
        - ``stall``: send ``after_bytes``, then nothing for ``seconds`` (a client read timeout), then close.
        - ``ignore_range``: answer a ``Range`` request with 200 and the whole file, as if unsupported.
        - ``wrong_range``: answer a ``Range`` request with 206 and a ``Content-Range`` (and body) that
          start 7 bytes later than asked.
        - ``chunked``: the whole file with chunked transfer encoding: no ``Content-Length``.
        - ``chunked_truncate``: chunked, and the connection breaks after ``after_bytes``.

        Faults queue in order behind any already pending.
        """
        if kind not in DOWNLOAD_FAULTS:
            raise ValueError(f"unknown download fault {kind!r}; expected one of {', '.join(DOWNLOAD_FAULTS)}")
        if after_bytes < 0 or times < 1 or seconds < 0:
            raise ValueError("after_bytes and seconds must be >= 0 and times >= 1")
        with self._lock:
            self._state.truncations.append(
                _Truncation(after_bytes=after_bytes, remaining=times, kind=kind, seconds=seconds)
            )

    @staticmethod
    def _check_endpoint(endpoint: str) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")

    # ---------------------------------------------------------------- lifecycle

    def _prepare_artifact(self) -> None:
        parent = self._artifact_parent
        tmpdir = Path(tempfile.mkdtemp(prefix="cex-emulator-", dir=str(parent) if parent else None))
        try:
            self._artifact = write_artifact(tmpdir, self._artifact_bytes)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        self._tmpdir = tmpdir

    def _remove_artifact(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None
        self._artifact = None

    def make_app(self) -> web.Application:
        """Build the aiohttp application (without binding anything)."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(self._paths[START_EXPORT], self._handle_start, name=START_EXPORT)
        app.router.add_get(self._paths[EXPORT_PROGRESS], self._handle_progress, name=EXPORT_PROGRESS)
        app.router.add_get(self._paths[DOWNLOAD_EXPORT], self._handle_download, name=DOWNLOAD_EXPORT)
        app.router.add_get(ADMIN_PATHS[ADMIN_EXPORTS], self._handle_admin_exports, name=ADMIN_EXPORTS)
        app.router.add_get(ADMIN_PATHS[ADMIN_COUNTS], self._handle_admin_counts, name=ADMIN_COUNTS)
        app.router.add_get(ADMIN_PATHS[ADMIN_OPENAPI], self._handle_openapi, name=ADMIN_OPENAPI)
        app.on_response_prepare.append(self._record_response)
        return app

    async def _start_site(self, access_log: bool) -> None:
        runner = web.AppRunner(
            self.make_app(),
            shutdown_timeout=2.0,
            access_log=web.access_logger if access_log else None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port, backlog=LISTEN_BACKLOG)
            await site.start()
            addresses = runner.addresses
            if not addresses:
                raise RuntimeError("the emulator did not bind any socket")
            self._port = int(addresses[0][1])
            self._serving_loop = asyncio.get_running_loop()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def start_async(self, *, access_log: bool = False) -> None:
        """Start serving on the running event loop (writes the artifact in a worker thread first)."""
        if self._runner is not None or self._thread is not None:
            raise RuntimeError("the emulator is already running")
        await asyncio.to_thread(self._prepare_artifact)
        try:
            await self._start_site(access_log)
        except BaseException:
            self._remove_artifact()
            raise

    async def stop_async(self) -> None:
        """Stop serving and remove the artifact directory. Safe to call twice."""
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            self._port = None
            self._remove_artifact()

    def start(self, *, access_log: bool = False, timeout: float = 30.0) -> None:
        """Start serving on a daemon thread with its own event loop; returns once the port is listening."""
        if self._runner is not None or self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._prepare_artifact()
        started = threading.Event()
        self._startup_error = None
        thread = threading.Thread(
            target=self._thread_main, args=(started, access_log), name="cex-emulator", daemon=True
        )
        self._thread = thread
        thread.start()
        if not started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the emulator did not start within {timeout} s")
        if self._startup_error is not None:
            error = self._startup_error
            self.stop()
            raise error

    def _thread_main(self, started: threading.Event, access_log: bool) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve_until_stopped(loop, started, access_log))
        finally:
            loop.close()

    async def _serve_until_stopped(
        self, loop: asyncio.AbstractEventLoop, started: threading.Event, access_log: bool
    ) -> None:
        stop_event = asyncio.Event()
        try:
            await self._start_site(access_log)
        except BaseException as exc:
            self._startup_error = exc
            started.set()
            return
        self._stop_event = stop_event
        self._loop = loop
        started.set()
        await stop_event.wait()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background server, join its thread, remove the artifact directory. Safe to call twice."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is not None:
            if loop is not None and stop_event is not None:
                # The loop may already be closing after a failed start.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(stop_event.set)
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"the emulator thread did not stop within {timeout} s")
        self._thread = self._loop = self._stop_event = None
        self._port = None
        self._remove_artifact()

    def __enter__(self) -> ContentExporterEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- request plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _HandlerType) -> web.StreamResponse:
        endpoint = _endpoint_of(request)
        if endpoint == UNKNOWN_ENDPOINT:
            return await handler(request)
        now = time.monotonic()
        with self._lock:
            self._state.counts[endpoint] += 1
            refusing = now < self._state.refusing_until
            fault = None if refusing else self._take_fault(endpoint, now)
            foreign = endpoint == DOWNLOAD_EXPORT and self._state.foreign_source is not None
        if refusing:  # a kept-alive connection during a refusal window: reset it
            return _reset_connection(request)
        spoil = fault.chaos if fault is not None else None
        # Faults come first, like a rate-limiting proxy in front of the service.
        if fault is not None and spoil is None:
            return _fault_response(fault.status, fault.retry_after)
        if spoil is not None and spoil.kind in _chaos.BEFORE_SERVICE:
            return await _answer_before_service(request, spoil)
        if not foreign:
            supplied = request.headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(supplied.encode("utf-8"), self._api_key.encode("utf-8")):
                return _json_error(401, "invalid API key")
        if spoil is None:
            return await handler(request)
        if spoil.kind == "huge_error_body":
            return await _huge_error(request, spoil)
        if spoil.kind in ("truncated_body", "reset_mid_body") and endpoint == DOWNLOAD_EXPORT:
            # The artifact path already knows how to break a body part-way.
            self._queue_download_break(spoil)
            return await handler(request)
        response = await handler(request)
        return await _spoil_answer(request, endpoint, response, spoil)

    def _queue_download_break(self, spoil: Chaos) -> None:
        kind = "reset" if spoil.kind == "reset_mid_body" else "truncate"
        with self._lock:
            artifact = self._artifact
            after = int((artifact.size if artifact else 0) * spoil.fraction)
            self._state.truncations.appendleft(_Truncation(after_bytes=after, remaining=1, kind=kind))

    def _take_fault(self, endpoint: str, now: float) -> _Fault | None:
        """Return the fault answering this call, if any (caller holds the lock)."""
        outage = self._state.outages.get(endpoint)
        if outage is not None:
            if now < outage.until:
                return _Fault(status=outage.status, retry_after=outage.retry_after)
            del self._state.outages[endpoint]
        queue = self._state.faults[endpoint]
        if queue:
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
            return fault
        schedule = self._state.schedule
        if schedule is not None:
            n = self._state.schedule_counts[endpoint]
            self._state.schedule_counts[endpoint] = n + 1
            spoil = scheduled_chaos(schedule, endpoint, n)
            if spoil is not None:
                return _Fault(status=0, retry_after=None, chaos=spoil)
        return None

    async def _record_response(self, request: web.Request, response: web.StreamResponse) -> None:
        if _is_admin(request):
            return
        record = RequestRecord(
            endpoint=_endpoint_of(request),
            method=request.method,
            path=request.path,
            had_api_key=API_KEY_HEADER in request.headers,
            status=response.status,
        )
        with self._lock:
            self._state.records.append(record)

    # ---------------------------------------------------------------- handlers

    async def _handle_start(self, request: web.Request) -> web.StreamResponse:
        page_id = request.match_info.get("page_id", "")
        if not page_id.isdigit() or not page_id.isascii():
            return _json_error(400, f"page id must be digits, got {page_id[:40]!r}")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _json_error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _json_error(400, "request body must be a JSON object holding rootContentId")
        root = body.get("rootContentId")
        if root is None:
            return _json_error(400, "rootContentId is missing from the request body")
        if isinstance(root, bool) or not isinstance(root, str | int):
            return _json_error(400, "rootContentId must be a string or an integer")
        if str(root) != page_id:
            return _json_error(
                400, f"rootContentId {str(root)[:40]!r} does not match page id {page_id!r} in the URL"
            )
        export_hash = uuid.uuid4().hex
        info = ExportInfo(export_hash=export_hash, page_id=page_id, body=body, started_at=time.monotonic())
        state = _ExportState(info=info, started_wall=time.time(), spread_fraction=spread_fraction(page_id))
        with self._lock:
            self._state.exports[export_hash] = state
        return web.json_response({"hash": export_hash})

    def _evaluate(self, export_hash: str, now: float) -> tuple[int, str | None] | None:
        """Return (progress, failure message or None) for a known hash, else None (caller holds the lock)."""
        state = self._state.exports.get(export_hash)
        if state is None:
            return None
        seconds = self._duration(state)
        elapsed = now - state.info.started_at
        progress = 100 if seconds <= 0 else min(100, int(elapsed / seconds * 100))
        failure_at = FAILURE_PROGRESS if seconds > 0 else 0
        if state.failure_message is None:
            message = self._state.failing.get(state.info.page_id)
            if message is not None and progress >= failure_at:
                state.failure_message = message
        if state.failure_message is not None:
            return failure_at, state.failure_message
        return progress, None

    def _duration(self, state: _ExportState) -> float:
        """Seconds this export takes to reach 100 (caller holds the lock)."""
        return self._state.export_seconds + state.spread_fraction * self._state.export_seconds_spread

    async def _handle_progress(self, request: web.Request) -> web.StreamResponse:
        export_hash = request.match_info.get("export_hash", "")
        with self._lock:
            result = self._evaluate(export_hash, time.monotonic())
        if result is None:
            return _json_error(404, "unknown export hash")
        progress, failure = result
        if failure is not None:
            return web.json_response({"progressValue": progress, "status": "FAILED", "errorMessage": failure})
        return web.json_response(
            {"progressValue": progress, "status": "DONE" if progress >= 100 else "RUNNING"}
        )

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        export_hash = request.match_info.get("export_hash", "")
        with self._lock:
            foreign = self._state.foreign_source
            redirect_origin = self._state.redirect_origin
            redirect_status = self._state.redirect_status
            result = None if foreign is not None else self._evaluate(export_hash, time.monotonic())
        if foreign is not None:
            page = foreign.exports.get(export_hash)
            filename = f"page-{page.page_id}.pdf" if page else f"export-{export_hash[:64]}.pdf"
            return await self._serve_artifact(request, foreign._require_artifact(), filename)
        if result is None:
            return _json_error(404, "unknown export hash")
        progress, failure = result
        if failure is not None:
            return _json_error(409, "export failed")
        if progress < 100:
            return _json_error(409, "export not finished")
        if redirect_origin is not None:
            location = redirect_origin + request.rel_url.path
            return web.Response(status=redirect_status, headers={"Location": location})
        with self._lock:
            page_id = self._state.exports[export_hash].info.page_id
        return await self._serve_artifact(request, self._require_artifact(), f"page-{page_id}.pdf")

    async def _handle_admin_exports(self, request: web.Request) -> web.StreamResponse:
        if not _from_loopback(request):
            return _json_error(403, "the emulator admin routes answer loopback clients only")
        return web.json_response(self.export_timeline())

    async def _handle_openapi(self, request: web.Request) -> web.StreamResponse:
        """The OpenAPI descriptor of the paths this emulator serves (no key, like the vendor's download)."""
        return web.json_response(describe(self._paths))

    async def _handle_admin_counts(self, request: web.Request) -> web.StreamResponse:
        if not _from_loopback(request):
            return _json_error(403, "the emulator admin routes answer loopback clients only")
        return web.json_response(self.counts)

    async def _serve_artifact(
        self, request: web.Request, artifact: Artifact, filename: str
    ) -> web.StreamResponse:
        headers = {
            "Content-Type": "application/pdf",
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
        with self._lock:
            truncation = self._state.truncations[0] if self._state.truncations else None
            if truncation is not None:
                truncation.remaining -= 1
                if truncation.remaining <= 0:
                    self._state.truncations.popleft()
        if truncation is None:
            return web.FileResponse(artifact.path, headers=headers)
        return await self._serve_faulty(request, artifact, headers, truncation)

    async def _serve_faulty(
        self, request: web.Request, artifact: Artifact, headers: dict[str, str], fault: _Truncation
    ) -> web.StreamResponse:
        size = artifact.size
        start, stop, status = 0, size, 200
        headers["Accept-Ranges"] = "bytes"
        chunked = fault.kind in ("chunked", "chunked_truncate")
        if "Range" in request.headers and fault.kind != "ignore_range" and not chunked:
            try:
                rng = request.http_range
            except ValueError:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            start = rng.start if rng.start is not None else 0
            if start < 0:
                start = max(0, size + start)
            stop = min(size, rng.stop) if rng.stop is not None else size
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            if fault.kind == "wrong_range":
                start = min(start + 7, stop - 1)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = stop - start
        await response.prepare(request)
        complete = fault.kind in ("ignore_range", "wrong_range", "chunked")
        to_send = stop - start if complete else min(fault.after_bytes, stop - start)
        try:
            for chunk in _read_range(artifact.path, start, to_send):
                await response.write(chunk)
            if complete:
                await response.write_eof()
                return response
        except ConnectionError:  # the client gave up first (e.g. its read timeout during a stall)
            return response
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
        if fault.kind == "reset":
            return _reset_connection(request, response)
        # Drop the connection with the body short of what was promised, as a broken network would.
        if request.transport is not None:
            request.transport.close()
        return response


# ------------------------------------------------------------------------------------ chaos answers


def _reset_connection(
    request: web.BaseRequest, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Reset (RST) the request's connection; returns a response for aiohttp that will never be sent."""
    transport = request.transport
    if transport is not None:
        _chaos.reset_socket(transport.get_extra_info("socket"))
        transport.close()
    return response if response is not None else web.Response(status=499)


async def _answer_before_service(request: web.Request, spoil: Chaos) -> web.StreamResponse:
    """Chaos answered in front of the service: statuses, resets, stalls and redirects."""
    if spoil.kind == "status":
        return _fault_response(spoil.status, spoil.retry_after)
    if spoil.kind == "reset_before_headers":
        await request.read()  # the whole request arrived: the client cannot know whether it was acted on
        return _reset_connection(request)
    if spoil.kind == "stall_before_headers":
        await request.read()
        await asyncio.sleep(spoil.seconds)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)
    if spoil.kind == "redirect_loop":
        return web.Response(status=spoil.status, headers={"Location": str(request.rel_url)})
    # redirect_foreign
    target = (spoil.target or "").rstrip("/")
    return web.Response(status=spoil.status, headers={"Location": target + str(request.rel_url)})


async def _huge_error(request: web.Request, spoil: Chaos) -> web.StreamResponse:
    """An error status with a body of ``spoil.size`` bytes, streamed (a client should stop reading early)."""
    response = web.StreamResponse(status=spoil.status, headers={"Content-Type": "text/html"})
    response.content_length = spoil.size
    await response.prepare(request)
    block = (b"<p>" + b"x" * 1020 + b"</p>") * 1024  # 1 MiB
    remaining = spoil.size
    try:
        while remaining > 0:
            piece = block[: min(len(block), remaining)]
            await response.write(piece)
            remaining -= len(piece)
        await response.write_eof()
    except (ConnectionError, RuntimeError):  # the client hung up, as it should
        pass
    return response


async def _spoil_answer(
    request: web.Request, endpoint: str, response: web.StreamResponse, spoil: Chaos
) -> web.StreamResponse:
    """Chaos applied to the service's own answer (the export was started, progress computed, ...)."""
    if spoil.kind == "hostile_filename":
        response.headers["Content-Disposition"] = _chaos.HOSTILE_DISPOSITIONS[
            spoil.variant % len(_chaos.HOSTILE_DISPOSITIONS)
        ]
        return response
    body = response.body if isinstance(response, web.Response) else None
    raw = body if isinstance(body, bytes) else b""
    if spoil.kind in ("truncated_body", "reset_mid_body"):
        cut = web.StreamResponse(status=response.status, headers={"Content-Type": "application/json"})
        cut.content_length = len(raw)
        await cut.prepare(request)
        await cut.write(raw[: int(len(raw) * spoil.fraction)])
        if spoil.kind == "reset_mid_body":
            return _reset_connection(request, cut)
        if request.transport is not None:
            request.transport.close()
        return cut
    if spoil.kind == "non_json":
        content_type, garbage = _chaos.NON_JSON_BODIES[spoil.variant % len(_chaos.NON_JSON_BODIES)]
        return web.Response(status=200, body=garbage, headers={"Content-Type": content_type})
    if spoil.kind == "wrong_json":
        return web.Response(
            status=200, body=_chaos.wrong_json_body(endpoint, spoil), content_type="application/json"
        )
    # progress_backwards / progress_over_100
    try:
        payload = json.loads(raw)
    except ValueError:
        return response
    return web.json_response(_chaos.spoil_progress(payload, spoil), status=response.status)


def _read_range(path: Path, start: int, length: int, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            chunk = fh.read(min(chunk_size, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


@contextlib.contextmanager
def run_emulator(
    api_key: str = DEMO_API_KEY,
    *,
    export_seconds: float = 2.0,
    export_seconds_spread: float = 0.0,
    artifact_bytes: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    fail_page_ids: Iterable[str | int] = (),
    failure_message: str = DEFAULT_FAILURE_MESSAGE,
    endpoints: Mapping[str, str] | None = None,
    artifact_dir: str | Path | None = None,
    access_log: bool = False,
) -> Iterator[ContentExporterEmulator]:
    """Run a :class:`ContentExporterEmulator` on a background thread for the duration of a ``with`` block."""
    emulator = ContentExporterEmulator(
        api_key,
        export_seconds=export_seconds,
        export_seconds_spread=export_seconds_spread,
        artifact_bytes=artifact_bytes,
        host=host,
        port=port,
        fail_page_ids=fail_page_ids,
        failure_message=failure_message,
        endpoints=endpoints,
        artifact_dir=artifact_dir,
    )
    emulator.start(access_log=access_log)
    try:
        yield emulator
    finally:
        emulator.stop()

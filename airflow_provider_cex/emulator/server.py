"""An in-process emulator of the Content Exporter Remote API (start, progress, download) built on aiohttp.web.

Tests steer it from their own thread: export speed, failing pages, injected 429/5xx answers, outages, chaos,
redirected and broken downloads; it counts and logs every request it receives.
:class:`ContentExporterEmulator` is the facade over the export model (:mod:`.model`), the fault queues
(:mod:`.faults`), the app (:mod:`.app`, :mod:`.serving`) and the listener (:mod:`.lifecycle`); its knobs
(faults, outages, chaos, failing pages, redirects, reset) are in :mod:`.knobs`.

Redirected downloads: ``emu_a.redirect_downloads_to(emu_b.base_url)`` makes A answer a finished download
with ``302 Location: <emu_b.base_url>/api/remoteExport/<hash>/download``.
``emu_b.accept_foreign_downloads(emu_a)`` makes B act like a pre-signed URL host: its download route serves
A's artifact for *any* hash and never checks ``CEX-API-KEY``; ``RequestRecord.had_api_key`` on B then shows
whether a client leaked the key across origins.

Spread completion times: ``export_seconds_spread=S`` makes each export take ``export_seconds`` plus a
deterministic fraction of ``S`` derived from its page id (:func:`spread_fraction`, uniform over [0, S)), so a
batch of exports finishes over a window instead of all at once, reproducibly across emulators and runs.

HTTPS: ``tls=True`` serves TLS with a certificate for ``tls_names`` (default 127.0.0.1 and localhost)
issued by a throwaway CA made at start (:mod:`.tls`); clients trust it through
:attr:`ContentExporterEmulator.ca_path`.

The emulator-only admin routes (``/_emulator/exports``, ``/_emulator/counts``, ``/openapi.json``) are
described in :mod:`.app`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from aiohttp import web

from airflow_provider_cex.endpoints import (
    DEFAULT_PATHS,
    DOWNLOAD_EXPORT,
    ENDPOINT_NAMES,
    EXPORT_PROGRESS,
    KEY_HEADER,
    START_EXPORT,
)

from .app import ADMIN_PATHS, Service, is_loopback_host
from .faults import DOWNLOAD_FAULTS, FaultQueues
from .knobs import EmulatorKnobs
from .lifecycle import LISTEN_BACKLOG, Listener
from .model import (
    DEFAULT_FAILURE_MESSAGE,
    FAILURE_PROGRESS,
    UNKNOWN_ENDPOINT,
    ExportInfo,
    ExportModel,
    RequestRecord,
    spread_fraction,
)
from .tls import DEFAULT_TLS_NAMES, check_tls_names

__all__ = [  # what other code imports from here; most of it lives in the modules named above
    "ADMIN_PATHS",
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_PATHS",
    "DEMO_API_KEY",
    "DOWNLOAD_EXPORT",
    "DOWNLOAD_FAULTS",
    "ENDPOINT_NAMES",
    "EXPORT_PROGRESS",
    "FAILURE_PROGRESS",
    "KEY_HEADER",
    "LISTEN_BACKLOG",
    "START_EXPORT",
    "UNKNOWN_ENDPOINT",
    "ContentExporterEmulator",
    "ExportInfo",
    "RequestRecord",
    "is_loopback_host",
    "run_emulator",
    "spread_fraction",
]

DEMO_API_KEY = "cex-demo-key-0123456789abcdefghijklmnopqrstuv"
"""Key the CLI uses when neither ``--api-key`` nor ``CEX_EMULATOR_API_KEY`` is given. Not a secret."""


class ContentExporterEmulator(EmulatorKnobs):
    """A local Content Exporter Remote API; every setter is safe to call from any thread while it runs.

    Use :func:`run_emulator` (a context manager running it on a background thread), ``start()``/``stop()``,
    or ``await start_async()``/``await stop_async()`` inside a running event loop.

    Faults for one endpoint (:meth:`inject`, :meth:`chaos`, :meth:`download_fault`) share one queue and
    spoil its requests in the order they were armed; a running :meth:`outage` answers before them, and a
    :meth:`chaos_schedule` spoils only requests that find the queue empty.

    :param api_key: the only value of the key header (:data:`KEY_HEADER`) accepted.
    :param export_seconds: how long an export takes to climb from 0 to 100 (0: done at once). Mutable.
    :param export_seconds_spread: each export takes ``export_seconds`` plus a deterministic fraction of this
        many seconds derived from its page id (:func:`spread_fraction`); 0 (default): all take
        ``export_seconds``. Mutable.
    :param artifact_bytes: serve that many deterministic pseudo-random bytes; None serves a small valid PDF.
    :param host: loopback address to bind (127.x.x.x, ::1 or localhost, which binds 127.0.0.1).
    :param port: TCP port; 0 picks a free one.
    :param fail_page_ids: page ids whose exports fail (see :meth:`fail_pages`).
    :param failure_message: the ``errorMessage`` of those failures.
    :param endpoints: path templates overriding :data:`DEFAULT_PATHS` (keys as there), like the
        connection extra ``endpoints``.
    :param artifact_dir: parent directory for the temporary artifact directory (default: system temp dir).
    :param tls: serve HTTPS (``base_url`` starts with ``https://``) with a certificate issued by a throwaway
        CA generated at start, whose PEM file is :attr:`ca_path`; the CA, certificate and key live in a
        private temporary folder (mode 0700, beside the artifact's) removed on stop.
    :param tls_names: host names and IP addresses the server certificate is valid for (its SANs), e.g.
        ``("cex.example.invalid",)`` to test a name mismatch. Ignored without ``tls``.
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
        tls: bool = False,
        tls_names: Sequence[str] = DEFAULT_TLS_NAMES,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if not is_loopback_host(host):
            raise ValueError(f"refusing to bind {host!r}: the emulator listens on loopback addresses only")
        self._model = ExportModel(export_seconds, export_seconds_spread)  # checks both are >= 0
        if artifact_bytes is not None and artifact_bytes < 0:
            raise ValueError(f"artifact_bytes must be >= 0, got {artifact_bytes}")
        self._api_key = api_key
        self._host = "127.0.0.1" if host.lower() == "localhost" else host
        self._paths = dict(DEFAULT_PATHS)
        for name, template in (endpoints or {}).items():
            if name not in ENDPOINT_NAMES:
                raise ValueError(f"unknown endpoint {name!r}; expected one of {', '.join(ENDPOINT_NAMES)}")
            self._paths[name] = template
        self._model.fail_pages(fail_page_ids, failure_message)
        self._faults = FaultQueues()
        self._tls = bool(tls)
        self._listener = Listener(
            host=self._host,
            port=port,
            make_app=self.make_app,
            artifact_bytes=artifact_bytes,
            artifact_dir=Path(artifact_dir) if artifact_dir is not None else None,
            tls_names=check_tls_names(tls_names) if tls else None,
        )
        self._service = Service(
            api_key=api_key,
            paths=self._paths,
            model=self._model,
            faults=self._faults,
            artifact=lambda: self._listener.artifact,
        )

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and test failure output.
        where = self.base_url if self._listener.port is not None else "not running"
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
        port = self._listener.port
        if port is None:
            raise RuntimeError("the emulator is not running")
        return port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with ``tls``) without a trailing slash."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def tls(self) -> bool:
        """Whether the emulator serves HTTPS."""
        return self._tls

    @property
    def ca_path(self) -> str | None:
        """Path of the PEM CA bundle that issued the server certificate (for the ``verify`` extra, or
        ``ssl.create_default_context(cafile=...)``); None without ``tls``. It exists while the emulator runs.
        """
        path = self._listener.ca_path
        return str(path) if path is not None else None

    @property
    def endpoints(self) -> dict[str, str]:
        """Path templates in use, keyed by endpoint name."""
        return dict(self._paths)

    @property
    def artifact_path(self) -> Path:
        return self._listener.artifact.path

    @property
    def artifact_sha256(self) -> str:
        return self._listener.artifact.sha256

    @property
    def artifact_size(self) -> int:
        return self._listener.artifact.size

    @property
    def export_seconds(self) -> float:
        return self._model.export_seconds

    @export_seconds.setter
    def export_seconds(self, value: float) -> None:
        self._model.export_seconds = value

    @property
    def export_seconds_spread(self) -> float:
        return self._model.export_seconds_spread

    @export_seconds_spread.setter
    def export_seconds_spread(self, value: float) -> None:
        self._model.export_seconds_spread = value

    @property
    def counts(self) -> dict[str, int]:
        """Requests received per endpoint (a copy), including those answered 401, 429 or 5xx."""
        return self._model.counts()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request, oldest first (a copy)."""
        return self._model.records()

    @property
    def exports(self) -> dict[str, ExportInfo]:
        """Started exports by hash (a copy; bodies are deep copies)."""
        return self._model.exports()

    # ---------------------------------------------------------------- lifecycle

    def make_app(self) -> web.Application:
        """Build the aiohttp application (without binding anything)."""
        return self._service.make_app()

    async def start_async(self, *, access_log: bool = False) -> None:
        """Start serving on the running event loop (writes the artifact in a worker thread first)."""
        await self._listener.start_async(access_log=access_log)

    async def stop_async(self) -> None:
        """Stop serving and remove the artifact directory. Safe to call twice."""
        await self._listener.stop_async()

    def start(self, *, access_log: bool = False, timeout: float = 30.0) -> None:
        """Start serving on a daemon thread with its own event loop; returns once the port is listening."""
        self._listener.start(access_log=access_log, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background server, join its thread, remove the artifact directory. Safe to call twice."""
        self._listener.stop(timeout)

    def __enter__(self) -> ContentExporterEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
    tls: bool = False,
    tls_names: Sequence[str] = DEFAULT_TLS_NAMES,
) -> Iterator[ContentExporterEmulator]:
    """Run a :class:`ContentExporterEmulator` on a background thread for the duration of a ``with`` block.

    With ``tls=True`` it serves HTTPS: trust ``emulator.ca_path`` (e.g. as the connection extra ``verify``).
    """
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
        tls=tls,
        tls_names=tls_names,
    )
    emulator.start(access_log=access_log)
    try:
        yield emulator
    finally:
        emulator.stop()

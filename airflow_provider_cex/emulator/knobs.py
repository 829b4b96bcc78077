"""The knobs of the emulator: the methods a test calls to spoil, fail, redirect and reset its answers.

:class:`EmulatorKnobs` is mixed into :class:`~.server.ContentExporterEmulator`, which owns the state these
methods steer: the export model (:mod:`.model`: failing pages, counters), the fault queues (:mod:`.faults`:
injected statuses, outages, chaos, download faults, the chaos schedule), the download route of the app
(:mod:`.app`: redirects, foreign artifacts) and the listener (:mod:`.lifecycle`: refused connections).
Every knob is safe to call from any thread while the emulator runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .app import Service
from .chaos import Chaos, ChaosSchedule
from .faults import FaultQueues, chaos_fault, check_endpoint, download_fault, status_fault
from .lifecycle import Listener
from .model import DEFAULT_FAILURE_MESSAGE, ExportModel

if TYPE_CHECKING:
    from .server import ContentExporterEmulator


class EmulatorKnobs:
    """The knobs of :class:`~.server.ContentExporterEmulator`, which sets the attributes declared here."""

    _model: ExportModel
    _faults: FaultQueues
    _service: Service
    _listener: Listener

    def reset(self) -> None:
        """Disarm everything and zero the counters, as between two runs that share one emulator.

        Drops: every fault of every kind (queued :meth:`inject`, :meth:`chaos` and :meth:`download_fault`
        faults, outages, the chaos schedule), the failing pages (including ``fail_page_ids``), the download
        redirect and the foreign artifact source; zeroes :attr:`counts` and empties :attr:`requests`.

        Keeps: the exports already started (:attr:`exports`, and a failure already reported for one), the
        artifact, the port, ``export_seconds`` and ``export_seconds_spread``, and a :meth:`refuse_connections`
        window in progress, which ends on its own (see :meth:`wait_listening`).
        """
        self._faults.clear()
        self._model.clear_failing_pages()
        self._service.set_route(redirect_origin=None, foreign=None)
        self._model.reset_counters()

    def reset_counters(self) -> None:
        """Zero the per-endpoint counts and empty the request log."""
        self._model.reset_counters()

    def fail_pages(self, page_ids: Iterable[str | int], message: str = DEFAULT_FAILURE_MESSAGE) -> None:
        """Make exports of these page ids (started before or after this call) fail with ``message``.

        A failing export reports ``status: FAILED`` with ``errorMessage`` once its progress would reach
        :data:`FAILURE_PROGRESS` (at once when ``export_seconds`` is 0); downloads then answer 409.
        """
        self._model.fail_pages(page_ids, message)

    def clear_failing_pages(self) -> None:
        """Stop failing new exports; exports already reported as failed stay failed."""
        self._model.clear_failing_pages()

    def inject(
        self,
        endpoint: str,
        *,
        status: int,
        times: int = 1,
        retry_after: str | float | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with ``status`` instead of serving them.

        Queued after any faults already armed for that endpoint. ``retry_after`` becomes the
        ``Retry-After`` header verbatim (a number of seconds or an HTTP date); None sends none.
        5xx answers carry a small HTML page, 4xx a JSON ``{"error": ...}``.
        """
        self._faults.add(status_fault(endpoint, status, retry_after, times=times))

    def outage(
        self,
        endpoint: str,
        seconds: float,
        *,
        status: int = 503,
        retry_after: str | float | None = None,
    ) -> None:
        """Answer every call of ``endpoint`` with ``status`` for ``seconds`` (replaces a running outage).

        It answers before any fault queued for the endpoint; those fire once it has ended.
        """
        self._faults.add(status_fault(endpoint, status, retry_after, until=time.monotonic() + seconds))

    def clear_faults(self) -> None:
        """Drop every injected fault and chaos, outage, chaos schedule and pending download fault."""
        self._faults.clear()

    def chaos(self, endpoint: str, chaos: Chaos | str, *, times: int = 1, **params: Any) -> None:
        """Spoil the next ``times`` calls of ``endpoint`` with a :class:`~.chaos.Chaos` (or a kind + params).

        ``emu.chaos("export_progress", "wrong_json", variant=3)`` is
        ``emu.chaos("export_progress", Chaos("wrong_json", variant=3))``. Queued with :meth:`inject`'s faults.
        """
        check_endpoint(endpoint)
        spec = chaos if isinstance(chaos, Chaos) else Chaos(chaos, **params)
        self._faults.add(chaos_fault(endpoint, spec, times))

    def wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait for the end of a :meth:`refuse_connections` window; True once the port listens again."""
        return self._listener.wait_listening(timeout)

    def chaos_schedule(self, schedule: ChaosSchedule | None) -> None:
        """Spoil requests per a seeded :class:`~.chaos.ChaosSchedule` (after queued faults); None stops it.

        The per-endpoint request numbering restarts at 0, so the same schedule replays the same faults.
        """
        self._faults.set_schedule(schedule)

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (clients get "connection refused"), then listen again, same port.

        Kept-alive connections are reset when they send a request during the window.
        """
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self._listener.require_serving()
        self._faults.refuse(time.monotonic() + seconds)
        self._listener.close_for(seconds)

    def redirect_downloads_to(self, origin: str | None, *, status: int = 302) -> None:
        """Answer finished downloads with a redirect to ``origin`` + the same path; None turns it off.

        The key and export checks happen first, as on a service that hands out pre-signed URLs.
        """
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirect status must be 301, 302, 303, 307 or 308, got {status}")
        origin = origin.rstrip("/") if origin is not None else None
        self._service.set_route(redirect_origin=origin, redirect_status=status)

    def accept_foreign_downloads(self, artifact_from: ContentExporterEmulator | None) -> None:
        """Serve ``artifact_from``'s artifact on the download route for any hash, without a key check.

        This makes the emulator the target of another one's :meth:`redirect_downloads_to`. ``artifact_from``
        must keep running while downloads are served (its artifact file is removed when it stops).
        None turns it off.
        """
        self._service.set_route(foreign=artifact_from)

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

        Faults queue in order behind any already armed for the download endpoint. A download answered
        without the artifact (401, 404, 409, a redirect) leaves the fault for the next one.
        """
        self._faults.add(download_fault(kind, after_bytes=after_bytes, times=times, seconds=seconds))

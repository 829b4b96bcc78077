"""Trigger that polls a Content Exporter export from the triggerer, for the deferrable sensor and operator.

Thousands of these share one event loop, so ``run`` never blocks: aiohttp with one session
per trigger, ``asyncio.sleep`` between polls, and the connection looked up asynchronously.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.exceptions import ContentExporterError, ContentExporterTransientError
from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook
from airflow_provider_cex.progress import ExportWatch, Step, next_step
from airflow_provider_cex.triggers.events import ERROR, EVENT_STATUSES, FAILED, SUCCESS, TIMEOUT

__all__ = ["ERROR", "EVENT_STATUSES", "FAILED", "SUCCESS", "TIMEOUT", "ContentExporterExportTrigger"]

#: The shortest time a progress check gets, even past the deadline: the event fires by the deadline plus this.
DEADLINE_GRACE = 1.0


class ContentExporterExportTrigger(BaseTrigger):
    """
    Poll an export's progress until it completes, fails, or the deadline passes; fire one event.

    Logs the first progress, then a line when the progress moved 10 points and 30 s passed (whichever
    comes later; at least one every 10 minutes): a triggerer may run 1,000 of these, and a line costs more
    CPU than a poll (``benchmarks/trigger_scale.py``). The event carries the page and the start time, so
    the resumed task says what the other modes say.

    :param export_hash: the export to watch.
    :param content_exporter_conn_id: connection of type ``content_exporter``.
    :param poll_interval: seconds between polls.
    :param end_time: absolute deadline (Unix timestamp), so a triggerer restart does not reset it.
    :param page_id: the exported page, when known (the log lines start with it).
    :param started_at: when the export started (Unix timestamp), when known: the elapsed time and the
        estimate count from it.
    """

    def __init__(
        self,
        export_hash: str,
        end_time: float,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        page_id: str | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        self.export_hash = export_hash
        self.end_time = float(end_time)
        self.content_exporter_conn_id = content_exporter_conn_id
        self.poll_interval = float(poll_interval)
        self.page_id = None if page_id is None else str(page_id)
        self.started_at = None if started_at is None else float(started_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "export_hash": self.export_hash,
                "end_time": self.end_time,
                "content_exporter_conn_id": self.content_exporter_conn_id,
                "poll_interval": self.poll_interval,
                "page_id": self.page_id,
                "started_at": self.started_at,
            },
        )

    def make_hook(self) -> ContentExporterAsyncHook:
        """The hook this trigger polls with, made once per run.

        Override it in a subclass to poll with another ``retry_policy`` or an ``on_retry`` callback (see
        :class:`~airflow_provider_cex.hooks.content_exporter_async.ContentExporterAsyncHook`); the subclass
        must be importable where the triggerer runs, as :meth:`serialize` names it.
        """
        return ContentExporterAsyncHook(self.content_exporter_conn_id)

    def _event(self, status: str, watch: ExportWatch, **payload: Any) -> TriggerEvent:
        progress = watch.progress if watch.progress is not None else 0.0
        event = {"status": status, "export_hash": self.export_hash, "progress": progress}
        return TriggerEvent({**event, **watch.facts(), **payload})

    def _timeout(self, watch: ExportWatch, *, unanswered: bool = False) -> TriggerEvent:
        return self._event(TIMEOUT, watch, message=watch.timed_out_message(unanswered=unanswered))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = ExportWatch(self.export_hash, page_id=self.page_id, started_at=self.started_at)
        logged: tuple[float, float] | None = None  # (when, progress) of the last progress line
        try:
            async with self.make_hook() as hook:
                while True:
                    # The deadline holds during a call: a server that drips or never answers, or retries
                    # waiting out its Retry-After, are cut at the deadline (a trigger started after its
                    # deadline still gets one reading of DEADLINE_GRACE seconds).
                    budget = max(self.end_time - time.time(), DEADLINE_GRACE)
                    try:
                        reading = await hook.get_export_progress(self.export_hash, within=budget)
                    except TimeoutError:
                        yield self._timeout(watch, unanswered=True)
                        return
                    except ContentExporterTransientError as err:
                        # An outage shorter than the deadline must not fail a long export.
                        if time.time() < self.end_time:
                            self.log.warning("%s", watch.unavailable_line(err))
                        else:  # an outage until the deadline: an error, as in a worker (events.wait_error)
                            yield self._event(ERROR, watch, message=str(err))
                            return
                    else:
                        now = time.time()
                        watch.observe(reading.progress, now)
                        step = next_step(reading, past_deadline=now >= self.end_time)
                        if step is Step.FAILED:
                            yield self._event(FAILED, watch, message=reading.message)
                            return
                        if step is Step.DONE:
                            yield self._event(SUCCESS, watch)
                            return
                        if step is Step.TIMED_OUT:
                            yield self._timeout(watch)
                            return
                        if watch.log_due(logged, now):
                            self.log.info("%s", watch.line())
                            logged = (now, watch.progress or 0.0)
                    remaining = self.end_time - time.time()
                    if remaining <= 0:
                        yield self._timeout(watch)
                        return
                    await asyncio.sleep(min(self.poll_interval, remaining))
        except ContentExporterError as err:  # rejected key, unknown hash, unreadable answer: not transient
            yield self._event(ERROR, watch, message=str(err))

"""Trigger that polls a Content Exporter export from the triggerer, for the deferrable sensor.

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
from airflow_provider_cex.triggers.events import ERROR, EVENT_STATUSES, FAILED, SUCCESS, TIMEOUT

__all__ = ["ERROR", "EVENT_STATUSES", "FAILED", "SUCCESS", "TIMEOUT", "ContentExporterExportTrigger"]

#: A progress line per 10 points at most once a minute (plus the first): a triggerer may run 1,000 of these,
#: and each line costs more CPU than the poll itself (benchmarks/trigger_scale.py).
PROGRESS_LOG_SECONDS = 60.0
#: The shortest time a progress check gets, even past the deadline: the event fires by the deadline plus this.
DEADLINE_GRACE = 1.0


class ContentExporterExportTrigger(BaseTrigger):
    """
    Poll an export's progress until it completes, fails, or the deadline passes; fire one event.

    :param export_hash: the export to watch.
    :param content_exporter_conn_id: connection of type ``content_exporter``.
    :param poll_interval: seconds between polls.
    :param end_time: absolute deadline (Unix timestamp), so a triggerer restart does not reset it.
    """

    def __init__(
        self,
        export_hash: str,
        end_time: float,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.export_hash = export_hash
        self.end_time = float(end_time)
        self.content_exporter_conn_id = content_exporter_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "export_hash": self.export_hash,
                "end_time": self.end_time,
                "content_exporter_conn_id": self.content_exporter_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    def _hook(self) -> ContentExporterAsyncHook:
        """The hook this trigger polls with (a subclass may pass ``on_retry`` to count retries)."""
        return ContentExporterAsyncHook(self.content_exporter_conn_id)

    def _event(self, status: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "export_hash": self.export_hash, **payload})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last_progress = 0.0
        logged_progress, logged_at = -1.0, 0.0
        try:
            async with self._hook() as hook:
                while True:
                    # The deadline holds during a call: a server that drips or never answers, or retries
                    # waiting out its Retry-After, are cut at the deadline (a trigger started after its
                    # deadline still gets one reading of DEADLINE_GRACE seconds).
                    budget = max(self.end_time - time.time(), DEADLINE_GRACE)
                    try:
                        async with asyncio.timeout(budget):
                            progress = await hook.get_export_progress(self.export_hash)
                    except TimeoutError:
                        yield self._event(
                            TIMEOUT,
                            progress=last_progress,
                            message=f"export {self.export_hash} was at {last_progress:g}% when the sensor's "
                            "timeout passed, while the service had not answered the last progress check",
                        )
                        return
                    except ContentExporterTransientError as err:
                        # An outage shorter than the deadline must not fail a long export.
                        if time.time() >= self.end_time:
                            yield self._event(ERROR, message=str(err), progress=last_progress)
                            return
                        self.log.warning(
                            "export %s: progress unavailable, will check again: %s", self.export_hash, err
                        )
                    else:
                        if progress.is_failed:
                            yield self._event(FAILED, message=progress.message, progress=progress.progress)
                            return
                        if progress.is_complete:
                            yield self._event(SUCCESS, progress=progress.progress)
                            return
                        # A line per 10 points, at most one a minute: not one per poll.
                        now = time.monotonic()
                        if logged_progress < 0 or (
                            progress.progress >= logged_progress + 10
                            and now - logged_at >= PROGRESS_LOG_SECONDS
                        ):
                            self.log.info("export %s: %g%%", self.export_hash, progress.progress)
                            logged_progress, logged_at = progress.progress, now
                        last_progress = progress.progress
                    remaining = self.end_time - time.time()
                    if remaining <= 0:
                        yield self._event(
                            TIMEOUT,
                            progress=last_progress,
                            message=f"export {self.export_hash} was at {last_progress:g}% when the sensor's "
                            "timeout passed",
                        )
                        return
                    await asyncio.sleep(min(self.poll_interval, remaining))
        except ContentExporterError as err:  # rejected key, unknown hash, unreadable answer: not transient
            yield self._event(ERROR, message=str(err), progress=last_progress)

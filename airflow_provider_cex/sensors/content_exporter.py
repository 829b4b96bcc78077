"""Sensor that waits for a Content Exporter export to reach 100 %, in reschedule mode by default.

Kept cheap to import: the hook (and ``requests``) is imported only when the sensor pokes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)

from airflow_provider_cex import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: Exports take minutes: poking every 30 s costs one short worker slot per poke in reschedule mode.
DEFAULT_POKE_INTERVAL = timedelta(seconds=30)
#: Large page trees with attachments can take an hour; two hours leaves room for a queue at the vendor.
DEFAULT_TIMEOUT = timedelta(hours=2)


class ContentExporterExportSensor(BaseSensorOperator):
    """
    Wait until a Content Exporter export is complete (``progressValue`` 100).

    Runs in ``reschedule`` mode by default: between pokes the worker slot is free. A failed
    export fails the task at once with the server's message (``AirflowFailException``: task
    retries cannot fix it; with ``soft_fail=True`` the task is skipped instead). An outage of
    the service that outlasts the hook's retries is logged and treated as "not done yet", so
    only the sensor's own ``timeout`` ends the wait.

    With ``deferrable=True`` (default: ``[operators] default_deferrable``) the sensor checks
    once, then hands polling to :class:`~airflow_provider_cex.triggers.content_exporter.
    ContentExporterExportTrigger` in the triggerer and frees its worker slot entirely; the
    outcomes are the same as in reschedule mode.

    :param export_hash: the hash returned by :class:`ContentExporterStartExportOperator`. Templated.
    :param content_exporter_conn_id: connection of type ``content_exporter``.
    :param deferrable: poll from the triggerer instead of a worker (needs a running triggerer).
    """

    template_fields: Sequence[str] = ("export_hash",)
    ui_color = "#fff8e1"

    def __init__(
        self,
        *,
        export_hash: str,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        mode: str = "reschedule",
        poke_interval: timedelta | float = DEFAULT_POKE_INTERVAL,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.export_hash = export_hash
        self.content_exporter_conn_id = content_exporter_conn_id
        self.deferrable = deferrable

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            if self.poke(context):  # an export already done needs no trigger
                return None
        except AirflowFailException as err:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping (soft_fail): {err}") from err
            raise
        import time

        from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

        self.defer(
            trigger=ContentExporterExportTrigger(
                export_hash=self.export_hash,
                end_time=time.time() + self.timeout,
                content_exporter_conn_id=self.content_exporter_conn_id,
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        """Map the trigger's one event to the same outcome poke/reschedule mode would have."""
        from airflow_provider_cex.triggers.events import EVENT_STATUSES, FAILED, SUCCESS, TIMEOUT

        if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
            raise AirflowException(
                f"{self.task_id}: the Content Exporter trigger sent an unexpected event {event!r}; "
                "expected a status among " + ", ".join(sorted(EVENT_STATUSES)) + "."
            )
        status, message = event["status"], event.get("message")
        export_hash = event.get("export_hash", self.export_hash)
        if status == SUCCESS:
            self.log.info("export %s: %g%%, complete", export_hash, event.get("progress", 100))
            return
        if status == FAILED:
            raise _export_failed(export_hash, message)
        if status == TIMEOUT:
            raise AirflowSensorTimeout(f"Sensor has timed out: {message}")
        raise AirflowException(f"Content Exporter export {export_hash}: {message}")

    def poke(self, context: Context) -> bool:
        from airflow_provider_cex.exceptions import ContentExporterTransientError
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
        from airflow_provider_cex.protocol import validate_export_hash

        try:
            export_hash = validate_export_hash(self.export_hash)
        except ValueError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None
        with ContentExporterHook(content_exporter_conn_id=self.content_exporter_conn_id) as hook:
            try:
                progress = hook.get_export_progress(export_hash)
            except ContentExporterTransientError as err:
                self.log.warning("export %s: progress unavailable, will check again: %s", export_hash, err)
                return False
        if progress.is_failed:
            raise _export_failed(export_hash, progress.message)
        self.log.info("export %s: %g%%", export_hash, progress.progress)
        return progress.is_complete


def _export_failed(export_hash: str, message: str | None) -> Exception:
    """The error for an export that failed at the vendor (an ``AirflowFailException``: no task retries)."""
    from airflow_provider_cex.exceptions import ContentExporterExportFailedError

    return ContentExporterExportFailedError(
        f"Content Exporter export {export_hash} failed: {message}",
        export_hash=export_hash,
        server_message=message,
    )

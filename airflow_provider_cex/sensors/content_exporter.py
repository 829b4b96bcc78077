"""Sensor that waits for a Content Exporter export to reach 100 %, in reschedule mode by default.

Kept cheap to import: the hook (and ``requests``) is imported only when the sensor pokes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
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
#: ``next_method`` of a task that Airflow resumes only to fail it (its trigger crashed or timed out) ...
TRIGGER_FAIL = "__fail__"
#: ... and ``next_kwargs["error"]`` when the deferral passed its timeout: Airflow 3, then 2.11.
DEFERRAL_TIMEOUTS = frozenset({"Trigger timeout", "Trigger/execution timeout"})


class ContentExporterExportSensor(BaseSensorOperator):
    """
    Wait until a Content Exporter export is complete (``progressValue`` 100).

    Runs in ``reschedule`` mode by default: between pokes the worker slot is free. A failed
    export fails the task at once with the server's message (``AirflowFailException``: task
    retries cannot fix it). An outage of the service that outlasts the hook's retries is logged
    and treated as "not done yet", so only the sensor's own ``timeout`` ends the wait.

    With ``deferrable=True`` (default: ``[operators] default_deferrable``) the sensor checks
    once, then hands polling to
    :class:`~airflow_provider_cex.triggers.content_exporter.ContentExporterExportTrigger` in the
    triggerer and frees its worker slot entirely; the outcomes are the same as in reschedule mode.

    ``soft_fail=True`` skips the task when the export failed or the wait timed out, and only then:
    a rejected key, an unknown or malformed hash, an unreadable answer or an outage past the
    deadline still fail it, in every mode (see
    :func:`~airflow_provider_cex.triggers.events.raise_for_event`).

    :param export_hash: the hash returned by
        :class:`~airflow_provider_cex.operators.content_exporter.ContentExporterStartExportOperator`.
        Templated.
    :param content_exporter_conn_id: connection of type ``content_exporter``. Templated.
    :param deferrable: poll from the triggerer instead of a worker (needs a running triggerer).
    """

    template_fields: Sequence[str] = ("export_hash", "content_exporter_conn_id")
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
        try:  # before Airflow's poke loop, which would let soft_fail skip this AirflowFailException
            self._validated_hash()
        except AirflowFailException as err:
            self._skip_or_raise(err)
        if not self.deferrable:
            return super().execute(context)
        try:
            if self.poke(context):  # an export already done needs no trigger
                return None
        except Exception as err:
            self._skip_or_raise(err)
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
        """Map the trigger's one event to the outcome poke/reschedule mode would have."""
        from airflow_provider_cex.triggers.events import raise_for_event

        done = raise_for_event(event, soft_fail=self.soft_fail, export_hash=self.export_hash)
        export_hash = done.get("export_hash", self.export_hash)
        self.log.info("export %s: %g%%, complete", export_hash, done.get("progress", 100))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the deferral; ``soft_fail`` skips only a failed export or a timeout.

        ``BaseSensorOperator.resume_execution`` (Airflow 2.11 and 3) skips on *any* ``AirflowException``
        when ``soft_fail`` is set: a rejected key or an unknown hash too. So this calls
        ``BaseOperator.resume_execution`` (it only calls ``next_method``, or raises ``TaskDeferralError``
        for a trigger that crashed) and applies the sensor's own rule to what that raises. A deferral that
        passed its timeout (``execution_timeout``) is left to Airflow's sensor: a timeout, skipped with
        ``soft_fail`` on both versions.
        """
        if next_method == TRIGGER_FAIL and (next_kwargs or {}).get("error") in DEFERRAL_TIMEOUTS:
            return super().resume_execution(next_method, next_kwargs, context)
        try:
            return super(BaseSensorOperator, self).resume_execution(next_method, next_kwargs, context)
        except Exception as err:
            self._skip_or_raise(err)

    def poke(self, context: Context) -> bool:
        from airflow_provider_cex.exceptions import ContentExporterTransientError
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
        from airflow_provider_cex.triggers.events import export_failed

        export_hash = self._validated_hash()
        with ContentExporterHook(content_exporter_conn_id=self.content_exporter_conn_id) as hook:
            try:
                progress = hook.get_export_progress(export_hash)
            except ContentExporterTransientError as err:
                self.log.warning("export %s: progress unavailable, will check again: %s", export_hash, err)
                return False
        if progress.is_failed:
            raise export_failed(export_hash, progress.message)
        self.log.info("export %s: %g%%", export_hash, progress.progress)
        return progress.is_complete

    def _validated_hash(self) -> str:
        from airflow_provider_cex.protocol import validate_export_hash

        try:
            return validate_export_hash(self.export_hash)
        except ValueError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None

    def _skip_or_raise(self, error: Exception) -> NoReturn:
        """``soft_fail`` skips only a failed export or a timeout; ``never_fail`` any error, as in Airflow."""
        from airflow_provider_cex.triggers.events import skip_or_raise

        if self.never_fail and not isinstance(error, AirflowSkipException):
            raise AirflowSkipException("Skipping due to never_fail is set to True.") from error
        skip_or_raise(error, soft_fail=self.soft_fail)

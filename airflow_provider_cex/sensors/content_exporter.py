"""Sensor that waits for a Content Exporter export to reach 100 %, in reschedule mode by default.

Kept cheap to import: the hook (and ``requests``) is imported only when the sensor pokes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.operators.base import ConfluencePageLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_cex.progress import ExportWatch

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

    Each poke logs one line, page first: ``page 123456: 45 % after 2 min 10 s, about 1 min left (export
    …)``. The page and the export's start come from the start task upstream that produced the hash (its
    ``export_page`` XCom); without one, the line names the export and the time counts from the first poke
    (as Airflow keeps it, so reschedule mode counts from the same moment at every poke). When the page is
    known and the connection has the extra ``confluence_url``, the task gets the "Confluence page" link.

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
    operator_extra_links = (ConfluencePageLink(),)

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
        self._watch: ExportWatch | None = None  # this process's pokes (poke mode, or one reschedule poke)
        self._outage: Exception | None = None  # why the last poke got no reading, if it got none

    def execute(self, context: Context) -> Any:
        try:  # before Airflow's poke loop, which would let soft_fail skip this AirflowFailException
            self._validated_hash()
        except AirflowFailException as err:
            self._skip_or_raise(err)
        if not self.deferrable:
            return self._poke_until_done(context)
        try:
            if self.poke(context):  # an export already done needs no trigger
                return None
        except Exception as err:
            self._skip_or_raise(err)
        from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

        watch = self._watch
        self.defer(
            trigger=ContentExporterExportTrigger(
                export_hash=self.export_hash,
                end_time=time.time() + self.timeout,
                content_exporter_conn_id=self.content_exporter_conn_id,
                poll_interval=self.poke_interval,
                page_id=watch.page_id if watch else None,
                # The trigger counts from a start only where the export was at 0 % (else from what it sees).
                started_at=watch.started_at if watch and watch.zero_at_start else None,
            ),
            method_name="execute_complete",
        )
        return None

    def _poke_until_done(self, context: Context) -> Any:
        """Airflow's poke loop; its timeout says which page, how far and how long, when this process knows."""
        from airflow_provider_cex.triggers.events import wait_error

        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            if self._outage is not None:  # an outage until the deadline: an error in every mode
                raise wait_error(self.export_hash, self._outage) from err
            if self._watch is None:
                raise
            raise AirflowSensorTimeout(self._watch.timed_out_message(self.timeout)) from err
        except AirflowSkipException as err:  # soft_fail: Airflow skips a timeout with its own words
            if not str(err).startswith("Sensor has timed out"):
                raise
            if self._outage is not None:  # not skipped: a skip would hide a broken connection
                raise wait_error(self.export_hash, self._outage) from err
            if self._watch is None:
                raise
            message = self._watch.timed_out_message(self.timeout)
            raise AirflowSkipException(f"Skipping (soft_fail): {message}") from err

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        """Map the trigger's one event to the outcome poke/reschedule mode would have, in one sentence."""
        from airflow_provider_cex.triggers.events import raise_for_event, watch_of

        done = raise_for_event(event, soft_fail=self.soft_fail, export_hash=self.export_hash)
        self.log.info("%s", watch_of(done, self.export_hash).line())

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
        from airflow_provider_cex.progress import Step, next_step
        from airflow_provider_cex.triggers.events import export_failed

        export_hash = self._validated_hash()
        with ContentExporterHook(content_exporter_conn_id=self.content_exporter_conn_id) as hook:
            watch = self._watch_for(export_hash, context, hook)
            try:
                reading = hook.get_export_progress(export_hash)
            except ContentExporterTransientError as err:
                self.log.warning("%s", watch.unavailable_line(err))
                self._outage = err
                return False
        self._outage = None
        watch.observe(reading.progress)
        # Airflow's loop owns the deadline here (also across reschedules): past_deadline is its call.
        step = next_step(reading, past_deadline=False)
        if step is Step.FAILED:
            raise export_failed(watch, reading.message)
        self.log.info("%s", watch.line())
        return step is Step.DONE

    def _watch_for(self, export_hash: str, context: Context, hook: Any) -> ExportWatch:
        """This wait: the page and the export's start from the start task upstream, else the first poke.

        Made once per process (every poke in poke mode; one in reschedule mode, where each poke is a new
        process and what Airflow keeps, the start of the first poke, is what carries over). Also pushes
        the "Confluence page" link when the page is known.
        """
        if self._watch is not None and self._watch.export_hash == export_hash:
            return self._watch
        from airflow_provider_cex.operators.base import push_page_link, start_record
        from airflow_provider_cex.progress import ExportWatch

        record = start_record(self, context.get("ti"), export_hash) or {}
        page_id = record.get("page_id")
        if record.get("started_at") is not None:  # the export's start: it was at 0 % then
            self._watch = ExportWatch(export_hash, page_id=page_id, started_at=record["started_at"])
        else:
            # Only the first poke's time is known. From a later poke on, the rate counts from it as if
            # the export were at 0 % then (true of a sensor right after the start); at the first poke
            # that would be a guess from a fraction of a second: "no estimate yet" instead.
            first = first_poke_at(context, reschedule=self.reschedule)
            earlier_poke = time.time() - first >= self.poke_interval / 2
            self._watch = ExportWatch(
                export_hash, page_id=page_id, started_at=first, zero_at_start=earlier_poke
            )
        if page_id:
            push_page_link(context, hook.settings.confluence_url, page_id)
        return self._watch

    def _validated_hash(self) -> str:
        from airflow_provider_cex.inputs import validate_export_hash

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


def first_poke_at(context: Any, *, reschedule: bool) -> float:
    """When this wait started, as Airflow keeps it: the first poke of the first try (reschedule mode), else
    this try's start. Airflow 3 asks the API server (``get_first_reschedule_date``); Airflow 2.11 already
    set the task instance's ``start_date`` to it. Now when neither is known (a test calling ``poke``).
    """
    from airflow_provider_cex.progress import timestamp

    ti = context.get("ti") if hasattr(context, "get") else None
    first = getattr(ti, "get_first_reschedule_date", None)
    if reschedule and callable(first):
        try:
            when = timestamp(first(context))
        except Exception:  # the start is for the log line only
            when = None
        if when is not None:
            return when
    return timestamp(getattr(ti, "start_date", None)) or time.time()

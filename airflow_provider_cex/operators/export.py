"""ContentExporterExportOperator: one task from page to file (start, wait in a worker or deferred, download).

Importable as ``airflow_provider_cex.operators.content_exporter.ContentExporterExportOperator``. Kept cheap
to import: the hook and ``requests`` load only when the task runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    BaseOperator,
    ResumableJobMixin,
    conf,
)

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.operators.base import (
    ConfluencePageLink,
    SavesExport,
    StartsExport,
    check_literal_page_id,
    output_or_fail,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_cex.answers import ExportProgress
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.progress import ExportWatch

#: The mixin's stand-in below Airflow 3.3 has no task_state_store: every try starts a new export there.
_CAN_RESUME = not ResumableJobMixin.__module__.endswith("_resumable_job_mixin")
#: Progress states the one-task operator tells the resume logic (Airflow's ResumableJobMixin).
RUNNING, DONE, FAILED, GONE = "RUNNING", "DONE", "FAILED", "GONE"


class ContentExporterExportOperator(StartsExport, SavesExport, ResumableJobMixin, BaseOperator):
    """
    Export a Confluence page tree to a file in one task: start, wait until 100 %, download.

    Returns the final path or URL (XCom ``return_value``), pushes the hash under ``export_hash`` as soon
    as it is known and the file's metadata under ``export_file``, like the download operator.

    Waiting happens **in the worker** (polling every ``poll_interval`` seconds, the slot held) or, with
    ``deferrable=True``, in the **triggerer** (no slot held; the download then runs on a worker).
    Reschedule mode cannot work in one task: Airflow clears a task's XComs at each reschedule, so the
    hash would be lost; use the three building blocks for that.

    **Resume on retry** (Airflow 3.3+): the hash is kept in the task's ``task_state_store`` before
    waiting, so a retry after a crash, a lost worker or a failed download reconnects to the same export
    and downloads it; a new export is started only when the service no longer knows the hash or the
    export failed, and the log says which. Below Airflow 3.3 every try starts a new export.

    :param page_id: id of the Confluence (parent) page, digits only. Templated.
    :param output_path: where the file goes, as for
        :class:`~airflow_provider_cex.operators.content_exporter.ContentExporterDownloadExportOperator`.
        Templated.
    :param export_body: the export configuration (dict or ``.json`` file), as for the start operator.
        Templated.
    :param output_conn_id: connection for an object storage ``output_path``. Templated.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between progress checks.
    :param timeout: seconds to wait for the export to reach 100 % (per try).
    :param overwrite: replace an existing file (default). ``False`` fails the task, before any export is
        started when ``output_path`` names a file.
    :param soft_fail: skip the task instead of failing it when the export fails or the wait times out
        (a rejected key or an unknown hash still fail it).
    :param resume_on_retry: reconnect to the stored export on retry (Airflow 3.3+; the mixin's ``durable``).
    :param fsync: ``fsync`` a local file around its rename (the download operator's ``fsync``).
    :param content_exporter_conn_id: connection of type ``content_exporter``. Templated.
    """

    template_fields: Sequence[str] = (
        "page_id",
        "export_body",
        "output_path",
        "output_conn_id",
        "content_exporter_conn_id",
    )
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"export_body": "json"}
    ui_color = "#e1f5fe"
    operator_extra_links = (ConfluencePageLink(),)
    external_id_key = "content_exporter_export_hash"

    def __init__(
        self,
        *,
        page_id: str | int,
        output_path: str | os.PathLike[str],
        export_body: dict[str, Any] | str | None = None,
        output_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float = 7200.0,
        overwrite: bool = True,
        soft_fail: bool = False,
        resume_on_retry: bool = True,
        fsync: bool = False,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        if "durable" in kwargs:
            raise TypeError(
                "ContentExporterExportOperator takes resume_on_retry= (reconnect to the stored export on "
                "retry) and fsync= (flush the file to disk); 'durable' would be ambiguous here."
            )
        if _CAN_RESUME:
            kwargs["durable"] = resume_on_retry
        super().__init__(**kwargs)
        self.page_id = page_id
        self.output_path = os.fspath(output_path) if isinstance(output_path, os.PathLike) else output_path
        self.export_body = export_body
        self.output_conn_id = output_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.overwrite = overwrite
        self.soft_fail = soft_fail
        self.resume_on_retry = resume_on_retry
        self.fsync = fsync
        self.content_exporter_conn_id = content_exporter_conn_id
        self._export_body_source = export_body if isinstance(export_body, str) else None
        self._result: tuple[str, str] | None = None  # (export hash, final path) once downloaded
        self._started_hash: str | None = None  # the export this try started (at self._started_at)
        check_literal_page_id(page_id)

    # ------------------------------------------------------------------ the task

    def execute(self, context: Context) -> str:
        from airflow_provider_cex.operators.destinations import (
            refuse_existing_destination,
            require_output_connection,
        )

        output = output_or_fail(self.task_id, self.output_path)
        try:
            require_output_connection(output, self.output_conn_id)  # before an export is started
        except LookupError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None
        if not self.overwrite:
            try:
                refuse_existing_destination(output, self.output_conn_id)
            except FileExistsError as err:
                raise AirflowFailException(f"{self.task_id}: {err}") from None
        if not _CAN_RESUME and self.resume_on_retry:
            self.log.info("Resume on retry needs Airflow 3.3 (task_state_store): each try starts an export.")
        return self.execute_resumable(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: say so in one sentence and download on a worker, or fail/skip
        as the sensor would."""
        from airflow_provider_cex.triggers.events import raise_for_event, watch_of

        done = raise_for_event(event, soft_fail=self.soft_fail)
        export_hash = str(done["export_hash"])
        self.log.info("%s", watch_of(done, export_hash).line())
        return self._download(export_hash, context)

    # ------------------------------------------------------------------ ResumableJobMixin

    def submit_job(self, context: Context) -> str:
        export_hash = self._start_export(context)
        self._started_hash = export_hash
        context["ti"].xcom_push(key="export_hash", value=export_hash)
        return export_hash

    def get_job_status(self, external_id: Any, context: Context) -> str:
        from airflow_provider_cex.exceptions import ContentExporterNotFoundError
        from airflow_provider_cex.operators.base import push_page_link
        from airflow_provider_cex.progress import percent

        export_hash = str(external_id)
        watch = self._watch(export_hash)
        with self._new_hook() as hook:
            try:
                progress = hook.get_export_progress(export_hash)
            except ContentExporterNotFoundError:
                gone = "the export of an earlier try is unknown to the service now: starting a new one"
                self.log.warning("%s", watch.say(gone))
                return GONE
            if not progress.is_failed:
                push_page_link(context, hook.settings.confluence_url, self._validated_page_id())
        if progress.is_failed:
            failed = f"the export of an earlier try failed ({progress.message}): starting a new one"
            self.log.warning("%s", watch.say(failed))
            return FAILED
        context["ti"].xcom_push(key="export_hash", value=export_hash)
        state = DONE if progress.is_complete else RUNNING
        doing = "downloading it" if state == DONE else "reconnecting to it"
        self.log.info(
            "%s",
            watch.say(
                f"the export of an earlier try is at {percent(progress.progress)}: {doing} instead of "
                "starting a new one"
            ),
        )
        return state

    def is_job_active(self, status: str) -> bool:
        return status == RUNNING

    def is_job_succeeded(self, status: str) -> bool:
        return status == DONE

    def poll_until_complete(self, external_id: Any, context: Context) -> str:  # type: ignore[override]
        """Wait until 100 % (in the worker, or by deferring), then download; returns the final path.

        Returning the path (the mixin declares None) is what makes a reconnect work: on that branch the
        mixin returns this method's value as the task's result, without calling ``get_job_result``.
        """
        export_hash = str(external_id)
        watch = self._watch(export_hash)
        if self.deferrable:
            self._defer(watch)
        from airflow_provider_cex.exceptions import ContentExporterTransientError
        from airflow_provider_cex.progress import Step, next_step

        deadline = time.monotonic() + self.timeout
        with self._new_hook() as hook:
            while True:
                reading: ExportProgress | None = None
                outage: ContentExporterTransientError | None = None
                try:
                    reading = hook.get_export_progress(export_hash)
                except ContentExporterTransientError as err:  # an outage shorter than the timeout
                    self.log.warning("%s", watch.unavailable_line(err))
                    outage = err
                else:
                    watch.observe(reading.progress)
                step = next_step(reading, past_deadline=time.monotonic() >= deadline)
                if step is Step.FAILED and reading is not None:
                    self._fail_export(watch, reading.message)
                if reading is not None:
                    self.log.info("%s", watch.line())
                if step is Step.DONE:
                    break
                if step is Step.TIMED_OUT:
                    from airflow.providers.common.compat.sdk import AirflowSensorTimeout

                    from airflow_provider_cex.triggers.events import skip_or_raise, wait_error

                    if outage is not None:  # an outage until the deadline: an error, as when deferred
                        raise wait_error(export_hash, outage)

                    skip_or_raise(
                        AirflowSensorTimeout(watch.timed_out_message(self.timeout)),
                        soft_fail=self.soft_fail,
                    )
                time.sleep(min(self.poll_interval, max(deadline - time.monotonic(), 0.0)))
        return self._download(export_hash, context)

    def get_job_result(self, external_id: Any, context: Context) -> str:
        export_hash = str(external_id)
        if self._result is not None and self._result[0] == export_hash:
            return self._result[1]  # poll_until_complete downloaded it already
        return self._download(export_hash, context)

    # ------------------------------------------------------------------ helpers

    def _new_hook(self) -> ContentExporterHook:
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

        return ContentExporterHook(content_exporter_conn_id=self.content_exporter_conn_id)

    def _watch(self, export_hash: str) -> ExportWatch:
        """This try's wait. Its elapsed time counts from the start when this try started the export; an
        export of an earlier try (a reconnect) started at a time this try does not know."""
        from airflow_provider_cex.progress import ExportWatch

        started_at = self._started_at if self._started_hash == export_hash else None
        return ExportWatch(export_hash, page_id=self._validated_page_id(), started_at=started_at)

    def _defer(self, watch: ExportWatch) -> None:
        from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

        self.defer(
            trigger=ContentExporterExportTrigger(
                export_hash=watch.export_hash,
                end_time=time.time() + self.timeout,
                content_exporter_conn_id=self.content_exporter_conn_id,
                poll_interval=self.poll_interval,
                page_id=watch.page_id,
                started_at=watch.started_at,
            ),
            method_name="execute_complete",
        )

    def _page_id_for_lineage(self, export_hash: str, context: Context) -> str | None:
        return self._validated_page_id()

    def _download(self, export_hash: str, context: Context) -> str:
        final = self._save_export(export_hash, output_or_fail(self.task_id, self.output_path), context)
        self._result = (export_hash, final)
        return final

    def _fail_export(self, watch: ExportWatch, message: str | None) -> None:
        from airflow_provider_cex.triggers.events import export_failed, skip_or_raise

        skip_or_raise(export_failed(watch, message), soft_fail=self.soft_fail)

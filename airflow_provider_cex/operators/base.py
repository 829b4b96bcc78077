"""What the operators share: the "Confluence page" link, XCom keys, the export body, and the two mixins
:class:`StartsExport` (validate, start once, log it, push the link) and :class:`SavesExport` (save, report,
clean up when killed).

The operator modules (:mod:`~airflow_provider_cex.operators.content_exporter`, :mod:`.export`) and the sensor
build on this module; it imports none of them. Kept cheap to import: the hook, and with it ``requests``, loads
only when a task runs.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.lineage import ExportLineage

#: XCom key under which the download operator pushes the file's metadata.
EXPORT_FILE_XCOM_KEY = "export_file"
#: XCom key under which the start operator pushes the exported page's URL (for the extra link).
CONFLUENCE_PAGE_XCOM_KEY = "confluence_page_url"


class ConfluencePageLink(BaseOperatorLink):
    """ "Confluence page" button of the tasks that know the page: read from XCom, never from the API."""

    name = "Confluence page"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.providers.common.compat.sdk import XCom

        return XCom.get_value(key=CONFLUENCE_PAGE_XCOM_KEY, ti_key=ti_key) or ""


def push_page_link(context: Context, confluence_url: str | None, page_id: str) -> str | None:
    """Push the page's Confluence URL for the "Confluence page" link now, while the task runs; return it.

    Airflow 2.11's UI calls :meth:`ConfluencePageLink.get_link`, which reads ``confluence_page_url``. Airflow
    3's UI reads the link's own XCom (``_link_ConfluencePageLink``), which the task runner writes only when
    the task ends: pushed here too, the button works from the moment the export starts. Nothing is pushed
    without the connection's ``confluence_url`` extra.
    """
    if not confluence_url:
        return None
    from airflow_provider_cex.settings import confluence_page_url

    url = confluence_page_url(confluence_url, page_id)
    ti = context["ti"]
    ti.xcom_push(key=CONFLUENCE_PAGE_XCOM_KEY, value=url)
    link_key = getattr(ConfluencePageLink(), "xcom_key", None)  # Airflow 3 only
    if link_key:
        ti.xcom_push(key=link_key, value=url)
    return url


def start_record(task: Any, task_instance: Any, export_hash: str) -> dict[str, Any] | None:
    """What the start task upstream of ``task`` recorded for ``export_hash`` (XCom ``export_page``), if any:
    ``{"export_hash", "page_id", "started_at"}`` (``started_at`` a Unix time; older records have none).
    """
    from airflow_provider_cex.lineage import EXPORT_PAGE_XCOM_KEY
    from airflow_provider_cex.progress import timestamp

    if task_instance is None:
        return None
    try:
        upstream = task.get_flat_relatives(upstream=True)
    except Exception:
        return None
    for other in upstream:
        if not isinstance(other, StartsExport) or isinstance(other, SavesExport):
            continue
        task_id = getattr(other, "task_id", None)
        try:
            pulled = task_instance.xcom_pull(task_ids=task_id, key=EXPORT_PAGE_XCOM_KEY)
        except Exception:  # the page is for the log line and the link only
            continue
        for record in pulled if isinstance(pulled, list) else [pulled]:
            if isinstance(record, dict) and record.get("export_hash") == export_hash:
                page_id = record.get("page_id")
                return {
                    "export_hash": export_hash,
                    "page_id": None if page_id in (None, "") else str(page_id),
                    "started_at": timestamp(record.get("started_at")),
                }
    return None


def is_templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_literal_page_id(page_id: Any) -> None:
    """A literal bad page id fails at DAG parse, not at 2 a.m. (``ValueError``); a templated one is checked
    when the task runs."""
    if isinstance(page_id, (str, int)) and not is_templated(page_id):
        from airflow_provider_cex.inputs import validate_page_id

        validate_page_id(page_id)


def parse_export_body(task_id: str, body: Any, source: str | None) -> dict[str, Any] | None:
    """The rendered ``export_body`` as a dict; else an ``AirflowFailException`` naming file and problem."""
    if body is None or isinstance(body, dict):
        return body
    source = source or ""
    where = f"export_body file {source!r}" if source.endswith(".json") else "export_body"
    if not isinstance(body, str):
        raise AirflowFailException(
            f"{task_id}: {where} must be a JSON object (a dict), got {type(body).__name__}."
        )
    try:
        parsed = json.loads(body)
    except ValueError as err:
        raise AirflowFailException(
            f"{task_id}: {where} is not valid JSON ({err}). Fix the file, or pass a dict."
        ) from None
    if not isinstance(parsed, dict):
        raise AirflowFailException(
            f"{task_id}: {where} must hold a JSON object ({{...}}), got a JSON {type(parsed).__name__}."
        )
    return parsed


def report_file(context: Context, outlets: Any, meta: dict[str, Any]) -> None:
    """Push the file's metadata to XCom (``export_file``) and onto the asset events of the outlets.

    An ``Asset`` outlet's event gets the size and sha256 in its ``extra``. An ``AssetAlias`` outlet gets an
    event for ``Asset(<final URI>)`` (``file:///…``, ``s3://bucket/key``), the name known only now, so a
    DAG scheduled on that asset runs when the file lands.
    """
    context["ti"].xcom_push(key=EXPORT_FILE_XCOM_KEY, value=meta)
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    extra = {"sha256": meta["sha256"], "size_bytes": meta["size_bytes"], "filename": meta["filename"]}
    for outlet in outlets or []:
        if hasattr(outlet, "uri"):  # an Asset (a Dataset on Airflow 2)
            outlet_events[outlet].extra.update(extra)
        elif _is_asset_alias(outlet):
            from airflow.providers.common.compat.sdk import Asset

            from airflow_provider_cex.lineage import output_uri

            outlet_events[outlet].add(Asset(output_uri(meta["path"])), extra=extra)


def _is_asset_alias(outlet: Any) -> bool:
    from airflow.providers.common.compat.sdk import AssetAlias

    return isinstance(outlet, AssetAlias)


class StartsExport:
    """What both operators that start an export do: validate, start once, log it once, push the link.

    Expects ``task_id``, ``page_id``, ``export_body``, ``_export_body_source`` and
    ``content_exporter_conn_id`` on the operator.
    """

    _page_namespace: str | None = None  # set when the export starts, for lineage
    _started_at: float | None = None  # Unix time the export was started by this process

    def _validated_page_id(self) -> str:
        from airflow_provider_cex.inputs import validate_page_id

        op: Any = self
        try:
            return validate_page_id(op.page_id)
        except ValueError as err:
            raise AirflowFailException(f"{op.task_id}: {err}") from None

    def _start_export(self, context: Context) -> str:
        """Start the export and return its hash; a start whose answer was lost fails for good."""
        from airflow_provider_cex.exceptions import ContentExporterStartUncertainError
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

        op: Any = self
        page_id = self._validated_page_id()
        body = parse_export_body(op.task_id, op.export_body, op._export_body_source)
        with ContentExporterHook(content_exporter_conn_id=op.content_exporter_conn_id) as hook:
            from airflow_provider_cex.lineage import page_namespace

            # Where the page lives, for lineage: read now; the listener's forked child must not read it.
            self._page_namespace = page_namespace(hook.settings)
            # Pushed before the export starts: the UI shows the link while the task runs.
            url = push_page_link(context, hook.settings.confluence_url, page_id)
            started_at = time.time()
            try:
                export_hash = hook.start_export(page_id, body)
            except ContentExporterStartUncertainError as err:
                # An Airflow retry could start a second export of the same tree: fail for good instead.
                raise AirflowFailException(f"{op.task_id}: {err}") from None
        from airflow_provider_cex.progress import ExportWatch

        self._started_at = started_at
        op.log.info("%s", ExportWatch(export_hash, page_id=page_id).started_line(url))
        return export_hash

    def _push_export_page(self, context: Context, export_hash: str) -> None:
        """Which page this hash belongs to and when it started: for the sensor's and download's lines,
        links and lineage (XCom ``export_page``)."""
        from airflow_provider_cex.lineage import EXPORT_PAGE_XCOM_KEY
        from airflow_provider_cex.progress import iso

        page: dict[str, Any] = {"export_hash": export_hash, "page_id": self._validated_page_id()}
        if self._started_at is not None:
            page["started_at"] = iso(self._started_at)
        context["ti"].xcom_push(key=EXPORT_PAGE_XCOM_KEY, value=page)


class SavesExport:
    """What both operators that download do: save the file, report it, clean up when killed.

    Expects ``task_id``, ``content_exporter_conn_id``, ``overwrite``, ``output_conn_id``, ``fsync``,
    ``log`` and ``outlets`` on the operator.
    """

    _hook: ContentExporterHook | None = None  # set while downloading, for on_kill
    _export_lineage: ExportLineage | None = None  # set once the file landed, for OpenLineage

    def _page_id_for_lineage(self, export_hash: str, context: Context) -> str | None:
        """The exported page's id: from the start task upstream that produced ``export_hash`` (its XCom).

        Read here, while the task runs: OpenLineage's listener calls the facets method in a forked
        process where XCom reads can hang. The one-task operator knows its page and overrides this.
        """
        record = start_record(self, context.get("ti"), export_hash)
        return record["page_id"] if record else None

    def _save_export(self, export_hash: str, output: str, context: Context) -> str:
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
        from airflow_provider_cex.operators.destinations import require_output_connection, save_export
        from airflow_provider_cex.progress import ExportWatch

        op: Any = self
        try:
            require_output_connection(output, op.output_conn_id)
        except LookupError as err:
            raise AirflowFailException(f"{op.task_id}: {err}") from None
        self._hook = ContentExporterHook(content_exporter_conn_id=op.content_exporter_conn_id)
        try:
            with self._hook as hook:
                page_id = self._page_id_for_lineage(export_hash, context)
                if page_id:
                    push_page_link(context, hook.settings.confluence_url, page_id)
                final, meta = save_export(
                    hook,
                    export_hash,
                    output,
                    overwrite=op.overwrite,
                    output_conn_id=op.output_conn_id,
                    fsync=op.fsync,
                    log=op.log,
                    watch=ExportWatch(export_hash, page_id=page_id),
                )
                from airflow_provider_cex.lineage import describe

                self._export_lineage = describe(hook.settings, page_id, export_hash, meta)
        except FileExistsError as err:
            raise AirflowFailException(f"{op.task_id}: {err}") from None
        finally:
            self._hook = None
        report_file(context, op.outlets, meta)
        return final

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the Confluence page in (when known), the file or object out, with size and sha256.

        The download operator knows the page when a start task upstream produced its hash.
        """
        from airflow_provider_cex.openlineage_facets import export_lineage

        return export_lineage(self._export_lineage)

    def on_kill(self) -> None:
        """Remove the partial download when the task is killed (the rename never happens)."""
        if self._hook is not None:
            self._hook.abort_downloads()


def output_or_fail(task_id: str, output_path: Any) -> str:
    output = str(output_path or "").strip()
    if not output:
        raise AirflowFailException(f"{task_id}: output_path is empty: pass a file path or a folder.")
    return output

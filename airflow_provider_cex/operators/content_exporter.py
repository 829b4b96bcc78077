"""The start and download operators (and, re-exported, the one-task ``ContentExporterExportOperator``).

Kept cheap to import (DAG files import it at every parse): the hook, and with it ``requests``, is imported
only when a task runs. What the operators share is in :mod:`.base`; the one-task operator is
:class:`~airflow_provider_cex.operators.export.ContentExporterExportOperator`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.operators.base import (
    CONFLUENCE_PAGE_XCOM_KEY as CONFLUENCE_PAGE_XCOM_KEY,
)
from airflow_provider_cex.operators.base import (
    EXPORT_FILE_XCOM_KEY as EXPORT_FILE_XCOM_KEY,
)
from airflow_provider_cex.operators.base import (
    ConfluencePageLink,
    SavesExport,
    StartsExport,
    check_literal_page_id,
    output_or_fail,
)
from airflow_provider_cex.operators.export import (
    ContentExporterExportOperator as ContentExporterExportOperator,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = [
    "CONFLUENCE_PAGE_XCOM_KEY",
    "EXPORT_FILE_XCOM_KEY",
    "ConfluencePageLink",
    "ContentExporterDownloadExportOperator",
    "ContentExporterExportOperator",
    "ContentExporterStartExportOperator",
]


class ContentExporterStartExportOperator(StartsExport, BaseOperator):
    """
    Start a Content Exporter export of a Confluence page (and its tree); return the export hash.

    The hash is pushed to XCom as ``return_value``; pass ``start.output`` to the sensor and the
    download operator.

    :param page_id: id of the Confluence (parent) page to export, digits only. Templated.
    :param export_body: the export configuration, a dict or the path of a ``.json`` file
        (relative to the DAG folder, rendered with Jinja), e.g. the Export Profile JSON.
        ``rootContentId`` is set to ``page_id``. Templated.
    :param content_exporter_conn_id: connection of type ``content_exporter``. When it has the
        extra ``confluence_url`` (``https://acme.atlassian.net/wiki``), the task gets a
        "Confluence page" link in the UI.
    """

    template_fields: Sequence[str] = ("page_id", "export_body", "content_exporter_conn_id")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"export_body": "json"}
    ui_color = "#e3f2fd"
    operator_extra_links = (ConfluencePageLink(),)

    def __init__(
        self,
        *,
        page_id: str | int,
        export_body: dict[str, Any] | str | None = None,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.page_id = page_id
        self.export_body = export_body
        self.content_exporter_conn_id = content_exporter_conn_id
        # Remember which file the body came from: after rendering only its content is left.
        self._export_body_source = export_body if isinstance(export_body, str) else None
        check_literal_page_id(page_id)

    def execute(self, context: Context) -> str:
        from airflow_provider_cex.operators.destinations import check_download_outputs

        try:  # a download that must fail costs no export
            check_download_outputs(self, context, self.log)
        except ValueError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None
        export_hash = self._start_export(context)
        self._push_export_page(context, export_hash)
        return export_hash

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the task read the Confluence page (namespace: the ``confluence_url`` extra or URL)."""
        from airflow_provider_cex.openlineage_facets import export_lineage, start_lineage

        if self._page_namespace is None:  # the export was not started
            return export_lineage(None)
        return start_lineage(self._page_namespace, self._validated_page_id())


class ContentExporterDownloadExportOperator(SavesExport, BaseOperator):
    """
    Download a finished export's file to a local path or to object storage, never leaving a partial file.

    Returns the final path or URL (XCom ``return_value``) and pushes ``{"path", "filename",
    "size_bytes", "sha256", "content_type", "replaced"}`` under the XCom key ``export_file``
    (``replaced``: ``{"size_bytes": N}`` of the file the download replaced, else ``None``). When the task
    has Asset ``outlets``, the same size and sha256 go into the asset event's ``extra``. When the start
    task upstream recorded the page, the log names it and the task gets the "Confluence page" link.

    :param export_hash: the hash returned by :class:`ContentExporterStartExportOperator`. Templated.
    :param output_path: where the file goes. Templated. A local path or ``file://`` URL: the
        file's full path, or a folder (ending in ``/`` or existing) where the server's file
        name is kept, sanitised, e.g. ``exports/{{ ds }}/``; missing folders are created;
        relative paths are relative to the worker's working directory. An object storage URL
        (``s3://bucket/exports/{{ ds }}/``, ``gs://…``) is written through Airflow's
        ``ObjectStoragePath`` after the download completed locally.
    :param content_exporter_conn_id: connection of type ``content_exporter``. Templated.
    :param overwrite: replace an existing file (default); ``False`` fails the task instead.
    :param output_conn_id: Airflow connection for an object storage ``output_path`` (e.g. an
        ``aws`` connection for ``s3://``). Templated.
    :param fsync: ``fsync`` a local file before and after it is renamed into place, so a machine
        crash right after the task cannot leave an empty file.
    :param durable: deprecated name of ``fsync`` (it clashed with the crash-resume ``durable`` of
        Airflow's ``ResumableJobMixin``).
    """

    template_fields: Sequence[str] = (
        "export_hash",
        "output_path",
        "content_exporter_conn_id",
        "output_conn_id",
    )
    ui_color = "#e8f5e9"
    operator_extra_links = (ConfluencePageLink(),)

    def __init__(
        self,
        *,
        export_hash: str,
        output_path: str | os.PathLike[str],
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        overwrite: bool = True,
        output_conn_id: str | None = None,
        fsync: bool = False,
        durable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if durable is not None:
            warnings.warn(
                "ContentExporterDownloadExportOperator(durable=...) is deprecated: use fsync=... "
                "(same meaning).",
                DeprecationWarning,
                stacklevel=2,
            )
            fsync = fsync or durable
        self.export_hash = export_hash
        self.output_path = os.fspath(output_path) if isinstance(output_path, os.PathLike) else output_path
        self.content_exporter_conn_id = content_exporter_conn_id
        self.overwrite = overwrite
        self.output_conn_id = output_conn_id
        self.fsync = fsync

    @property
    def durable(self) -> bool:
        """Deprecated alias of :attr:`fsync`."""
        return self.fsync

    def execute(self, context: Context) -> str:
        from airflow_provider_cex.inputs import validate_export_hash

        try:
            export_hash = validate_export_hash(self.export_hash)
        except ValueError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None
        output = output_or_fail(self.task_id, self.output_path)
        return self._save_export(export_hash, output, context)

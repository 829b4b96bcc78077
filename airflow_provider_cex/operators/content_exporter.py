"""Operators that start a Content Exporter export and download its file.

Kept cheap to import (DAG files import it at every parse): the hook, and with it
``requests``, is imported only when a task runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_cex import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

#: XCom key under which the download operator pushes the file's metadata.
EXPORT_FILE_XCOM_KEY = "export_file"


def _is_templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class ContentExporterStartExportOperator(BaseOperator):
    """
    Start a Content Exporter export of a Confluence page (and its tree); return the export hash.

    The hash is pushed to XCom as ``return_value``; pass ``start.output`` to the sensor and the
    download operator.

    :param page_id: id of the Confluence (parent) page to export, digits only. Templated.
    :param export_body: the export configuration, a dict or the path of a ``.json`` file
        (relative to the DAG folder, rendered with Jinja), e.g. the Export Profile JSON.
        ``rootContentId`` is set to ``page_id``. Templated.
    :param content_exporter_conn_id: connection of type ``content_exporter``.
    """

    template_fields: Sequence[str] = ("page_id", "export_body")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"export_body": "json"}
    ui_color = "#e3f2fd"

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
        if isinstance(page_id, (str, int)) and not _is_templated(page_id):
            from airflow_provider_cex.protocol import validate_page_id

            validate_page_id(page_id)  # a literal bad page id fails at DAG parse, not at 2 a.m.

    def _validated_page_id(self) -> str:
        from airflow_provider_cex.protocol import validate_page_id

        try:
            return validate_page_id(self.page_id)
        except ValueError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None

    def _parsed_export_body(self) -> dict[str, Any] | None:
        body = self.export_body
        if body is None or isinstance(body, dict):
            return body
        source = self._export_body_source or ""
        where = f"export_body file {source!r}" if source.endswith(".json") else "export_body"
        if not isinstance(body, str):
            raise AirflowFailException(
                f"{self.task_id}: {where} must be a JSON object (a dict), got {type(body).__name__}."
            )
        try:
            parsed = json.loads(body)
        except ValueError as err:
            raise AirflowFailException(
                f"{self.task_id}: {where} is not valid JSON ({err}). Fix the file, or pass a dict."
            ) from None
        if not isinstance(parsed, dict):
            raise AirflowFailException(
                f"{self.task_id}: {where} must hold a JSON object ({{...}}), got a JSON "
                f"{type(parsed).__name__}."
            )
        return parsed

    def execute(self, context: Context) -> str:
        page_id = self._validated_page_id()
        body = self._parsed_export_body()
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

        with ContentExporterHook(content_exporter_conn_id=self.content_exporter_conn_id) as hook:
            export_hash = hook.start_export(page_id, body)
        self.log.info("Started export of Confluence page %s: hash %s", page_id, export_hash)
        return export_hash


class ContentExporterDownloadExportOperator(BaseOperator):
    """
    Download a finished export's file to a local path, atomically.

    Returns the final path (XCom ``return_value``) and pushes ``{"path", "filename",
    "size_bytes", "sha256", "content_type"}`` under the XCom key ``export_file``.

    :param export_hash: the hash returned by :class:`ContentExporterStartExportOperator`. Templated.
    :param output_path: the file's full path, or a folder (ending in ``/`` or existing) where the
        server's file name is kept, sanitised, e.g. ``exports/{{ ds }}/``. Missing folders are
        created. Relative paths are relative to the worker's working directory. Templated.
    :param content_exporter_conn_id: connection of type ``content_exporter``.
    :param overwrite: replace an existing file (default); ``False`` fails the task instead.
    """

    template_fields: Sequence[str] = ("export_hash", "output_path")
    ui_color = "#e8f5e9"

    def __init__(
        self,
        *,
        export_hash: str,
        output_path: str | os.PathLike[str],
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        overwrite: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.export_hash = export_hash
        self.output_path = os.fspath(output_path) if isinstance(output_path, os.PathLike) else output_path
        self.content_exporter_conn_id = content_exporter_conn_id
        self.overwrite = overwrite

    def execute(self, context: Context) -> str:
        from airflow_provider_cex.protocol import validate_export_hash

        try:
            export_hash = validate_export_hash(self.export_hash)
        except ValueError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None
        if not self.output_path or not str(self.output_path).strip():
            raise AirflowFailException(f"{self.task_id}: output_path is empty: pass a file path or a folder.")
        started = time.monotonic()
        with self._hook() as hook:
            try:
                result = hook.download_export(export_hash, self.output_path, overwrite=self.overwrite)
            except FileExistsError as err:
                raise AirflowFailException(f"{self.task_id}: {err}") from None
        elapsed = max(time.monotonic() - started, 1e-6)
        self.log.info(
            "Saved export %s to %s: %.1f MB in %.2f s (%.1f MB/s), sha256 %s",
            export_hash,
            result.path,
            result.size_bytes / 1e6,
            elapsed,
            result.size_bytes / 1e6 / elapsed,
            result.sha256,
        )
        context["ti"].xcom_push(
            key=EXPORT_FILE_XCOM_KEY,
            value={
                "path": result.path,
                "filename": result.filename,
                "size_bytes": result.size_bytes,
                "sha256": result.sha256,
                "content_type": result.content_type,
            },
        )
        return result.path

    def _hook(self) -> ContentExporterHook:
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

        return ContentExporterHook(content_exporter_conn_id=self.content_exporter_conn_id)

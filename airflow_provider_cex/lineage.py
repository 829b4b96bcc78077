"""What Airflow and OpenLineage learn about an export: the Confluence page in, the file that came out.

Three channels, one description (:class:`ExportLineage`):

* **OpenLineage** (``get_openlineage_facets_on_complete`` on the operators, built in
  :mod:`airflow_provider_cex.openlineage_facets`): input dataset = the page, output dataset = the file.
* **Hook-level lineage** (Airflow's hook lineage collector, fed by :func:`report_hook_output`), so a
  ``@task`` that calls ``ContentExporterHook.download_export`` gets lineage too.
* **Assets** for names known only at run time: an ``AssetAlias`` outlet gets an event for the file's URI.

Dataset names follow OpenLineage's naming conventions: a local file is namespace ``file``, name = its
absolute path; an object is namespace ``<scheme>://<bucket>``, name = its key; the page is namespace =
the connection's ``confluence_url`` extra (else the application URL), name = the page id.

Nothing here imports OpenLineage, and nothing is imported at DAG parse; lineage never fails a task.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

#: XCom key under which the start operator records which page an export hash belongs to.
EXPORT_PAGE_XCOM_KEY = "export_page"


@dataclasses.dataclass(frozen=True)
class ExportLineage:
    """One finished export as lineage sees it."""

    page_namespace: str
    page_id: str | None
    export_hash: str
    output_uri: str
    size_bytes: int
    sha256: str
    content_type: str | None
    filename: str


def output_uri(final: str) -> str:
    """The URI of where the file landed: ``file:///abs/path`` for a local path, the object URL as is."""
    if "://" in final and not final.lower().startswith("file://"):
        return final
    path = unquote(urlsplit(final).path) if final.lower().startswith("file://") else final
    return "file://" + quote(os.path.abspath(path), safe="/!$&'()*+,;=:@-._~")


def dataset_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)`` of a file or object URI by OpenLineage's naming conventions."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        namespace = f"file://{parts.netloc}" if parts.netloc else "file"
        return namespace, unquote(parts.path)
    return f"{scheme}://{parts.netloc}", unquote(parts.path).lstrip("/") or "/"


def page_namespace(settings: Any) -> str:
    """Where a page id is unique: the Confluence site (``confluence_url`` extra), else the application URL."""
    return (getattr(settings, "confluence_url", None) or settings.base_url).rstrip("/")


def describe(settings: Any, page_id: str | None, export_hash: str, meta: dict[str, Any]) -> ExportLineage:
    return ExportLineage(
        page_namespace=page_namespace(settings),
        page_id=page_id,
        export_hash=export_hash,
        output_uri=output_uri(meta["path"]),
        size_bytes=int(meta["size_bytes"]),
        sha256=meta["sha256"],
        content_type=meta.get("content_type"),
        filename=meta["filename"],
    )


def report_hook_output(hook: Any, uri: str, size_bytes: int, sha256: str) -> None:
    """Tell Airflow's hook lineage collector that ``hook`` wrote ``uri`` (a no-op where nobody collects)."""
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        get_hook_lineage_collector().add_output_asset(
            context=hook, uri=uri, asset_extra={"sha256": sha256, "size_bytes": size_bytes}
        )
    except Exception as err:  # lineage is a report, never a reason to fail a download
        log.debug("Hook lineage for %s not recorded: %s", uri, err)

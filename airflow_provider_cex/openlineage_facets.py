"""OpenLineage datasets for an export. Imported only by the OpenLineage provider's listener, when it runs.

Requires ``apache-airflow-providers-openlineage`` (the ``openlineage`` extra); the operators import this
module inside ``get_openlineage_facets_on_complete``, which only that provider calls.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attr
from airflow.providers.common.compat.openlineage.facet import (
    Dataset,
    DatasetFacet,
    DocumentationDatasetFacet,
    OutputDataset,
    OutputStatisticsOutputDatasetFacet,
)
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_cex.lineage import ExportLineage, dataset_name

#: The facet's JSON schema, shipped in the repository (docs/openlineage/).
FACET_SCHEMA_URL = (
    "https://github.com/airflow-provider-cex/airflow-provider-cex/blob/main/docs/openlineage/"
    "ContentExporterFileDatasetFacet.json#/$defs/ContentExporterFileDatasetFacet"
)
#: Facet key of :class:`ContentExporterFileDatasetFacet` on the output dataset.
FILE_FACET = "contentExporterFile"


@attr.define
class ContentExporterFileDatasetFacet(DatasetFacet):
    """The exported file as it landed: its size, sha256 and content type, and the export that made it."""

    sizeBytes: int
    sha256: str
    contentType: str | None
    fileName: str
    exportHash: str

    _additional_skip_redact: ClassVar[list[str]] = ["sizeBytes", "sha256", "contentType", "fileName"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


def page_dataset(namespace: str, page_id: str) -> Dataset:
    return Dataset(
        namespace=namespace,
        name=page_id,
        facets={
            "documentation": DocumentationDatasetFacet(
                description=f"Confluence page {page_id} and its page tree, exported by Content Exporter"
            )
        },
    )


def start_lineage(namespace: str, page_id: str) -> Any:
    """The start task reads the page (it writes nothing yet)."""
    return OperatorLineage(inputs=[page_dataset(namespace, page_id)])


def export_lineage(lineage: ExportLineage | None) -> Any:
    """The page in (when known), the file or object out, with size and sha256."""
    if lineage is None:
        return OperatorLineage()
    namespace, name = dataset_name(lineage.output_uri)
    output = OutputDataset(
        namespace=namespace,
        name=name,
        facets={
            FILE_FACET: ContentExporterFileDatasetFacet(
                sizeBytes=lineage.size_bytes,
                sha256=lineage.sha256,
                contentType=lineage.content_type,
                fileName=lineage.filename,
                exportHash=lineage.export_hash,
            )
        },
        outputFacets={
            "outputStatistics": OutputStatisticsOutputDatasetFacet(size=lineage.size_bytes, fileCount=1)
        },
    )
    inputs = [page_dataset(lineage.page_namespace, lineage.page_id)] if lineage.page_id else []
    return OperatorLineage(inputs=inputs, outputs=[output])

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

from airflow_provider_cex import __version__
from airflow_provider_cex.lineage import ExportLineage, dataset_name

# Custom facet naming and schema URL, as the OpenLineage spec (spec/OpenLineage.md, "Facets" and "Custom
# Facet Naming") prescribes:
#   "Custom facets must use a distinct prefix named after the project defining them to avoid collision with
#   standard facets [...]. The versioned URL must be an immutable pointer to the version of the facet schema.
#   For example, it should include a tag of a git sha and not a branch name."
#   "Naming of custom facets should follow the pattern `{prefix}{name}{entity}Facet` PascalCased. [...] When
#   attached to a core entity, the key should follow the pattern `{prefix}_{name}`, where both prefix and
#   name are in camelCase."  (Example given there: `BigQueryStatisticsJobFacet`, key `bigQuery_statistics`.)
# The project defining this facet is airflow-provider-cex, so: prefix AirflowProviderCex / airflowProviderCex,
# name File, entity Dataset. The schema URL is the raw JSON file on this version's git tag (v<__version__>),
# not a branch; its "$id" in docs/openlineage/ is the same URL without the fragment, and
# tests/unit/test_openlineage_schema.py checks both, so bumping __version__ means updating that "$id" too.

#: Where the facet schemas live in the repository, and the immutable (tagged) raw URL prefix for them.
SCHEMA_DIR = "docs/openlineage"
SCHEMA_BASE_URL = (
    f"https://raw.githubusercontent.com/airflow-provider-cex/airflow-provider-cex/v{__version__}/{SCHEMA_DIR}"
)
#: The facet's JSON schema: docs/openlineage/AirflowProviderCexFileDatasetFacet.json on tag v<version>.
FACET_SCHEMA_URL = (
    f"{SCHEMA_BASE_URL}/AirflowProviderCexFileDatasetFacet.json#/$defs/AirflowProviderCexFileDatasetFacet"
)
#: Facet key of :class:`AirflowProviderCexFileDatasetFacet` on the output dataset (``{prefix}_{name}``).
FILE_FACET = "airflowProviderCex_file"


@attr.define
class AirflowProviderCexFileDatasetFacet(DatasetFacet):
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
            FILE_FACET: AirflowProviderCexFileDatasetFacet(
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

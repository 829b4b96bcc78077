"""The OpenLineage facets the provider emits, checked offline.

The facets are built by the operators themselves (``execute`` against the emulator, then
``get_openlineage_facets_on_complete``, which is what the OpenLineage provider's listener calls) and
serialized the way the OpenLineage client serializes events. Our custom facet is validated against the
schema shipped in ``docs/openlineage/`` (its OpenLineage base resolved to a stand-in written in
``tests/openlineage_schemas.py``); the standard ones are checked for the ``_producer``/``_schemaURL`` a
consumer relies on. tests/e2e/test_openlineage.py checks the facets of real emitted events the same way.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import attr
import pytest

pytest.importorskip("airflow.providers.openlineage", reason="needs the 'openlineage' extra")

from airflow.providers.common.compat.openlineage.facet import DatasetFacet
from openlineage.client.serde import Serde
from referencing.exceptions import Unresolvable

from airflow_provider_cex import __version__
from airflow_provider_cex.openlineage_facets import (
    FACET_SCHEMA_URL,
    FILE_FACET,
    AirflowProviderCexFileDatasetFacet,
)
from tests.openlineage_schemas import (
    OPENLINEAGE_SPEC,
    REPO,
    check_facet,
    check_run_event,
    check_standard_facet,
    dataset_facets,
    registry,
    schema_documents,
    validate_own_facet,
)

RAW_HOST = "raw.githubusercontent.com"
OWNER_REPO = "airflow-provider-cex/airflow-provider-cex"
#: The immutable, versioned URL the spec asks for: the raw JSON file on the version's tag.
EXPECTED_SCHEMA_URL = (
    f"https://{RAW_HOST}/{OWNER_REPO}/v{__version__}/docs/openlineage/AirflowProviderCexFileDatasetFacet.json"
    "#/$defs/AirflowProviderCexFileDatasetFacet"
)
#: Fields every facet has from OpenLineage's BaseFacet/DatasetFacet (not part of our schema's own list).
BASE_FIELDS = {f.name for f in attr.fields(DatasetFacet)}


class FakeTI:
    """Just enough of a task instance for execute(): XComs in a dict shared by the tasks of one 'run'."""

    def __init__(self, task_id: str, xcoms: dict[tuple[str, str], Any]) -> None:
        self.task_id, self.xcoms = task_id, xcoms

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get((task_ids, key))


def serialized_datasets(lineage: Any) -> list[dict[str, Any]]:
    """The inputs and outputs of an OperatorLineage as they go on the wire (the client's serializer)."""
    return [Serde.to_dict(d) for d in [*lineage.inputs, *lineage.outputs]]


def wait_until_complete(export_hash: str) -> None:
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    deadline = time.monotonic() + 20
    with ContentExporterHook() as hook:
        while not hook.get_export_progress(export_hash).is_complete:
            assert time.monotonic() < deadline, f"export {export_hash} did not complete"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def schemas():
    return registry()


@pytest.fixture
def emitted(served_emulator, tmp_path) -> dict[str, list[dict[str, Any]]]:
    """Serialized datasets of each operator's OpenLineage, from a real start, download and one-task export."""
    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_cex.operators.content_exporter import (
        ContentExporterDownloadExportOperator,
        ContentExporterExportOperator,
        ContentExporterStartExportOperator,
    )

    xcoms: dict[tuple[str, str], Any] = {}
    with DAG("lineage_schema", schedule=None, start_date=datetime(2026, 1, 1)):
        start = ContentExporterStartExportOperator(task_id="start", page_id="4711")
        download = ContentExporterDownloadExportOperator(
            task_id="download",
            export_hash="{{ ti.xcom_pull('start') }}",
            output_path=str(tmp_path / "a") + "/",
        )
        start >> download
        one_task = ContentExporterExportOperator(
            task_id="one_task",
            page_id="4712",
            output_path=str(tmp_path / "b") + "/",
            deferrable=False,
            poll_interval=0.1,
            timeout=20,
        )
    export_hash = start.execute({"ti": FakeTI("start", xcoms)})
    wait_until_complete(export_hash)
    download.export_hash = export_hash  # rendered, as the template above would be
    download.execute({"ti": FakeTI("download", xcoms)})
    ctx = {"ti": FakeTI("one_task", xcoms)}
    one_task.poll_until_complete(one_task.submit_job(ctx), ctx)
    return {
        op.task_id: serialized_datasets(op.get_openlineage_facets_on_complete(None))
        for op in (start, download, one_task)
    }


def test_every_facet_the_operators_emit_is_checked(emitted, schemas, served_emulator):
    seen = set()
    for task_id, datasets in emitted.items():
        for key, facet in dataset_facets(datasets):
            try:
                # Ours against the shipped schema, the standard ones for _producer and _schemaURL.
                check_facet(key, facet, schemas)
                if key == FILE_FACET:
                    validate_own_facet(key, facet, schemas)  # not only through the dispatch
            except AssertionError as err:
                raise AssertionError(f"{task_id}: {err}") from None
            seen.add(key)
    assert seen == {"documentation", FILE_FACET, "outputStatistics"}

    for task_id in ("download", "one_task"):
        (output,) = [d for d in emitted[task_id] if FILE_FACET in (d.get("facets") or {})]
        facet = output["facets"][FILE_FACET]
        assert facet["_schemaURL"] == EXPECTED_SCHEMA_URL
        assert facet["sha256"] == served_emulator.artifact_sha256, task_id
        assert facet["sizeBytes"] == served_emulator.artifact_size, task_id
        # The input (the page) is known to both: through the start task's XCom, or the operator's own page.
        assert [d["name"] for d in emitted[task_id] if d is not output] == (
            ["4711"] if task_id == "download" else ["4712"]
        )


def test_the_schema_url_is_immutable_versioned_and_points_at_the_shipped_file():
    assert FACET_SCHEMA_URL == EXPECTED_SCHEMA_URL
    facet = AirflowProviderCexFileDatasetFacet(
        sizeBytes=1, sha256="0" * 64, contentType=None, fileName="f.pdf", exportHash="h"
    )
    assert facet._schemaURL == EXPECTED_SCHEMA_URL

    parts = urlsplit(FACET_SCHEMA_URL)
    assert (parts.scheme, parts.netloc) == ("https", RAW_HOST), "a raw JSON URL, not an HTML page"
    owner, repo, ref, *path = parts.path.lstrip("/").split("/")
    assert f"{owner}/{repo}" == OWNER_REPO
    # A tag, never a branch (the spec: "it should include a tag of a git sha and not a branch name").
    assert ref == f"v{__version__}", f"the URL's git ref {ref!r} is not the tag of version {__version__}"
    shipped = REPO.joinpath(*path)
    assert shipped.is_file(), f"{'/'.join(path)} (named by the schema URL) is not in the repository"

    # The shipped file's $id is the same URL without the fragment: bumping __version__ means updating it.
    (doc_path, doc) = schema_documents()[FACET_SCHEMA_URL.partition("#")[0]]
    assert doc_path == shipped
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # The fragment names the $defs entry of the class's name, and the key points at it.
    assert parts.fragment == f"/$defs/{AirflowProviderCexFileDatasetFacet.__name__}"
    assert doc["properties"] == {
        FILE_FACET: {"$ref": f"#/$defs/{AirflowProviderCexFileDatasetFacet.__name__}"}
    }


def test_every_shipped_schema_has_an_immutable_id_of_this_version():
    assert schema_documents()
    for schema_id, (path, _) in schema_documents().items():
        assert schema_id == (
            f"https://{RAW_HOST}/{OWNER_REPO}/v{__version__}/docs/openlineage/{path.name}"
        ), f"{path}: $id {schema_id} is not this version's tagged raw URL"


def test_the_schema_lists_exactly_the_fields_of_the_class():
    doc = schema_documents()[FACET_SCHEMA_URL.partition("#")[0]][1]
    definition = doc["$defs"][AirflowProviderCexFileDatasetFacet.__name__]
    base_ref, own = definition["allOf"]
    # OpenLineage's DatasetFacet is the base, as in OpenLineage's own facet schemas.
    assert base_ref == {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetFacet"}
    assert own["additionalProperties"] is False  # an unknown field fails validation
    fields = {f.name: f for f in attr.fields(AirflowProviderCexFileDatasetFacet) if f.name not in BASE_FIELDS}
    properties = {name for name in own["properties"] if not name.startswith("_")}
    assert properties == set(fields), (
        f"class fields not in the schema: {sorted(set(fields) - properties)}; "
        f"schema properties not in the class: {sorted(properties - set(fields))}"
    )
    required = {name for name, f in fields.items() if "None" not in str(f.type)}
    assert set(own["required"]) == required
    # BaseFacet's fields are allowed by name (they are validated by the base).
    assert {name for name in own["properties"] if name.startswith("_")} == {
        "_" + name.lstrip("_") for name in BASE_FIELDS
    }


def test_a_field_missing_from_the_schema_fails_validation(schemas):
    @attr.define
    class Grown(AirflowProviderCexFileDatasetFacet):
        pageTitle: str = "Annual report"

    facet = Serde.to_dict(
        Grown(sizeBytes=1, sha256="a" * 64, contentType="application/pdf", fileName="f.pdf", exportHash="h")
    )
    with pytest.raises(AssertionError, match="pageTitle"):
        validate_own_facet(FILE_FACET, facet, schemas)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "not-hex"}, "does not match"),
        ({"sizeBytes": -1}, "less than the minimum"),
        ({"_producer": "not a url"}, "_producer"),
        ({"_deleted": "yes"}, "is not of type 'boolean'"),
        (
            {
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/FileDatasetFacet.json#/$defs/FileDatasetFacet"
            },
            "does not resolve to a local schema",
        ),
        (
            {"_schemaURL": FACET_SCHEMA_URL.replace(f"/v{__version__}/", "/main/")},
            "does not resolve to a local schema",
        ),
    ],
)
def test_broken_facets_fail_validation(schemas, change, message):
    facet = Serde.to_dict(
        AirflowProviderCexFileDatasetFacet(
            sizeBytes=1, sha256="a" * 64, contentType=None, fileName="f.pdf", exportHash="h"
        )
    )
    check_facet(FILE_FACET, facet, schemas)  # as built: valid
    with pytest.raises(AssertionError, match=message):
        check_facet(FILE_FACET, {**facet, **change}, schemas)
    facet_without_producer = {k: v for k, v in facet.items() if k != "_producer"}
    with pytest.raises(AssertionError, match="_producer"):
        check_facet(FILE_FACET, facet_without_producer, schemas)


def test_the_facet_key_must_be_the_one_the_schema_declares(schemas):
    facet = Serde.to_dict(
        AirflowProviderCexFileDatasetFacet(
            sizeBytes=1, sha256="a" * 64, contentType=None, fileName="f.pdf", exportHash="h"
        )
    )
    with pytest.raises(AssertionError, match="contentExporterFile"):
        check_facet("contentExporterFile", facet, schemas)


def test_the_openlineage_base_is_the_local_stand_in_and_nothing_is_fetched(schemas):
    from jsonschema import Draft202012Validator

    from tests.openlineage_schemas import FORMATS, OPENLINEAGE_BASE_STANDIN

    assert schemas.contents(OPENLINEAGE_SPEC) is OPENLINEAGE_BASE_STANDIN
    assert set(OPENLINEAGE_BASE_STANDIN["$defs"]) == {"BaseFacet", "DatasetFacet"}
    base = Draft202012Validator(
        {"$ref": f"{OPENLINEAGE_SPEC}#/$defs/DatasetFacet"}, registry=schemas, format_checker=FORMATS
    )
    ok = {"_producer": "https://example.com/p", "_schemaURL": "https://example.com/s.json", "extra": 1}
    assert base.is_valid(ok) and base.is_valid({**ok, "_deleted": True})
    for broken in (
        {"_schemaURL": ok["_schemaURL"]},
        {"_producer": ok["_producer"]},
        {**ok, "_producer": "not a url"},
        {**ok, "_schemaURL": 7},
        {**ok, "_deleted": "no"},
        [],
    ):
        assert not base.is_valid(broken), broken
    # Any other document (another OpenLineage version, a standard facet) is unresolvable, never downloaded.
    for uri in (
        "https://openlineage.io/spec/2-0-1/OpenLineage.json",
        "https://openlineage.io/spec/facets/1-1-0/DocumentationDatasetFacet.json",
    ):
        with pytest.raises(Unresolvable):
            schemas.resolver().lookup(f"{uri}#/$defs/DatasetFacet")


@pytest.mark.parametrize(
    ("facet", "message"),
    [
        (
            {"_schemaURL": "https://openlineage.io/spec/facets/1-1-0/DocumentationDatasetFacet.json"},
            "_producer",
        ),
        ({"_producer": "https://example.com/producer"}, "_schemaURL"),
        (
            {
                "_producer": "http://example.com/producer",
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DocumentationDatasetFacet.json#/$defs/DocumentationDatasetFacet",
            },
            "not an https URL",
        ),
        (
            {
                "_producer": "https://example.com/producer",
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DocumentationDatasetFacet.json#/$defs/Other",
            },
            "is not of the form",
        ),
        (
            {
                "_producer": "https://example.com/producer",
                "_schemaURL": "https://openlineage.io/spec/facets/latest/DocumentationDatasetFacet.json#/$defs/DocumentationDatasetFacet",
            },
            "is not of the form",
        ),
    ],
)
def test_standard_facets_need_an_https_producer_and_a_versioned_schema_url(facet, message):
    with pytest.raises(AssertionError, match=message):
        check_standard_facet("documentation", facet)
    check_standard_facet(
        "documentation",
        {
            "_producer": "https://example.com/producer",
            "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DocumentationDatasetFacet.json"
            "#/$defs/DocumentationDatasetFacet",
            "description": "anything else is OpenLineage's business",
        },
    )


def test_a_run_event_needs_what_a_consumer_reads():
    event = {
        "eventType": "COMPLETE",
        "eventTime": "2026-11-28T00:00:00+00:00",
        "run": {"runId": "01890a5d-ac96-774b-bcce-b302099a8057"},
        "job": {"namespace": "cex-tests", "name": "dag.task"},
        "inputs": [{"namespace": "https://acme.atlassian.net/wiki", "name": "4711"}],
        "outputs": [{"namespace": "file", "name": "/tmp/page-4711.pdf"}],
        "producer": "https://github.com/apache/airflow/tree/providers-openlineage/2.0.0",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }
    check_run_event(event)
    for change, message in (
        ({"eventType": "DONE"}, "eventType"),
        ({"run": {"runId": "42"}}, "runId"),
        ({"job": {"namespace": "cex-tests"}}, "job.name"),
        ({"outputs": [{"namespace": "file"}]}, "outputs has name"),
        ({"producer": "airflow"}, "producer"),
        ({"schemaURL": None}, "schemaURL"),
    ):
        with pytest.raises(AssertionError, match=message):
            check_run_event({**event, **change})

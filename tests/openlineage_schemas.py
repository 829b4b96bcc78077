"""Offline checks of OpenLineage events and facets, as the tests see them emitted.

* **Our own facets** (a key a schema in ``docs/openlineage/`` declares, or any ``_schemaURL`` outside
  OpenLineage's standard facets) are validated with ``jsonschema`` against the schema this provider ships,
  registered under its ``$id`` in a ``referencing.Registry``. That schema ``$ref``s OpenLineage's
  ``DatasetFacet`` in ``OpenLineage.json``; the registry resolves it to :data:`OPENLINEAGE_BASE_STANDIN`,
  a small stand-in written here. Any other ``$ref`` or ``_schemaURL`` fails with the URL: nothing is fetched.
* **Standard facets** (``https://openlineage.io/spec/facets/...``: documentation, outputStatistics, ...)
  are checked only for what a consumer relies on: ``_producer`` and ``_schemaURL`` present, absolute
  ``https://`` URLs, the ``_schemaURL`` naming a versioned standard facet definition. Their full schemas are
  OpenLineage's business, and their versions differ between the client versions the provider supports.
* **Events** (:func:`check_run_event`): the fields a consumer needs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO / "docs" / "openlineage"
#: OpenLineage's core schema, which our facet schemas ``$ref`` for the ``DatasetFacet`` base.
OPENLINEAGE_SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
#: A standard facet's ``_schemaURL``: ``https://openlineage.io/spec/facets/<version>/<Name>.json#/$defs/<Name>``.
STANDARD_FACET_URL = re.compile(
    r"https://openlineage\.io/spec/facets/(?P<version>\d+-\d+-\d+)/(?P<name>[A-Z][A-Za-z0-9]*)\.json"
    r"#/\$defs/(?P=name)"
)
EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}

# A stand-in for the two base definitions of OpenLineage's OpenLineage.json that our facet schemas build on,
# written for these tests from the OpenLineage spec's description of them (it is not a copy of the upstream
# file): tests run without network, so the real document cannot be fetched, and files copied from other
# public repositories may not be committed here. It holds only what the spec says of the bases:
# * BaseFacet: an object with a required `_producer` (a URI: the producer of the facet) and a required
#   `_schemaURL` (a URI: the schema the facet conforms to); other properties are allowed (facets add theirs).
# * DatasetFacet: a BaseFacet that may also carry a boolean `_deleted`.
OPENLINEAGE_BASE_STANDIN: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": OPENLINEAGE_SPEC,
    "$defs": {
        "BaseFacet": {
            "type": "object",
            "properties": {
                "_producer": {"type": "string", "format": "uri"},
                "_schemaURL": {"type": "string", "format": "uri"},
            },
            "required": ["_producer", "_schemaURL"],
            "additionalProperties": True,
        },
        "DatasetFacet": {
            "allOf": [
                {"$ref": "#/$defs/BaseFacet"},
                {
                    "type": "object",
                    "properties": {"_deleted": {"type": "boolean"}},
                    "additionalProperties": True,
                },
            ]
        },
    },
}


def _refuse(uri: str) -> Resource:
    raise NoSuchResource(ref=uri)  # never fetch: a schema missing here is a test failure, not a download


def _is_absolute_url(value: Any, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    parts = urlsplit(value)
    return parts.scheme in schemes and bool(parts.netloc)


#: Checks the ``format``s of the schemas. jsonschema checks ``uri`` only when ``rfc3987`` is installed;
#: without it, ``uri`` is checked here as an absolute http(s) URL (what every OpenLineage URL is).
FORMATS = FormatChecker()
if "uri" not in FORMATS.checkers:
    FORMATS.checks("uri")(_is_absolute_url)


def schema_documents() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every schema this provider ships, by its ``$id`` (without a trailing ``#``), with its file."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(SHIPPED_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        schema_id = doc.get("$id", "").rstrip("#")
        assert schema_id, f"{path} has no $id"
        assert schema_id not in found, f"{path} and {found[schema_id][0]} have the same $id {schema_id}"
        found[schema_id] = (path, doc)
    return found


def own_facet_keys() -> set[str]:
    """The facet keys the shipped schemas declare."""
    return {key for _, doc in schema_documents().values() for key in doc.get("properties") or {}}


def registry() -> Registry:
    """The shipped schemas and the OpenLineage base stand-in, under their ``$id``s; nothing else resolves."""
    resources = [(OPENLINEAGE_SPEC, Resource.from_contents(OPENLINEAGE_BASE_STANDIN))]
    resources += [
        (schema_id, Resource.from_contents(doc)) for schema_id, (_, doc) in schema_documents().items()
    ]
    return Registry(retrieve=_refuse).with_resources(resources)


def check_facet(key: str, facet: dict[str, Any], schemas: Registry | None = None) -> None:
    """Raise ``AssertionError`` unless the facet (serialized, as emitted) under ``key`` is fine.

    Ours (a key a shipped schema declares, or a ``_schemaURL`` that is not a standard facet's) are
    validated against the shipped schema (:func:`validate_own_facet`), the standard ones checked for
    what a consumer relies on (:func:`check_standard_facet`).
    """
    url = facet.get("_schemaURL")
    standard = isinstance(url, str) and url.startswith("https://openlineage.io/spec/facets/")
    if key in own_facet_keys() or not standard:
        validate_own_facet(key, facet, schemas)
    else:
        check_standard_facet(key, facet)


def check_standard_facet(key: str, facet: dict[str, Any]) -> None:
    """A standard facet: ``_producer`` and ``_schemaURL`` https URLs, the latter naming a standard facet."""
    producer, url = facet.get("_producer"), facet.get("_schemaURL")
    assert _is_absolute_url(producer, ("https",)), (
        f"facet {key!r}: _producer {producer!r} is not an https URL"
    )
    assert _is_absolute_url(url, ("https",)), f"facet {key!r}: _schemaURL {url!r} is not an https URL"
    assert STANDARD_FACET_URL.fullmatch(url), (
        f"facet {key!r}: _schemaURL {url} is not of the form "
        "https://openlineage.io/spec/facets/<version>/<Name>.json#/$defs/<Name>"
    )


def validate_own_facet(key: str, facet: dict[str, Any], schemas: Registry | None = None) -> None:
    """Our facet against the shipped schema its ``_schemaURL`` names (with the OpenLineage base stand-in).

    Checks: ``_producer`` and ``_schemaURL`` are absolute URLs; ``_schemaURL`` resolves in the local
    registry; the facet validates against that definition (formats checked); and the schema document
    declares ``key`` as the facet key pointing at that same definition.
    """
    schemas = schemas or registry()
    producer, url = facet.get("_producer"), facet.get("_schemaURL")
    assert _is_absolute_url(producer), f"facet {key!r}: _producer {producer!r} is not an absolute URL"
    assert _is_absolute_url(url), f"facet {key!r}: _schemaURL {url!r} is not an absolute URL"
    base, _, fragment = url.partition("#")
    if base == OPENLINEAGE_SPEC or base not in schema_documents():
        raise AssertionError(
            f"facet {key!r}: _schemaURL {url} does not resolve to a local schema; "
            f"known: {sorted(schema_documents())}"
        )
    try:
        schemas.resolver().lookup(url)
    except Unresolvable as err:
        raise AssertionError(
            f"facet {key!r}: _schemaURL {url} does not resolve to a local schema ({err!r})"
        ) from None
    validator = Draft202012Validator({"$ref": url}, registry=schemas, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(facet), key=lambda e: list(e.absolute_path))
    assert not errors, f"facet {key!r} does not match {url}:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<facet>'}: {e.message}" for e in errors
    )
    # The schema document names the key the facet is attached under (OpenLineage's own facet files do).
    doc = schemas.contents(base)
    declared = (doc.get("properties") or {}).get(key, {}).get("$ref")
    assert declared == f"#{fragment}", (
        f"facet key {key!r}: the schema {base} declares {declared!r} for it, expected '#{fragment}' "
        f"(its keys: {sorted(doc.get('properties') or {})})"
    )


def dataset_facets(datasets: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, facet) of every dataset, input and output facet of serialized (emitted) datasets."""
    for dataset in datasets:
        for field in ("facets", "inputFacets", "outputFacets"):
            yield from (dataset.get(field) or {}).items()


def check_run_event(event: dict[str, Any]) -> None:
    """The fields of a run event a consumer needs: type, run id, job, datasets, producer and schema URL."""
    where = f"event {event.get('eventType')} of {event.get('job', {}).get('name')!r}"
    assert event.get("eventType") in EVENT_TYPES, f"{where}: eventType {event.get('eventType')!r}"
    assert isinstance(event.get("eventTime"), str) and event["eventTime"], f"{where}: no eventTime"
    run_id = (event.get("run") or {}).get("runId")
    try:
        uuid.UUID(run_id)
    except (TypeError, ValueError, AttributeError):
        raise AssertionError(f"{where}: run.runId {run_id!r} is not a UUID") from None
    job = event.get("job") or {}
    for field in ("namespace", "name"):
        assert isinstance(job.get(field), str) and job[field], f"{where}: job.{field} {job.get(field)!r}"
    for side in ("inputs", "outputs"):
        datasets = event.get(side, [])
        assert isinstance(datasets, list), f"{where}: {side} is not a list"
        for dataset in datasets:
            for field in ("namespace", "name"):
                value = dataset.get(field)
                assert isinstance(value, str) and value, f"{where}: a dataset of {side} has {field} {value!r}"
    for field in ("producer", "schemaURL"):
        assert _is_absolute_url(event.get(field)), (
            f"{where}: {field} {event.get(field)!r} is not an absolute URL"
        )

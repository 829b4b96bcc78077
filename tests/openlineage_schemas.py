"""Offline validation of OpenLineage facets: every facet against the JSON schema its ``_schemaURL`` names.

The schemas come from two local places, registered under their ``$id`` in a ``referencing.Registry``:

* ``docs/openlineage/*.json``: the facet schemas this provider ships;
* ``tests/openlineage_spec/``: verbatim copies of OpenLineage's own ``OpenLineage.json`` (2-0-2, the
  ``DatasetFacet``/``BaseFacet`` base our schema ``$ref``s) and of the standard facets the provider emits
  (see the README there for where they came from).

A ``$ref`` or ``_schemaURL`` that is not in the registry fails with the URL; nothing is fetched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO / "docs" / "openlineage"
VENDORED_DIR = Path(__file__).resolve().parent / "openlineage_spec"
#: Where OpenLineage's core schema (the base of every facet) lives; the installed client's version.
OPENLINEAGE_SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


def _refuse(uri: str) -> Resource:
    raise NoSuchResource(ref=uri)  # never fetch: a schema missing here is a test failure, not a download


def schema_documents() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every local schema by its ``$id`` (without a trailing ``#``), with the file it came from."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted([*SHIPPED_DIR.glob("*.json"), *VENDORED_DIR.rglob("*.json")]):
        doc = json.loads(path.read_text())
        schema_id = doc.get("$id", "").rstrip("#")
        assert schema_id, f"{path} has no $id"
        assert schema_id not in found, f"{path} and {found[schema_id][0]} have the same $id {schema_id}"
        found[schema_id] = (path, doc)
    return found


def registry() -> Registry:
    return Registry(retrieve=_refuse).with_resources(
        (schema_id, Resource.from_contents(doc)) for schema_id, (_, doc) in schema_documents().items()
    )


def _is_absolute_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_facet(key: str, facet: dict[str, Any], schemas: Registry | None = None) -> None:
    """Raise ``AssertionError`` unless ``facet`` (serialized, as emitted) is valid under the key ``key``.

    Checks: ``_producer`` and ``_schemaURL`` are absolute URLs; ``_schemaURL`` resolves in the local
    registry; the facet validates against that definition (with its OpenLineage base); and the schema
    document declares ``key`` as the facet key pointing at that same definition.
    """
    schemas = schemas or registry()
    producer, url = facet.get("_producer"), facet.get("_schemaURL")
    assert _is_absolute_http_url(producer), f"facet {key!r}: _producer {producer!r} is not an absolute URL"
    assert _is_absolute_http_url(url), f"facet {key!r}: _schemaURL {url!r} is not an absolute URL"
    base, _, fragment = url.partition("#")
    try:
        schemas.resolver().lookup(url)
    except Unresolvable as err:
        raise AssertionError(
            f"facet {key!r}: _schemaURL {url} does not resolve to a local schema ({err!r}); known: "
            f"{sorted(schema_documents())}"
        ) from None
    validator = Draft202012Validator({"$ref": url}, registry=schemas)
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


def validate_run_event(event: dict[str, Any], schemas: Registry | None = None) -> None:
    """The whole event against OpenLineage's ``RunEvent`` (facets there only against the base facets)."""
    validator = Draft202012Validator(
        {"$ref": f"{OPENLINEAGE_SPEC}#/$defs/RunEvent"}, registry=schemas or registry()
    )
    errors = list(validator.iter_errors(event))
    assert not errors, "event does not match OpenLineage's RunEvent:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )

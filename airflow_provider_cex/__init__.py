"""Apache Airflow provider for the Content Exporter for Confluence Remote API.

Importing this package is cheap on purpose: DAG files import it at every parse, so
HTTP libraries are loaded only when a task runs.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONN_TYPE = "content_exporter"
DEFAULT_CONN_ID = "content_exporter_default"
US_APPLICATION_URL = "https://content-exporter-new.addon.meta-inf.hu"
EU_APPLICATION_URL = "https://content-exporter-new.addon-eu.meta-inf.hu"

HIDDEN_FIELDS = ["schema", "port", "login"]
RELABELING = {"host": "Application URL", "password": "API key"}
PLACEHOLDERS = {
    "host": f"{US_APPLICATION_URL} (empty: chosen by region)",
    "password": "the key generated on the Content Exporter admin page",
    "region": "us",
    "timeout": "60, or 5, 60 (connect, read)",
}


#: Region values the ``region`` extra takes; unset (null or absent) means ``us`` unless the host is set.
REGIONS = ("us", "eu")

# The text forms the ``timeout`` and ``confluence_url`` extras take, as regular expressions that mean the
# same in Python's ``re`` (the parser, and ``jsonschema``, which applies ``pattern`` with ``re.search``)
# and in JavaScript. Text arrives from URIs (query values are strings), the Airflow 2.11 form (text
# inputs) and the Airflow 3 form (its multi-type field keeps what is not JSON as text).
_SPACE = r"[ \t\r\n]*"
_SECONDS = r"(?:0*[1-9][0-9]*(?:\.[0-9]*)?|0*\.0*[1-9][0-9]*)"  # a positive decimal number, no exponent
#: ``60``, ``0.5``, ``5, 60`` or ``[5, 60]`` (connect, read); empty or blank means the default.
TIMEOUT_TEXT_PATTERN = (
    rf"^{_SPACE}(?:{_SECONDS}|{_SECONDS}{_SPACE},{_SPACE}{_SECONDS}"
    rf"|\[{_SPACE}{_SECONDS}{_SPACE},{_SPACE}{_SECONDS}{_SPACE}\])?{_SPACE}$"
)
#: Longest timeout text accepted (a longer one is no realistic number of seconds).
TIMEOUT_TEXT_MAX_LENGTH = 40
#: Largest finite float: the schema's ``maximum``, so that it rejects infinity (which the parser rejects).
FINITE_MAX = 1.7976931348623157e308
#: ``http(s)://host[:port][/path]``, no credentials, query or fragment; empty or blank means not set.
CONFLUENCE_URL_PATTERN = (
    rf"^{_SPACE}(?:https?://(?:[^ \t\r\n/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
    rf"(?:/[^ \t\r\n?#]*)?)?{_SPACE}$"
)


def conn_fields() -> dict[str, dict[str, Any]]:
    """The connection form's extra fields, written once for both UIs.

    Airflow 3 reads them from the provider info (``conn-fields``), Airflow 2.11 from the hook's
    ``get_connection_form_widgets``, which builds its widgets from this same table. Each schema
    accepts exactly the values :func:`airflow_provider_cex.settings.settings_from_connection` accepts
    (``tests/unit/test_connection_form_schema.py`` holds the two together):

    - ``region``: a dropdown in Airflow 3 (``enum`` with a labelled "not set" choice, stored as null).
    - ``timeout``: several JSON types without ``enum``, so Airflow 3 renders one text box that stores
      ``60`` as a number, ``[5, 60]`` as a list and anything else (``5, 60``) as text.
    - ``confluence_url``: a text box; Airflow 3 stores an empty box as null.
    """
    return {
        "region": {
            "label": "Region",
            "description": f"Used when Application URL is empty: 'us' ({US_APPLICATION_URL}) or 'eu' "
            f"({EU_APPLICATION_URL}). Not set: us.",
            "schema": {
                "type": ["string", "null"],
                "enum": [*REGIONS, None],
                # Airflow 3's dropdown labels (its key for null is "null"); ignored by JSON Schema.
                "values_display": {"us": "us", "eu": "eu", "null": "not set (us)"},
            },
        },
        "confluence_url": {
            "label": "Confluence URL",
            "description": "Optional, e.g. https://acme.atlassian.net/wiki: adds a 'Confluence page' link "
            "to export tasks.",
            "schema": {"type": ["string", "null"], "pattern": CONFLUENCE_URL_PATTERN},
        },
        "timeout": {
            "label": "Timeout (seconds)",
            "description": "Read timeout of each HTTP call in seconds (default 60), or connect and read "
            "timeouts as two numbers: 5, 60 or [5, 60].",
            "schema": {
                "type": ["number", "array", "string", "null"],
                "exclusiveMinimum": 0,
                "maximum": FINITE_MAX,
                "items": {"type": "number", "exclusiveMinimum": 0, "maximum": FINITE_MAX},
                "minItems": 2,
                "maxItems": 2,
                "pattern": TIMEOUT_TEXT_PATTERN,
                "maxLength": TIMEOUT_TEXT_MAX_LENGTH,
            },
        },
    }


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-cex",
        "name": "Content Exporter for Confluence",
        "description": "Export Confluence page trees to PDF, Word and other formats with the "
        "Content Exporter for Confluence Remote API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Content Exporter for Confluence",
                "external-doc-url": "https://docs.meta-inf.hu/content-exporter-confluence/user-guides/before-exporting/remote-api-cloud-only",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Content Exporter for Confluence",
                "python-modules": [
                    "airflow_provider_cex.hooks.content_exporter",
                    "airflow_provider_cex.hooks.content_exporter_async",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "Content Exporter for Confluence",
                "python-modules": ["airflow_provider_cex.operators.content_exporter"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Content Exporter for Confluence",
                "python-modules": ["airflow_provider_cex.sensors.content_exporter"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Content Exporter for Confluence",
                "python-modules": ["airflow_provider_cex.triggers.content_exporter"],
            }
        ],
        # The class lives in operators.base; DAGs serialized by 0.1.0 name it by its old path, which
        # still imports (a re-export): Airflow 2.11 deserializes a link only by a registered path.
        "extra-links": [
            "airflow_provider_cex.operators.base.ConfluencePageLink",
            "airflow_provider_cex.operators.content_exporter.ConfluencePageLink",
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_cex.hooks.content_exporter.ContentExporterHook",
                "hook-name": "Content Exporter for Confluence",
                "ui-field-behaviour": {
                    "hidden-fields": HIDDEN_FIELDS,
                    "relabeling": RELABELING,
                    "placeholders": PLACEHOLDERS,
                },
                "conn-fields": conn_fields(),
            }
        ],
    }

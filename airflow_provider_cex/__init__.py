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
    "timeout": "60",
}


def conn_fields() -> dict[str, dict[str, Any]]:
    """The connection form's extra fields, written once for both UIs.

    Airflow 3 reads them from the provider info (``conn-fields``), Airflow 2.11 from the hook's
    ``get_connection_form_widgets``, which builds its widgets from this same table.
    """
    return {
        "region": {
            "label": "Region",
            "description": f"Used when Application URL is empty: 'us' ({US_APPLICATION_URL}) or 'eu' "
            f"({EU_APPLICATION_URL}).",
            "schema": {"type": ["string", "null"], "enum": ["us", "eu"]},
        },
        "confluence_url": {
            "label": "Confluence URL",
            "description": "Optional, e.g. https://acme.atlassian.net/wiki: adds a 'Confluence page' link "
            "to export tasks.",
            "schema": {"type": ["string", "null"]},
        },
        "timeout": {
            "label": "Timeout (seconds)",
            "description": "Read timeout of each HTTP call (default 60).",
            "schema": {"type": ["number", "null"], "minimum": 1},
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
        "extra-links": ["airflow_provider_cex.operators.content_exporter.ConfluencePageLink"],
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

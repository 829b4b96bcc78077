"""What Airflow learns about the provider: provider info (Airflow 3 UI) and the hook's form (Airflow 2.11)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import AIRFLOW_V3


def test_provider_info_declares_the_connection_form_for_airflow_3():
    from airflow_provider_cex import get_provider_info

    info = get_provider_info()
    conn = info["connection-types"][0]
    assert info["package-name"] == "airflow-provider-cex" and info["description"]
    assert conn["connection-type"] == "content_exporter"
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "Application URL", "password": "API key"}
    assert set(behaviour["hidden-fields"]) == {"schema", "port", "login"}
    assert "content-exporter-new.addon.meta-inf.hu" in behaviour["placeholders"]["host"]
    assert set(conn["conn-fields"]) == {"region", "timeout", "confluence_url"}
    from airflow_provider_cex.operators.content_exporter import ConfluencePageLink

    # Where the class is, first; its old path, which DAGs serialized by 0.1 name, still imports it.
    link = f"{ConfluencePageLink.__module__}.{ConfluencePageLink.__qualname__}"
    assert info["extra-links"] == [link, "airflow_provider_cex.operators.content_exporter.ConfluencePageLink"]
    json.dumps(info)  # must be plain JSON for the UI


def test_hook_declares_the_connection_form_for_airflow_2():
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    behaviour = ContentExporterHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "API key"
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}


@pytest.mark.skipif(
    AIRFLOW_V3, reason="Airflow 3 has no flask_appbuilder: its UI builds the form from provider info"
)
def test_airflow_2_ui_finds_the_connection_form_fields():
    from airflow.providers_manager import ProvidersManager

    from airflow_provider_cex import get_provider_info
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    widgets = ContentExporterHook.get_connection_form_widgets()
    assert set(widgets) == set(get_provider_info()["connection-types"][0]["conn-fields"])
    assert str(widgets["region"].args[0]) == "Region"  # the label, a lazy gettext string
    # What the Airflow 2.11 connection form is built from (the UI prefixes the field names).
    providers = ProvidersManager()
    ours = [w for w in providers.connection_form_widgets.values() if w.package_name == "airflow-provider-cex"]
    fields = {w.field_name for w in ours}
    assert fields == {"region", "confluence_url", "timeout"}
    assert providers.field_behaviours["content_exporter"]["relabeling"]["password"] == "API key"

"""Operators and sensor without a server: templating, validation before any HTTP call, messages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from airflow.providers.common.compat.sdk import DAG, AirflowFailException

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor
from tests.conftest import AIRFLOW_V3


def render(op, **context):
    op.resolve_template_files()
    op.render_template_fields({"ds": "2026-11-26", "params": {}, **context})
    return op


@pytest.fixture
def dag(tmp_path):
    with DAG("t", schedule=None, start_date=datetime(2026, 1, 1), template_searchpath=[str(tmp_path)]) as dag:
        yield dag


def test_export_body_json_file_is_loaded_from_the_dag_folder_and_rendered(dag, tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "pdf.json").write_text('{"unit": "CM", "title": "Export {{ ds }}"}')
    op = ContentExporterStartExportOperator(
        task_id="s", page_id="{{ params.page }}", export_body="profiles/pdf.json", dag=dag
    )
    render(op, params={"page": "4242"})
    assert op.page_id == "4242"
    assert op._parsed_export_body() == {"unit": "CM", "title": "Export 2026-11-26"}


def test_export_body_dict_values_are_templated(dag):
    op = ContentExporterStartExportOperator(
        task_id="s", page_id=1, export_body={"title": "{{ ds }}"}, dag=dag
    )
    assert render(op)._parsed_export_body() == {"title": "2026-11-26"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [('{"unit": "CM",}', "is not valid JSON"), ('["pdf"]', "must hold a JSON object")],
)
def test_bad_export_body_file_names_the_file_and_the_problem(dag, tmp_path, content, expected):
    (tmp_path / "broken.json").write_text(content)
    op = ContentExporterStartExportOperator(task_id="s", page_id="1", export_body="broken.json", dag=dag)
    with pytest.raises(AirflowFailException, match=expected) as err:
        render(op).execute({})
    assert "broken.json" in str(err.value)


def test_literal_bad_page_id_fails_at_dag_parse(dag):
    with pytest.raises(ValueError, match="page_id must contain digits only"):
        ContentExporterStartExportOperator(task_id="s", page_id="12a", dag=dag)


def test_templated_bad_page_id_fails_the_task_without_retries(dag):
    op = ContentExporterStartExportOperator(task_id="s", page_id="{{ params.page }}", dag=dag)
    with pytest.raises(AirflowFailException, match="page_id"):
        render(op, params={"page": "../etc"}).execute({})


def test_download_output_path_is_templated(dag):
    op = ContentExporterDownloadExportOperator(
        task_id="d", export_hash="{{ params.h }}", output_path="exports/{{ ds }}/", dag=dag
    )
    render(op, params={"h": "abc"})
    assert (op.export_hash, op.output_path) == ("abc", "exports/2026-11-26/")


def test_sensor_defaults_suit_exports_that_take_minutes(dag):
    sensor = ContentExporterExportSensor(task_id="w", export_hash="abc", dag=dag)
    assert sensor.mode == "reschedule"
    assert sensor.poke_interval == 30 and sensor.timeout == timedelta(hours=2).total_seconds()
    assert ContentExporterExportSensor.template_fields == ("export_hash",)


def test_sensor_rejects_an_empty_hash_without_calling_the_service(dag):
    sensor = ContentExporterExportSensor(task_id="w", export_hash="", dag=dag)
    with pytest.raises(AirflowFailException, match="export_hash"):
        sensor.poke({})


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
    assert info["extra-links"] == ["airflow_provider_cex.operators.content_exporter.ConfluencePageLink"]
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

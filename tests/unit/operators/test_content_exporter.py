"""The start and download operators as a DAG author meets them: templating, validation, parse-time errors."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from airflow.providers.common.compat.sdk import DAG, AirflowFailException

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)


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
    assert json.loads(op.export_body) == {"unit": "CM", "title": "Export 2026-11-26"}  # the file, rendered


def test_export_body_dict_values_are_templated(dag):
    op = ContentExporterStartExportOperator(
        task_id="s", page_id=1, export_body={"title": "{{ ds }}"}, dag=dag
    )
    assert render(op).export_body == {"title": "2026-11-26"}


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

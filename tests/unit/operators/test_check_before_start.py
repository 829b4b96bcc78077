"""The start task checks the download's output path before it starts an export (no export wasted).

Narrow unit cases of :func:`check_download_outputs` on real operators in a real DAG; the end-to-end proof
(a run without a logical date, the emulator counting no export) is in ``tests/e2e/test_run_types.py``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.operators.destinations import check_download_outputs
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor

LOG = logging.getLogger(__name__)
#: The template context of a run without a logical date (Airflow 3): no ds, dag_run.logical_date None.
NO_LOGICAL_DATE = {
    "dag_run": SimpleNamespace(logical_date=None, run_after=datetime(2026, 12, 7, 9, 30)),
    "params": {},
}


def pipeline(output_path, **download_kwargs):
    with DAG("t", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        start = ContentExporterStartExportOperator(task_id="start_export", page_id="1")
        wait = ContentExporterExportSensor(task_id="wait_for_export", export_hash=start.output)
        download = ContentExporterDownloadExportOperator(
            task_id="download_export", export_hash=start.output, output_path=output_path, **download_kwargs
        )
        wait >> download
    return dag, start


def test_ds_in_a_run_without_a_logical_date_fails_with_the_template_that_works():
    _, start = pipeline("exports/{{ ds }}/")
    with pytest.raises(ValueError) as err:
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)
    message = str(err.value)
    assert "download_export" in message and "'ds' is undefined" in message
    assert "No export was started" in message
    assert "{{ (dag_run.logical_date or dag_run.run_after) | ds }}" in message


def test_a_method_of_a_missing_logical_date_fails_before_the_start():
    _, start = pipeline("exports/{{ dag_run.logical_date.strftime('%Y') }}/")
    with pytest.raises(ValueError, match=r"cannot be rendered in this run .*No export was started") as err:
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)
    assert "| ds }} for the run's day" in str(err.value)


def test_a_missing_logical_date_rendered_as_none_fails_before_the_start():
    """Airflow's ``ds`` filter turns None into None: the file would land in ``exports/None/``."""
    _, start = pipeline("exports/{{ dag_run.logical_date | ds }}/")
    with pytest.raises(ValueError, match="renders as 'exports/None/' in this run: it has no logical date"):
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)


def test_an_undefined_variable_of_another_kind_says_fix_the_template():
    _, start = pipeline("exports/{{ folder }}/")
    with pytest.raises(ValueError, match=r"\('folder' is undefined\)\. No export was started: fix"):
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)


def test_the_run_day_template_passes():
    _, start = pipeline("exports/{{ (dag_run.logical_date or dag_run.run_after) | ds }}/")
    check_download_outputs(start, NO_LOGICAL_DATE, LOG)  # no error


def test_a_path_that_renders_empty_fails():
    _, start = pipeline("{{ params.get('folder', '') }}")
    with pytest.raises(ValueError, match="renders empty in this run"):
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)


def test_a_template_that_pulls_xcom_is_left_to_the_download():
    """Its value depends on tasks that have not run yet: rendering it now could fail for nothing."""
    _, start = pipeline("exports/{{ ti.xcom_pull(task_ids='wait_for_export')['folder'] }}/")
    check_download_outputs(start, NO_LOGICAL_DATE, LOG)  # no error


def test_a_missing_output_connection_fails_before_the_start(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_AWS", raising=False)
    _, start = pipeline("s3://bucket/exports/", output_conn_id="no_such_aws")
    with pytest.raises(ValueError, match=r"'no_such_aws' names no Airflow connection.*No export was started"):
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)


def test_a_mapped_output_path_is_left_to_the_download_but_its_partial_arguments_are_checked():
    with DAG("t", schedule=None, start_date=datetime(2026, 1, 1)):
        start = ContentExporterStartExportOperator(task_id="start_export", page_id="1")
        ContentExporterDownloadExportOperator.partial(
            task_id="download_export", export_hash=start.output
        ).expand(output_path=["a/", "b/"])
    check_download_outputs(start, NO_LOGICAL_DATE, LOG)  # no error: the paths are mapped

    with DAG("t2", schedule=None, start_date=datetime(2026, 1, 1)):
        start = ContentExporterStartExportOperator(task_id="start_export", page_id="1")
        ContentExporterDownloadExportOperator.partial(
            task_id="download_export", output_path="exports/{{ ds }}/"
        ).expand(export_hash=[start.output])
    with pytest.raises(ValueError, match="'ds' is undefined"):
        check_download_outputs(start, NO_LOGICAL_DATE, LOG)


def test_a_start_task_outside_a_dag_checks_nothing():
    start = ContentExporterStartExportOperator(task_id="start_export", page_id="1")
    check_download_outputs(start, NO_LOGICAL_DATE, LOG)  # no error

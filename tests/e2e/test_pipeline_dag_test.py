"""The export pipeline in real Airflow (dag.test() on a migrated metadata DB) against the emulator.

Each test asserts what a user would see in the UI: the DagRun state, each task's state and
try number, the file on disk, and the emulator's request counters (no export started twice).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor
from tests.conftest import API_KEY
from tests.e2e.conftest import (
    TASK_DEFERRED,
    load_example_dag,
    reschedule_count,
    run_dag,
    task_states,
    xcom_value,
)

LOGICAL_DATE = pendulum.datetime(2026, 11, 26, tz="UTC")


def pipeline_dag(
    dag_id: str,
    output: Path | str,
    *,
    page_id: str = "{{ dag_run.conf['page_id'] }}",
    export_body: object = None,
    template_searchpath: str | None = None,
    sensor_kwargs: dict | None = None,
    overwrite: bool = True,
) -> DAG:
    """start >> sensor >> download with task retries on, as a production DAG would have."""
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
        template_searchpath=template_searchpath,
    ) as dag:
        start = ContentExporterStartExportOperator(
            task_id="start_export", page_id=page_id, export_body=export_body
        )
        wait = ContentExporterExportSensor(
            task_id="wait_for_export",
            export_hash=start.output,
            **{"poke_interval": 1, **(sensor_kwargs or {})},
        )
        download = ContentExporterDownloadExportOperator(
            task_id="download_export", export_hash=start.output, output_path=str(output), overwrite=overwrite
        )
        wait >> download
    return dag


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the example DAGs


def test_example_dag_exports_a_page_to_a_byte_identical_file(
    airflow_db, served_emulator, tmp_path, monkeypatch, task_log
):
    served_emulator.export_seconds = 2.5  # long enough for the sensor to be rescheduled at least once
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    dag = load_example_dag("example_content_exporter", "example_content_exporter.py")
    dag.get_task("wait_for_export").poke_interval = 1  # the DAG's 30 s would only slow the test

    dag_run = run_dag(dag, {"page_id": "555"}, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    assert task_states(dag_run) == {
        "start_export": ("success", 1),
        "wait_for_export": ("success", 1),
        "download_export": ("success", 1),
    }
    landed = tmp_path / "2026-11-26" / "page-555.pdf"
    assert sha256(landed) == served_emulator.artifact_sha256
    assert reschedule_count(dag_run, "wait_for_export") >= 1  # the worker slot was released between pokes
    assert served_emulator.counts["start_export"] == 1
    body = next(iter(served_emulator.exports.values())).body
    assert body["rootContentId"] == "555"
    assert body["pageSettings"] == {"size": "A4", "orientation": "PORTRAIT"}  # profiles/pdf.json, rendered
    output = task_log()
    assert "export " in output and "%" in output  # progress lines in the task log
    assert API_KEY not in output


def test_many_pages_example_exports_each_page_once(airflow_db, served_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    dag = load_example_dag("example_content_exporter_many_pages", "example_content_exporter_many_pages.py")
    dag_run = run_dag(dag, {"page_ids": ["11", "12", "13"]}, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    files = sorted(p.name for p in (tmp_path / "2026-11-26").iterdir())
    assert files == ["page-11.pdf", "page-12.pdf", "page-13.pdf"]
    assert all(sha256(tmp_path / "2026-11-26" / f) == served_emulator.artifact_sha256 for f in files)
    assert served_emulator.counts["start_export"] == 3
    assert sorted(e.page_id for e in served_emulator.exports.values()) == ["11", "12", "13"]
    bodies = [e.body for e in served_emulator.exports.values()]
    assert all(b["pageSettings"] == {"size": "LETTER", "orientation": "LANDSCAPE"} for b in bodies)
    assert sorted(b["rootContentId"] for b in bodies) == ["11", "12", "13"]


# --------------------------------------------------------------------------- failures


def test_failed_export_fails_the_sensor_once_without_retries(airflow_db, served_emulator, tmp_path, task_log):
    served_emulator.fail_pages(["666"], message="Page tree too large to render")
    dag_run = run_dag(pipeline_dag("cex_failed_export", tmp_path / "f.pdf"), {"page_id": "666"}, LOGICAL_DATE)

    states = task_states(dag_run)
    assert dag_run.state == "failed"
    assert states["wait_for_export"] == ("failed", 1)  # retries=2, yet one try: retrying cannot help
    assert states["download_export"][0] == "upstream_failed"
    assert served_emulator.counts["start_export"] == 1 and served_emulator.counts["download_export"] == 0
    assert "Page tree too large to render" in task_log()
    assert not (tmp_path / "f.pdf").exists()


def test_failed_export_with_soft_fail_skips(airflow_db, served_emulator, tmp_path):
    served_emulator.fail_pages(["667"])
    dag = pipeline_dag("cex_soft_fail", tmp_path / "f.pdf", sensor_kwargs={"soft_fail": True})
    dag_run = run_dag(dag, {"page_id": "667"}, LOGICAL_DATE)
    states = task_states(dag_run)
    assert states["wait_for_export"] == ("skipped", 1) and states["download_export"][0] == "skipped"


def test_export_that_never_finishes_ends_in_a_sensor_timeout(airflow_db, served_emulator, tmp_path, task_log):
    served_emulator.export_seconds = 3600
    dag = pipeline_dag("cex_timeout", tmp_path / "f.pdf", sensor_kwargs={"timeout": 3})
    dag_run = run_dag(dag, {"page_id": "1"}, LOGICAL_DATE)
    states = task_states(dag_run)
    assert dag_run.state == "failed"
    assert states["wait_for_export"][0] == "failed" and states["download_export"][0] == "upstream_failed"
    assert "timed out" in task_log()


def test_a_60_second_outage_of_progress_does_not_fail_a_longer_export(
    airflow_db, served_emulator, tmp_path, task_log
):
    served_emulator.export_seconds = 70
    served_emulator.outage("export_progress", seconds=60, status=503)
    dag = pipeline_dag("cex_outage", tmp_path / "f.pdf", sensor_kwargs={"poke_interval": 5, "timeout": 300})
    dag_run = run_dag(dag, {"page_id": "2"}, LOGICAL_DATE)

    assert dag_run.state == "success"
    assert task_states(dag_run)["wait_for_export"] == ("success", 1)
    assert sha256(tmp_path / "f.pdf") == served_emulator.artifact_sha256
    assert served_emulator.counts["start_export"] == 1
    output = task_log()
    assert "will check again" in output and API_KEY not in output


# --------------------------------------------------------------------------- bad input starts no export


def test_bad_page_id_fails_clearly_and_starts_no_export(airflow_db, served_emulator, tmp_path, task_log):
    dag_run = run_dag(pipeline_dag("cex_bad_page", tmp_path / "f.pdf"), {"page_id": "12a"}, LOGICAL_DATE)
    assert task_states(dag_run)["start_export"] == ("failed", 1)
    assert sum(served_emulator.counts.values()) == 0
    assert "page_id must contain digits only" in task_log()


def test_bad_export_body_file_fails_clearly_and_starts_no_export(
    airflow_db, served_emulator, tmp_path, task_log
):
    (tmp_path / "broken.json").write_text('{"unit": "CM",,}')
    dag = pipeline_dag(
        "cex_bad_body", tmp_path / "f.pdf", export_body="broken.json", template_searchpath=str(tmp_path)
    )
    dag_run = run_dag(dag, {"page_id": "3"}, LOGICAL_DATE)
    assert task_states(dag_run)["start_export"] == ("failed", 1)
    assert sum(served_emulator.counts.values()) == 0
    output = task_log()
    assert "broken.json" in output and "is not valid JSON" in output


def test_existing_file_with_overwrite_false_fails_without_downloading(
    airflow_db, served_emulator, tmp_path, task_log
):
    existing = tmp_path / "report.pdf"
    existing.write_bytes(b"last week's report")
    dag = pipeline_dag("cex_no_overwrite", existing, overwrite=False)
    dag_run = run_dag(dag, {"page_id": "4"}, LOGICAL_DATE)
    assert task_states(dag_run)["download_export"] == ("failed", 1)
    assert served_emulator.counts["download_export"] == 0
    assert existing.read_bytes() == b"last week's report"
    assert "overwrite=False" in task_log()


@pytest.mark.parametrize("output", ["{{ ds }}/", "nested/{{ ds }}/report.pdf"])
def test_download_path_templates_render_relative_to_the_output(airflow_db, served_emulator, tmp_path, output):
    dag = pipeline_dag("cex_templated_output", f"{tmp_path}/{output}")
    dag_run = run_dag(dag, {"page_id": "5"}, LOGICAL_DATE)
    assert dag_run.state == "success"
    expected = tmp_path / output.replace("{{ ds }}", "2026-11-26")
    landed = expected / "page-5.pdf" if output.endswith("/") else expected
    assert sha256(landed) == served_emulator.artifact_sha256


# --------------------------------------------------------------------------- deferrable sensor


def test_example_dag_with_a_deferrable_sensor_succeeds(
    airflow_db, served_emulator, tmp_path, monkeypatch, task_log
):
    served_emulator.export_seconds = 2.5  # not done at the check before deferring: the trigger must finish it
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    dag = load_example_dag("example_content_exporter", "example_content_exporter.py")
    sensor = dag.get_task("wait_for_export")
    sensor.deferrable, sensor.poke_interval = True, 1

    dag_run = run_dag(dag, {"page_id": "777"}, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    assert sha256(tmp_path / "2026-11-26" / "page-777.pdf") == served_emulator.artifact_sha256
    output = task_log()
    assert TASK_DEFERRED in output and "Trigger completed" in output
    assert "ContentExporterExportTrigger" in output  # progress was polled by the trigger
    assert served_emulator.counts["export_progress"] >= 2 and API_KEY not in output


def test_failed_export_fails_the_deferred_sensor_once_without_retries(
    airflow_db, served_emulator, tmp_path, task_log
):
    served_emulator.export_seconds = 2
    served_emulator.fail_pages(["668"], message="Attachment too large")
    dag = pipeline_dag("cex_deferred_failed", tmp_path / "f.pdf", sensor_kwargs={"deferrable": True})
    dag_run = run_dag(dag, {"page_id": "668"}, LOGICAL_DATE)

    states = task_states(dag_run)
    assert dag_run.state == "failed"
    assert states["wait_for_export"] == ("failed", 1)
    assert states["download_export"][0] == "upstream_failed"
    output = task_log()
    assert TASK_DEFERRED in output and "Attachment too large" in output


def test_start_task_links_to_the_confluence_page(airflow_db, emulator, tmp_path, monkeypatch):
    from tests.conftest import CONN_ENV, connection_json

    monkeypatch.setenv(
        CONN_ENV, connection_json(emulator.base_url, confluence_url="https://acme.atlassian.net/wiki/")
    )
    dag_run = run_dag(pipeline_dag("cex_link", tmp_path / "f.pdf"), {"page_id": "4242"}, LOGICAL_DATE)
    assert dag_run.state == "success"
    assert (
        xcom_value(dag_run, "start_export", "confluence_page_url")
        == "https://acme.atlassian.net/wiki/pages/viewpage.action?pageId=4242"
    )

"""ContentExporterExportOperator in real Airflow (dag.test()): page to file in one task, in the worker or
deferred, and what a retry does with the export the failed try started."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_cex.operators.content_exporter import ContentExporterExportOperator
from tests.conftest import AIRFLOW_V3, API_KEY
from tests.e2e.conftest import TASK_DEFERRED, load_example_dag, run_dag, task_states, xcom_value

LOGICAL_DATE = pendulum.datetime(2026, 11, 28, tz="UTC")
#: ResumableJobMixin keeps the hash in task_state_store from Airflow 3.3 on; below, each try starts anew.
RESUMES = AIRFLOW_V3


def one_task_dag(dag_id: str, output: Path | str, **kwargs) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        default_args={"retries": kwargs.pop("retries", 2), "retry_delay": timedelta(seconds=1)},
    ) as dag:
        ContentExporterExportOperator(
            task_id="export",
            page_id="{{ dag_run.conf['page_id'] }}",
            export_body={"pageSettings": {"size": "A4", "orientation": "PORTRAIT"}},
            output_path=str(output),
            poll_interval=0.2,
            **kwargs,
        )
    return dag


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_example_dag_exports_a_page_in_one_task(airflow_db, served_emulator, tmp_path, monkeypatch):
    served_emulator.export_seconds = 0.5
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    dag = load_example_dag("example_content_exporter_one_task", "example_content_exporter_one_task.py")
    for task in dag.tasks:
        task.poll_interval = 0.2  # the example polls every 10 s
    dag_run = run_dag(dag, {"page_id": "321"}, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success", task_states(dag_run)
    landed = tmp_path / "2026-11-28" / "page-321.pdf"
    assert sha256(landed) == served_emulator.artifact_sha256
    (export,) = served_emulator.exports.values()
    assert export.body["rootContentId"] == "321" and export.body["pageSettings"]["size"] == "A4"
    assert xcom_value(dag_run, "export_page_tree", "export_hash") == export.export_hash
    assert xcom_value(dag_run, "export_page_tree", "export_file")["sha256"] == served_emulator.artifact_sha256


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferrable"])
def test_one_task_lands_a_byte_identical_file(airflow_db, served_emulator, tmp_path, deferrable, task_log):
    served_emulator.export_seconds = 0.3
    dag = one_task_dag(f"cex_one_task_{deferrable}", tmp_path / "out" / "tree.pdf", deferrable=deferrable)
    dag_run = run_dag(dag, {"page_id": "42"}, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success", task_states(dag_run)
    assert task_states(dag_run) == {"export": ("success", 1)}
    assert sha256(tmp_path / "out" / "tree.pdf") == served_emulator.artifact_sha256
    assert served_emulator.counts["start_export"] == 1
    assert xcom_value(dag_run, "export", "return_value") == str(tmp_path / "out" / "tree.pdf")
    output = task_log()
    assert API_KEY not in output
    if deferrable:
        assert TASK_DEFERRED in output


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferrable"])
def test_a_failed_export_fails_once_or_skips_with_soft_fail(
    airflow_db, served_emulator, tmp_path, deferrable
):
    served_emulator.export_seconds = 0
    served_emulator.fail_pages(["666"], message="Page tree too large to render")
    failing = one_task_dag(f"cex_one_task_fail_{deferrable}", tmp_path / "f.pdf", deferrable=deferrable)
    skipping = one_task_dag(
        f"cex_one_task_skip_{deferrable}", tmp_path / "s.pdf", deferrable=deferrable, soft_fail=True
    )
    failed = run_dag(failing, {"page_id": "666"}, logical_date=LOGICAL_DATE)
    skipped = run_dag(skipping, {"page_id": "666"}, logical_date=LOGICAL_DATE)

    assert task_states(failed) == {"export": ("failed", 1)}  # retries=2, yet one try: retrying cannot help
    assert task_states(skipped)["export"][0] == "skipped"
    assert not (tmp_path / "f.pdf").exists() and not (tmp_path / "s.pdf").exists()


def test_overwrite_false_with_an_existing_file_starts_no_export(airflow_db, served_emulator, tmp_path):
    existing = tmp_path / "tree.pdf"
    existing.write_bytes(b"yesterday's export")
    dag = one_task_dag("cex_one_task_exists", existing, overwrite=False)
    dag_run = run_dag(dag, {"page_id": "42"}, logical_date=LOGICAL_DATE)

    assert task_states(dag_run) == {"export": ("failed", 1)}
    assert served_emulator.exports == {} and served_emulator.counts["start_export"] == 0
    assert existing.read_bytes() == b"yesterday's export"


def test_a_retry_after_a_failed_download_reuses_the_export_on_airflow_3_3(
    airflow_db, served_emulator, tmp_path, task_log
):
    """The first try starts the export, then its download fails past the hook's retry budget (5 x 503).

    Airflow 3.3: the retry reads the hash from task_state_store, finds the export done, downloads it:
    one export in all. Airflow 2.11 has no task_state_store: the retry starts a second export.
    """
    served_emulator.export_seconds = 0
    served_emulator.inject("download_export", status=503, times=5, retry_after=0)
    dag = one_task_dag("cex_one_task_resume", tmp_path / "tree.pdf", retries=1)
    dag_run = run_dag(dag, {"page_id": "77"}, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success", task_states(dag_run)
    assert task_states(dag_run) == {"export": ("success", 2)}
    assert sha256(tmp_path / "tree.pdf") == served_emulator.artifact_sha256
    if RESUMES:
        assert len(served_emulator.exports) == 1
        assert "instead of starting a new one" in task_log()
    else:
        assert len(served_emulator.exports) == 2


def test_durable_is_refused_as_ambiguous_and_the_download_operators_durable_is_deprecated():
    from airflow_provider_cex.operators.content_exporter import ContentExporterDownloadExportOperator

    with pytest.raises(TypeError, match=r"resume_on_retry=.*fsync="):
        ContentExporterExportOperator(task_id="t", page_id="1", output_path="x/", durable=True)
    with pytest.warns(DeprecationWarning, match="fsync"):
        old = ContentExporterDownloadExportOperator(
            task_id="d", export_hash="h", output_path="x/", durable=True
        )
    assert old.fsync is True and old.durable is True
    op = ContentExporterExportOperator(task_id="t2", page_id="1", output_path="x/", fsync=True)
    assert op.fsync is True and op.resume_on_retry is True
    assert {"content_exporter_conn_id", "output_conn_id"} <= set(op.template_fields)
    assert "content_exporter_conn_id" in ContentExporterDownloadExportOperator.template_fields


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferrable"])
def test_soft_fail_never_hides_a_wrong_path_behind_a_skip(
    airflow_db, served_emulator, tmp_path, monkeypatch, deferrable
):
    from tests.conftest import CONN_ENV, connection_json

    served_emulator.export_seconds = 0
    wrong = {"export_progress": "/nowhere/{export_hash}"}
    monkeypatch.setenv(CONN_ENV, connection_json(served_emulator.base_url, endpoints=wrong))
    dag = one_task_dag(
        f"cex_one_task_wrong_path_{deferrable}",
        tmp_path / "w.pdf",
        deferrable=deferrable,
        soft_fail=True,
        retries=0,
    )
    dag_run = run_dag(dag, {"page_id": "42"}, logical_date=LOGICAL_DATE)

    assert task_states(dag_run) == {"export": ("failed", 1)}  # failed, not skipped


@pytest.mark.parametrize("deferrable", [False, True], ids=["in the worker", "deferred"])
def test_an_outage_until_the_deadline_is_an_error_not_a_skip_in_both_modes(
    airflow_db, served_emulator, tmp_path, deferrable, task_log
):
    """Waiting in the worker or deferred, an outage that outlasts the timeout fails the try (retryable: the
    next try reconnects to the export), even with soft_fail, and says the service did not answer."""
    served_emulator.export_seconds = 3600
    dag = one_task_dag(
        f"cex_one_task_outage_{deferrable}",
        tmp_path / "o.pdf",
        deferrable=deferrable,
        soft_fail=True,
        timeout=2,
        retries=0,
    )
    served_emulator.outage("export_progress", seconds=120, status=503, retry_after="0")
    dag_run = run_dag(dag, {"page_id": "4242"}, logical_date=LOGICAL_DATE)

    assert task_states(dag_run) == {"export": ("failed", 1)}
    output = task_log()
    assert "Could not check the progress of export" in output and "HTTP 503" in output
    assert "Skipping" not in output and not (tmp_path / "o.pdf").exists()

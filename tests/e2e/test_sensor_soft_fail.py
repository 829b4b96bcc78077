"""soft_fail in real Airflow (dag.test()): a failed export or a timeout skips the sensor, an error fails it.

The sensor defers; on Airflow 3 dag.test() runs the trigger inline and resumes the task through
``resume_execution``, as a worker does after the triggerer fired, on 2.11 likewise. The errors are
made to reach the sensor through the trigger (an ``error`` event), the path where Airflow's own
``soft_fail`` handling would have skipped them, and at the check before deferring.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_cex.operators.content_exporter import ContentExporterStartExportOperator
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor
from tests.conftest import CONN_ENV, connection_json
from tests.e2e.conftest import TASK_DEFERRED, run_dag, task_states

LOGICAL_DATE = pendulum.datetime(2026, 11, 27, tz="UTC")
#: An export hash the emulator never issued: its progress answers 404.
UNKNOWN_HASH = "exp-never-started-0000"
PROGRESS = "export_progress"


def soft_fail_dag(dag_id: str, *, page_id: str | None = None, export_hash: str = "", **sensor: Any) -> DAG:
    """[start >>] a soft_fail sensor, deferrable unless told; no task retries, so 'failed' is final."""
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), default_args={"retries": 0}) as dag:
        if page_id is not None:
            export_hash = ContentExporterStartExportOperator(task_id="start_export", page_id=page_id).output
        ContentExporterExportSensor(
            task_id="wait_for_export",
            export_hash=export_hash,
            **{"soft_fail": True, "deferrable": True, "poke_interval": 1, **sensor},
        )
    return dag


def wait_state(dag_run: Any) -> str:
    return str(task_states(dag_run)["wait_for_export"][0])


def defer_at_first_check(emulator: Any) -> None:
    """Make the check before deferring see 'not done yet', so the trigger meets what follows.

    A 503 whose Retry-After (1 h) exceeds the hook's cap ends the hook's retrying at once: the sensor
    logs it as an outage and defers.
    """
    emulator.inject(PROGRESS, status=503, times=1, retry_after="3600")


# --------------------------------------------------------------------------- the outcomes that may skip


def test_a_failed_export_skips_the_deferred_sensor(airflow_db, served_emulator, task_log):
    served_emulator.export_seconds = 3  # fails at 50 %, after the sensor has deferred
    served_emulator.fail_pages(["901"], message="Attachment too large")
    dag_run = run_dag(soft_fail_dag("cex_sf_failed", page_id="901"), logical_date=LOGICAL_DATE)

    assert wait_state(dag_run) == "skipped"
    output = task_log()
    assert TASK_DEFERRED in output and "Attachment too large" in output


def test_a_timeout_skips_the_deferred_sensor(airflow_db, served_emulator, task_log):
    served_emulator.export_seconds = 3600
    dag_run = run_dag(soft_fail_dag("cex_sf_timeout", page_id="902", timeout=2), logical_date=LOGICAL_DATE)

    assert wait_state(dag_run) == "skipped"
    assert TASK_DEFERRED in task_log()


# --------------------------------------------------------------------------- errors fail, soft_fail or not


def test_an_unknown_hash_reported_by_the_trigger_fails_the_sensor(airflow_db, served_emulator, task_log):
    defer_at_first_check(served_emulator)
    dag_run = run_dag(soft_fail_dag("cex_sf_unknown", export_hash=UNKNOWN_HASH), logical_date=LOGICAL_DATE)

    assert dag_run.state == "failed"
    assert task_states(dag_run)["wait_for_export"] == ("failed", 1)
    output = task_log()
    assert TASK_DEFERRED in output and UNKNOWN_HASH in output
    assert served_emulator.counts[PROGRESS] >= 2  # the check before deferring, then the trigger's 404


def test_a_rejected_key_reported_by_the_trigger_fails_the_sensor(airflow_db, served_emulator, task_log):
    defer_at_first_check(served_emulator)
    served_emulator.inject(PROGRESS, status=401, times=5)  # the key was revoked while the sensor waited
    dag_run = run_dag(soft_fail_dag("cex_sf_rejected", export_hash=UNKNOWN_HASH), logical_date=LOGICAL_DATE)

    assert dag_run.state == "failed"
    assert task_states(dag_run)["wait_for_export"] == ("failed", 1)
    assert TASK_DEFERRED in task_log()


@pytest.mark.parametrize("deferrable", [True, False], ids=["check before deferring", "reschedule mode"])
def test_an_unknown_hash_at_a_poke_fails_the_sensor(airflow_db, served_emulator, task_log, deferrable):
    dag = soft_fail_dag(f"cex_sf_unknown_poke_{deferrable}", export_hash=UNKNOWN_HASH, deferrable=deferrable)
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert task_states(dag_run)["wait_for_export"] == ("failed", 1)
    assert TASK_DEFERRED not in task_log()


@pytest.mark.parametrize("deferrable", [True, False], ids=["check before deferring", "reschedule mode"])
def test_a_rejected_key_at_a_poke_fails_the_sensor(airflow_db, served_emulator, monkeypatch, deferrable):
    monkeypatch.setenv(CONN_ENV, connection_json(served_emulator.base_url, api_key="cexk_" + "0" * 35))
    dag_run = run_dag(
        soft_fail_dag(
            f"cex_sf_rejected_poke_{deferrable}", page_id=None, export_hash="exp-1", deferrable=deferrable
        ),
        logical_date=LOGICAL_DATE,
    )

    assert task_states(dag_run)["wait_for_export"] == ("failed", 1)


@pytest.mark.parametrize(
    "mode",
    [{"deferrable": True}, {"deferrable": False}, {"deferrable": False, "mode": "poke"}],
    ids=["deferred", "reschedule mode", "poke mode"],
)
def test_an_outage_until_the_deadline_fails_the_sensor_in_every_mode(
    airflow_db, served_emulator, task_log, mode
):
    """Not a timeout to skip: the service never answered, so soft_fail does not hide it (like a bad key)."""
    served_emulator.outage(PROGRESS, seconds=120, status=503, retry_after="0")
    name = "_".join(str(v) for v in mode.values())
    dag = soft_fail_dag(f"cex_sf_outage_{name}", export_hash=UNKNOWN_HASH, timeout=2, **mode)
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert task_states(dag_run)["wait_for_export"] == ("failed", 1)
    output = task_log()
    assert f"Content Exporter export {UNKNOWN_HASH}: Could not check the progress" in output
    assert "HTTP 503" in output and "Skipping" not in output

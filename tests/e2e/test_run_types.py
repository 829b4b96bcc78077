"""The example DAGs for every kind of run: with a logical date, and (Airflow 3) without one.

Airflow 3 runs triggered from the CLI (``airflow dags trigger``), from REST with ``"logical_date": null``
or by an asset have no ``logical_date`` and no ``ds`` in the template context; the examples name the date
folder ``{{ (dag_run.logical_date or dag_run.run_after) | ds }}``, which is the logical date when there is
one and the day the run was triggered otherwise. ``dag.test(logical_date=None)`` makes such a run (an
asset-triggered run differs only in its run type: the scheduler creates it with ``logical_date=None`` and
``run_after`` set too). Airflow 2.11 always has a logical date (``dag.test()`` takes now): there the same
calls prove the template with its normal run.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest

# Imported at collection, as the other e2e modules import Airflow: before the airflow_db fixture's
# `airflow db migrate` writes airflow.cfg, whose generated fernet key Airflow 2.11 cannot use with
# cryptography 51 (MultiFernet takes no attributes any more).
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

from tests.conftest import AIRFLOW_V3
from tests.e2e.conftest import load_example_dag, run_dag, task_states

#: dag_id -> (file, conf, the files the run lands)
EXAMPLES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "example_content_exporter": ("example_content_exporter.py", {"page_id": "801"}, ["page-801.pdf"]),
    "example_content_exporter_deferrable": (
        "example_content_exporter_deferrable.py",
        {"page_id": "802"},
        ["page-802.pdf"],
    ),
    "example_content_exporter_many_pages": (
        "example_content_exporter_many_pages.py",
        {"page_ids": ["811", "812", "813"]},
        ["page-811.pdf", "page-812.pdf", "page-813.pdf"],
    ),
    "example_content_exporter_one_task": (
        "example_content_exporter_one_task.py",
        {"page_id": "803"},
        ["page-803.pdf"],
    ),
}
MAPPED_TASKS = ("export_page.start_export", "export_page.wait_for_export", "export_page.download_export")
LOGICAL_DATE = pendulum.datetime(2026, 11, 26, tz="UTC")


def _utc_day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _load_fast(dag_id: str) -> Any:
    """The example DAG, polling every second instead of every 10-30 s (exports take 0.3 s here)."""
    dag = load_example_dag(dag_id, EXAMPLES[dag_id][0])
    for task in dag.tasks:
        if hasattr(task, "poke_interval"):
            task.poke_interval = 1
        if hasattr(task, "poll_interval"):
            task.poll_interval = 1.0
    return dag


def _assert_landed(folder: Path, names: list[str], artifact_sha256: str) -> None:
    assert folder.is_dir(), (
        f"no date folder {folder}; found {sorted(str(p) for p in folder.parent.rglob('*'))}"
    )
    assert sorted(p.name for p in folder.iterdir()) == names
    for name in names:
        data = (folder / name).read_bytes()
        assert data and hashlib.sha256(data).hexdigest() == artifact_sha256, name


@pytest.mark.parametrize("dag_id", sorted(EXAMPLES))
def test_example_dag_run_without_a_logical_date_lands_its_file_under_the_run_day(
    airflow_db, served_emulator, tmp_path, monkeypatch, dag_id
):
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    _, conf, names = EXAMPLES[dag_id]
    day_before = _utc_day()

    dag_run = run_dag(_load_fast(dag_id), conf, logical_date=None)

    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert all(state == "success" and tries == 1 for state, tries in states.values()), states
    if AIRFLOW_V3:  # the run really had no logical date: {{ ds }} would not have rendered
        assert dag_run.logical_date is None
        assert dag_run.run_after.strftime("%Y-%m-%d") in {day_before, _utc_day()}
    else:  # Airflow 2.11: dag.test() always gives the run a logical date (now)
        assert dag_run.logical_date.strftime("%Y-%m-%d") in {day_before, _utc_day()}
    days = [p.name for p in tmp_path.iterdir()]
    assert len(days) == 1 and days[0] in {day_before, _utc_day()}, days
    _assert_landed(tmp_path / days[0], names, served_emulator.artifact_sha256)
    assert served_emulator.counts["start_export"] == len(names)  # no export wasted on a retry


@pytest.mark.parametrize("dag_id", sorted(EXAMPLES))
def test_example_dag_run_with_a_logical_date_lands_its_file_under_that_date(
    airflow_db, served_emulator, tmp_path, monkeypatch, dag_id
):
    """A scheduled run, or a manual one given a logical date: the folder is that date (as ``{{ ds }}``)."""
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    _, conf, names = EXAMPLES[dag_id]

    dag_run = run_dag(_load_fast(dag_id), conf, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success", task_states(dag_run)
    assert [p.name for p in tmp_path.iterdir()] == ["2026-11-26"]
    _assert_landed(tmp_path / "2026-11-26", names, served_emulator.artifact_sha256)


def test_many_pages_mapped_task_instances_are_labelled_by_page_id(
    airflow_db, served_emulator, tmp_path, monkeypatch
):
    """``map_index_template``: the UI lists the mapped instances as 811, 812, 813 instead of 0, 1, 2."""
    monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path))
    dag_id = "example_content_exporter_many_pages"
    page_ids = EXAMPLES[dag_id][1]["page_ids"]

    dag_run = run_dag(
        _load_fast(dag_id), {"page_ids": page_ids}, logical_date=None if AIRFLOW_V3 else LOGICAL_DATE
    )

    assert dag_run.state == "success", task_states(dag_run)
    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id
        )
        labels = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis}
    expected = {(task_id, index): page for task_id in MAPPED_TASKS for index, page in enumerate(page_ids)}
    assert {key: label for key, label in labels.items() if key[1] >= 0} == expected
    assert labels[("page_ids", -1)] is None  # the unmapped task has no label
    assert sorted(e.page_id for e in served_emulator.exports.values()) == sorted(page_ids)


@pytest.mark.parametrize(
    ("output_path", "expected"),
    [
        pytest.param(
            "{{ ds }}/",
            "'ds' is undefined",
            marks=pytest.mark.skipif(not AIRFLOW_V3, reason="Airflow 2.11 runs always have a logical date"),
            id="ds-without-a-logical-date",
        ),
        pytest.param("{{ folder }}/", "'folder' is undefined", id="undefined-variable"),
    ],
)
def test_a_download_path_that_cannot_render_fails_the_start_task_and_costs_no_export(
    airflow_db, served_emulator, tmp_path, task_log, output_path, expected
):
    """The building blocks: the download's path is rendered by the start task, before the export starts.

    Without the check the export ran to 100 % and the download then failed on its template, retrying every
    5 minutes with the export wasted.
    """
    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_cex.operators.content_exporter import (
        ContentExporterDownloadExportOperator,
        ContentExporterStartExportOperator,
    )
    from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor

    with DAG(
        "cex_check_before_start",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
    ) as dag:
        start = ContentExporterStartExportOperator(task_id="start_export", page_id="804")
        wait = ContentExporterExportSensor(
            task_id="wait_for_export", export_hash=start.output, poke_interval=1
        )
        download = ContentExporterDownloadExportOperator(
            task_id="download_export", export_hash=start.output, output_path=f"{tmp_path}/{output_path}"
        )
        wait >> download

    dag_run = run_dag(dag, logical_date=None)

    states = task_states(dag_run)
    assert dag_run.state == "failed", states
    assert states["start_export"] == ("failed", 1), states  # failed for good: a retry cannot fix a template
    assert served_emulator.counts["start_export"] == 0  # no export started, none wasted
    assert list(tmp_path.iterdir()) == []
    log = task_log()
    assert f"output_path of download_export cannot be rendered in this run ({expected})" in log
    assert "No export was started" in log

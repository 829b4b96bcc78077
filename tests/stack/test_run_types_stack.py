"""Runs without a logical date on a real Airflow 3 (issue 21): the CLI's ``airflow dags trigger`` and REST.

``airflow dags trigger <dag>`` without ``--logical-date``, and ``POST /api/v2/dags/<dag>/dagRuns`` with
``"logical_date": null``, make runs whose template context has no ``ds``: the example DAGs name the
date folder after the run's ``run_after`` then. Both runs are triggered at once and waited for with a bound
(about a minute: the many-pages sensors poke every 30 s).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.stack.conftest import STACK_TEST_TIMEOUT, requires_stack

pytestmark = [requires_stack, pytest.mark.timeout(STACK_TEST_TIMEOUT)]

CLI_DAG = "example_content_exporter_one_task"
CLI_PAGE = "779001"
REST_DAG = "example_content_exporter_many_pages"
REST_PAGES = ["779011", "779012", "779013"]
MAPPED_TASKS = ("export_page.start_export", "export_page.wait_for_export", "export_page.download_export")
RUN_TIMEOUT = 150  # seconds, for both runs together


@dataclass
class Run:
    dag_id: str
    run_id: str
    state: str
    detail: dict[str, Any]  # GET /api/v2/dags/<dag>/dagRuns/<run>


def _utc_day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _trigger_from_cli(stack: Any) -> str:
    stack.airflow("dags", "unpause", CLI_DAG)
    done = stack.airflow(
        "dags", "trigger", CLI_DAG, "--conf", json.dumps({"page_id": CLI_PAGE}), "-o", "json"
    )
    try:  # the JSON line comes after the CLI's log lines
        [created] = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("[{")))
    except (StopIteration, ValueError) as err:
        raise AssertionError(f"unreadable `airflow dags trigger -o json` output: {done.stdout!r}") from err
    assert created["logical_date"] is None, created
    return str(created["dag_run_id"])


@pytest.fixture(scope="module")
def runs(stack: Any) -> dict[str, Run]:
    day_before = _utc_day()
    run_ids = {
        CLI_DAG: _trigger_from_cli(stack),
        # REST with "logical_date": null (Stack.trigger sends it again if the stack's SQLite was busy).
        REST_DAG: stack.trigger(REST_DAG, logical_date=None, conf={"page_ids": REST_PAGES}),
    }
    found = {}
    for dag_id, run_id in run_ids.items():
        state = stack.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
        with stack.session() as http:
            detail = http.get(f"{stack.api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30).json()
        found[dag_id] = Run(dag_id, run_id, state, detail)
    for run in found.values():  # the day folder is the run's: the day it was triggered (UTC)
        assert run.detail["run_after"][:10] in {day_before, _utc_day()}, run.detail
    return found


def _landed(stack: Any, run: Run, page_id: str) -> None:
    landed = stack.output_dir / run.detail["run_after"][:10] / f"page-{page_id}.pdf"
    assert landed.is_file(), f"{run.dag_id}: no {landed}; found {sorted(stack.output_dir.rglob('*'))}"
    data = landed.read_bytes()
    assert data and hashlib.sha256(data).hexdigest() == stack.emulator.artifact_sha256


def _exports_of(stack: Any, page_id: str) -> int:
    return sum(1 for export in stack.emulator.exports.values() if export.page_id == page_id)


def test_cli_triggered_run_without_a_logical_date_lands_its_file(stack: Any, runs: dict[str, Run]) -> None:
    run = runs[CLI_DAG]
    assert run.state == "success", run
    assert run.detail["logical_date"] is None and run.detail["run_type"] == "manual", run.detail
    _landed(stack, run, CLI_PAGE)
    assert _exports_of(stack, CLI_PAGE) == 1  # no retry started a second export


def test_rest_run_with_a_null_logical_date_lands_every_page_labelled_by_page_id(
    stack: Any, runs: dict[str, Run]
) -> None:
    run = runs[REST_DAG]
    assert run.state == "success", run
    assert run.detail["logical_date"] is None, run.detail
    for page_id in REST_PAGES:
        _landed(stack, run, page_id)
        assert _exports_of(stack, page_id) == 1
    with stack.session() as http:
        path = f"/api/v2/dags/{REST_DAG}/dagRuns/{run.run_id}/taskInstances"
        answer = http.get(f"{stack.api_url}{path}", params={"limit": 100}, timeout=30)
    assert answer.status_code == 200, answer.text
    labels = {
        (ti["task_id"], ti["map_index"]): ti["rendered_map_index"]
        for ti in answer.json()["task_instances"]
        if ti["map_index"] >= 0
    }
    # What the UI lists for the mapped instances: the page ids, not 0, 1, 2.
    assert labels == {(task, index): page for task in MAPPED_TASKS for index, page in enumerate(REST_PAGES)}

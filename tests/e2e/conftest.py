"""Real Airflow for end-to-end tests: a migrated metadata DB in the throwaway AIRFLOW_HOME, and dag.test()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Migrate the metadata DB once per session (SQLite in the throwaway AIRFLOW_HOME)."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    return os.environ["AIRFLOW_HOME"]


def run_dag(dag: Any, conf: dict[str, Any] | None = None, logical_date: Any = None) -> Any:
    """Serialize ``dag`` into the metadata DB (Airflow 3.3 runs only serialized DAGs) and dag.test() it."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=os.devnull)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(run_conf=conf, logical_date=logical_date)


def load_example_dag(dag_id: str, file_name: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS / file_name))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def task_states(dag_run: Any) -> dict[str, Any]:
    """task_id (with map index when mapped) -> (state, try_number)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): (ti.state, ti.try_number)
            for ti in tis
        }


@pytest.fixture
def task_log(capfd, caplog):
    """What dag.test() showed: task logs go to stdout/stderr (unmasked), some through stdlib logging."""

    def read() -> str:
        captured = capfd.readouterr()
        return captured.out + captured.err + caplog.text

    return read

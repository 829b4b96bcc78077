"""Real Airflow for end-to-end tests: a migrated metadata DB in the throwaway AIRFLOW_HOME, and dag.test()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AIRFLOW_V3  # the metadata DB and dag.test() differ: the helpers below hide it

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

#: What dag.test() logs when a task defers: Airflow 3 pauses the task, 2.11 runs the trigger inline at once.
TASK_DEFERRED = "Pausing task as DEFERRED" if AIRFLOW_V3 else "[DAG TEST] running trigger in line"


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
    if AIRFLOW_V3:  # DAGs are serialized per bundle: the dags-folder bundle must exist
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        DagBundlesManager().sync_bundles_to_db()
    else:
        # Airflow 2.11's dag.test() deletes an earlier run of the same DAG and date; the delete needs
        # the FAB user table (dag_run_note.user_id -> ab_user) mapped, as `airflow dags test` has it.
        import airflow.providers.fab.auth_manager.models  # noqa: F401
    return os.environ["AIRFLOW_HOME"]


def run_dag(dag: Any, conf: dict[str, Any] | None = None, logical_date: Any = None) -> Any:
    """Write ``dag`` into the metadata DB, as the DAG processor would, and dag.test() it.

    Airflow 3.3 runs only serialized DAGs; Airflow 2.11 runs any DAG object, but records asset
    (dataset) events only for datasets a synced DAG declared, and names the logical date
    ``execution_date``.
    """
    if not AIRFLOW_V3:
        dag.sync_to_db()
        return dag.test(run_conf=conf, execution_date=logical_date)
    sync_dag_v3(dag)
    return dag.test(run_conf=conf, logical_date=logical_date)


def sync_dag_v3(dag: Any) -> None:
    """Serialize ``dag`` into the metadata DB (Airflow 3.1+ moved DagBag to ``airflow.dag_processing``)."""
    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow 3.0
        from airflow.models.dagbag import DagBag

        bag = DagBag(dag_folder=os.devnull)
        bag.bag_dag(dag)
        bag.sync_to_db("dags-folder", None)
        return
    bag = DagBag(dag_folder=os.devnull)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def load_example_dag(dag_id: str, file_name: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2.11 and 3.0
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

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


def attach_object_store(protocol: str, fs: Any = None) -> Any:
    """Register ``fs`` as the filesystem of ``protocol://`` URLs for ObjectStoragePath (or look it up)."""
    if AIRFLOW_V3:
        from airflow.sdk.io import attach
    else:
        from airflow.io.store import attach

    return attach(protocol, fs=fs)


def object_url(url: str) -> str:
    """``url`` as Airflow's ObjectStoragePath writes it (2.11's spells ``memory://b/k`` as ``memory:///b/k``)."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return str(ObjectStoragePath(url))


def reschedule_count(dag_run: Any, task_id: str) -> int:
    """How many times the task gave its worker slot back (reschedule mode) in this run."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with create_session() as session:
        query = session.query(TaskReschedule)
        if AIRFLOW_V3:  # keyed by the task instance's id
            from airflow.models.taskinstance import TaskInstance

            query = query.join(TaskInstance, TaskInstance.id == TaskReschedule.ti_id).filter(
                TaskInstance.run_id == dag_run.run_id, TaskInstance.task_id == task_id
            )
        else:  # Airflow 2.11: keyed by dag_id, task_id, run_id
            query = query.filter(
                TaskReschedule.dag_id == dag_run.dag_id,
                TaskReschedule.run_id == dag_run.run_id,
                TaskReschedule.task_id == task_id,
            )
        return query.count()


def xcom_value(dag_run: Any, task_id: str, key: str) -> Any:
    """The XCom a task of ``dag_run`` pushed under ``key``, as the UI would show it."""
    if not AIRFLOW_V3:  # Airflow 2.11: the XCom model itself reads the metadata DB
        from airflow.models.xcom import XCom

        return XCom.get_one(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
            .one()
        )
        return XComModel.deserialize_value(row)


def asset_event_extras(uri: str) -> list[dict[str, Any]]:
    """The ``extra`` of every asset event (a dataset event on Airflow 2.11) for ``uri``, oldest first."""
    from airflow.utils.session import create_session

    with create_session() as session:
        if AIRFLOW_V3:
            from airflow.models.asset import AssetEvent

            events = [e for e in session.query(AssetEvent).order_by(AssetEvent.id) if e.asset.uri == uri]
        else:
            from airflow.models.dataset import DatasetEvent

            query = session.query(DatasetEvent).order_by(DatasetEvent.id)
            events = [e for e in query if e.dataset.uri == uri]
        return [dict(e.extra) for e in events]


@pytest.fixture
def task_log(capfd, caplog):
    """What dag.test() showed: task logs go to stdout/stderr (unmasked), some through stdlib logging."""

    def read() -> str:
        captured = capfd.readouterr()
        return captured.out + captured.err + caplog.text

    return read

"""Assets for names known only at run time: an ``AssetAlias`` outlet gets an event for the file that landed.

With a folder ``output_path`` the server picks the file name, so no ``Asset`` can be declared up front.
The download names ``Asset(<final URI>)`` through the alias, with the size and sha256, and a DAG scheduled
on that asset is due to run: the scheduler's own query (``DagModel.dags_needing_dagruns``) returns it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, AssetAlias

from airflow_provider_cex.operators.content_exporter import ContentExporterDownloadExportOperator
from tests.conftest import AIRFLOW_V3
from tests.e2e.conftest import asset_event_extras, run_dag, sync_dag_v3, xcom_value
from tests.e2e.test_download_destinations import LOGICAL_DATE, finished_export


def sync_without_running(dag: DAG) -> None:
    """Write ``dag`` to the metadata DB as the DAG processor would, so its schedule is known."""
    if not AIRFLOW_V3:
        dag.sync_to_db()
        return
    sync_dag_v3(dag)


def unpause(dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagModel).filter(DagModel.dag_id == dag_id).update({"is_paused": False})


def dags_the_scheduler_would_start() -> dict[str, Any]:
    """What the scheduler's query finds due because of asset events: dag_id -> (first, last) event time."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        _, triggered = DagModel.dags_needing_dagruns(session)
        return dict(triggered)


def test_an_alias_outlet_names_the_landed_file_and_triggers_its_consumer(
    airflow_db, served_emulator, tmp_path
):
    landed = tmp_path / "exports" / "2026-11-26" / "page-41.pdf"
    uri = f"file://{landed}"
    with DAG("cex_alias_consumer", schedule=[Asset(uri)], start_date=datetime(2026, 1, 1)) as consumer:
        ContentExporterDownloadExportOperator(task_id="noop", export_hash="x", output_path="unused")
    sync_without_running(consumer)
    unpause("cex_alias_consumer")  # new DAGs start paused, and the scheduler skips paused DAGs
    assert "cex_alias_consumer" not in dags_the_scheduler_would_start()

    export_hash = finished_export("41")
    with DAG(
        "cex_alias_producer", schedule=None, start_date=datetime(2026, 1, 1), default_args={"retries": 0}
    ) as producer:
        ContentExporterDownloadExportOperator(
            task_id="download_export",
            export_hash=export_hash,
            output_path=f"{tmp_path}/exports/{{{{ ds }}}}/",  # the server picks the file name
            outlets=[AssetAlias("cex-landed-exports")],
        )
    dag_run = run_dag(producer, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    assert xcom_value(dag_run, "download_export", "return_value") == str(landed)
    (extra,) = [e for e in asset_event_extras(uri) if e.get("sha256")]
    assert extra["sha256"] == served_emulator.artifact_sha256
    assert extra["size_bytes"] == served_emulator.artifact_size and extra["filename"] == "page-41.pdf"
    assert "cex_alias_consumer" in dags_the_scheduler_would_start()

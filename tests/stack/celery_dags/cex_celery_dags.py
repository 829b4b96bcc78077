"""Test DAGs of the Celery stack (scripts/celery_stack.py, tests/stack/test_celery_stack.py).

Files go to moto's S3 (bucket from the Variable ``cex_s3_bucket``, connection ``aws_s3_loopback``) or to the
shared folder ``cex_output_dir``. Tasks with ``queue="worker1"``/``"worker2"`` run on that Celery worker only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor

AWS_CONN_ID = "aws_s3_loopback"
S3_FOLDER = "s3://{{ var.value.cex_s3_bucket }}/{{ dag.dag_id }}/{{ params.page_id }}/"
COMMON: dict[str, Any] = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "tags": ["celery-stack"],
}

# A worker lost mid-export: the retry (on whichever worker is left) reconnects to the stored export.
with DAG(
    dag_id="cex_celery_one_task_s3",
    params={"page_id": Param("880001", type="string")},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    **COMMON,
):
    ContentExporterExportOperator(
        task_id="export_page_tree",
        page_id="{{ params.page_id }}",
        output_path=S3_FOLDER,
        output_conn_id=AWS_CONN_ID,
        poll_interval=2,
    )

# A file handed over through object storage: exported on worker1, read on worker2 from the URI in XCom.
with DAG(
    dag_id="cex_celery_handover",
    params={"page_id": Param("880002", type="string")},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
    **COMMON,
):
    export = ContentExporterExportOperator(
        task_id="export_page_tree",
        page_id="{{ params.page_id }}",
        output_path=S3_FOLDER,
        output_conn_id=AWS_CONN_ID,
        poll_interval=2,
        queue="worker1",
    )

    @task(queue="worker2")
    def check_landed_file(uri: str) -> dict[str, object]:
        """Read the object named in the export task's XCom, on another worker, and hash it."""
        import hashlib
        import socket

        from airflow.sdk import ObjectStoragePath

        digest = hashlib.sha256()
        with ObjectStoragePath(uri, conn_id=AWS_CONN_ID).open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return {"uri": uri, "sha256": digest.hexdigest(), "host": socket.gethostname()}

    check_landed_file(export.output)

# A deferrable sensor, to restart the triggerer under.
with DAG(
    dag_id="cex_celery_deferred_wait",
    params={"page_id": Param("880003", type="string")},
    **COMMON,
):
    start = ContentExporterStartExportOperator(task_id="start_export", page_id="{{ params.page_id }}")
    ContentExporterExportSensor(
        task_id="wait_for_export",
        export_hash=start.output,
        deferrable=True,
        poke_interval=2,
        timeout=timedelta(minutes=15),
    )

# Many exports through a pool: at most its slot count run against the service at once.
with DAG(
    dag_id="cex_celery_pooled_exports",
    params={"count": Param(200, type="integer"), "first_page_id": Param(900000, type="integer")},
    max_active_tasks=64,
    **COMMON,
):

    @task
    def page_ids(**context) -> list[str]:
        params = context["params"]
        return [str(params["first_page_id"] + i) for i in range(params["count"])]

    ContentExporterExportOperator.partial(
        task_id="export_page_tree",
        pool="cex_exports",
        output_path="{{ var.value.cex_output_dir }}/pooled/{{ dag_run.run_after | ts_nodash }}/",
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=5),
    ).expand(page_id=page_ids())

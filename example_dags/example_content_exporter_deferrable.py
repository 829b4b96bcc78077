"""The daily PDF export of ``example_content_exporter``, with the sensor in deferrable mode.

The only difference is ``deferrable=True`` on the sensor: it checks the export once, and if it
is not done, the task *defers*: it leaves its worker slot, and ``ContentExporterExportTrigger``
polls the export from the **triggerer** (every 30 s here), then hands the task back to a worker
to finish. A triggerer must be running (``airflow triggerer``); without one the task stays
``deferred`` until the sensor's timeout.

Prefer it to the default reschedule mode when many exports wait at once (hundreds a night) or
exports take long: no worker slot is taken between polls, and one triggerer polls hundreds of
exports for a fraction of a millisecond of CPU each. For a handful of exports, or where you run
no triggerer, keep reschedule mode (``example_content_exporter``).

The page id is a DAG param; the output folder is the Airflow Variable ``cex_output_dir``
(default ``exports``); the file lands at ``<cex_output_dir>/<YYYY-MM-DD>/page-<page_id>.pdf``, the
date being the run's logical date, or the day it was triggered for a run without one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor

with DAG(
    dag_id="example_content_exporter_deferrable",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "page_id": Param(
            "123456",
            type="string",
            pattern=r"^\d+$",
            description=(
                "Confluence page id, the number in its URL (under `make airflow`, 666 gives a failed export)"
            ),
        ),
        "page_size": Param("A4", enum=["A4", "A3", "LETTER", "LEGAL"], description="Paper size of the PDF"),
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["example", "content-exporter"],
    doc_md=__doc__,
) as dag:
    start = ContentExporterStartExportOperator(
        task_id="start_export",
        page_id="{{ params.page_id }}",
        export_body="profiles/pdf.json",
    )
    wait = ContentExporterExportSensor(
        task_id="wait_for_export",
        export_hash=start.output,
        poke_interval=timedelta(seconds=30),
        timeout=timedelta(hours=2),
        deferrable=True,  # polls from the triggerer; the worker slot is free while it waits
    )
    download = ContentExporterDownloadExportOperator(
        task_id="download_export",
        export_hash=start.output,
        output_path=(
            "{{ var.value.get('cex_output_dir', 'exports') }}/"
            # The run's date: its logical date, or the day it was triggered (run_after) when it
            # has none (Airflow 3 runs triggered from the CLI or REST without one, or by an asset).
            "{{ (dag_run.logical_date or dag_run.run_after) | ds }}/"
        ),
    )
    wait >> download

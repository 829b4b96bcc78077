"""Export one Confluence page tree to PDF every day and save it under ``<output dir>/<YYYY-MM-DD>/``.

Shows the three steps of the Remote API as three tasks: the start operator returns the
export hash, passed by XComArg (``start.output``) to a sensor that waits in reschedule mode
(its worker slot is free between pokes) and to the download operator. The export
configuration is ``profiles/pdf.json`` beside this file, in the vendor's shape (layout settings,
margins, unit), rendered with Jinja (the paper size comes from the ``page_size`` param).

The page id is a DAG param; the output folder is the Airflow Variable ``cex_output_dir``
(default ``exports``). The date folder is the run's logical date, or the day it was triggered for a
run without one (on Airflow 3, a run triggered from the CLI or REST without a logical date, or by an asset).
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
    dag_id="example_content_exporter",
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

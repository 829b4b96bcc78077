"""The shortest useful pipeline: one task exports a Confluence page tree to a PDF file every day.

``ContentExporterExportOperator`` starts the export, waits until it reaches 100 % (in the worker
here; ``deferrable=True`` waits in the triggerer instead) and downloads the file to
``<cex_output_dir>/<YYYY-MM-DD>/`` (the run's logical date, or the day it was triggered for a run
without one). On Airflow 3.3 a retry reconnects to the export the failed try
started instead of starting a second one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_cex.operators.content_exporter import ContentExporterExportOperator

with DAG(
    dag_id="example_content_exporter_one_task",
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
    # A retry reconnects to the export the failed try started (Airflow 3.3+), so it may come soon.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["example", "content-exporter"],
    doc_md=__doc__,
) as dag:
    ContentExporterExportOperator(
        task_id="export_page_tree",
        page_id="{{ params.page_id }}",
        export_body="profiles/pdf.json",
        output_path=(
            "{{ var.value.get('cex_output_dir', 'exports') }}/"
            # The run's date: its logical date, or the day it was triggered (run_after) when it
            # has none (Airflow 3 runs triggered from the CLI or REST without one, or by an asset).
            "{{ (dag_run.logical_date or dag_run.run_after) | ds }}/"
        ),
        poll_interval=10,
        timeout=timedelta(hours=2).total_seconds(),
    )

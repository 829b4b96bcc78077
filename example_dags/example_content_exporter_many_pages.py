"""Export several Confluence page trees in parallel with dynamic task mapping.

A mapped task group runs start -> wait -> download once per page id, so each page's
download waits for its own export only, and one failed page does not stop the others.
The page ids come from the DAG param ``page_ids``; files land in
``<cex_output_dir>/<YYYY-MM-DD>/`` under the server's file names (``page-<id>.pdf``), the date
being the run's logical date, or the day it was triggered for a run without one.
The mapped task instances are labelled by page id in the UI (``map_index_template``) instead of 0, 1, 2.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param, task, task_group

from airflow_provider_cex.operators.content_exporter import (
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor

with DAG(
    dag_id="example_content_exporter_many_pages",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"page_ids": Param(["1001", "1002", "1003"], type="array", description="Confluence page ids")},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["example", "content-exporter"],
    doc_md=__doc__,
) as dag:

    @task
    def page_ids(**context) -> list[str]:
        """The pages to export, from the run's params (so a manual run can pick others)."""
        return [str(page) for page in context["params"]["page_ids"]]

    @task_group
    def export_page(page_id: str) -> None:
        start = ContentExporterStartExportOperator(
            task_id="start_export",
            page_id=page_id,
            export_body="profiles/letter-landscape.json",
            map_index_template="{{ task.page_id }}",  # label: the page id, rendered for this instance
        )
        # The sensor and the download know only the export hash: their label is the page id the start task
        # of the same map index pushed (XCom "export_page").
        page_of_start = (
            "{{ ti.xcom_pull(task_ids='export_page.start_export', key='export_page',"
            " map_indexes=ti.map_index)['page_id'] }}"
        )
        wait = ContentExporterExportSensor(
            task_id="wait_for_export",
            export_hash=start.output,
            poke_interval=timedelta(seconds=30),
            map_index_template=page_of_start,
        )
        download = ContentExporterDownloadExportOperator(
            task_id="download_export",
            export_hash=start.output,
            map_index_template=page_of_start,
            output_path=(
                "{{ var.value.get('cex_output_dir', 'exports') }}/"
                # The run's date: its logical date, or the day it was triggered (run_after) when it
                # has none (Airflow 3 runs triggered from the CLI or REST without one, or by an asset).
                "{{ (dag_run.logical_date or dag_run.run_after) | ds }}/"
            ),
        )
        wait >> download

    export_page.expand(page_id=page_ids())

"""OpenLineage for real: the OpenLineage provider's listener, a file transport, and ``airflow dags test``.

The listener is set up when Airflow loads its plugins, once per process, so the DAG runs in a fresh
``airflow dags test`` process with the transport configured; the events it wrote are then read back.
Covered: the three-task pipeline (start, sensor, download), the one-task operator, and a ``@task`` that
calls the hook (hook-level lineage).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AIRFLOW_V3, API_KEY, CONN_ENV, connection_json
from tests.openlineage_schemas import (
    check_facet,
    check_run_event,
    dataset_facets,
    registry,
    validate_own_facet,
)

pytest.importorskip("airflow.providers.openlineage", reason="needs the 'openlineage' extra")

#: The operators' tasks in the DAG below: every dataset facet in their events is built by this provider.
OPERATOR_TASKS = ("start_export", "download_export", "export_in_one_task")

CONFLUENCE = "https://acme.atlassian.net/wiki"

DAG_FILE = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG, task

    from airflow_provider_cex.operators.content_exporter import (
        ContentExporterDownloadExportOperator,
        ContentExporterExportOperator,
        ContentExporterStartExportOperator,
    )
    from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor

    OUT = {out!r}

    with DAG("cex_lineage", schedule=None, start_date=datetime(2026, 1, 1), default_args={{"retries": 0}}):
        start = ContentExporterStartExportOperator(task_id="start_export", page_id="4711")
        wait = ContentExporterExportSensor(
            task_id="wait_for_export", export_hash=start.output, poke_interval=0.2, mode="poke"
        )
        download = ContentExporterDownloadExportOperator(
            task_id="download_export", export_hash=start.output, output_path=OUT + "/three-tasks/"
        )
        wait >> download
        ContentExporterExportOperator(
            task_id="export_in_one_task", page_id="4712", output_path=OUT + "/one-task/", poll_interval=0.2
        )

        @task
        def hook_in_a_task(export_hash):
            from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

            with ContentExporterHook() as hook:
                return hook.download_export(export_hash, OUT + "/by-hook/report.pdf").path

        wait >> hook_in_a_task(start.output)
    """
)


def run_with_openlineage(tmp_path: Path, emulator: Any) -> tuple[subprocess.CompletedProcess[str], Path]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cex_lineage.py").write_text(DAG_FILE.format(out=str(tmp_path / "out")))
    events = tmp_path / "openlineage.jsonl"
    from airflow.configuration import conf

    env = dict(os.environ)
    env.update(
        {
            CONN_ENV: connection_json(emulator.base_url, confluence_url=CONFLUENCE),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key", fallback="") or "",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "cex-tests",
            "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "cex_lineage", "2026-11-28"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    return done, events


def task_events(events: Path) -> list[tuple[str, dict[str, Any]]]:
    """(task id, event) of every task-level event written, in order."""
    found = []
    for line in events.read_text().splitlines():
        event = json.loads(line)
        job = event["job"]["name"]
        if "." in job:
            found.append((job.split(".", 1)[1], event))
    return found


def complete_events(events: Path) -> dict[str, dict[str, Any]]:
    """The COMPLETE event of each task, by task id."""
    found = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        job = event["job"]["name"]
        if event["eventType"] == "COMPLETE" and "." in job:
            found[job.split(".", 1)[1]] = event
    return found


def datasets(event: dict[str, Any], side: str) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in event.get(side, [])]


def test_complete_events_carry_the_page_in_and_the_file_out(airflow_db, emulator, tmp_path):
    from airflow_provider_cex.openlineage_facets import FACET_SCHEMA_URL, FILE_FACET

    done, events = run_with_openlineage(tmp_path, emulator)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert API_KEY not in done.stdout + done.stderr + events.read_text()
    complete = complete_events(events)
    assert {"start_export", "download_export", "export_in_one_task"} <= set(complete), sorted(complete)
    for task_id, event in complete.items():
        assert event["job"]["namespace"] == "cex-tests", task_id
        assert event["job"]["name"].endswith(f".{task_id}")

    # Every event carries what a consumer reads (type, run id, job, datasets, producer, schema URL), and
    # every dataset facet of the operators' events (all built by this provider) is checked: ours validated
    # against the schema shipped in docs/openlineage/, every time it is emitted; the standard ones for an
    # https _producer and a versioned standard _schemaURL.
    schemas = registry()
    for line in events.read_text().splitlines():
        check_run_event(json.loads(line))
    checked, ours = set(), 0
    for task_id, event in task_events(events):
        if task_id in OPERATOR_TASKS:
            for key, emitted in dataset_facets([*event.get("inputs", []), *event.get("outputs", [])]):
                check_facet(key, emitted, schemas)
                if key == FILE_FACET:
                    validate_own_facet(key, emitted, schemas)
                    ours += 1
                checked.add(key)
    assert checked == {"documentation", FILE_FACET, "outputStatistics"}, checked
    assert ours >= 2, "the file facet of the download and the one-task export"

    out = tmp_path / "out"
    three_tasks_file = out / "three-tasks" / "page-4711.pdf"
    assert datasets(complete["start_export"], "inputs") == [(CONFLUENCE, "4711")]
    download = complete["download_export"]
    assert datasets(download, "inputs") == [(CONFLUENCE, "4711")]  # found through the start task's XCom
    assert datasets(download, "outputs") == [("file", str(three_tasks_file))]
    (output,) = download["outputs"]
    facet = output["facets"][FILE_FACET]
    assert (
        facet["sha256"]
        == hashlib.sha256(three_tasks_file.read_bytes()).hexdigest()
        == emulator.artifact_sha256
    )
    assert facet["sizeBytes"] == three_tasks_file.stat().st_size == emulator.artifact_size
    assert facet["contentType"] == "application/pdf" and facet["fileName"] == "page-4711.pdf"
    assert output["outputFacets"]["outputStatistics"]["size"] == emulator.artifact_size
    assert facet["_schemaURL"] == FACET_SCHEMA_URL

    one_task = complete["export_in_one_task"]
    assert datasets(one_task, "inputs") == [(CONFLUENCE, "4712")]
    assert datasets(one_task, "outputs") == [("file", str(out / "one-task" / "page-4712.pdf"))]
    assert one_task["outputs"][0]["facets"][FILE_FACET]["sha256"] == emulator.artifact_sha256

    # Hook-level lineage: the @task's event names the file the hook wrote (Airflow 3 reads the collector for
    # @task). dag.test() runs every task in one process, where the collector also still holds the files of
    # the tasks before it; a worker runs each task in a fresh process. So: contains, not equals.
    if AIRFLOW_V3:
        by_hook = complete["hook_in_a_task"]
        assert ("file", str(out / "by-hook" / "report.pdf")) in datasets(by_hook, "outputs")

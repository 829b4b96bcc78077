"""The download operator under dag.test(): object storage and file:// destinations, asset events, XCom."""

from __future__ import annotations

import hashlib
from datetime import datetime

import fsspec
import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG, Asset
from fsspec.implementations.memory import MemoryFileSystem

from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.operators.content_exporter import ContentExporterDownloadExportOperator
from tests.e2e.conftest import (
    asset_event_extras,
    attach_object_store,
    object_url,
    run_dag,
    task_states,
    xcom_value,
)

LOGICAL_DATE = pendulum.datetime(2026, 11, 26, tz="UTC")


class FlakyFileSystem(MemoryFileSystem):
    """An object store whose uploads break after 100 bytes, like a network failure mid-upload."""

    protocol = "flaky"
    store: dict = {}  # its own objects, not MemoryFileSystem's class-wide store
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        if "w" in mode:
            write = handle.write

            def broken_write(data):
                if handle.tell() + len(data) > 100:
                    raise OSError("upload connection reset")
                return write(data)

            handle.write = broken_write
        return handle


@pytest.fixture(autouse=True)
def object_stores():
    """Register in-memory object stores with Airflow's ObjectStoragePath (no cloud account needed)."""
    memory = fsspec.filesystem("memory")
    memory.store.clear()
    attach_object_store("memory", fs=memory)
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    flaky = FlakyFileSystem()
    flaky.store.clear()
    attach_object_store("flaky", fs=flaky)
    yield memory


def finished_export(page_id: str = "21") -> str:
    with ContentExporterHook() as hook:
        export_hash = hook.start_export(page_id)
        while not hook.get_export_progress(export_hash).is_complete:
            pass
    return export_hash


def download_dag(dag_id: str, export_hash: str, output_path: str, **kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), default_args={"retries": 0}) as dag:
        ContentExporterDownloadExportOperator(
            task_id="download_export", export_hash=export_hash, output_path=output_path, **kwargs
        )
    return dag


def test_memory_object_store_folder_receives_a_byte_identical_file(
    airflow_db, served_emulator, object_stores
):
    export_hash = finished_export("21")
    dag = download_dag("cex_memory_dest", export_hash, "memory://bucket/exports/{{ ds }}/")
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    data = object_stores.cat("/bucket/exports/2026-11-26/page-21.pdf")
    assert hashlib.sha256(data).hexdigest() == served_emulator.artifact_sha256
    assert xcom_value(dag_run, "download_export", "return_value") == object_url(
        "memory://bucket/exports/2026-11-26/page-21.pdf"
    )
    meta = xcom_value(dag_run, "download_export", "export_file")
    assert (
        meta["sha256"] == served_emulator.artifact_sha256
        and meta["size_bytes"] == served_emulator.artifact_size
    )
    assert meta["content_type"] == "application/pdf" and meta["filename"] == "page-21.pdf"


def test_file_url_destination_is_written_atomically_and_durably(airflow_db, served_emulator, tmp_path):
    export_hash = finished_export("22")
    dag = download_dag("cex_file_url_dest", export_hash, f"file://{tmp_path}/out/report.pdf", fsync=True)
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    assert (
        hashlib.sha256((tmp_path / "out" / "report.pdf").read_bytes()).hexdigest()
        == served_emulator.artifact_sha256
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.pdf"]  # no temp file left


def test_a_failing_upload_leaves_nothing_at_the_destination(airflow_db, served_emulator, task_log):
    flaky = attach_object_store("flaky").fs
    export_hash = finished_export("23")
    dag_run = run_dag(
        download_dag("cex_flaky_dest", export_hash, "flaky://bucket/x/"), logical_date=LOGICAL_DATE
    )

    assert task_states(dag_run)["download_export"][0] == "failed"
    assert flaky.store == {}  # no partial object
    assert "upload connection reset" in task_log()  # failed for the right reason


def test_existing_object_with_overwrite_false_fails_without_downloading(
    airflow_db, served_emulator, object_stores
):
    object_stores.pipe("/bucket/keep/report.pdf", b"previous")
    export_hash = finished_export("24")
    served_emulator.reset_counters()
    dag = download_dag(
        "cex_memory_no_overwrite", export_hash, "memory://bucket/keep/report.pdf", overwrite=False
    )
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert task_states(dag_run)["download_export"] == ("failed", 1)
    assert object_stores.cat("/bucket/keep/report.pdf") == b"previous"
    assert served_emulator.counts["download_export"] == 0


def test_asset_event_carries_size_and_sha256(airflow_db, served_emulator, tmp_path):
    uri = "file:///exports/confluence/space.pdf"
    export_hash = finished_export("25")
    dag = download_dag("cex_asset_dest", export_hash, str(tmp_path / "space.pdf"), outlets=[Asset(uri)])
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    extras = asset_event_extras(uri)
    assert extras and extras[-1]["sha256"] == served_emulator.artifact_sha256
    assert extras[-1]["size_bytes"] == served_emulator.artifact_size

"""Saving exports to S3 for real: the operators under dag.test(), s3fs through Airflow's ObjectStoragePath,
moto's S3 server on 127.0.0.1 (checked directly with boto3), and a relay that cuts the upload mid-way.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from datetime import datetime

import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_cex.emulator import run_emulator
from airflow_provider_cex.operators.content_exporter import ContentExporterDownloadExportOperator
from airflow_provider_cex.operators.destinations import UPLOAD_PART_BYTES
from airflow_provider_cex.operators.export import ContentExporterExportOperator
from testkit.s3 import (
    CuttableRelay,
    MotoS3,
    aws_connection_json,
    forget_s3_filesystems,
    offline_aws_env,
    running,
)
from tests.conftest import API_KEY, CONN_ENV, connection_json
from tests.e2e.conftest import run_dag, task_states, xcom_value

LOGICAL_DATE = pendulum.datetime(2026, 11, 26, tz="UTC")
BUCKET = "cex-exports"
#: Two and a half parts: big enough for a multipart upload, small enough for a quick test.
LARGE_ARTIFACT = UPLOAD_PART_BYTES * 5 // 2


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoS3]:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    with running(MotoS3()) as server:
        yield server


@pytest.fixture
def s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    """An empty moto S3 with one bucket; ``aws_default`` points at it and nothing can reach AWS."""
    for name, value in offline_aws_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(moto_server.endpoint_url))
    moto_server.reset()
    moto_server.client().create_bucket(Bucket=BUCKET)
    forget_s3_filesystems()
    yield moto_server
    forget_s3_filesystems()


@pytest.fixture
def large_emulator(monkeypatch: pytest.MonkeyPatch):
    """An emulator serving a multi-part-sized artifact, the default connection pointing at it."""
    with run_emulator(api_key=API_KEY, export_seconds=0.2, artifact_bytes=LARGE_ARTIFACT) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url))
        yield emu


def finished_export(page_id: str) -> str:
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    with ContentExporterHook() as hook:
        export_hash = hook.start_export(page_id)
        while not hook.get_export_progress(export_hash).is_complete:
            pass
    return export_hash


def download_dag(dag_id: str, export_hash: str, output_path: str, conn_id: str = "aws_default") -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), default_args={"retries": 0}) as dag:
        ContentExporterDownloadExportOperator(
            task_id="download_export",
            export_hash=export_hash,
            output_path=output_path,
            output_conn_id=conn_id,
        )
    return dag


def s3_object(s3: MotoS3, key: str) -> dict | None:
    client = s3.client()
    try:
        found = client.get_object(Bucket=BUCKET, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    return {**found, "data": found["Body"].read()}


def open_multipart_uploads(s3: MotoS3) -> list[dict]:
    return s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def test_s3_folder_receives_a_byte_identical_object_with_its_content_type(airflow_db, served_emulator, s3):
    export_hash = finished_export("31")
    dag = download_dag("cex_s3_folder", export_hash, f"s3://{BUCKET}/exports/{{{{ ds }}}}/")
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    stored = s3_object(s3, "exports/2026-11-26/page-31.pdf")
    assert stored is not None
    assert hashlib.sha256(stored["data"]).hexdigest() == served_emulator.artifact_sha256
    assert stored["ContentType"] == "application/pdf"
    meta = xcom_value(dag_run, "download_export", "export_file")
    assert meta["content_type"] == "application/pdf" and meta["sha256"] == served_emulator.artifact_sha256
    # The object's URL as written (asset events and lineage use it), not ObjectStoragePath's conn@bucket form.
    url = f"s3://{BUCKET}/exports/2026-11-26/page-31.pdf"
    assert xcom_value(dag_run, "download_export", "return_value") == url and meta["path"] == url


def test_large_export_is_uploaded_in_parts_by_the_one_task_operator(airflow_db, large_emulator, s3):
    with DAG("cex_s3_one_task", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        ContentExporterExportOperator(
            task_id="export",
            page_id="32",
            output_path=f"s3://{BUCKET}/reports/{{{{ ds }}}}/space.pdf",
            output_conn_id="aws_default",
            overwrite=False,
            poll_interval=0.2,
        )
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    stored = s3_object(s3, "reports/2026-11-26/space.pdf")
    assert stored is not None and len(stored["data"]) == LARGE_ARTIFACT
    assert hashlib.sha256(stored["data"]).hexdigest() == large_emulator.artifact_sha256
    assert stored["ContentType"] == "application/pdf"
    assert stored["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert open_multipart_uploads(s3) == []


def test_upload_cut_mid_way_leaves_no_object_and_no_open_multipart_upload(
    airflow_db, large_emulator, s3, monkeypatch, task_log
):
    # Big transfers through the relay break once 1.5 parts went through; small requests (the abort) pass.
    with running(CuttableRelay(s3.port, cut_after=UPLOAD_PART_BYTES * 3 // 2, mode="uploads")) as relay:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_CUT", aws_connection_json(relay.endpoint_url))
        dag = download_dag("cex_s3_cut", finished_export("33"), f"s3://{BUCKET}/cut/", conn_id="aws_cut")
        dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert relay.tripped.is_set()  # the upload really was under way when the path broke
    assert task_states(dag_run)["download_export"][0] == "failed"
    assert s3_object(s3, "cut/page-33.pdf") is None
    assert open_multipart_uploads(s3) == []  # aborted: no invisible parts left in the bucket
    log = task_log()
    assert f"Could not upload the export to s3://{BUCKET}/cut/page-33.pdf (connection 'aws_cut')" in log
    assert "aborted its multipart upload" in log
    assert API_KEY not in log


def test_store_gone_mid_upload_leaves_no_object_and_says_what_may_linger(
    airflow_db, large_emulator, s3, monkeypatch, task_log
):
    with running(CuttableRelay(s3.port, cut_after=UPLOAD_PART_BYTES * 3 // 2, mode="down")) as relay:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_CUT", aws_connection_json(relay.endpoint_url))
        dag = download_dag("cex_s3_down", finished_export("34"), f"s3://{BUCKET}/down/", conn_id="aws_cut")
        dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert relay.tripped.is_set()
    assert task_states(dag_run)["download_export"][0] == "failed"
    assert s3_object(s3, "down/page-34.pdf") is None
    # The abort could not reach the store either: its parts stay until a lifecycle rule removes them,
    # and the task log says so.
    assert len(open_multipart_uploads(s3)) == 1
    log = task_log()
    assert "could not be aborted" in log and "AbortIncompleteMultipartUpload" in log
    assert "could not be reached or the upload broke off" in log
    assert API_KEY not in log


def test_missing_bucket_fails_with_a_clear_message(airflow_db, served_emulator, s3, task_log):
    dag = download_dag("cex_s3_no_bucket", finished_export("35"), "s3://no-such-bucket/exports/")
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert task_states(dag_run)["download_export"][0] == "failed"
    log = task_log()
    assert (
        "Could not upload the export to s3://no-such-bucket/exports/page-35.pdf (connection 'aws_default'): "
        "bucket 'no-such-bucket' does not exist" in log
    )
    assert API_KEY not in log
    assert "no-such-bucket" not in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]


def test_unreachable_store_fails_with_a_clear_message(airflow_db, served_emulator, s3, monkeypatch, task_log):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_WRONG", aws_connection_json(f"http://127.0.0.1:{closed_port}"))
    dag = download_dag("cex_s3_wrong", finished_export("36"), f"s3://{BUCKET}/x/", conn_id="aws_wrong")
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert task_states(dag_run)["download_export"][0] == "failed"
    log = task_log()
    assert f"Could not upload the export to s3://{BUCKET}/x/page-36.pdf (connection 'aws_wrong')" in log
    assert f'Could not connect to the endpoint URL: "http://127.0.0.1:{closed_port}/' in log
    assert API_KEY not in log


def test_s3_parts_stay_small_and_grow_only_for_s3s_part_limit():
    from airflow_provider_cex.operators.destinations import MIB, upload_options

    assert upload_options("s3", 200 * MIB, "application/pdf") == {
        "block_size": UPLOAD_PART_BYTES,
        "ContentType": "application/pdf",
    }
    huge = 500 << 30  # 500 GiB: 16 MiB parts would need 32,000 of them, S3 takes 10,000
    assert 10_000 * upload_options("s3a", huge, None)["block_size"] >= huge
    assert upload_options("memory", 200 * MIB, "application/pdf") == {}  # other stores: their defaults


def test_a_misspelled_output_conn_id_fails_before_anything_is_downloaded(
    airflow_db, served_emulator, s3, task_log
):
    """The amazon provider would fall back to the worker's own credentials: we refuse instead."""
    export_hash = finished_export("37")
    downloads_before = served_emulator.counts["download_export"]
    dag = download_dag("cex_s3_typo", export_hash, f"s3://{BUCKET}/x/", conn_id="aws_defualt")
    dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert task_states(dag_run)["download_export"] == ("failed", 1)  # no retry could fix it
    assert "output_conn_id 'aws_defualt' names no Airflow connection" in task_log()
    assert served_emulator.counts["download_export"] == downloads_before  # nothing downloaded
    assert s3_object(s3, "x/page-37.pdf") is None

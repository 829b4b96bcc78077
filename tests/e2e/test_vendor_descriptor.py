"""A user with only the vendor's descriptor: derive the paths with the CLI, add the connection it prints,
run the example DAG (real Airflow, dag.test()) against a service on non-default paths."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys

import pendulum
import pytest
import requests

from airflow_provider_cex.emulator import run_emulator
from tests.conftest import API_KEY, CONN_ENV
from tests.e2e.conftest import load_example_dag, run_dag, task_states

ELSEWHERE = {
    "start_export": "/rest/cex/v3/pages/{page_id}/exports",
    "export_progress": "/rest/cex/v3/exports/{export_hash}/status",
    "download_export": "/rest/cex/v3/exports/{export_hash}/content",
}
CONN_ID = "content_exporter_default"


def airflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Airflow's CLI on this session's metadata DB, encrypting with this process's Fernet key.

    Without a configured key every Airflow process makes up its own, and the connection the CLI
    writes could not be read back here.
    """
    from airflow.configuration import conf

    env = {k: v for k, v in os.environ.items() if k != CONN_ENV}
    env["AIRFLOW__CORE__FERNET_KEY"] = conf.get("core", "fernet_key", fallback="") or ""
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=env, timeout=180
    )


def printed_command(stdout: str) -> list[str]:
    """The `airflow connections add …` command the CLI printed, as argv (comments, continuations joined)."""
    lines = [line for line in stdout.splitlines()[1:] if not line.lstrip().startswith("#")]
    return shlex.split(" ".join(line.rstrip("\\") for line in lines))


def test_paths_from_the_descriptor_run_the_example_dag_to_a_byte_identical_file(
    airflow_db, tmp_path, monkeypatch
):
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=ELSEWHERE) as emu:
        descriptor = tmp_path / "remote-api.json"
        descriptor.write_bytes(requests.get(f"{emu.base_url}/openapi.json", timeout=10).content)
        derived = subprocess.run(
            [sys.executable, "-m", "airflow_provider_cex.openapi", str(descriptor), "--host", emu.base_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert derived.returncode == 0, derived.stderr
        assert json.loads(derived.stdout.splitlines()[0]) == ELSEWHERE

        command = printed_command(derived.stdout)
        assert command[:4] == ["airflow", "connections", "add", CONN_ID]
        assert "<YOUR-CEX-API-KEY>" in command and API_KEY not in derived.stdout
        command[command.index("<YOUR-CEX-API-KEY>")] = API_KEY  # what the user types in
        added = airflow_cli(*command[1:])
        assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-2000:]
        try:
            monkeypatch.delenv(CONN_ENV, raising=False)  # the connection now comes from the metadata DB
            monkeypatch.setenv("AIRFLOW_VAR_CEX_OUTPUT_DIR", str(tmp_path / "out"))
            dag = load_example_dag("example_content_exporter", "example_content_exporter.py")
            for task in dag.tasks:  # fail at once instead of after the example's 5-minute retry delays
                task.retries = 0
            dag_run = run_dag(
                dag, {"page_id": "4321", "page_size": "A3"}, pendulum.datetime(2026, 11, 27, tz="UTC")
            )
        finally:
            airflow_cli("connections", "delete", CONN_ID)

        assert dag_run.state == "success", task_states(dag_run)
        landed = tmp_path / "out" / "2026-11-27" / "page-4321.pdf"
        assert hashlib.sha256(landed.read_bytes()).hexdigest() == emu.artifact_sha256
        served = {(r.method, r.endpoint, r.status) for r in emu.requests}
        assert ("POST", "start_export", 200) in served and ("GET", "download_export", 200) in served
        assert all(r.endpoint != "unknown" for r in emu.requests)  # every call hit a derived path
        (export,) = emu.exports.values()
        assert export.body["pageSettings"]["size"] == "A3" and export.body["rootContentId"] == "4321"


@pytest.mark.parametrize("bad", ['{"hello": 1}', "paths: [unclosed"])
def test_the_cli_refuses_a_file_that_is_not_a_descriptor_without_a_traceback(tmp_path, bad):
    path = tmp_path / "remote-api.yaml"
    path.write_text(bad)
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_cex.openapi", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr

"""Crash-resume of ContentExporterExportOperator on a real Airflow 3.3 stack (LocalExecutor).

The task's process is killed (SIGKILL, as a lost worker or an OOM kill would) while it waits for
its export in the worker; Airflow retries it, and the retry must reconnect to the export stored in
the task's ``task_state_store`` instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Any

import psutil
import pytest

from tests.stack.conftest import STACK_TEST_TIMEOUT, requires_stack, wait_for

pytestmark = [requires_stack, pytest.mark.timeout(STACK_TEST_TIMEOUT)]

DAG_ID = "example_content_exporter_one_task"
TASK_ID = "export_page_tree"
PAGE_ID = "778001"
LOGICAL_DATE = "2026-11-21T00:00:00Z"
DS = "2026-11-21"


def _client_of(port: int) -> int | None:
    """The PID of a process (not this one) holding a TCP connection to 127.0.0.1:``port``."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == port and conn.pid and conn.pid != os.getpid():
            return conn.pid
    return None


def test_a_killed_task_is_retried_and_reconnects_to_its_export(stack: Any) -> None:
    emulator = stack.emulator
    run_id = stack.trigger(DAG_ID, logical_date=LOGICAL_DATE, conf={"page_id": PAGE_ID})

    def exports_of_page() -> list[Any]:
        return [e for e in emulator.exports.values() if e.page_id == PAGE_ID]

    wait_for("the export to start", exports_of_page, timeout=180)
    # The task polls in the worker over a kept-alive connection: the process holding it is the task.
    pid = wait_for("the task's connection to the emulator", lambda: _client_of(emulator.port), timeout=60)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    state = stack.wait_for_run(DAG_ID, run_id, timeout=300)

    assert state == "success", f"the run ended {state} after the task was killed"
    assert len(exports_of_page()) == 1, "the retry started a second export instead of reconnecting"
    with stack.session() as http:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
        tries = http.get(f"{stack.api_url}{path}/tries", timeout=30).json()["task_instances"]
        log = http.get(
            f"{stack.api_url}{path}/logs/2",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
            timeout=60,
        ).text
    assert sorted(ti["try_number"] for ti in tries) == [1, 2]
    assert "instead of starting a new one" in log, log[-2000:]
    landed = stack.output_dir / DS / f"page-{PAGE_ID}.pdf"
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == emulator.artifact_sha256
    assert not [p.name for p in landed.parent.iterdir() if p.name.endswith(".part")]
    print(f"killed task pid {pid}; the run succeeded {time.monotonic() - killed_at:.0f} s later")


def test_a_download_failing_past_its_retry_budget_is_retried_without_a_second_export(stack: Any) -> None:
    emulator = stack.emulator
    page_id, ds = "778002", "2026-11-22"
    # Five 503 answers outlast the hook's four retries: the first try fails after the export finished.
    emulator.inject("download_export", status=503, times=5, retry_after=0)
    run_id = stack.trigger(DAG_ID, logical_date=f"{ds}T00:00:00Z", conf={"page_id": page_id})

    state = stack.wait_for_run(DAG_ID, run_id, timeout=300)

    exports = [e for e in emulator.exports.values() if e.page_id == page_id]
    assert state == "success" and len(exports) == 1, (state, len(exports))
    with stack.session() as http:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/tries"
        tries = http.get(f"{stack.api_url}{path}", timeout=30).json()["task_instances"]
    assert sorted(ti["try_number"] for ti in tries) == [1, 2]
    landed = stack.output_dir / ds / f"page-{page_id}.pdf"
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == emulator.artifact_sha256

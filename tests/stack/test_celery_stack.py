"""The provider on a distributed Airflow: CeleryExecutor, Redis, PostgreSQL and two workers on loopback.

One stack (scripts/celery_stack.py) for the module. Each test says what a user running several workers
would see: tasks spread over the workers, a worker lost mid-export, a triggerer restarted mid-wait, a
file handed from one worker to another through S3, and a pool that bounds the exports running at once.
The figures (seconds, concurrency) are printed for the issue's closing note (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from datetime import datetime
from typing import Any

import psutil
import pytest

from tests.stack.conftest import requires_stack, wait_for

pytestmark = [requires_stack, pytest.mark.timeout(900)]

WORKER_HOSTS = {"worker1@cex", "worker2@cex"}
POOL, POOL_SLOTS = "cex_exports", 6
POOLED_EXPORTS = 200
#: cex_celery_deferred_wait's sensor timeout (tests/stack/celery_dags/cex_celery_dags.py).
SENSOR_TIMEOUT = 15 * 60


def _report(message: str) -> None:
    print(f"\n[celery-stack figures] {message}", flush=True)


def _exports_of(stack: Any, page_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.emulator_exports().values() if e["page_id"] == page_id]


def _ti(stack: Any, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    with stack.session() as http:
        answer = http.get(
            f"{stack.api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", timeout=30
        )
    answer.raise_for_status()
    return dict(answer.json())


def _tries(stack: Any, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
    with stack.session() as http:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        answer = http.get(f"{stack.api_url}{path}", timeout=30)
    answer.raise_for_status()
    return sorted(answer.json()["task_instances"], key=lambda ti: ti["try_number"])


def _xcom(stack: Any, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    with stack.session() as http:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        answer = http.get(
            f"{stack.api_url}{path}", params={"deserialize": "true", "stringify": "false"}, timeout=30
        )
    answer.raise_for_status()
    return answer.json()["value"]


def _s3_sha256(stack: Any, url: str) -> str | None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        body = stack.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except stack.s3.client().exceptions.NoSuchKey:
        return None
    return hashlib.sha256(body).hexdigest()


def _progress_polls(stack: Any, export_hash: str) -> int:
    return sum(
        1 for r in stack.emulator.requests if r.endpoint == "export_progress" and export_hash in r.path
    )


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t opens)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = highest = 0
    for _, step in events:
        running += step
        highest = max(highest, running)
    return highest


def test_every_server_of_the_stack_listens_on_loopback_only(celery_stack: Any) -> None:
    import os

    pids = set(celery_stack.pids()) | set(celery_stack.service_pids()) | {os.getpid()}
    listening = [
        (conn.laddr.ip, conn.laddr.port, conn.pid)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    ]
    assert listening, "found no listening socket of the stack"
    assert all(ip == "127.0.0.1" for ip, _, _ in listening), listening


def test_the_example_dags_succeed_with_tasks_on_both_workers(celery_stack: Any) -> None:
    celery_stack.emulator.export_seconds = 5
    runs = {
        dag_id: celery_stack.trigger(dag_id, logical_date=None, conf={})
        for dag_id in celery_stack.example_dag_ids
    }

    states = {
        dag_id: celery_stack.wait_for_run(dag_id, run_id, timeout=300) for dag_id, run_id in runs.items()
    }

    assert set(states.values()) == {"success"}, states
    hosts: dict[str, int] = {}
    for dag_id, run_id in runs.items():
        for ti in celery_stack.task_instances(dag_id, run_id):
            hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
    assert set(hosts) == WORKER_HOSTS, f"task instances per worker: {hosts}"
    _report(f"example DAGs: task instances per worker {hosts}")


def test_a_worker_lost_mid_export_is_retried_on_the_other_worker_which_reconnects(celery_stack: Any) -> None:
    dag_id, task_id, page_id = "cex_celery_one_task_s3", "export_page_tree", "880101"
    celery_stack.emulator.export_seconds = 40
    run_id = celery_stack.trigger(dag_id, logical_date=None, conf={"page_id": page_id})
    wait_for("the export to start", lambda: _exports_of(celery_stack, page_id), timeout=120)
    first = wait_for(
        "the task to run on a worker",
        lambda: (ti := _ti(celery_stack, dag_id, run_id, task_id))["hostname"] in WORKER_HOSTS and ti,
        timeout=60,
        every=0.5,
    )
    lost = next(name for name, host in celery_stack.worker_hostnames.items() if host == first["hostname"])
    time.sleep(3)  # the task now polls the running export

    killed = celery_stack.kill(lost)
    killed_at, killed_wall = time.monotonic(), time.time()
    (export,) = _exports_of(celery_stack, page_id)
    url = f"s3://{celery_stack.bucket}/{dag_id}/{page_id}/page-{page_id}.pdf"
    landed: list[float] = []

    def watch_s3(_http: Any) -> None:
        if not landed and _s3_sha256(celery_stack, url) is not None:
            landed.append(time.monotonic() - killed_at)

    try:
        state = celery_stack.wait_for_run(dag_id, run_id, timeout=300, on_poll=watch_s3, poll_seconds=0.5)
    finally:
        celery_stack.start_again(lost)  # two workers again for the next tests
    watch_s3(None)

    assert state == "success", f"the run ended {state} after {lost} was killed"
    tries = _tries(celery_stack, dag_id, run_id, task_id)
    assert [ti["hostname"] for ti in tries] == [first["hostname"], *(WORKER_HOSTS - {first["hostname"]})]
    assert len(_exports_of(celery_stack, page_id)) == 1, "the retry started a second export"
    assert _s3_sha256(celery_stack, url) == celery_stack.emulator.artifact_sha256
    retry_started = datetime.fromisoformat(tries[-1]["start_date"]).timestamp() - killed_wall
    _report(
        f"worker lost mid-export: killed {lost} ({len(killed)} processes) "
        f"{killed_wall - export['started_at']:.1f} s into a {export['done_at'] - export['started_at']:.0f} s "
        f"export; the retry started on {tries[-1]['hostname']} {retry_started:.1f} s after the kill; "
        f"the file landed in S3 {landed[0]:.1f} s after the kill"
    )


def _trigger_row(stack: Any, dag_id: str, run_id: str, task_id: str) -> tuple[int, str, float] | None:
    """The task's trigger in the metadata DB: (id, classpath, ``end_time`` kwarg), or None once it fired."""
    import psycopg2
    from cryptography.fernet import Fernet

    conn = psycopg2.connect(stack.db_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT t.id, t.classpath, t.kwargs FROM trigger t JOIN task_instance ti"
                " ON ti.trigger_id = t.id WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
                (dag_id, run_id, task_id),
            )
            row = cursor.fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    stored = row[2]
    if not stored.startswith("{"):  # encrypted with the stack's Fernet key
        stored = Fernet(stack.env["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(stored.encode()).decode()
    return int(row[0]), str(row[1]), float(_find(json.loads(stored), "end_time"))


def _find(tree: Any, key: str) -> Any:
    """The value of ``key`` anywhere in a JSON tree (Airflow's serialization wraps kwargs in envelopes)."""
    if isinstance(tree, dict):
        if key in tree:
            value = tree[key]
            return _find(value, "__data__") if isinstance(value, dict) else value
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            with contextlib.suppress(KeyError):
                return _find(item, key)
    raise KeyError(key)


def test_a_restarted_triggerer_resumes_the_wait_with_its_deadline_and_fires_once(celery_stack: Any) -> None:
    dag_id, task_id, page_id = "cex_celery_deferred_wait", "wait_for_export", "880201"
    celery_stack.emulator.export_seconds = 40
    run_id = celery_stack.trigger(dag_id, logical_date=None, conf={"page_id": page_id})
    wait_for(
        "the sensor to defer",
        lambda: _ti(celery_stack, dag_id, run_id, task_id)["state"] == "deferred",
        timeout=180,
        every=0.5,
    )
    before = wait_for("its trigger", lambda: _trigger_row(celery_stack, dag_id, run_id, task_id), timeout=30)
    trigger_id, classpath, end_time = before
    sensor_started = _ti(celery_stack, dag_id, run_id, task_id)["start_date"]

    (export_hash,) = {h for h, e in celery_stack.emulator_exports().items() if e["page_id"] == page_id}
    polls_before = _progress_polls(celery_stack, export_hash)
    wait_for(
        "the triggerer to poll the export",
        lambda: _progress_polls(celery_stack, export_hash) >= polls_before + 2,
        timeout=60,
    )

    celery_stack.kill("triggerer")
    polls_at_kill = _progress_polls(celery_stack, export_hash)
    (export,) = _exports_of(celery_stack, page_id)
    # The export completes while no triggerer watches it: the restarted one must notice at once.
    time.sleep(max(0.0, export["done_at"] - time.time()) + 2)
    assert _ti(celery_stack, dag_id, run_id, task_id)["state"] == "deferred"
    assert _progress_polls(celery_stack, export_hash) == polls_at_kill, "something else polled meanwhile"
    after = _trigger_row(celery_stack, dag_id, run_id, task_id)
    restarted_at, restarted_wall = time.monotonic(), time.time()
    celery_stack.start_again("triggerer")
    wait_for(
        "the event to resume the sensor",
        lambda: _ti(celery_stack, dag_id, run_id, task_id)["state"] != "deferred",
        timeout=180,
        every=0.25,
    )
    event_after = time.monotonic() - restarted_at
    state = celery_stack.wait_for_run(dag_id, run_id, timeout=180)

    assert state == "success"
    assert classpath.endswith("ContentExporterExportTrigger")
    assert after == before, "the trigger (its id or its deadline) changed while the triggerer was down"
    # The sensor's 15-minute timeout, counted from its start (not from the triggerer's restart).
    started_epoch = datetime.fromisoformat(sensor_started).timestamp()
    assert abs(end_time - (started_epoch + SENSOR_TIMEOUT)) < 30, (end_time, sensor_started)
    # The trigger's lines go to the task's log, one file per triggerer job: attempt=1.log.trigger.<job>.log.
    task_logs = celery_stack.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    task_logs /= f"task_id={task_id}"
    fired = [
        line
        for path in task_logs.glob("attempt=1.log.trigger.*.log")
        for line in path.read_text(errors="replace").splitlines()
        if "Trigger fired event" in line and f"(ID {trigger_id})" in line
    ]
    assert len(fired) == 1, fired
    fired_wall = datetime.fromisoformat(json.loads(fired[0])["timestamp"]).timestamp()
    tries = _tries(celery_stack, dag_id, run_id, task_id)
    assert [(ti["try_number"], ti["state"]) for ti in tries] == [(1, "success")]
    _report(
        f"triggerer restart: event fired {fired_wall - restarted_wall:.1f} s after the restart (process "
        f"start included), the sensor resumed {event_after:.1f} s after it; deadline end_time "
        f"{end_time:.0f} kept (sensor started {sensor_started})"
    )


def test_a_downstream_task_on_the_other_worker_reads_the_file_named_in_xcom(celery_stack: Any) -> None:
    dag_id, page_id = "cex_celery_handover", "880301"
    celery_stack.emulator.export_seconds = 3
    run_id = celery_stack.trigger(dag_id, logical_date=None, conf={"page_id": page_id})

    state = celery_stack.wait_for_run(dag_id, run_id, timeout=240)

    assert state == "success"
    uri = _xcom(celery_stack, dag_id, run_id, "export_page_tree")
    checked = _xcom(celery_stack, dag_id, run_id, "check_landed_file")
    hosts = {ti["task_id"]: ti["hostname"] for ti in celery_stack.task_instances(dag_id, run_id)}
    assert hosts == {"export_page_tree": "worker1@cex", "check_landed_file": "worker2@cex"}
    assert uri.startswith("s3://") and checked["uri"] == uri
    assert checked["sha256"] == celery_stack.emulator.artifact_sha256 == _s3_sha256(celery_stack, uri)


def test_a_pool_bounds_the_exports_running_at_once(celery_stack: Any) -> None:
    dag_id, first_page = "cex_celery_pooled_exports", 900000
    celery_stack.emulator.export_seconds = 3
    with celery_stack.session() as http:
        created = http.post(
            f"{celery_stack.api_url}/api/v2/pools",
            json={"name": POOL, "slots": POOL_SLOTS, "description": "Content Exporter exports"},
            timeout=30,
        )
        assert created.status_code in (200, 201), created.text
    started = time.monotonic()
    run_id = celery_stack.trigger(
        dag_id, logical_date=None, conf={"count": POOLED_EXPORTS, "first_page_id": first_page}
    )

    state = celery_stack.wait_for_run(dag_id, run_id, timeout=780, poll_seconds=3)
    wall = time.monotonic() - started

    assert state == "success"
    pages = {str(first_page + i) for i in range(POOLED_EXPORTS)}
    exports = [e for e in celery_stack.emulator_exports().values() if e["page_id"] in pages]
    assert {e["page_id"] for e in exports} == pages
    highest = _max_overlap([(e["started_at"], e["done_at"]) for e in exports])
    assert highest <= POOL_SLOTS, f"{highest} exports ran at once through a pool of {POOL_SLOTS}"
    files = list((celery_stack.output_dir / "pooled").glob("*/page-*.pdf"))
    assert {re.sub(r"\D", "", f.name) for f in files} == pages
    assert all(f.stat().st_size == celery_stack.emulator.artifact_size for f in files)
    _report(
        f"pool: {POOLED_EXPORTS} exports ({len(exports)} started) in {wall:.0f} s, {POOL_SLOTS} slots; "
        f"the emulator saw at most {highest} at once"
    )

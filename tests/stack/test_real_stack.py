"""The example DAGs on a real Airflow 3 (api-server, scheduler + LocalExecutor, dag-processor, triggerer).

What ``dag.test()`` cannot show: the sensor really leaves its worker slot between pokes
(``up_for_reschedule``), the deferrable variant really defers and the *triggerer process* resumes
it, task logs as the UI serves them (REST), the connection form metadata the UI reads, the
"Confluence page" extra link, and that nothing listens beyond loopback. Everything is read
through the REST API (``/api/v2`` with a JWT from ``/auth/token``), as the UI does.

Both DAGs are triggered at once (module fixture ``runs``) and waited for with a bound.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.stack.conftest import STACK_TEST_TIMEOUT, requires_stack

pytestmark = [requires_stack, pytest.mark.timeout(STACK_TEST_TIMEOUT)]

RESCHEDULE_DAG = "example_content_exporter"
DEFERRABLE_DAG = "example_content_exporter_deferrable"
PAGE_IDS = {RESCHEDULE_DAG: "777001", DEFERRABLE_DAG: "777002"}
LOGICAL_DATE = "2026-11-20T00:00:00Z"
DS = "2026-11-20"
TASKS = ("start_export", "wait_for_export", "download_export")
RUN_TIMEOUT = 240  # seconds, for both runs together
POKE_INTERVAL = 30
PROGRESS_LINE = re.compile(r"^page \d+: (?P<percent>\d+(?:\.\d+)?) % .*\(export (?P<hash>[0-9a-f]+)\)$")
TI_STATES = {"queued", "running", "up_for_reschedule", "deferred", "success", "failed", "up_for_retry"}


@dataclass
class Runs:
    """The two triggered runs, and the sensor states seen while polling (one sample per second)."""

    run_ids: dict[str, str]
    final_states: dict[str, str]
    sensor_states_seen: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def _get(http: requests.Session, stack: Any, path: str, **params: Any) -> Any:
    answer = http.get(f"{stack.api_url}{path}", params=params, timeout=30)
    assert answer.status_code == 200, f"GET {path} -> HTTP {answer.status_code}: {answer.text[:1000]}"
    return answer.json()


def _ti_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"


@pytest.fixture(scope="module")
def runs(stack: Any) -> Runs:
    started = time.monotonic()
    run_ids = {
        dag_id: stack.trigger(dag_id, logical_date=LOGICAL_DATE, conf={"page_id": page_id})
        for dag_id, page_id in PAGE_IDS.items()
    }
    seen: dict[str, list[str]] = {dag_id: [] for dag_id in run_ids}

    def sample_sensor_states(http: requests.Session) -> None:
        for dag_id, run_id in run_ids.items():
            answer = http.get(f"{stack.api_url}{_ti_path(dag_id, run_id, 'wait_for_export')}", timeout=30)
            state = answer.json().get("state") if answer.ok else None
            if state and (not seen[dag_id] or seen[dag_id][-1] != state):
                seen[dag_id].append(state)

    final: dict[str, str] = {}
    deadline = time.monotonic() + RUN_TIMEOUT
    for dag_id, run_id in run_ids.items():
        final[dag_id] = stack.wait_for_run(
            dag_id,
            run_id,
            timeout=max(1.0, deadline - time.monotonic()),
            on_poll=sample_sensor_states,
        )
    return Runs(run_ids, final, seen, time.monotonic() - started)


def _state_events(http: requests.Session, stack: Any, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    """The task instance's state changes from the event log (``/api/v2/eventLogs``), oldest first."""
    answer = _get(http, stack, "/api/v2/eventLogs", dag_id=dag_id, run_id=run_id, task_id=task_id, limit=100)
    events = [event for event in answer["event_logs"] if event["event"] in TI_STATES]
    return sorted(events, key=lambda event: (event["when"], event["event_log_id"]))


def _tries(http: requests.Session, stack: Any, dag_id: str, run_id: str, task_id: str) -> list[int]:
    answer = _get(http, stack, _ti_path(dag_id, run_id, task_id) + "/tries")
    return sorted(ti["try_number"] for ti in answer["task_instances"])


def _log(http: requests.Session, stack: Any, dag_id: str, run_id: str, task_id: str, try_number: int = 1):
    """(raw response text, the log's records) from the REST logs endpoint, as the UI's log view reads them."""
    answer = http.get(
        f"{stack.api_url}{_ti_path(dag_id, run_id, task_id)}/logs/{try_number}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text[:1000]
    content = answer.json()["content"]
    return answer.text, [record for record in content if isinstance(record, dict)]


def _progress(records: list[dict]) -> list[tuple[str, float]]:
    found = []
    for record in records:
        match = PROGRESS_LINE.match(str(record.get("event", "")))
        if match:
            found.append((match["hash"], float(match["percent"])))
    return found


def _when(event: dict) -> datetime:
    return datetime.fromisoformat(event["when"].replace("Z", "+00:00"))


# --------------------------------------------------------------------------- the runs and the files


def test_both_runs_succeed_and_land_the_exported_file_byte_identical(stack: Any, runs: Runs) -> None:
    assert runs.final_states == {RESCHEDULE_DAG: "success", DEFERRABLE_DAG: "success"}, runs
    print(f"both runs done {runs.seconds:.0f} s after the trigger; sensor states {runs.sensor_states_seen}")
    for dag_id, page_id in PAGE_IDS.items():
        landed = stack.output_dir / DS / f"page-{page_id}.pdf"
        assert landed.is_file(), f"{dag_id}: no {landed}; found {list(stack.output_dir.rglob('*'))}"
        assert hashlib.sha256(landed.read_bytes()).hexdigest() == stack.emulator.artifact_sha256
        assert landed.stat().st_size == stack.emulator.artifact_size
        leftovers = [path.name for path in landed.parent.iterdir() if not path.name.startswith("page-")]
        assert not leftovers, f"temporary files left beside the export: {leftovers}"


def test_each_run_started_exactly_one_export_with_the_rendered_profile(stack: Any, runs: Runs) -> None:
    exports = list(stack.emulator.exports.values())
    for dag_id, page_id in PAGE_IDS.items():
        mine = [export for export in exports if export.page_id == page_id]
        assert len(mine) == 1, f"{dag_id}: {len(mine)} exports of page {page_id} (a retried start?)"
        body = mine[0].body
        assert body["rootContentId"] == page_id
        # profiles/pdf.json rendered with Jinja: {{ params.page_size }} became the param's default.
        assert body["pageSettings"] == {"size": "A4", "orientation": "PORTRAIT"}
        assert body["margins"] == [{"top": 1, "bottom": 1, "right": 0.5, "left": 0.5}]


def test_every_task_succeeded_on_its_first_try(stack: Any, runs: Runs) -> None:
    with stack.session() as http:
        for dag_id, run_id in runs.run_ids.items():
            for task_id in TASKS:
                ti = _get(http, stack, _ti_path(dag_id, run_id, task_id))
                assert (ti["state"], ti["try_number"]) == ("success", 1), (dag_id, task_id, ti)
                assert _tries(http, stack, dag_id, run_id, task_id) == [1], (dag_id, task_id)


# --------------------------------------------------------------------------- reschedule mode


def test_reschedule_sensor_freed_its_slot_between_pokes(stack: Any, runs: Runs) -> None:
    run_id = runs.run_ids[RESCHEDULE_DAG]
    with stack.session() as http:
        events = _state_events(http, stack, RESCHEDULE_DAG, run_id, "wait_for_export")
        _, records = _log(http, stack, RESCHEDULE_DAG, run_id, "wait_for_export")
    sequence = [event["event"] for event in events]
    # The event log records each state the task instance reported through the execution API.
    assert sequence[:2] == ["running", "up_for_reschedule"], sequence
    assert sequence[-2:] == ["running", "success"], sequence
    assert "deferred" not in sequence
    assert {event["try_number"] for event in events} == {1}, "a reschedule must not consume a try"
    # The poke interval was honoured: the next poke came >= ~30 s after the reschedule.
    first_reschedule = next(event for event in events if event["event"] == "up_for_reschedule")
    next_poke = next(e for e in events if e["event"] == "running" and _when(e) > _when(first_reschedule))
    gap = (_when(next_poke) - _when(first_reschedule)).total_seconds()
    assert gap >= POKE_INTERVAL - 5, f"next poke only {gap:.1f} s after the reschedule"
    # The UI's polling saw the state too, and the log says why.
    assert "up_for_reschedule" in runs.sensor_states_seen[RESCHEDULE_DAG], runs.sensor_states_seen
    messages = [str(record.get("event")) for record in records]
    assert any("marking task as UP_FOR_RESCHEDULE" in message for message in messages), messages
    progress = _progress(records)
    assert len(progress) >= 2, f"expected one progress line per poke, got {progress}"
    assert progress[0][1] < 100 and progress[-1][1] == 100, progress
    assert len({export_hash for export_hash, _ in progress}) == 1


# --------------------------------------------------------------------------- deferrable mode


def test_deferrable_sensor_deferred_and_the_triggerer_resumed_it(stack: Any, runs: Runs) -> None:
    run_id = runs.run_ids[DEFERRABLE_DAG]
    with stack.session() as http:
        events = _state_events(http, stack, DEFERRABLE_DAG, run_id, "wait_for_export")
        _, records = _log(http, stack, DEFERRABLE_DAG, run_id, "wait_for_export")
        triggerer_jobs = _get(http, stack, "/api/v2/jobs", job_type="TriggererJob")["jobs"]
    sequence = [event["event"] for event in events]
    assert sequence == ["running", "deferred", "running", "success"], sequence
    assert "up_for_reschedule" not in sequence
    assert {event["try_number"] for event in events} == {1}
    assert "deferred" in runs.sensor_states_seen[DEFERRABLE_DAG], runs.sensor_states_seen
    messages = [str(record.get("event")) for record in records]
    assert any("Pausing task as DEFERRED" in message for message in messages), messages

    # The trigger's part of the log was written by the triggerer process (its job id names the file).
    assert triggerer_jobs, "no TriggererJob in /api/v2/jobs"
    sources = [message for message in messages if message.startswith(str(stack.airflow_home))]
    trigger_files = [source for source in sources if re.search(r"\.trigger\.\d+\.log$", source)]
    assert trigger_files, f"no trigger log among the log sources {sources}"
    job_ids = {str(job["id"]) for job in triggerer_jobs}
    assert any(source.rsplit(".trigger.", 1)[1].split(".")[0] in job_ids for source in trigger_files)
    assert any(message.startswith("trigger ") and message.endswith(" starting") for message in messages)
    # The trigger polled the service itself: the worker polls once before deferring, and
    # execute_complete only reads the event. (The trigger logs a progress line only for a poll
    # below 100 %, and its first poll can come 10-20 s after it starts, once a fresh triggerer has
    # answered its first connection lookup: the export may be complete by then.)
    export_hash = next(
        e.export_hash for e in stack.emulator.exports.values() if e.page_id == PAGE_IDS[DEFERRABLE_DAG]
    )
    polls = [r for r in stack.emulator.requests if r.endpoint == "export_progress" and export_hash in r.path]
    assert len(polls) >= 2, f"{len(polls)} progress request(s) for {export_hash}: the trigger never polled"
    fired = [record for record in records if record.get("event") == "Trigger fired event"]
    assert fired and "'status': 'success'" in str(fired[0].get("result")), fired
    # Back on a worker, execute_complete finished the task.
    assert any(
        re.match(r"page \d+: 100 % after .*, complete \(export [0-9a-f]+\)", message) for message in messages
    ), messages


# --------------------------------------------------------------------------- logs and secrets


def test_task_logs_show_progress_and_never_the_api_key(stack: Any, runs: Runs) -> None:
    key = stack.api_key
    with stack.session() as http:
        for dag_id, run_id in runs.run_ids.items():
            for task_id in TASKS:
                for try_number in _tries(http, stack, dag_id, run_id, task_id):
                    text, records = _log(http, stack, dag_id, run_id, task_id, try_number)
                    assert records, f"{dag_id}.{task_id}: empty log"
                    assert key not in text, f"{dag_id}.{task_id} try {try_number}: the API key is in the log"
                    if task_id == "wait_for_export":
                        assert _progress(records), f"{dag_id}: no 'page <id>: NN % after …' line"
                    if task_id == "download_export":
                        assert any(": saved " in str(r.get("event", "")) for r in records)
    # Every file the stack wrote outside the metadata DB: task and trigger logs, component logs.
    for folder in (stack.airflow_home / "logs", stack.airflow_home / "components"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), f"the API key is in {path}"


# --------------------------------------------------------------------------- what the UI shows


def test_connection_is_in_the_metadata_db_without_showing_the_key(stack: Any) -> None:
    with stack.session() as http:
        answer = http.get(f"{stack.api_url}/api/v2/connections/content_exporter_default", timeout=30)
    assert answer.status_code == 200, answer.text
    conn = answer.json()
    assert conn["conn_type"] == "content_exporter"
    assert conn["host"] == stack.emulator_url
    assert stack.api_key not in answer.text
    assert "acme.atlassian.net" in (conn.get("extra") or "")


def test_connection_test_button_checks_the_key_against_the_service(stack: Any) -> None:
    """``POST /api/v2/connections/test`` (the form's Test button) runs the hook's test_connection()."""
    body = {"conn_type": "content_exporter", "host": stack.emulator_url}
    wrong_key = "cexk_this_key_was_revoked_0123456789abc"
    with stack.session() as http:
        good = http.post(
            f"{stack.api_url}/api/v2/connections/test",
            json={**body, "connection_id": "content_exporter_default", "password": stack.api_key},
            timeout=60,
        )
        bad = http.post(
            f"{stack.api_url}/api/v2/connections/test",
            json={**body, "connection_id": "content_exporter_probe", "password": wrong_key},
            timeout=60,
        )
    assert good.status_code == 200, good.text
    assert good.json()["status"] is True, good.json()
    assert bad.status_code == 200, bad.text
    assert bad.json()["status"] is False, bad.json()
    assert "rejected the API key" in bad.json()["message"]
    assert stack.api_key not in good.text and wrong_key not in bad.text


def test_hook_meta_describes_the_connection_form(stack: Any) -> None:
    with stack.session() as http:
        hooks = _get(http, stack, "/ui/connections/hook_meta")
    meta = next((hook for hook in hooks if hook["connection_type"] == "content_exporter"), None)
    assert meta is not None, [hook["connection_type"] for hook in hooks]
    assert meta["hook_name"] == "Content Exporter for Confluence"
    fields = meta["standard_fields"]
    assert fields["host"] == {**fields["host"], "hidden": False, "title": "Application URL"}
    assert fields["password"] == {**fields["password"], "hidden": False, "title": "API key"}
    for hidden in ("url_schema", "port", "login"):  # the UI calls "schema" url_schema
        assert fields[hidden]["hidden"] is True, (hidden, fields[hidden])
    extra = meta["extra_fields"]
    assert set(extra) >= {"region", "timeout", "confluence_url"}, extra
    assert extra["region"]["schema"]["title"] == "Region"
    assert extra["timeout"]["schema"]["title"].startswith("Timeout")
    assert extra["confluence_url"]["schema"]["title"] == "Confluence URL"


def test_start_task_has_the_confluence_page_link(stack: Any, runs: Runs) -> None:
    with stack.session() as http:
        for dag_id, run_id in runs.run_ids.items():
            links = _get(http, stack, _ti_path(dag_id, run_id, "start_export") + "/links")
            expected = f"https://acme.atlassian.net/wiki/pages/viewpage.action?pageId={PAGE_IDS[dag_id]}"
            assert links["extra_links"] == {"Confluence page": expected}, links


# --------------------------------------------------------------------------- the stack itself


def _listening_sockets() -> dict[str, str]:
    """inode -> "address:port" of every listening TCP socket on this machine."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                if parts[3] == "0A":  # LISTEN
                    listening[parts[9]] = parts[1]
    return listening


def _decode(address: str) -> str:
    host, port = address.split(":")
    if len(host) == 8:
        ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        ip = "::1" if host == "0" * 24 + "01000000" else f"ipv6:{host}"
    return f"{ip}:{int(port, 16)}"


def test_every_server_of_the_stack_listens_on_loopback_only(stack: Any, runs: Runs) -> None:
    listening = _listening_sockets()
    found = []
    for pid in stack.pids():
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            targets = [str(fd.readlink()) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        for target in targets:
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
            if inode in listening:
                found.append((pid, _decode(listening[inode])))
    assert found, "the api-server's listening socket was not found"
    assert all(address.startswith(("127.", "::1:")) for _, address in found), found
    assert any(address.endswith(f":{stack.api_url.rsplit(':', 1)[1]}") for _, address in found), found

"""A real Airflow 3 on loopback with the Content Exporter emulator, to try the provider (`make airflow`).

Starts, all bound to 127.0.0.1 only:

- the Content Exporter emulator (in this process, on a background thread; a random realistic API key),

and, each in its own session and process group:

- ``airflow api-server --host 127.0.0.1 --port P`` (UI, REST API ``/api/v2`` and the execution API),
- ``airflow scheduler --skip-serve-logs`` with the LocalExecutor (``parallelism`` 4),
- ``airflow dag-processor`` reading ``example_dags/``,
- ``airflow triggerer --skip-serve-logs`` (for the deferrable sensor),

on a throwaway ``AIRFLOW_HOME`` (``.demo/stack`` by default, wiped at start) with a SQLite metadata
DB (Airflow 3 runs the LocalExecutor on SQLite), the simple auth manager with one admin user
(``admin``/``admin`` by default, from a passwords file written here), the connection
``content_exporter_default`` created in the metadata DB with ``airflow connections add`` (so the
UI lists it), the Variable ``cex_output_dir`` (``<AIRFLOW_HOME>/exports``), and connection testing
enabled (the form's "Test" button calls the hook's ``test_connection()``). The emulator fails every
export of page :data:`FAILING_PAGE_ID`: a failed export to look at in the UI.

Run ``python scripts/airflow_stack.py`` (or ``make airflow``): it prints the UI URL and the login,
and stops everything it started on Ctrl-C or SIGTERM (exit 0). Nothing is run by
``airflow standalone``, whose log servers bind every interface.

Tests use the same code: ``with airflow_stack(...) as stack:`` yields a :class:`Stack` with
``api_url``, ``emulator_url``, ``emulator`` (the in-process emulator: ``artifact_sha256``,
``counts``), ``airflow_home``, ``token()`` and ``session()`` (a ``requests.Session`` carrying a JWT
from ``POST /auth/token``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / ".demo" / "stack"
DAGS_FOLDER = ROOT / "example_dags"
CONN_ID = "content_exporter_default"
CONFLUENCE_URL = "https://acme.atlassian.net/wiki"
EXAMPLE_DAG_IDS = (
    "example_content_exporter",
    "example_content_exporter_deferrable",
    "example_content_exporter_many_pages",
    "example_content_exporter_one_task",
)
#: The long-running components, in start order (stopped in reverse).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Marks every process of one stack (inherited by the executor's workers and task processes), so
#: teardown can find a straggler that left its process group, and kill it by PID (with session ids:
#: see :func:`_stack_processes`).
STACK_MARKER_ENV = "CEX_AIRFLOW_STACK_ID"


_print_flushed = functools.partial(print, flush=True)
#: The emulator of the stack fails every export of this page, so the UI can show a failed export.
FAILING_PAGE_ID = "666"


class StackError(RuntimeError):
    """The stack did not come up (the message carries the tail of the failing component's log)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class Stack:
    """A running stack: where it listens, how to log in, where its files and logs are."""

    api_url: str
    emulator_url: str
    emulator: Any  # airflow_provider_cex.emulator.ContentExporterEmulator
    api_key: str
    airflow_home: Path
    output_dir: Path
    username: str
    password: str
    env: dict[str, str] = field(repr=False)  # holds the stack's secrets (fernet key, JWT secret)
    component_logs: dict[str, Path] = field(repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    #: In the environment of every process of this stack (see :data:`STACK_MARKER_ENV`).
    marker: str = field(default="", repr=False)
    _token: str | None = field(default=None, repr=False)

    @property
    def ui_url(self) -> str:
        return self.api_url + "/"

    def token(self, *, refresh: bool = False) -> str:
        """A JWT for the REST API, from the simple auth manager's ``POST /auth/token``."""
        if self._token is None or refresh:
            answer = requests.post(
                f"{self.api_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return self._token

    def session(self) -> requests.Session:
        """A ``requests.Session`` sending ``Authorization: Bearer <JWT>``."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token()}"
        return session

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command against this stack's home; raise with its output if it fails."""
        return _run_cli(self.env, self.airflow_home, args, timeout=timeout)

    def pids(self) -> list[int]:
        """Every live process of this stack: the components, the executor's workers, task processes."""
        return _stack_processes(self.marker, {proc.pid for proc in self.processes.values()})

    def dead_components(self) -> dict[str, int]:
        """Components that exited: name -> exit code."""
        return {name: code for name, proc in self.processes.items() if (code := proc.poll()) is not None}

    # ------------------------------------------------------------------ REST helpers used by tests

    def trigger(
        self, dag_id: str, *, logical_date: str | None, conf: dict[str, Any], run_id: str | None = None
    ) -> str:
        """Unpause ``dag_id`` and trigger a run (``logical_date=None``: a run without one); return its run id.

        The stack's SQLite metadata DB can be locked by another writer for longer than its 5 s busy timeout
        (Airflow answers HTTP 500 "Database error"): the stack's limit, not the provider's. The request is
        then sent again, after checking that the run was not created (never a second run).
        """
        url = f"{self.api_url}/api/v2/dags/{dag_id}"
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        with self.session() as http:
            runs_before = self._run_ids(http, url)
            for _attempt in range(5):
                unpaused = http.patch(url, json={"is_paused": False}, timeout=30)
                if _sqlite_busy(unpaused):
                    time.sleep(2)
                    continue
                unpaused.raise_for_status()
                answer = http.post(f"{url}/dagRuns", json=body, timeout=30)
                if not _sqlite_busy(answer):
                    break
                time.sleep(2)
                created = self._run_ids(http, url) - runs_before
                if created:  # the busy answer came after the run was written
                    return created.pop()
            if answer.status_code >= 400:
                raise StackError(f"triggering {dag_id} failed: HTTP {answer.status_code} {answer.text}")
            return str(answer.json()["dag_run_id"])

    def _run_ids(self, http: requests.Session, dag_url: str) -> set[str]:
        listed = http.get(f"{dag_url}/dagRuns", params={"limit": 100}, timeout=30)
        return {run["dag_run_id"] for run in listed.json().get("dag_runs", [])} if listed.ok else set()

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 240,
        on_poll: Callable[[requests.Session], None] | None = None,
        poll_seconds: float = 1.0,
    ) -> str:
        """Wait (bounded) until the run is ``success`` or ``failed``; return the state."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        with self.session() as http:
            while time.monotonic() < deadline:
                if on_poll is not None:
                    on_poll(http)
                answer = http.get(f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30)
                answer.raise_for_status()
                state = answer.json()["state"]
                if state in ("success", "failed"):
                    return str(state)
                if dead := self.dead_components():
                    raise StackError(f"Airflow components exited while waiting: {dead}")
                time.sleep(poll_seconds)
        raise StackError(f"{dag_id} run {run_id} still {state!r} after {timeout:.0f} s")


def _sqlite_busy(answer: requests.Response) -> bool:
    return answer.status_code == 500 and "Database error" in answer.text


def _base_env(home: Path, port: int, marker: str, *, scheduled_runs: bool) -> dict[str, str]:
    """The environment of every Airflow process: nothing inherited from the caller's Airflow settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    api_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            STACK_MARKER_ENV: marker,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "",  # set by airflow_stack()
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # One secret for every component: the scheduler signs the workers' execution API tokens.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
            # The connection form's "Test" button (one trusted admin, loopback only): runs the hook's
            # test_connection() in the api-server.
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        }
    )
    return env


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _run_cli(
    env: dict[str, str], home: Path, args: tuple[str, ...] | list[str], *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise StackError(
            f"`airflow {' '.join(args[:2])}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return done


def _start(name: str, args: list[str], env: dict[str, str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one, with its children
        )


def _session_id(pid_dir: Path) -> int | None:
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
    return int(fields[3])


def _stack_processes(marker: str, sessions: set[int]) -> list[int]:
    """PIDs of this stack's processes, including children that left their process group.

    Each component leads its own session (``start_new_session``), which its workers and task
    processes keep even when they move to a process group of their own (a task's supervisor does)
    or are re-parented. The environment marker catches the rest; it is not enough alone, since
    ``setproctitle`` (api-server, executor workers) overwrites what ``/proc/PID/environ`` shows.
    """
    needle = f"{STACK_MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _session_id(entry) in sessions:
            found.append(int(entry.name))
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _stop(
    processes: dict[str, subprocess.Popen[bytes]],
    marker: str,
    sessions: set[int],
    log: Callable[[str], None],
) -> None:
    """SIGTERM each component's process group, wait (bounded), then SIGKILL what is left, by PID.

    A group is signalled only while its leader is alive and not yet reaped (so its number cannot
    have been reused); processes that outlived their leader or left its group (a task's own
    group) are found by session id and marker (:func:`_stack_processes`).
    """
    running = {name: proc for name, proc in processes.items() if proc.poll() is None}
    for name in reversed(list(running)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running[name].pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for name, proc in running.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) did not stop within 30 s: killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        leftovers = _stack_processes(marker, sessions)
        if not leftovers:
            return
        log(f"stopping leftover stack processes {leftovers} ({sig.name})")
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(3)


def _wait_until_ready(
    stack: Stack,
    timeout: float,
    log: Callable[[str], None],
    dag_ids: tuple[str, ...] = EXAMPLE_DAG_IDS,
) -> None:
    """Until the health endpoint reports every component healthy and ``dag_ids`` are parsed."""
    deadline = time.monotonic() + timeout
    health: Any = None
    found: set[str] = set()
    phase = "api-server"
    while time.monotonic() < deadline:
        if dead := stack.dead_components():
            name = next(iter(dead))
            raise StackError(
                f"{name} exited with {dead[name]} while starting; the end of its log "
                f"({stack.component_logs[name]}):\n{_tail(stack.component_logs[name])}"
            )
        try:
            if phase == "api-server":
                health = requests.get(f"{stack.api_url}/api/v2/monitor/health", timeout=5).json()
                statuses = {
                    part: (health.get(part) or {}).get("status")
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                }
                if all(status == "healthy" for status in statuses.values()):
                    phase = "dags"
                    log("  every component reports healthy; waiting for the DAGs to be parsed")
            if phase == "dags":
                with stack.session() as http:
                    dags = http.get(f"{stack.api_url}/api/v2/dags", params={"limit": 100}, timeout=10).json()
                    found = {dag["dag_id"] for dag in dags.get("dags", [])}
                    if found.issuperset(dag_ids):
                        return
                    errors = http.get(f"{stack.api_url}/api/v2/importErrors", timeout=10).json()
                    if errors.get("total_entries"):
                        raise StackError(f"DAG import errors: {json.dumps(errors, indent=1)[:3000]}")
        except (requests.RequestException, ValueError):
            pass  # not listening yet, or answering 5xx while it starts
        time.sleep(1)
    raise StackError(
        f"the stack was not ready after {timeout:.0f} s (waiting for: {phase}; health {health}; "
        f"DAGs parsed so far {sorted(found)})"
    )


@contextlib.contextmanager
def airflow_stack(
    home: Path | str = DEFAULT_HOME,
    *,
    port: int = 0,
    username: str = "admin",
    password: str = "admin",
    export_seconds: float = 60.0,
    scheduled_runs: bool = True,
    ready_timeout: float = 240.0,
    log: Callable[[str], None] = _print_flushed,
) -> Iterator[Stack]:
    """Start the emulator and a real Airflow (loopback only), yield a :class:`Stack`, stop everything.

    :param home: the throwaway AIRFLOW_HOME, wiped at start (the logs stay after the stack stops).
    :param port: the api-server's port; 0 picks a free one.
    :param export_seconds: how long each emulated export takes to reach 100 %.
    :param scheduled_runs: ``False`` sets ``[scheduler] use_job_schedule = False``: only triggered
        runs happen (tests: an unpaused ``@daily`` DAG would otherwise also get a scheduled run).
    """
    from airflow_provider_cex.emulator import run_emulator

    home = Path(home).resolve()
    shutil.rmtree(home, ignore_errors=True)
    (home / "components").mkdir(parents=True)
    output_dir = home / "exports"
    output_dir.mkdir()
    port = port or _free_port()
    if not _port_is_free(port):
        raise StackError(f"127.0.0.1:{port} is in use: choose another port (0 picks a free one)")
    marker = secrets.token_hex(8)
    env = _base_env(home, port, marker, scheduled_runs=scheduled_runs)
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{username}:admin"
    (home / "simple_auth_passwords.json").write_text(json.dumps({username: password}) + "\n")
    api_key = "cexk_" + secrets.token_hex(20)  # realistic: Airflow masks secrets of 5+ characters only
    logs = {name: home / "components" / f"{name}.log" for name in COMPONENTS}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    setup_procs: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    outer_log = log

    def log(message: str) -> None:
        outer_log(f"[{time.monotonic() - started:5.1f} s] {message}")

    with run_emulator(
        api_key=api_key, export_seconds=export_seconds, fail_page_ids=[FAILING_PAGE_ID]
    ) as emulator:
        try:
            log(f"Emulator of the Content Exporter Remote API at {emulator.base_url}")
            log(f"Migrating the metadata DB (SQLite) in {home} ...")
            _run_cli(env, home, ["db", "migrate"])
            log(f"Starting {', '.join(COMPONENTS)} (logs in {home / 'components'}) ...")
            commands = {
                "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                "scheduler": ["scheduler", "--skip-serve-logs"],
                "dag-processor": ["dag-processor"],
                "triggerer": ["triggerer", "--skip-serve-logs"],
            }
            for name in COMPONENTS:
                processes[name] = _start(name, commands[name], env, home, logs[name])
            # While they start: the connection (in the metadata DB, so the UI lists it) and the Variable.
            log("Creating the connection and the cex_output_dir Variable with the airflow CLI ...")
            conn_extra = json.dumps({"confluence_url": CONFLUENCE_URL})
            setup = {
                "connections-add": ["connections", "add", CONN_ID, "--conn-type", "content_exporter",
                    "--conn-host", emulator.base_url, "--conn-password", api_key, "--conn-extra", conn_extra],
                "variables-set": ["variables", "set", "cex_output_dir", str(output_dir)],
            }  # fmt: skip
            for name, args in setup.items():
                setup_log = home / "components" / f"{name}.log"
                setup_procs[name] = _start(name, args, env, home, setup_log)
            for name, proc in setup_procs.items():
                try:
                    code = proc.wait(timeout=ready_timeout)
                except subprocess.TimeoutExpired:
                    code = None
                if code != 0:
                    setup_log = home / "components" / f"{name}.log"
                    raise StackError(f"`airflow {name}` exited {code}:\n{_tail(setup_log)}")
            stack = Stack(
                api_url=f"http://127.0.0.1:{port}",
                emulator_url=emulator.base_url,
                emulator=emulator,
                api_key=api_key,
                airflow_home=home,
                output_dir=output_dir,
                username=username,
                password=password,
                env=env,
                component_logs=logs,
                processes=processes,
                marker=marker,
            )
            _wait_until_ready(stack, ready_timeout, log)
            log("Airflow is up")
            yield stack
        finally:
            if processes or setup_procs:
                log("Stopping Airflow ...")
                # Sessions of the long-running components only: a CLI process that exited long ago
                # could have had its number reused.
                _stop({**setup_procs, **processes}, marker, {proc.pid for proc in processes.values()}, log)
            log("Stopping the emulator ...")


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    # Once: a second Ctrl-C must not interrupt the teardown that this one starts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--port", type=int, default=8080, help="api-server port (default 8080; 0: a free one)"
    )
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="throwaway AIRFLOW_HOME (wiped)")
    parser.add_argument("--export-seconds", type=float, default=60.0, help="emulated export duration")
    args = parser.parse_args(argv)
    port = args.port
    if port and not _port_is_free(port):
        print(f"127.0.0.1:{port} is in use; picking a free port instead.")
        port = 0
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    try:
        with airflow_stack(args.home, port=port, export_seconds=args.export_seconds) as stack:
            print(
                f"\nAirflow UI:   {stack.ui_url}   (login {stack.username} / {stack.password})\n"
                f"REST API:     {stack.api_url}/api/v2  (JWT: POST {stack.api_url}/auth/token)\n"
                f"Emulator:     {stack.emulator_url}  (connection {CONN_ID}, exports take "
                f"{args.export_seconds:g} s)\n"
                f"Exports land: {stack.output_dir}/<YYYY-MM-DD>/  (Variable cex_output_dir)\n"
                f"Logs:         {stack.airflow_home / 'components'}, task logs in "
                f"{stack.airflow_home / 'logs'}\n"
                "Unpause and trigger example_content_exporter (or its _deferrable variant) in the UI.\n"
                f'A failure to look at: trigger one with page_id {FAILING_PAGE_ID} ("Trigger" with params):'
                " the emulator fails every export of that page, as a page that cannot be rendered would.\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
            while True:
                if dead := stack.dead_components():
                    print(f"Airflow components exited: {dead}; stopping.", file=sys.stderr)
                    return 1
                time.sleep(2)
    except KeyboardInterrupt:
        print("Stopped.")
        return 0
    except StackError as err:
        print(f"The stack failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

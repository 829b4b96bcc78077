"""A distributed Airflow 3 on loopback: CeleryExecutor, Redis, PostgreSQL, two workers (make airflow-celery).

Starts, all bound to 127.0.0.1 only, on a throwaway ``AIRFLOW_HOME`` (``.demo/celery-stack``, wiped at start):

- its own PostgreSQL cluster (``initdb`` into ``<home>/postgres``, run as the ``postgres`` user when started
  as root, password authentication): Airflow's metadata DB and Celery's result backend,
- its own ``redis-server`` (no persistence): the Celery broker,
- the Content Exporter emulator and moto's S3 server (bucket :data:`BUCKET`), in this process on threads,
- ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` (each ``--skip-serve-logs`` where
  it has a log server), and two ``airflow celery worker`` processes (``worker1@cex``, ``worker2@cex``, each
  with its own working and temporary folder, serving the ``default`` queue and a queue of its own:
  ``worker1``/``worker2``, so a DAG can route a task to one machine).

The dag-processor reads two bundles: ``example_dags/`` and ``tests/stack/celery_dags/``. Connections come
from the environment: ``content_exporter_default`` (the emulator) and ``aws_s3_loopback`` (moto). The
scheduler notices a task whose worker died after :data:`HEARTBEAT_TIMEOUT` seconds without heartbeat.

Task logs go to ``<home>/logs``, shared by the workers as a shared mount would be (no worker log server
listens). Every process gets its own log in ``<home>/components/`` and is stopped by its process group
(and its session, for tasks that left the group) at the end, also when starting failed. Services are from
``scripts/install_services.sh`` (Debian's ``postgresql`` and ``redis-server``); none is started through
systemd. Tests use ``with celery_stack(...) as stack:`` (a :class:`CeleryStack`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import airflow_stack as base

ROOT = base.ROOT
DEFAULT_HOME = ROOT / ".demo" / "celery-stack"
TEST_DAGS_FOLDER = ROOT / "tests" / "stack" / "celery_dags"
WORKERS = ("worker1", "worker2")
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKERS)
BUCKET = "cex-exports"
AWS_CONN_ID = "aws_s3_loopback"
#: Seconds without a heartbeat after which the scheduler fails a running task (its worker is gone).
HEARTBEAT_TIMEOUT = 20
WORKER_CONCURRENCY = 4
#: The name a worker reports as its task instances' ``hostname`` (see :func:`worker_hostname`).
WORKER_HOSTNAME_ENV = "CEX_WORKER_HOSTNAME"
#: The DAGs the stack waits for before it is ready.
STACK_DAG_IDS = base.EXAMPLE_DAG_IDS


@dataclass
class CeleryStack(base.Stack):
    """A running Celery stack: :class:`airflow_stack.Stack` plus the services, S3 and the workers."""

    s3_endpoint: str = ""
    bucket: str = BUCKET
    example_dag_ids: tuple[str, ...] = base.EXAMPLE_DAG_IDS
    s3: Any = field(default=None, repr=False)  # testkit.s3.MotoS3 (``client()``)
    db_url: str = field(default="", repr=False)
    commands: dict[str, list[str]] = field(default_factory=dict, repr=False)
    worker_hostnames: dict[str, str] = field(default_factory=dict)
    #: Components killed on purpose (not reported by :meth:`dead_components`).
    killed: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    #: PostgreSQL and Redis.
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def kill(self, name: str) -> list[int]:
        """SIGKILL every process of component ``name`` (its session, tasks included): a lost machine.

        Returns the PIDs killed. The component is no longer watched by :meth:`dead_components`.
        """
        proc = self.processes.pop(name)
        self.killed[name] = proc
        pids = _session_members(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return pids

    def start_again(self, name: str, *, timeout: float = 120) -> None:
        """Start component ``name`` again with its command (its log is appended to); a worker: until ready."""
        ready_before = self._worker_ready_lines(name)
        self.processes[name] = base._start(
            name, self.commands[name], self._env_of(name), self._cwd_of(name), self.component_logs[name]
        )
        if name in WORKERS:
            deadline = time.monotonic() + timeout
            while self._worker_ready_lines(name) <= ready_before:
                if time.monotonic() > deadline or name in self.dead_components():
                    raise base.StackError(f"{name} not ready:\n{base._tail(self.component_logs[name])}")
                time.sleep(0.5)

    def _worker_ready_lines(self, name: str) -> int:
        if name not in WORKERS:
            return 0
        try:
            text = self.component_logs[name].read_text(errors="replace")
        except OSError:
            return 0
        return text.count(f"{self.worker_hostnames[name]} ready.")

    def service_pids(self) -> list[int]:
        """PIDs of PostgreSQL and Redis (their whole sessions: PostgreSQL's backends too)."""
        return [pid for proc in self.services.values() for pid in _session_members(proc.pid)]

    def _env_of(self, name: str) -> dict[str, str]:
        return _worker_env(self.env, self.airflow_home, name) if name in WORKERS else self.env

    def _cwd_of(self, name: str) -> Path:
        return _worker_dir(self.airflow_home, name) if name in WORKERS else self.airflow_home

    def emulator_exports(self) -> dict[str, dict[str, Any]]:
        """The emulator's ``GET /_emulator/exports``: ``{hash: {page_id, started_at, done_at}}``."""
        answer = requests.get(f"{self.emulator_url}/_emulator/exports", timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (mapped ones included), from the REST API."""
        found: list[dict[str, Any]] = []
        with self.session() as http:
            while True:
                answer = http.get(
                    f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                    params={"limit": 100, "offset": len(found)},
                    timeout=60,
                )
                answer.raise_for_status()
                page = answer.json()
                found.extend(page["task_instances"])
                if not page["task_instances"] or len(found) >= page["total_entries"]:
                    return found


def _session_members(session: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and base._session_id(entry) == session
    ]


def _worker_dir(home: Path, name: str) -> Path:
    return home / "workers" / name


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: each reports its Celery name as a task's ``hostname``.

    Both workers share this machine's host name, so without it their task instances would look alike.
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def _worker_env(env: dict[str, str], home: Path, name: str) -> dict[str, str]:
    tmp = _worker_dir(home, name) / "tmp"
    python_path = [str(Path(__file__).resolve().parent), *filter(None, [env.get("PYTHONPATH")])]
    return {
        **env,
        "TMPDIR": str(tmp),
        "TMP": str(tmp),
        "TEMP": str(tmp),
        WORKER_HOSTNAME_ENV: f"{name}@cex",
        "PYTHONPATH": os.pathsep.join(python_path),  # this module, for the hostname callable
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "celery_stack.worker_hostname",
    }


def _start_service(
    name: str, args: list[str], log: Path, *, user: str | None, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            cwd="/",
        )


def _stop_services(services: dict[str, subprocess.Popen[bytes]], log: Callable[[str], None]) -> None:
    """SIGINT (PostgreSQL's fast shutdown; Redis exits on it too), SIGKILL after 20 s; by process group."""
    for proc in services.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
    for name, proc in services.items():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) did not stop within 20 s: killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        raise base.StackError("PostgreSQL is not installed: run scripts/install_services.sh")
    return candidates[-1].parent


def _wait_port(port: int, proc: subprocess.Popen[bytes], log_path: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise base.StackError(f"{what} exited {proc.returncode}:\n{base._tail(log_path)}")
        if not base._port_is_free(port):
            return
        time.sleep(0.2)
    raise base.StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _others_can_enter(path: Path) -> bool:
    """Whether a user who owns none of ``path`` and its parents can reach it (``o+x`` on each)."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents))


def _start_postgres(
    home: Path, services: dict[str, subprocess.Popen[bytes]], log: Callable[[str], None]
) -> tuple[str, int]:
    """initdb, start, create the ``airflow`` database; return (password, port)."""
    pg_bin = _pg_bin()
    user = "postgres" if os.geteuid() == 0 else None  # postgres refuses to run as root
    folder = home / "postgres"
    if user and not _others_can_enter(home):
        # The postgres user cannot reach the home (a checkout under /root, say): the cluster lives in a
        # private temporary folder, linked from the home and removed with it (see celery_stack()).
        folder.symlink_to(tempfile.mkdtemp(prefix="cex-celery-stack-postgres-"))
        folder = folder.resolve()  # postgres opens its files by this path
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(parents=True)
    password = secrets.token_urlsafe(24)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    if user:
        entry = pwd.getpwnam(user)
        for path in (folder, sockets, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    pg_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    init_log = home / "components" / "initdb.log"
    initdb = _start_service(
        "initdb",
        [str(pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--pwfile", str(pwfile),
         "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
        init_log, user=user, env=pg_env,
    )  # fmt: skip
    if initdb.wait(timeout=120) != 0:
        raise base.StackError(f"initdb exited {initdb.returncode}:\n{base._tail(init_log)}")
    pwfile.unlink()
    port = base._free_port()
    pg_log = home / "components" / "postgres.log"
    services["postgres"] = _start_service(
        "postgres",
        [str(pg_bin / "postgres"), "-D", str(data), "-k", str(sockets), "-h", "127.0.0.1", "-p", str(port),
         "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off"],
        pg_log, user=user, env=pg_env,
    )  # fmt: skip
    _wait_port(port, services["postgres"], pg_log, "postgres", 60)
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user="airflow", password=password, dbname="postgres"
            )
            break
        except psycopg2.OperationalError:  # "the database system is starting up"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
    finally:
        conn.close()
    log(f"PostgreSQL {pg_bin.parent.name} on 127.0.0.1:{port} (data in {data})")
    return password, port


def _start_redis(home: Path, services: dict[str, subprocess.Popen[bytes]], log: Callable[[str], None]) -> int:
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(redis, os.X_OK):
        raise base.StackError("redis-server is not installed: run scripts/install_services.sh")
    folder = home / "redis"
    folder.mkdir()
    port = base._free_port()
    redis_log = home / "components" / "redis.log"
    services["redis"] = _start_service(
        "redis",
        [redis, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--protected-mode", "yes", "--daemonize", "no"],
        redis_log, user=None, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip
    _wait_port(port, services["redis"], redis_log, "redis-server", 30)
    log(f"Redis on 127.0.0.1:{port}")
    return port


def _bundles() -> str:
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    return json.dumps(
        [
            {"name": "cex_examples", "classpath": local, "kwargs": {"path": str(base.DAGS_FOLDER)}},
            {"name": "cex_celery_tests", "classpath": local, "kwargs": {"path": str(TEST_DAGS_FOLDER)}},
        ]
    )


def _wait_for_workers(stack: CeleryStack, timeout: float) -> None:
    """Until each worker's log says ``celery@<host> ready.``."""
    deadline = time.monotonic() + timeout
    waiting = set(WORKERS)
    while waiting and time.monotonic() < deadline:
        if dead := stack.dead_components():
            name = next(iter(dead))
            tail = base._tail(stack.component_logs[name])
            raise base.StackError(f"{name} exited with {dead[name]}:\n{tail}")
        for name in list(waiting):
            if f"{stack.worker_hostnames[name]} ready." in base._tail(stack.component_logs[name], 200_000):
                waiting.discard(name)
        time.sleep(1)
    if waiting:
        raise base.StackError(f"Celery workers not ready after {timeout:.0f} s: {sorted(waiting)}")


def _with_elapsed_seconds(log: Callable[[str], None]) -> Callable[[str], None]:
    started = time.monotonic()
    return lambda message: log(f"[{time.monotonic() - started:5.1f} s] {message}")


@contextlib.contextmanager
def celery_stack(
    home: Path | str = DEFAULT_HOME,
    *,
    port: int = 0,
    username: str = "admin",
    password: str = "admin",
    export_seconds: float = 60.0,
    scheduled_runs: bool = True,
    parallelism: int = 8,
    worker_concurrency: int = WORKER_CONCURRENCY,
    dag_ids: tuple[str, ...] = STACK_DAG_IDS,
    ready_timeout: float = 300.0,
    log: Callable[[str], None] = base._print_flushed,
) -> Iterator[CeleryStack]:
    """Start PostgreSQL, Redis, moto S3, the emulator and a Celery Airflow (loopback only); stop it all.

    :param home: the throwaway AIRFLOW_HOME, wiped at start (the logs stay after the stack stops).
    :param export_seconds: how long each emulated export takes (``stack.emulator.export_seconds`` changes it).
    :param parallelism: ``[core] parallelism``: task instances running or queued at once, over all workers.
    :param dag_ids: the DAGs that must be parsed before the stack counts as ready.
    """
    from airflow_provider_cex.emulator import run_emulator
    from testkit.s3 import MotoS3, aws_connection_json, offline_aws_env

    home = Path(home).resolve()
    shutil.rmtree(home, ignore_errors=True)
    (home / "components").mkdir(parents=True)
    output_dir = home / "exports"
    output_dir.mkdir()
    for name in WORKERS:
        (_worker_dir(home, name) / "tmp").mkdir(parents=True)
    port = port or base._free_port()
    marker = secrets.token_hex(8)
    log = _with_elapsed_seconds(log)

    api_key = "cexk_" + secrets.token_hex(20)
    services: dict[str, subprocess.Popen[bytes]] = {}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    stack: CeleryStack | None = None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: no line per request
    s3 = MotoS3()
    with run_emulator(
        api_key=api_key, export_seconds=export_seconds, fail_page_ids=[base.FAILING_PAGE_ID]
    ) as emulator:
        try:
            s3.start()
            s3.client().create_bucket(Bucket=BUCKET)
            log(f"Emulator at {emulator.base_url}; moto S3 at {s3.endpoint_url} (bucket {BUCKET})")
            pg_password, pg_port = _start_postgres(home, services, log)
            redis_port = _start_redis(home, services, log)
            db = f"airflow:{pg_password}@127.0.0.1:{pg_port}/airflow"
            env = base._base_env(home, port, marker, scheduled_runs=scheduled_runs)
            conn = {"conn_type": "content_exporter", "host": emulator.base_url, "password": api_key}
            env.update(offline_aws_env())
            env.update(
                {
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{username}:admin",
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
                    "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": _bundles(),
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                    "AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT": json.dumps(conn),
                    f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}": aws_connection_json(s3.endpoint_url, attempts=3),
                    "AIRFLOW_VAR_CEX_OUTPUT_DIR": str(output_dir),
                    "AIRFLOW_VAR_CEX_S3_BUCKET": BUCKET,
                }
            )
            (home / "simple_auth_passwords.json").write_text(json.dumps({username: password}) + "\n")
            log("Migrating the metadata DB (PostgreSQL) ...")
            base._run_cli(env, home, ["db", "migrate"])
            hostnames = {name: _worker_env({}, home, name)[WORKER_HOSTNAME_ENV] for name in WORKERS}
            commands = {
                "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                "scheduler": ["scheduler", "--skip-serve-logs"],
                "dag-processor": ["dag-processor"],
                "triggerer": ["triggerer", "--skip-serve-logs"],
                **{
                    name: ["celery", "worker", "--celery-hostname", hostnames[name], "--concurrency",
                           str(worker_concurrency), "--queues", f"default,{name}", "--skip-serve-logs",
                           "--without-gossip", "--without-mingle"]
                    for name in WORKERS
                },
            }  # fmt: skip
            logs = {name: home / "components" / f"{name}.log" for name in AIRFLOW_COMPONENTS}
            stack = CeleryStack(
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
                s3_endpoint=s3.endpoint_url,
                s3=s3,
                db_url=f"postgresql://{db}",
                commands=commands,
                worker_hostnames=hostnames,
                services=services,
            )
            log(f"Starting {', '.join(AIRFLOW_COMPONENTS)} (logs in {home / 'components'}) ...")
            for name in AIRFLOW_COMPONENTS:  # all at once: the workers are waited for below
                processes[name] = base._start(
                    name, commands[name], stack._env_of(name), stack._cwd_of(name), logs[name]
                )
            base._wait_until_ready(stack, ready_timeout, log, dag_ids)
            _wait_for_workers(stack, ready_timeout)
            log("Airflow (CeleryExecutor, two workers) is up")
            yield stack
        finally:
            every = {**processes, **(stack.killed if stack else {})}
            if every:
                log("Stopping Airflow ...")
                base._stop(processes, marker, {proc.pid for proc in every.values()}, log)
            if services:
                log("Stopping PostgreSQL and Redis ...")
                _stop_services(services, log)
            log("Stopping moto S3 and the emulator ...")
            with contextlib.suppress(Exception):
                s3.stop()
            if (home / "postgres").is_symlink():  # a cluster outside the home (see _start_postgres)
                shutil.rmtree((home / "postgres").resolve(), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8080, help="api-server port (8080; 0: a free one)")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="throwaway AIRFLOW_HOME (wiped)")
    parser.add_argument("--export-seconds", type=float, default=60.0, help="emulated export duration")
    args = parser.parse_args(argv)
    port = args.port
    if port and not base._port_is_free(port):
        print(f"127.0.0.1:{port} is in use; picking a free port instead.")
        port = 0
    signal.signal(signal.SIGTERM, base._raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, base._raise_keyboard_interrupt)
    try:
        with celery_stack(args.home, port=port, export_seconds=args.export_seconds) as stack:
            print(
                f"\nAirflow UI:   {stack.ui_url}   (login {stack.username} / {stack.password})\n"
                f"Workers:      {', '.join(stack.worker_hostnames.values())} (CeleryExecutor, Redis broker, "
                "PostgreSQL metadata DB)\n"
                f"Emulator:     {stack.emulator_url}  (exports take {args.export_seconds:g} s)\n"
                f"S3 (moto):    {stack.s3_endpoint}  bucket {BUCKET}, connection {AWS_CONN_ID}\n"
                f"Logs:         {stack.airflow_home / 'components'}, {stack.airflow_home / 'logs'}\n"
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
    except base.StackError as err:
        print(f"The stack failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

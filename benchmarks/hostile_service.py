"""How the provider behaves against a hostile Content Exporter service: memory, event-loop stalls, deadlines
and ``overwrite=False`` under contention, measured on a source tree (and beside a reference tree).

Scenarios (each in a fresh child process whose ``PYTHONPATH`` is the tree under test; the child starts its
own servers, on 127.0.0.1 with an ephemeral port, and prints one JSON line of figures):

- ``a`` inflating progress answer, trigger: the progress endpoint answers 200, ``Content-Encoding: gzip``,
  a correct ``Content-Length`` of ~256 KiB of gzip that inflates to 256 MiB of valid JSON
  (``{"progressValue": 5, "pad": "<256 MiB of spaces>"}``, compressed once, streamed through
  ``zlib.compressobj``). ``ContentExporterExportTrigger(end_time=now + 20 s, poll_interval=1)`` runs until
  its first event, beside a ticker coroutine (``asyncio.sleep(0.01)`` in a loop) that records the worst
  event-loop stall (longest gap - 0.01 s). Peak RSS growth: ``VmHWM`` is reset by writing ``5`` to
  ``/proc/self/clear_refs`` after set-up (else the figure is ``VmHWM`` after - ``VmRSS`` before).
- ``b`` the same server, ``ContentExporterHook.get_export_progress``: peak RSS growth, wall time, outcome.
- ``c1`` dripping server (status line, headers, ``Content-Length: 1000``, then one body byte a second):
  trigger with ``end_time = now + 5 s``, poll interval 1 s, timeout ``[2, 3]``: seconds from ``end_time``
  to the event, or none 60 s after it (then cancelled). ``c2`` the sync hook's ``get_export_progress``,
  timeout ``[2, 3]``, ``RetryPolicy(max_retries=0)``: seconds until it returns or raises (watchdog: 60 s).
  ``c3`` a server that accepts and never answers: trigger, ``end_time = now + 5 s``, timeout ``[2, 30]``.
  ``c`` runs all three (at once: they mostly wait).
- ``d`` ``overwrite=False`` under contention: the bundled emulator (its own process, from the tree under
  test), one export, then 200 threads, each with its own hook, call ``download_export(hash, same_path,
  overwrite=False)`` released together by a ``threading.Barrier``; winners per round (5 rounds, a fresh
  folder each) and winners whose reported sha256 does not describe the file left on disk.

Each child is bounded at 120 s (then killed by its PID). Run from the repository root::

    .venv/bin/python -m benchmarks.hostile_service [--tree PATH] [--reference PATH] [--scenarios a,b,c,d]

``--tree`` is the source tree under test (default: this repository); with ``--reference`` every scenario
also runs on that tree and both columns are printed with their ratio (tree / reference). The harness itself
imports nothing from the provider, so it runs whatever state the trees are in. About 2.5 minutes a tree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
MIB = 1 << 20
#: The child's result line starts with this (Airflow may log to stdout too).
MARKER = "@@cex-hostile@@"
#: A realistic 40-character key (Airflow masks secrets of 5 characters or more).
API_KEY = "cexk_5e1d9c2b7a4f8e3d6c0b9a2f5e8d1c4b7a3f"
CONN_ID = "cex_hostile"
EXPORT_HASH = "h1"

CHILD_LIMIT_S = 120.0
INFLATED_BYTES = 256 * MIB
DRIP_BODY_BYTES = 1000
DEADLINE_AFTER_S = 5.0  # c1, c3: end_time = now + this
NO_EVENT_AFTER_S = 60.0  # c1, c3: give up this long after end_time; c2: watchdog
SERVER_HOLD_S = 100.0  # a dripping or silent connection is dropped after this
MAX_CONNECTIONS = 64  # per hostile server
EMULATOR_START_S = 60.0

SCENARIOS = ("a", "b", "c1", "c2", "c3", "d")
GROUPS = {"a": ["a"], "b": ["b"], "c": ["c1", "c2", "c3"], "d": ["d"]}
#: Scenarios whose children run at the same time (they wait on sockets, they do not compute).
PARALLEL = {"c1", "c2", "c3"}


# ================================================================================ child: hostile servers


class RawServer:
    """A raw-socket server on 127.0.0.1 (ephemeral port), each connection served on a daemon thread by
    ``handler(server, conn)``; accepts at most ``max_connections``."""

    def __init__(self, handler: Callable[[RawServer, socket.socket], None], max_connections: int) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.stopping = threading.Event()
        self.connections = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="hostile-accept", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.stopping.is_set() and self.connections < self.max_connections:
            try:
                conn, _addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="hostile-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(self, conn)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def read_request(self, conn: socket.socket) -> bool:
        """Read one request head (GETs only: no body); False on EOF, stop or garbage."""
        buf = b""
        conn.settimeout(0.5)
        while b"\r\n\r\n" not in buf:
            if self.stopping.is_set() or len(buf) > 64 * 1024:
                return False
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return False
            buf += chunk
        with self._lock:
            self.requests += 1
        return True

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(2)


def inflating_body() -> bytes:
    """gzip of INFLATED_BYTES of valid JSON, compressed in 1 MiB steps (never held inflated here)."""
    head = b'{"progressValue": 5, "pad": "'
    tail = b'"}'
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    parts = [comp.compress(head)]
    spaces = b" " * MIB
    remaining = INFLATED_BYTES - len(head) - len(tail)
    while remaining > 0:
        step = min(remaining, MIB)
        parts.append(comp.compress(spaces[:step]))
        remaining -= step
    parts += [comp.compress(tail), comp.flush()]
    return b"".join(parts)


def inflating_handler(body: bytes) -> Callable[[RawServer, socket.socket], None]:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )

    def handle(server: RawServer, conn: socket.socket) -> None:
        while server.read_request(conn):
            conn.settimeout(30)  # the client may be busy inflating the previous answer
            conn.sendall(head + body)

    return handle


def dripping_handler(server: RawServer, conn: socket.socket) -> None:
    """Status line and headers at once, then one body byte a second (valid JSON once complete)."""
    body = b'{"progressValue": 5}'.ljust(DRIP_BODY_BYTES)
    while server.read_request(conn):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        started = time.monotonic()
        for i in range(len(body)):
            if server.stopping.wait(1.0) or time.monotonic() - started > SERVER_HOLD_S:
                return
            conn.sendall(body[i : i + 1])


def silent_handler(server: RawServer, conn: socket.socket) -> None:
    """Accept, read the request, never answer (hold the connection for SERVER_HOLD_S)."""
    if server.read_request(conn):
        server.stopping.wait(SERVER_HOLD_S)


# ================================================================================ child: measuring


def describe(exc: BaseException, limit: int = 120) -> str:
    return f"{type(exc).__name__}: {exc}"[:limit]


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakRss:
    """Peak RSS growth over a block: VmHWM(after) - VmRSS(before), VmHWM reset first when permitted."""

    def __enter__(self) -> PeakRss:
        import gc

        gc.collect()
        self.reset = reset_peak_rss()
        self.before_kib = proc_status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mib = (proc_status_kib("VmHWM") - self.before_kib) / 1024

    def figures(self) -> dict[str, Any]:
        return {
            "rss_growth_mib": round(self.growth_mib, 1),
            "rss_before_mib": round(self.before_kib / 1024, 1),
            "hwm_reset": self.reset,
        }


def connection_extra(timeout: tuple[float, float]) -> dict[str, Any]:
    return {"timeout": list(timeout)}


def use_connection(base_url: str, timeout: tuple[float, float]) -> None:
    """The connection for the sync hook (env var) and for triggers (SETTINGS_CACHE.lookup replaced)."""
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "content_exporter",
            "host": base_url,
            "password": API_KEY,
            "extra": connection_extra(timeout),
        }
    )
    from airflow_provider_cex.hooks.content_exporter_async import SETTINGS_CACHE
    from airflow_provider_cex.settings import settings_from_connection

    settings = settings_from_connection(CONN_ID, base_url, API_KEY, None, connection_extra(timeout))

    async def lookup(_conn_id: str) -> Any:
        return settings

    SETTINGS_CACHE.lookup = lookup
    SETTINGS_CACHE.clear()


async def first_event(trigger: Any, give_up_at: float) -> dict[str, Any]:
    """Run ``trigger.run()`` to its first event, or cancel it at ``give_up_at`` (wall clock)."""
    agen = trigger.run()

    async def step() -> Any:
        return await agen.__anext__()

    task = asyncio.ensure_future(step())
    done, _ = await asyncio.wait({task}, timeout=max(0.0, give_up_at - time.time()))
    if task not in done:
        task.cancel()
        t0 = time.monotonic()
        await asyncio.wait({task}, timeout=10)
        return {"event_at": None, "cancel_s": round(time.monotonic() - t0, 2), "cancelled": task.done()}
    at = time.time()
    out: dict[str, Any] = {"event_at": at}
    try:
        payload = task.result().payload
        out["status"] = str(payload.get("status"))
        out["message"] = str(payload.get("message", ""))[:120]
    except StopAsyncIteration:
        out["status"] = "(run() ended without an event)"
    except Exception as exc:
        out["status"] = "(run() raised)"
        out["message"] = describe(exc)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(agen.aclose(), 10)
    return out


async def with_ticker(coro: Any) -> tuple[Any, float]:
    """Await ``coro`` beside a ticker sleeping 0.01 s in a loop; also the worst gap - 0.01 s."""
    stop = asyncio.Event()
    worst = 0.0

    async def tick() -> None:
        nonlocal worst
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            worst = max(worst, now - last - 0.01)
            last = now

    ticker = asyncio.ensure_future(tick())
    try:
        result = await coro
    finally:
        stop.set()
        await ticker
    return result, worst


def make_trigger(end_time: float) -> Any:
    from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

    return ContentExporterExportTrigger(
        export_hash=EXPORT_HASH, end_time=end_time, content_exporter_conn_id=CONN_ID, poll_interval=1
    )


def run_a() -> dict[str, Any]:
    body = inflating_body()
    server = RawServer(inflating_handler(body), MAX_CONNECTIONS)
    try:
        use_connection(server.base_url, (5, 30))
        out: dict[str, Any] = {"gzip_kib": round(len(body) / 1024, 1)}
        end_time = time.time() + 20
        with PeakRss() as rss:
            t0 = time.monotonic()
            event, stall = asyncio.run(with_ticker(first_event(make_trigger(end_time), end_time + 80)))
            out["wall_s"] = round(time.monotonic() - t0, 2)
        out.update(rss.figures(), worst_stall_s=round(stall, 3), requests=server.requests)
        if event["event_at"] is None:
            out["status"] = "(no event by end_time + 80 s)"
        else:
            out.update(status=event["status"], message=event.get("message", ""))
        return out
    finally:
        server.stop()


def run_b() -> dict[str, Any]:
    body = inflating_body()
    server = RawServer(inflating_handler(body), MAX_CONNECTIONS)
    try:
        use_connection(server.base_url, (5, 30))
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

        hook = ContentExporterHook(CONN_ID)
        hook.settings  # noqa: B018  (the connection is read before the measurement)
        out: dict[str, Any] = {"gzip_kib": round(len(body) / 1024, 1)}
        with PeakRss() as rss:
            t0 = time.monotonic()
            try:
                progress = hook.get_export_progress(EXPORT_HASH)
                out["outcome"] = f"returned {progress.progress:g}%"
            except Exception as exc:
                out["outcome"] = f"raised {type(exc).__name__}"
                out["message"] = str(exc)[:120]
            out["wall_s"] = round(time.monotonic() - t0, 2)
        out.update(rss.figures(), requests=server.requests)
        return out
    finally:
        server.stop()


def run_trigger_deadline(
    handler: Callable[[RawServer, socket.socket], None], timeout: tuple[float, float]
) -> dict[str, Any]:
    server = RawServer(handler, MAX_CONNECTIONS)
    try:
        use_connection(server.base_url, timeout)
        end_time = time.time() + DEADLINE_AFTER_S
        event = asyncio.run(first_event(make_trigger(end_time), end_time + NO_EVENT_AFTER_S))
        out: dict[str, Any] = {"requests": server.requests, "connections": server.connections}
        if event["event_at"] is None:
            out["after_end_s"] = None
            out["status"] = f"no event by +{NO_EVENT_AFTER_S:g} s"
            out["cancel_s"] = event["cancel_s"]
        else:
            out["after_end_s"] = round(event["event_at"] - end_time, 2)
            out.update(status=event["status"], message=event.get("message", ""))
        return out
    finally:
        server.stop()


def run_c1() -> dict[str, Any]:
    return run_trigger_deadline(dripping_handler, (2, 3))


def run_c3() -> dict[str, Any]:
    return run_trigger_deadline(silent_handler, (2, 30))


def run_c2() -> dict[str, Any]:
    server = RawServer(dripping_handler, MAX_CONNECTIONS)
    use_connection(server.base_url, (2, 3))
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.policy import RetryPolicy

    hook = ContentExporterHook(CONN_ID, retry_policy=RetryPolicy(max_retries=0))
    hook.settings  # noqa: B018
    got: dict[str, Any] = {}
    done = threading.Event()

    def call() -> None:
        try:
            progress = hook.get_export_progress(EXPORT_HASH)
            got["outcome"] = f"returned {progress.progress:g}%"
        except Exception as exc:
            got["outcome"] = f"raised {type(exc).__name__}"
            got["message"] = str(exc)[:120]
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=call, name="c2-call", daemon=True).start()  # left running if it hangs
    if done.wait(NO_EVENT_AFTER_S):
        result = {"seconds": round(time.monotonic() - t0, 2), **got}
    else:  # (stopping the server below ends the call: what it says then is not the figure)
        result = {"seconds": None, "outcome": f"still running at {NO_EVENT_AFTER_S:g} s"}
    result["requests"] = server.requests
    server.stop()
    return result


def start_emulator(work: Path, artifact_bytes: int) -> tuple[subprocess.Popen[str], str]:
    """The tree's own emulator in its own process (PYTHONPATH inherited), SIGTERMed if this child dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def die_with_parent() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    cmd = [sys.executable, "-m", "airflow_provider_cex.emulator", "--port", "0", "--api-key", API_KEY]
    cmd += ["--export-seconds", "0", "--artifact-bytes", str(artifact_bytes), "--quiet"]
    cmd += ["--artifact-dir", str(work)]
    log = (work / "emulator.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=die_with_parent
    )
    log.close()
    assert proc.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(EMULATOR_START_S)
    prefix = "Content Exporter emulator listening on "
    if not box or not box[0].startswith(prefix):
        stop_process(proc)
        tail = (work / "emulator.log").read_text(errors="replace")[-500:]
        raise RuntimeError(f"the emulator did not start: {box[:1]!r} {tail}")
    return proc, box[0][len(prefix) :].strip()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def download_race(hooks: list[Any], export_hash: str, target: Path) -> list[tuple[str, str]]:
    """One thread per hook, released together, each downloading to ``target`` with ``overwrite=False``:
    ``("ok", sha256)``, ``("error", description)`` or ``("hung", "")`` (still running after 60 s)."""
    barrier = threading.Barrier(len(hooks))
    results: list[tuple[str, str]] = [("hung", "")] * len(hooks)

    def worker(i: int) -> None:
        try:
            barrier.wait(30)
            got = hooks[i].download_export(export_hash, target, overwrite=False)
            results[i] = ("ok", got.sha256)
        except Exception as exc:
            results[i] = ("error", describe(exc))
        finally:
            with contextlib.suppress(Exception):
                hooks[i].close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(hooks))]
    t0 = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join(max(0.0, t0 + 60 - time.monotonic()))
    return list(results)


def run_d(threads: int, rounds: int, artifact_bytes: int) -> dict[str, Any]:
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    work = Path(tempfile.mkdtemp(prefix="cex-hostile-d-"))
    emulator, base_url = start_emulator(work, artifact_bytes)
    try:
        use_connection(base_url, (10, 60))
        with ContentExporterHook(CONN_ID) as hook:
            export_hash = hook.start_export("4200001")
            deadline = time.monotonic() + 30
            while not hook.get_export_progress(export_hash).is_complete:
                if time.monotonic() > deadline:
                    raise RuntimeError("the export did not complete in 30 s")
                time.sleep(0.2)
        winners: list[int] = []
        bad_sha = 0
        errors: Counter[str] = Counter()
        examples: dict[str, str] = {}
        leftovers = hung = 0
        round_s: list[float] = []
        for r in range(rounds):
            folder = work / f"round-{r}"
            folder.mkdir()
            target = folder / "export.bin"
            hooks = [ContentExporterHook(CONN_ID) for _ in range(threads)]
            for h in hooks:
                h.settings  # noqa: B018  (read before the barrier: only the downloads race)
            t0 = time.monotonic()
            results = download_race(hooks, export_hash, target)
            round_s.append(time.monotonic() - t0)
            shas = [value for kind, value in results if kind == "ok"]
            winners.append(len(shas))
            on_disk = sha256_of(target) if target.exists() else None
            bad_sha += sum(1 for sha in shas if sha != on_disk)
            for kind, value in results:
                if kind == "error":
                    name = value.split(":", 1)[0]
                    errors[name] += 1
                    examples.setdefault(name, value)
                elif kind == "hung":
                    hung += 1
            leftovers += sum(1 for p in folder.iterdir() if p.name.endswith(".part"))
        return {
            "threads": threads,
            "artifact_bytes": artifact_bytes,
            "winners": ", ".join(map(str, winners)),
            "winners_total": sum(winners),
            "bad_sha": bad_sha,
            "errors": ", ".join(f"{name} x{n}" for name, n in errors.most_common()) or "none",
            "error_examples": list(examples.values())[:3],
            "hung": hung,
            "leftover_parts": leftovers,
            "round_s": round(max(round_s), 2),
        }
    finally:
        stop_process(emulator)
        shutil.rmtree(work, ignore_errors=True)


def child_main(name: str, args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"scenario": name}
    try:
        import airflow_provider_cex

        out["module"] = str(Path(airflow_provider_cex.__file__).resolve().parent.parent)
        if name == "d":
            out.update(run_d(args.threads, args.rounds, args.artifact_bytes))
        else:
            out.update(globals()[f"run_{name}"]())
    except BaseException as exc:  # whatever the code under test raises
        out["error"] = describe(exc, 300)
    sys.stdout.write(f"{MARKER} {json.dumps(out)}\n")
    sys.stdout.flush()
    os._exit(0)  # a hung call (c2) or a stuck server thread must not keep the child alive


# ================================================================================ parent


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM this one process (by its PID), SIGKILL it if it is still there after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Child:
    def __init__(self, name: str, tree: Path, work: Path, args: argparse.Namespace) -> None:
        self.name, self.tree = name, tree
        home = work / f"airflow-home-{name}-{abs(hash(str(tree)))}"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env.update(
            PYTHONPATH=str(tree),
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
        )
        cmd = [sys.executable, str(SCRIPT), "--child", name, "--threads", str(args.threads)]
        cmd += ["--rounds", str(args.rounds), "--artifact-bytes", str(args.artifact_bytes)]
        self.log = home / "stderr.log"
        with self.log.open("w") as err:
            # The script by path: sys.path[0] is benchmarks/, so the provider comes from PYTHONPATH only.
            self.proc = subprocess.Popen(
                cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self.started = time.monotonic()

    def result(self) -> dict[str, Any]:
        try:
            stdout, _ = self.proc.communicate(
                timeout=max(0.0, self.started + CHILD_LIMIT_S - time.monotonic())
            )
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=30)
            return {"killed": f"killed at {CHILD_LIMIT_S:g} s"}
        for line in stdout.splitlines():
            if line.startswith(MARKER):
                out: dict[str, Any] = json.loads(line[len(MARKER) :])
                if out.get("module") and Path(out["module"]) != self.tree.resolve():
                    out["error"] = f"imported the provider from {out['module']}, not {self.tree}"
                return out
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"error": f"exit {self.proc.returncode}, no result: {' | '.join(tail)[-300:]}"}

    def stop(self) -> None:
        stop_process(self.proc, grace=2)


#: Scenario -> (title, rows: (key, label, number format or None for text)).
FIGURES: dict[str, tuple[str, list[tuple[str, str, str | None]]]] = {
    "a": (
        "a) gzip bomb on progress (256 MiB inflated), trigger",
        [
            ("rss_growth_mib", "peak RSS growth, MiB", ".1f"),
            ("wall_s", "wall time to first event, s", ".2f"),
            ("worst_stall_s", "worst event-loop stall, s", ".3f"),
            ("requests", "progress requests served", "d"),
            ("status", "event status", None),
            ("message", "event message", None),
        ],
    ),
    "b": (
        "b) gzip bomb on progress, sync hook",
        [
            ("rss_growth_mib", "peak RSS growth, MiB", ".1f"),
            ("wall_s", "wall time, s", ".2f"),
            ("requests", "progress requests served", "d"),
            ("outcome", "outcome", None),
            ("message", "message", None),
        ],
    ),
    "c1": (
        "c1) dripping body (1 B/s), trigger, deadline +5 s, timeout [2, 3]",
        [
            ("after_end_s", "event, s after end_time", ".2f"),
            ("status", "event status", None),
            ("requests", "progress requests served", "d"),
            ("cancel_s", "cancelling it took, s", ".2f"),
            ("message", "event message", None),
        ],
    ),
    "c2": (
        "c2) dripping body (1 B/s), sync hook, timeout [2, 3], max_retries=0",
        [
            ("seconds", "returned/raised after, s", ".2f"),
            ("outcome", "outcome", None),
            ("requests", "progress requests served", "d"),
            ("message", "message", None),
        ],
    ),
    "c3": (
        "c3) silent server, trigger, deadline +5 s, timeout [2, 30]",
        [
            ("after_end_s", "event, s after end_time", ".2f"),
            ("status", "event status", None),
            ("requests", "requests received", "d"),
            ("cancel_s", "cancelling it took, s", ".2f"),
            ("message", "event message", None),
        ],
    ),
    "d": (
        "d) overwrite=False: threads downloading to one path at once",
        [
            ("threads", "threads per round", "d"),
            ("winners", "winners per round", None),
            ("winners_total", "winners, all rounds", "d"),
            ("bad_sha", "winners whose sha256 != the file", "d"),
            ("errors", "losers' exceptions", None),
            ("hung", "still running after 60 s", "d"),
            ("leftover_parts", "leftover .part files", "d"),
            ("round_s", "slowest round, s", ".2f"),
        ],
    ),
}
COMMON_ROWS = [("killed", "child", None), ("error", "child error", None)]
CELL = 36
LABEL = 36


def cell(value: Any, spec: str | None) -> str:
    if value is None:
        return "-"
    if spec is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        text = format(value, spec)
    else:
        text = str(value)
    return text if len(text) <= CELL else text[: CELL - 3] + "..."


def ratio(a: Any, b: Any) -> str:
    numeric = (int, float)
    if not (isinstance(a, numeric) and isinstance(b, numeric)) or isinstance(a, bool) or isinstance(b, bool):
        return ""
    if b == 0:
        return "" if a == 0 else "inf"
    value = a / b
    return "" if math.isnan(value) else f"{value:.2f}x"


def print_table(names: list[str], columns: list[tuple[str, dict[str, dict[str, Any]]]]) -> None:
    header = f"{'figure':<{LABEL}} " + " ".join(f"{title:<{CELL}}" for title, _ in columns)
    if len(columns) == 2:
        header += f" {'ratio':>7}"
    print(header)
    print("-" * len(header))
    long_texts: list[str] = []
    for name in names:
        title, rows = FIGURES[name]
        print(title)
        for key, label, spec in rows + COMMON_ROWS:
            values = [results.get(name, {}).get(key) for _, results in columns]
            if all(v is None for v in values) and (spec is None or key in ("killed", "error")):
                continue
            line = f"  {label:<{LABEL - 2}} " + " ".join(f"{cell(v, spec):<{CELL}}" for v in values)
            if len(columns) == 2:
                line += f" {ratio(*values):>7}"
            print(line.rstrip())
            for (col, _), v in zip(columns, values, strict=True):
                if v is not None and spec is None and len(str(v)) > CELL:
                    long_texts.append(f"  {name} {label} [{col}]: {v}")
        for col, results in columns:
            for example in results.get(name, {}).get("error_examples", []):
                long_texts.append(f"  {name} loser example [{col}]: {example}")
    if long_texts:
        print("\nFull texts:")
        print("\n".join(long_texts))


def describe_tree(tree: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(tree),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "airflow_provider_cex",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(tree)
    return f"{tree} @ {rev or '?'}{' + uncommitted changes' if dirty else ''}"


def run_scenarios(
    names: list[str], trees: list[Path], work: Path, args: argparse.Namespace
) -> list[dict[str, dict[str, Any]]]:
    """Results per tree; children of PARALLEL scenarios (both trees) run at once, the others one by one."""
    results: list[dict[str, dict[str, Any]]] = [{} for _ in trees]
    batches: list[list[str]] = []
    for name in names:
        if name in PARALLEL and batches and batches[-1][0] in PARALLEL:
            batches[-1].append(name)
        else:
            batches.append([name])
    for batch in batches:
        jobs = [(i, name, tree) for name in batch for i, tree in enumerate(trees)]
        if batch[0] not in PARALLEL:  # one at a time: memory and CPU figures
            for i, name, tree in jobs:
                print(f"  {name} on {tree} ...", flush=True)
                child = Child(name, tree, work, args)
                try:
                    results[i][name] = child.result()
                finally:
                    child.stop()
            continue
        print(f"  {', '.join(batch)} on {', '.join(map(str, trees))} (at once) ...", flush=True)
        children: list[tuple[int, Child]] = []
        try:
            for i, name, tree in jobs:
                children.append((i, Child(name, tree, work, args)))
            for i, child in children:
                results[i][child.name] = child.result()
        finally:
            for _, child in children:
                child.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree under test (default: this repo)")
    parser.add_argument("--reference", type=Path, help="a second source tree, run beside it")
    parser.add_argument("--scenarios", default="a,b,c,d", help="comma-separated: a, b, c (= c1,c2,c3), c1, d")
    parser.add_argument("--threads", type=int, default=200, help="d: concurrent downloads per round (200)")
    parser.add_argument("--rounds", type=int, default=5, help="d: rounds (5)")
    parser.add_argument("--artifact-bytes", type=int, default=MIB, help="d: size of the export (1 MiB)")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args)
    names: list[str] = []
    for part in (p.strip() for p in args.scenarios.split(",") if p.strip()):
        if part not in GROUPS and part not in SCENARIOS:
            parser.error(f"unknown scenario {part!r}; choose from a, b, c, c1, c2, c3, d")
        names += [n for n in GROUPS.get(part, [part]) if n not in names]
    trees = [args.tree.resolve()] + ([args.reference.resolve()] if args.reference else [])
    for tree in trees:
        if not (tree / "airflow_provider_cex" / "__init__.py").is_file():
            parser.error(f"{tree} has no airflow_provider_cex package")
    if args.threads < 1 or args.rounds < 1 or args.artifact_bytes < 1:
        parser.error("--threads, --rounds and --artifact-bytes must be >= 1")

    print(
        f"hostile service benchmark: scenarios {', '.join(names)}; each child bounded at {CHILD_LIMIT_S:g} s"
    )
    for label, tree in zip(("tree", "reference"), trees, strict=False):
        print(f"  {label}: {describe_tree(tree)}")
    work = Path(tempfile.mkdtemp(prefix="cex-hostile-"))
    started = time.monotonic()
    try:
        results = run_scenarios(names, trees, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    columns = [("tree", results[0])] + ([("reference", results[1])] if len(trees) == 2 else [])
    print_table(names, columns)
    resets = {r[n]["hwm_reset"] for r in results for n in ("a", "b") if "hwm_reset" in r.get(n, {})}
    print(
        f"\nPeak RSS growth = VmHWM after - VmRSS before, VmHWM "
        f"{'reset via /proc/self/clear_refs' if resets != {False} else 'NOT resettable here'}; "
        f"d: {args.threads} threads, {args.rounds} rounds, a {args.artifact_bytes}-byte export from the "
        f"tree's emulator. Total wall time {time.monotonic() - started:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark of the deferrable sensor's trigger: 1,000 ``ContentExporterExportTrigger.run()`` coroutines
in one event loop (as the triggerer runs them) against the emulator, beside the http provider's
``HttpAsyncHook.run`` polling the same exports the way its triggers do (a new aiohttp session per poll), and
beside a floor: a bare aiohttp loop with one kept session per trigger, doing only what a poll needs.

Design:

- The emulator runs in its own process (``python -m airflow_provider_cex.emulator``), a fresh one per phase,
  with ``--export-seconds 0 --export-seconds-spread SPREAD``: an export of page ``p`` completes after
  ``spread_fraction(p) * SPREAD`` seconds, uniform over [0, SPREAD). Both phases use the same page ids, so
  both see the same completion schedule; every ``--fail-every``-th page fails (halfway through its time) to
  check the ``failed`` outcome too.
- Each client runs in its own fresh subprocess, so CPU (``getrusage(RUSAGE_SELF)`` user + sys, all threads)
  and peak RSS (``ru_maxrss``) are that client's alone. It imports its stack, reports ready, then the driver
  starts the phase's exports (concurrently, over aiohttp) and hands it the hashes; it runs one coroutine per
  export in one ``asyncio`` loop until each has fired, or the phase deadline passes.
- The floor (issue 22) is the least a poll costs in this stack: per export one ``aiohttp.ClientSession``,
  kept for all its polls; each poll a GET of the progress URL with the key header, the body read and
  ``json.loads``-ed, ``progressValue`` (and ``status`` FAILED, so the failing exports stop as in the other
  phases) checked. No retries, no redirects, no policy. The trigger's loop CPU per poll is judged against it.
- Polls are counted by the emulator (``GET /_emulator/counts``, progress requests during the phase);
  detection lag is the event's wall time minus the export's completion time from ``GET /_emulator/exports``.

Run ``python benchmarks/trigger_scale.py`` (about 4 minutes; ``--clients ours,floor`` about 2.5) or a
smoke run with ``--exports 50 --spread 5 --interval 1``. Exit status 0, or with ``--check`` 1 when a target
is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: A realistic 40-character key (Airflow masks secrets of 5 characters or more).
API_KEY = "cexk_7d2e9f4a1b8c3d6e5f0a9b2c7d4e1f8a3b6c"
OURS_CONN_ID = "content_exporter_default"
REF_CONN_ID = "cex_http"
PAGE_BASE = 4_200_000
API_KEY_HEADER = "CEX-API-KEY"
START_PATH = "/api/remoteExport/{page_id}/init"
PROGRESS_PATH = "/api/remoteExport/{export_hash}/progress"

OURS, REF, FLOOR = "ours", "ref", "floor"
CLIENTS = (OURS, REF, FLOOR)
CLIENT_LABELS = {
    OURS: "ours: ContentExporterExportTrigger",
    REF: "ref: HttpAsyncHook.run",
    FLOOR: "floor: bare aiohttp, kept session",
}

TARGET_LAG_OVER_INTERVAL_S = 1.0
TARGET_CPU_RATIO = 0.4
#: The trigger's polling loop may cost at most this many times the floor's, per poll (issue 22).
TARGET_FLOOR_RATIO = 1.3
TARGET_RSS_MIB = 300.0

READY_TIMEOUT_S = 180.0
EMULATOR_START_TIMEOUT_S = 30.0
CHILD_GRACE_S = 5.0
DRIVER_GRACE_S = 30.0


# ---------------------------------------------------------------------------------------------- child side


def raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: 1,000 clients need 1,000+ sockets (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _ours_one(export_hash: str, end_time: float, interval: float, out: dict[str, Any]) -> None:
    from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

    trigger = ContentExporterExportTrigger(
        export_hash, end_time=end_time, content_exporter_conn_id=OURS_CONN_ID, poll_interval=interval
    )
    events = out.setdefault(export_hash, [])
    async for event in trigger.run():  # iterated to the end, so a second event would be seen
        events.append({"at": time.time(), "status": event.payload.get("status"), "payload": event.payload})


async def _ref_one(
    export_hash: str, end_time: float, interval: float, out: dict[str, Any], polls: dict[str, int]
) -> None:
    """Poll like the http provider's triggers: one hook per trigger, a new aiohttp session at every poll."""
    import aiohttp
    from airflow.providers.http.hooks.http import HttpAsyncHook

    hook = HttpAsyncHook(method="GET", http_conn_id=REF_CONN_ID)
    endpoint = PROGRESS_PATH.format(export_hash=export_hash)
    headers = {API_KEY_HEADER: API_KEY}
    events = out.setdefault(export_hash, [])

    def fire(status: str, **payload: Any) -> None:
        events.append({"at": time.time(), "status": status, "payload": {"status": status, **payload}})

    while True:
        polls[export_hash] = polls.get(export_hash, 0) + 1
        data: Any = None
        try:
            # As HttpTrigger._get_response / HttpSensorTrigger.run: a session per poll, the body read inside.
            async with aiohttp.ClientSession() as session:
                response = await hook.run(session=session, endpoint=endpoint, headers=headers)
                data = await response.json()
        except Exception as err:
            if time.time() >= end_time:
                fire("error", message=f"{type(err).__name__}: {err}")
                return
        if isinstance(data, dict):
            if data.get("status") == "FAILED":
                fire("failed", message=data.get("errorMessage"), progress=data.get("progressValue"))
                return
            if float(data.get("progressValue", 0)) >= 100:
                fire("success", progress=data.get("progressValue"))
                return
        remaining = end_time - time.time()
        if remaining <= 0:
            fire("timeout")
            return
        await asyncio.sleep(min(interval, remaining))


async def _floor_one(
    base_url: str,
    export_hash: str,
    end_time: float,
    interval: float,
    out: dict[str, Any],
    polls: dict[str, int],
) -> None:
    """The floor: one session kept per trigger, a poll a bare GET + ``json.loads``; no retries, no policy."""
    import aiohttp

    url = base_url + PROGRESS_PATH.format(export_hash=export_hash)
    headers = {API_KEY_HEADER: API_KEY}
    events = out.setdefault(export_hash, [])

    def fire(status: str, **payload: Any) -> None:
        events.append({"at": time.time(), "status": status, "payload": {"status": status, **payload}})

    async with aiohttp.ClientSession() as session:  # created once, reused for every poll of this export
        while True:
            polls[export_hash] = polls.get(export_hash, 0) + 1
            data: Any = None
            try:
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    data = json.loads(await response.read())
            except Exception as err:
                if time.time() >= end_time:
                    fire("error", message=f"{type(err).__name__}: {err}")
                    return
            if isinstance(data, dict):
                if data.get("status") == "FAILED":  # else a failing export would poll on to the deadline
                    fire("failed", message=data.get("errorMessage"), progress=data.get("progressValue"))
                    return
                if data.get("progressValue", 0) >= 100:
                    fire("success", progress=data.get("progressValue"))
                    return
            remaining = end_time - time.time()
            if remaining <= 0:
                fire("timeout")
                return
            await asyncio.sleep(min(interval, remaining))


async def _run_clients(
    client: str, hashes: list[str], end_time: float, interval: float, base_url: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    polls: dict[str, int] = {}
    exceptions: list[str] = []
    if client == OURS:
        coros = [_ours_one(h, end_time, interval, out) for h in hashes]
    elif client == FLOOR:
        coros = [_floor_one(base_url, h, end_time, interval, out, polls) for h in hashes]
    else:
        coros = [_ref_one(h, end_time, interval, out, polls) for h in hashes]
    tasks = [asyncio.ensure_future(c) for c in coros]
    hard_stop = max(0.0, end_time + CHILD_GRACE_S - time.time())
    _done, pending = await asyncio.wait(tasks, timeout=hard_stop)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            exceptions.append(f"{type(result).__name__}: {result}"[:300])
    return {
        "events": out,
        "client_polls": sum(polls.values()) if client != OURS else None,
        "cancelled": len(pending),
        "exceptions": exceptions,
    }


def child_main(client: str, ready_fd: int, result_path: str) -> int:
    """One client process: import, report ready, read the work from stdin, run it, write the figures."""
    raise_open_file_limit()
    if client == OURS:
        import airflow_provider_cex.triggers.content_exporter  # noqa: F401
    else:
        import aiohttp  # noqa: F401

        if client == REF:
            import airflow.providers.http.hooks.http  # noqa: F401
    cpu_ready = cpu_seconds()
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    work = json.loads(sys.stdin.readline())
    cpu_go, wall_go = cpu_seconds(), time.time()
    outcome = asyncio.run(
        _run_clients(
            client, work["hashes"], float(work["end_time"]), float(work["interval"]), work["base_url"]
        )
    )
    cpu_end, wall_end = cpu_seconds(), time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcome.update(
        cpu_setup=cpu_ready,
        cpu_loop=cpu_end - cpu_go,
        cpu_total=cpu_end,
        wall_loop=wall_end - wall_go,
        maxrss_mib=usage.ru_maxrss / 1024.0,  # KiB on Linux
    )
    Path(result_path).write_text(json.dumps(outcome))
    return 0


# ---------------------------------------------------------------------------------------------- driver side


@dataclass
class PhaseResult:
    client: str
    exports: int
    expected_failed: int = 0
    fired_ok: int = 0
    not_fired: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    multiple: list[str] = field(default_factory=list)
    polls: int = 0
    client_polls: int | None = None
    cpu_setup: float = math.nan
    cpu_loop: float = math.nan
    cpu_total: float = math.nan
    wall_loop: float = math.nan
    maxrss_mib: float = math.nan
    lags: list[float] = field(default_factory=list)
    emulator_cpu: float = math.nan
    start_seconds: float = math.nan
    log_lines: int = 0
    exceptions: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def cpu_ms_per_poll(self) -> float:
        return 1000 * self.cpu_total / self.polls if self.polls else math.nan

    @property
    def loop_ms_per_poll(self) -> float:
        return 1000 * self.cpu_loop / self.polls if self.polls else math.nan

    def lag(self, q: float) -> float:
        return percentile(self.lags, q)

    @property
    def all_ok(self) -> bool:
        return self.error is None and self.fired_ok == self.exports


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def child_env(tmp: Path, base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("AIRFLOW_CONN_"):
            del env[key]
    env["AIRFLOW_HOME"] = str(tmp / "airflow_home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # Cached bytecode in a private cache (filled by the warm-up), as a long-running triggerer has it;
    # otherwise the setup CPU of whichever client runs first mostly measures the compiler.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    env["AIRFLOW_CONN_" + OURS_CONN_ID.upper()] = json.dumps(
        {"conn_type": "content_exporter", "host": base_url, "password": API_KEY}
    )
    env["AIRFLOW_CONN_" + REF_CONN_ID.upper()] = base_url
    return env


def warm_up(env: dict[str, str]) -> None:
    code = "import aiohttp, airflow.providers.http.hooks.http, airflow_provider_cex.triggers.content_exporter"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=READY_TIMEOUT_S)


def start_emulator(
    tmp: Path, spread: float, failing: list[str], log_path: Path
) -> tuple[subprocess.Popen[str], str]:
    env = child_env(tmp, "http://127.0.0.1:1")
    args = [
        sys.executable,
        "-m",
        "airflow_provider_cex.emulator",
        "--port",
        "0",
        "--api-key",
        API_KEY,
        "--export-seconds",
        "0",
        "--export-seconds-spread",
        str(spread),
        "--quiet",
    ]
    if failing:
        args += ["--fail-page", *failing]
    with log_path.open("w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], EMULATOR_START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    prefix = "Content Exporter emulator listening on "
    if not line.startswith(prefix):
        stop_process(proc)
        raise RuntimeError(f"the emulator did not start: {line!r}; see {log_path}")
    return proc, line[len(prefix) :].strip()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM this one process (by its PID), then SIGKILL if it does not exit."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        except ProcessLookupError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def process_cpu_seconds(pid: int) -> float:
    """user + sys CPU of another process from /proc (NaN where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _get_json(base_url: str, path: str) -> Any:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url + path, timeout=aiohttp.ClientTimeout(total=30)) as resp,
    ):
        resp.raise_for_status()
        return await resp.json()


def get_json(base_url: str, path: str) -> Any:
    return asyncio.run(_get_json(base_url, path))


async def _start_exports(base_url: str, page_ids: list[str]) -> list[str]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=100)
    headers = {API_KEY_HEADER: API_KEY}
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(page_id: str) -> str:
            url = base_url + START_PATH.format(page_id=page_id)
            async with session.post(url, json={"rootContentId": page_id}, headers=headers) as resp:
                resp.raise_for_status()
                return str((await resp.json())["hash"])

        return list(await asyncio.gather(*(one(p) for p in page_ids)))


def run_phase(
    client: str, args: argparse.Namespace, tmp: Path, page_ids: list[str], failing: list[str]
) -> PhaseResult:
    result = PhaseResult(client=client, exports=len(page_ids), expected_failed=len(failing))
    emulator, base_url = start_emulator(tmp, args.spread, failing, tmp / f"emulator-{client}.log")
    child: subprocess.Popen[str] | None = None
    child_log = tmp / f"client-{client}.log"
    result_path = tmp / f"client-{client}.json"
    try:
        env = child_env(tmp, base_url)
        ready_r, ready_w = os.pipe()
        with child_log.open("w") as log:
            child = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    client,
                    "--ready-fd",
                    str(ready_w),
                    "--result",
                    str(result_path),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=(ready_w,),
            )
        os.close(ready_w)
        try:
            ready, _, _ = select.select([ready_r], [], [], READY_TIMEOUT_S)
            if not ready or os.read(ready_r, 16) != b"ready\n":
                raise RuntimeError(f"the {client} client did not get ready; see {child_log}")
        finally:
            os.close(ready_r)

        counts_before = get_json(base_url, "/_emulator/counts")
        emulator_cpu_before = process_cpu_seconds(emulator.pid)
        phase_start = time.time()
        hashes = asyncio.run(_start_exports(base_url, page_ids))
        result.start_seconds = time.time() - phase_start
        end_time = phase_start + args.spread + args.interval + args.slack
        assert child.stdin is not None
        child.stdin.write(
            json.dumps(
                {"hashes": hashes, "end_time": end_time, "interval": args.interval, "base_url": base_url}
            )
            + "\n"
        )
        child.stdin.close()
        child.stdin = None
        try:
            child.wait(timeout=max(1.0, end_time + DRIVER_GRACE_S - time.time()))
        except subprocess.TimeoutExpired:
            stop_process(child)
            result.error = "the client process missed the hard deadline and was stopped"
        emulator_cpu_after = process_cpu_seconds(emulator.pid)
        counts_after = get_json(base_url, "/_emulator/counts")
        timeline: dict[str, dict[str, Any]] = get_json(base_url, "/_emulator/exports")
    finally:
        if child is not None:
            stop_process(child)
        stop_process(emulator)

    result.emulator_cpu = emulator_cpu_after - emulator_cpu_before
    result.polls = counts_after["export_progress"] - counts_before["export_progress"]
    result.log_lines = sum(1 for _ in child_log.open(errors="replace"))
    if child.returncode != 0 or not result_path.exists():
        result.error = result.error or f"the {client} client exited with {child.returncode}; see {child_log}"
        tail = child_log.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(f"    {line}" for line in tail), file=sys.stderr)
        result.not_fired = list(hashes)
        return result

    data = json.loads(result_path.read_text())
    for key in ("cpu_setup", "cpu_loop", "cpu_total", "wall_loop", "maxrss_mib", "client_polls"):
        setattr(result, key, data[key])
    result.exceptions = data["exceptions"]
    events: dict[str, list[dict[str, Any]]] = data["events"]
    for export_hash in hashes:
        info = timeline[export_hash]
        expected = "success" if info["done_at"] is not None else "failed"
        fired = events.get(export_hash, [])
        if not fired:
            result.not_fired.append(export_hash)
            continue
        if len(fired) > 1:
            result.multiple.append(export_hash)
        first = fired[0]
        if first["status"] != expected or first["payload"].get("export_hash", export_hash) != export_hash:
            result.wrong.append(f"{export_hash}: expected {expected}, got {first['payload']}")
        elif len(fired) == 1:
            result.fired_ok += 1
        if expected == "success":
            result.lags.append(first["at"] - info["done_at"])
    return result


def fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def report(results: dict[str, PhaseResult], args: argparse.Namespace) -> bool:
    header = (
        f"{'client':<36} {'exports':>7} {'fired ok':>8} {'polls':>6} {'CPU s':>7} {'CPU ms/poll':>11} "
        f"{'peak RSS MiB':>12}  {'lag p50/p99/max s':>19}"
    )
    print()
    print(header)
    print("-" * len(header))
    for res in results.values():
        lags = f"{fmt(res.lag(0.5))}/{fmt(res.lag(0.99))}/{fmt(max(res.lags) if res.lags else math.nan)}"
        print(
            f"{CLIENT_LABELS[res.client]:<36} {res.exports:>7} {res.fired_ok:>8} {res.polls:>6} "
            f"{fmt(res.cpu_total):>7} {fmt(res.cpu_ms_per_poll, '.3f'):>11} "
            f"{fmt(res.maxrss_mib, '.1f'):>12}  {lags:>19}"
        )
    print()
    print("Details:")
    for res in results.values():
        print(f"  {CLIENT_LABELS[res.client]}")
        print(
            f"    CPU: setup (interpreter + imports, before the loop) {fmt(res.cpu_setup)} s, "
            f"loop {fmt(res.cpu_loop)} s = {fmt(res.loop_ms_per_poll, '.3f')} ms/poll; loop wall "
            f"{fmt(res.wall_loop, '.1f')} s"
        )
        per_export = res.polls / res.exports if res.exports else math.nan
        client_polls = f" (client counted {res.client_polls})" if res.client_polls is not None else ""
        print(
            f"    polls: {res.polls} = {fmt(per_export)} per export{client_polls}; emulator CPU in the phase "
            f"{fmt(res.emulator_cpu)} s; {res.exports} exports started in {fmt(res.start_seconds)} s"
        )
        print(
            f"    outcomes: {res.fired_ok}/{res.exports} fired exactly once as expected "
            f"({res.expected_failed} expected 'failed'); not fired {len(res.not_fired)}, wrong outcome "
            f"{len(res.wrong)}, fired more than once {len(res.multiple)}; min lag "
            f"{fmt(min(res.lags) if res.lags else math.nan, '.3f')} s; client log lines {res.log_lines}"
        )
        for line in res.wrong[:3] + res.exceptions[:3]:
            print(f"      {line[:200]}")
        if res.error:
            print(f"    ERROR: {res.error}")

    ours, ref, floor = results.get(OURS), results.get(REF), results.get(FLOOR)
    checks: list[tuple[str, bool]] = []
    print()
    if ours is not None:
        checks.append(("every trigger fires exactly once with the right outcome", ours.all_ok))
        lag_limit = args.interval + TARGET_LAG_OVER_INTERVAL_S
        checks.append(
            (
                f"detection lag p99 {fmt(ours.lag(0.99))} s <= poll interval + 1 s = {lag_limit:g} s",
                ours.lag(0.99) <= lag_limit,
            ),
        )
        checks.append(
            (
                f"peak RSS {fmt(ours.maxrss_mib, '.1f')} MiB < {TARGET_RSS_MIB:g} MiB "
                f"for {ours.exports} triggers",
                ours.maxrss_mib < TARGET_RSS_MIB,
            ),
        )
    if ours is not None and ref is not None:
        ratio = ours.cpu_ms_per_poll / ref.cpu_ms_per_poll if ref.cpu_ms_per_poll else math.nan
        loop_ratio = ours.loop_ms_per_poll / ref.loop_ms_per_poll if ref.loop_ms_per_poll else math.nan
        print(
            f"CPU per poll, ours / reference: {fmt(ratio, '.3f')} "
            f"({fmt(ours.cpu_ms_per_poll, '.3f')} / {fmt(ref.cpu_ms_per_poll, '.3f')} ms, whole process); "
            f"loop only: {fmt(loop_ratio, '.3f')} "
            f"({fmt(ours.loop_ms_per_poll, '.3f')} / {fmt(ref.loop_ms_per_poll, '.3f')} ms)"
        )
        # Judged on the polling loop: interpreter start and imports (Airflow itself, ~2.3 s for both
        # clients here) are paid once per triggerer process, whatever it runs, and the issue's own
        # reference figures (0.22 vs 0.73 ms per poll) are loop figures. The whole-process ratio is
        # printed above, and the setup CPU of each client in the details.
        checks.append(
            (
                f"CPU per poll (polling loop) {fmt(loop_ratio, '.3f')} x the reference's <= "
                f"{TARGET_CPU_RATIO:g} (whole process, setup included: {fmt(ratio, '.3f')})",
                loop_ratio <= TARGET_CPU_RATIO,
            ),
        )
    if ours is not None and floor is not None:
        floor_ratio = ours.loop_ms_per_poll / floor.loop_ms_per_poll if floor.loop_ms_per_poll else math.nan
        floor_ok = floor_ratio <= TARGET_FLOOR_RATIO
        print(
            f"CPU per poll (polling loop), ours / floor: {fmt(floor_ratio, '.3f')} "
            f"({fmt(ours.loop_ms_per_poll, '.3f')} / {fmt(floor.loop_ms_per_poll, '.3f')} ms); "
            f"target <= {TARGET_FLOOR_RATIO:g}x floor: {'PASS' if floor_ok else 'MISS'}"
        )
        # Loop only: the floor imports aiohttp alone, so a whole-process ratio would mostly measure Airflow's
        # import. The floor's own outcomes must be right too, or its polls are not the same work.
        checks.append(
            (
                f"CPU per poll (polling loop) {fmt(floor_ratio, '.3f')} x the floor's <= "
                f"{TARGET_FLOOR_RATIO:g} (floor: every trigger fired once as expected: {floor.all_ok})",
                floor_ok,
            ),
        )
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


def print_method(args: argparse.Namespace, n_failing: int) -> None:
    print(
        f"""How it was measured:
  - emulator: its own process, a fresh one per phase, --export-seconds 0
    --export-seconds-spread {args.spread:g}: each export completes spread_fraction(page id) x
    {args.spread:g} s after its start (uniform, deterministic by page id; both phases use the same
    {args.exports} page ids, {n_failing} of them failing halfway).
  - each client in its own fresh process (bytecode cached by a warm-up run); it imports its stack, reports
    ready, then the driver starts the {args.exports} exports concurrently and hands it the hashes; it runs one
    coroutine per export in one asyncio loop, poll interval {args.interval:g} s, deadline = phase start +
    {args.spread:g} + {args.interval:g} + {args.slack:g} s.
  - ours: ContentExporterExportTrigger.run() iterated to its end (a second event would be counted).
    ref: one HttpAsyncHook per export; each poll opens a new aiohttp.ClientSession and calls
    hook.run(session=..., endpoint=progress, headers=key), reads the JSON (as the http provider's
    HttpTrigger/HttpSensorTrigger do), then asyncio.sleep(interval) until progressValue >= 100 or FAILED.
    floor: one aiohttp.ClientSession per export, kept for all its polls; each poll session.get(progress,
    headers=key, allow_redirects=False), json.loads(await response.read()), then the same checks and
    asyncio.sleep(interval); no retries, redirects, timeouts or policy.
  - CPU s = getrusage(RUSAGE_SELF) user+sys of the client process, whole life (setup included);
    CPU ms/poll = CPU s / polls, polls = progress requests the emulator received during the phase.
    The targets are judged on the polling loop's CPU per poll (setup excluded: a triggerer imports once).
  - peak RSS = ru_maxrss of the client process. Lag = event wall time - done_at from GET /_emulator/exports
    (both time.time() on this host), over the exports that succeed."""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--exports", type=int, default=1000, help="exports (and triggers) per phase (1000)")
    parser.add_argument("--spread", type=float, default=60.0, help="completion times spread over S s (60)")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval in seconds (5)")
    parser.add_argument(
        "--slack", type=float, default=30.0, help="deadline slack after spread + interval (30)"
    )
    parser.add_argument(
        "--fail-every", type=int, default=50, help="every Nth page fails (default 50, 2%%; 0: none fail)"
    )
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated phases, in order, of {', '.join(CLIENTS)} (default {','.join(CLIENTS)})",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (client and emulator logs)")
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.ready_fd, args.result)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not clients or any(c not in CLIENTS for c in clients):
        parser.error(f"--clients takes one or more of {', '.join(CLIENTS)}")
    if args.exports < 1 or args.spread < 0 or args.interval <= 0 or args.slack < 0 or args.fail_every < 0:
        parser.error("--exports >= 1, --spread >= 0, --interval > 0, --slack >= 0, --fail-every >= 0")

    raise_open_file_limit()
    page_ids = [str(PAGE_BASE + i) for i in range(args.exports)]
    failing = [p for i, p in enumerate(page_ids) if args.fail_every and (i + 1) % args.fail_every == 0]
    load_before = os.getloadavg()
    print(
        f"trigger scale benchmark: {args.exports} exports per phase, completions spread over "
        f"{args.spread:g} s, poll interval {args.interval:g} s, phases: {', '.join(clients)}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="cex-trigger-scale-"))
    results: dict[str, PhaseResult] = {}
    started = time.monotonic()
    try:
        warm_up(child_env(tmp, "http://127.0.0.1:1"))
        for client in clients:
            t0 = time.monotonic()
            print(f"  phase {client}: running ...", flush=True)
            results[client] = run_phase(client, args, tmp, page_ids, failing)
            print(f"  phase {client}: done in {time.monotonic() - t0:.1f} s", flush=True)
        print_method(args, len(failing))
        ok = report(results, args)
        load_after = os.getloadavg()
        print(
            f"\ntotal wall time {time.monotonic() - started:.1f} s; host: {os.cpu_count()} CPUs, 1-min load "
            f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after (lag and poll counts are "
            "sensitive to other load on the host; CPU seconds much less so)"
        )
    finally:
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

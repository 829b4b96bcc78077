"""Measure ``ContentExporterHook.download_export`` (sha256 on) against ``curl -o`` and ``cp`` on a large
emulator artifact, alternating the three, and the hook's peak RSS at the large size versus a 10 MiB one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
MB = 1_000_000
CONN_ENV = "AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"
PAGE_ID = "424242"
#: The child prefixes its protocol lines with this (Airflow logging may share stdout).
MARKER = "@@cex-download-bench@@"
EMULATOR_START_TIMEOUT_S = 180
LEG_TIMEOUT_S = 300

TARGET_VS_CURL = 0.75
TARGET_VS_CP = 1.6
TARGET_RSS_GROWTH_MIB = 32.0


# --------------------------------------------------------------------------- child: leg (a)


def child_main(export_hash: str, destination: str) -> int:
    """Run in a fresh interpreter: import and set up, say ready, wait for "go", time one download."""
    t_start = time.perf_counter()
    if str(ROOT) not in sys.path:  # run as a script, sys.path[0] is benchmarks/, not the project
        sys.path.insert(0, str(ROOT))
    from airflow_provider_cex.hooks import content_exporter
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    t_imported = time.perf_counter()
    hook = ContentExporterHook()
    _ = hook.settings  # reads the connection (env var) and registers the key with the masker
    t_ready = time.perf_counter()
    print(f"{MARKER} ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 3
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = hook.download_export(export_hash, destination, overwrite=True)
    t1 = time.perf_counter()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    hook.close()
    source = Path(content_exporter.__file__).read_bytes()
    report = {
        "import_s": t_imported - t_start,
        "setup_s": t_ready - t_imported,
        "download_s": t1 - t0,
        "user_s": usage_after.ru_utime - usage_before.ru_utime,
        "sys_s": usage_after.ru_stime - usage_before.ru_stime,
        "rss_before_kib": usage_before.ru_maxrss,
        "peak_rss_kib": usage_after.ru_maxrss,
        "size": result.size_bytes,
        "sha256": result.sha256,
        "hook_source_sha256": hashlib.sha256(source).hexdigest(),
    }
    print(f"{MARKER} result {json.dumps(report)}", flush=True)
    return 0


# --------------------------------------------------------------------------- parent


@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    size: int
    base_url: str = ""
    artifact: Path = field(default_factory=Path)
    sha256: str = ""


@dataclass
class Leg:
    """One timed run of a leg: wall seconds and the CPU (user + sys) its process spent on it."""

    seconds: float
    cpu_s: float
    child: dict[str, Any] | None = None  # leg (a): what the child reported


@dataclass
class LegResults:
    label: str
    size: int
    runs: list[Leg] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def children(self) -> list[dict[str, Any]]:
        return [r.child for r in self.runs if r.child is not None]

    def median(self) -> float:
        return statistics.median(self.seconds)

    def mb_per_s(self) -> float:
        return self.size / self.median() / MB


class KeptFile:
    """The previous large leg's output, deleted just before the next large leg starts.

    Deleting it right before (not right after) its own leg gives every large leg about 1 GiB of just-freed
    page cache to reuse, whatever ran in between (the hook child's imports, the small leg): on this VM
    (virtio-balloon free page reporting on) memory left free for a few seconds was seen to be slower to
    write into again. ``--settle`` instead waits between the deletion and the start.
    """

    def __init__(self) -> None:
        self.path: Path | None = None

    def replace(self, path: Path) -> None:
        self.drop()
        self.path = path

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(MIB)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def start_emulator(api_key: str, size: int, work: Path, name: str, started: list[Emulator]) -> Emulator:
    """Start an emulator process; it is appended to ``started`` at once, so the caller can always stop it."""
    artifact_dir = work / f"artifact-{name}"
    artifact_dir.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_cex.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        api_key,
        "--export-seconds",
        "0",
        "--artifact-bytes",
        str(size),
        "--artifact-dir",
        str(artifact_dir),
        "--quiet",
    ]
    log = work / f"emulator-{name}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    emulator = Emulator(proc=proc, size=size)
    started.append(emulator)
    lines = LineReader(proc)
    line = lines.get(EMULATOR_START_TIMEOUT_S)
    prefix = "Content Exporter emulator listening on "
    if line is None or not line.startswith(prefix):
        raise RuntimeError(f"the {name} emulator did not start: {line!r}\n{log.read_text()[-2000:]}")
    emulator.base_url = line[len(prefix) :].strip()
    found = list(artifact_dir.glob(f"cex-emulator-*/export-{size}.bin"))
    if len(found) != 1 or found[0].stat().st_size != size:
        raise RuntimeError(f"expected one {size}-byte artifact under {artifact_dir}, found {found}")
    emulator.artifact = found[0]
    emulator.sha256 = sha256_of(emulator.artifact)
    return emulator


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class LineReader:
    """Lines of a child's stdout, read on a daemon thread so the caller can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        stream = proc.stdout
        if stream is None:
            raise ValueError("the process has no stdout pipe")

        def pump() -> None:
            for line in stream:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, name="bench-stdout", daemon=True).start()

    def get(self, timeout: float) -> str | None:
        """The next line (None at EOF); raises ``TimeoutError`` when none came in time."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output within {timeout} s") from None
        if line is not None:
            self.seen.append(line)
        return line

    def marker(self, kind: str, timeout: float) -> str:
        """Skip ordinary output up to the child's ``MARKER kind`` line; return what follows ``kind``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.get(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"the child exited before '{kind}':\n{''.join(self.seen)[-2000:]}")
            if line.startswith(f"{MARKER} {kind}"):
                return line[len(MARKER) + len(kind) + 1 :].strip()


def start_export(emulator: Emulator, api_key: str) -> str:
    request = urllib.request.Request(
        f"{emulator.base_url}/api/remoteExport/{PAGE_ID}/init",
        data=json.dumps({"rootContentId": PAGE_ID}).encode(),
        headers={"CEX-API-KEY": api_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.load(resp)["hash"])


def child_env(work: Path, base_url: str, api_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(work / "airflow_home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env[CONN_ENV] = json.dumps({"conn_type": "content_exporter", "host": base_url, "password": api_key})
    # A private bytecode cache (inside the work dir, filled by the warm-up round): without it, with
    # PYTHONDONTWRITEBYTECODE and no __pycache__ in the venv, every child compiles Airflow from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def check_no_part_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".part")]
    if leftovers:
        raise RuntimeError(f"the hook left temporary files in {folder}: {leftovers}")


def run_hook_leg(
    emulator: Emulator,
    export_hash: str,
    dest: Path,
    env: dict[str, str],
    before_start: Callable[[], None],
    stderr_log: Path,
) -> Leg:
    """Leg (a): a fresh child process; ``before_start`` runs once it is imported and ready."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", export_hash, str(dest)]
    with stderr_log.open("w+") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            lines = LineReader(proc)
            try:
                lines.marker("ready", LEG_TIMEOUT_S)
                before_start()
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                data: dict[str, Any] = json.loads(lines.marker("result", LEG_TIMEOUT_S))
            except (RuntimeError, TimeoutError) as exc:
                err.seek(0)
                raise RuntimeError(f"hook child failed: {exc}\n{err.read()[-3000:]}") from None
            proc.wait(timeout=60)
        finally:
            stop_process(proc)
    on_disk = dest.stat().st_size
    if data["size"] != emulator.size or on_disk != emulator.size:
        raise RuntimeError(f"hook wrote {data['size']} bytes ({on_disk} on disk), expected {emulator.size}")
    if data["sha256"] != emulator.sha256:
        raise RuntimeError(f"hook sha256 {data['sha256']} != artifact sha256 {emulator.sha256}")
    check_no_part_files(dest.parent)
    return Leg(seconds=data["download_s"], cpu_s=data["user_s"] + data["sys_s"], child=data)


def run_command_leg(cmd: list[str], dest: Path, expected_size: int, before_start: Callable[[], None]) -> Leg:
    """Legs (b) and (c): wall time around the process, CPU from RUSAGE_CHILDREN."""
    before_start()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LEG_TIMEOUT_S, check=False)
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    size = dest.stat().st_size
    if size != expected_size:
        raise RuntimeError(f"{cmd[0]} wrote {size} bytes, expected {expected_size}")
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return Leg(seconds=wall, cpu_s=cpu)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Make SIGTERM unwind the stack like Ctrl-C does, so the ``finally`` clean-up runs."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fmt_mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def size_label(size: int) -> str:
    return f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / MIB:g} MiB"


def curl_version() -> str:
    try:
        out = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "curl ?"
    return " ".join(out.split()[:2])


def print_report(
    args: argparse.Namespace, legs: list[LegResults], big: Emulator, small: Emulator, load_start: float
) -> bool:
    a, b, c, a_small = legs
    print(
        f"\nArtifact: {size_label(big.size)} ({big.size} bytes), sha256 {big.sha256[:16]}...; "
        f"RSS comparison artifact {size_label(small.size)}.\n"
    )
    header = (
        f"{'leg':<42} | {'rounds':>6} | {'median s':>8} | {'min s':>7} | {'max s':>7} | {'MB/s':>6}"
        f" | {'CPU s':>5}"
    )
    print(header)
    print("-" * len(header))
    for leg in legs:
        cpu = statistics.median(r.cpu_s for r in leg.runs)
        print(
            f"{leg.label:<42} | {len(leg.runs):>6} | {leg.median():>8.3f} | {min(leg.seconds):>7.3f}"
            f" | {max(leg.seconds):>7.3f} | {leg.mb_per_s():>6.0f} | {cpu:>5.2f}"
        )
    user = statistics.median(d["user_s"] for d in a.children)
    sys_s = statistics.median(d["sys_s"] for d in a.children)
    print(
        f"  CPU s = median user + sys of the leg's process during the leg; "
        f"(a): user {user:.2f} + sys {sys_s:.2f}"
    )
    imports = [d["import_s"] for d in a.children + a_small.children]
    setups = [d["setup_s"] for d in a.children + a_small.children]
    print(
        f"(a) child overhead, not in (a)'s time (median of {len(imports)} children): "
        f"import of the hook module {statistics.median(imports):.3f} s, "
        f"hook + connection {statistics.median(setups):.3f} s."
    )

    ratio_b = a.median() / b.median()
    ratio_c = a.median() / c.median()
    print(f"\nratio a/b (hook / curl): {ratio_b:.2f}")
    print(f"ratio a/c (hook / cp):   {ratio_c:.2f}")

    print("\nPeak RSS of (a), ru_maxrss of the child (max over rounds [min-max]; median before the call):")
    peaks: list[int] = []
    for leg in (a, a_small):
        values = [d["peak_rss_kib"] for d in leg.children]
        before = statistics.median(d["rss_before_kib"] for d in leg.children)
        peaks.append(max(values))
        print(
            f"  {size_label(leg.size):>8}: {fmt_mib(max(values))}  [{fmt_mib(min(values))}-"
            f"{fmt_mib(max(values))}]  (before the call: {fmt_mib(before)})"
        )
    growth_mib = (peaks[0] - peaks[1]) / 1024
    print(f"  difference: {growth_mib:+.1f} MiB")

    targets = [
        (f"(a) time <= {TARGET_VS_CURL} x curl", ratio_b <= TARGET_VS_CURL, f"a/b = {ratio_b:.2f}"),
        (f"(a) time <= {TARGET_VS_CP} x cp", ratio_c <= TARGET_VS_CP, f"a/c = {ratio_c:.2f}"),
        (
            f"peak RSS {size_label(a.size)} <= {size_label(a_small.size)} + {TARGET_RSS_GROWTH_MIB:g} MiB",
            growth_mib <= TARGET_RSS_GROWTH_MIB,
            f"{growth_mib:+.1f} MiB",
        ),
    ]
    print("\nTargets:")
    for name, ok, detail in targets:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<40} ({detail})")

    sources = sorted({d["hook_source_sha256"][:12] for d in a.children + a_small.children})
    note = "" if len(sources) == 1 else "  WARNING: the hook's source changed during the run!"
    if args.settle > 0:
        start = f"{args.settle:g} s after the previous large leg's file was deleted (freed memory cold)"
    else:
        start = "right after the previous large leg's file was deleted (freed memory still warm)"
    lines = [
        f"How it was measured: {args.rounds} rounds after 1 discarded warm-up round, each round a, b, c, "
        "a_small in this order.",
        f"  (a) a fresh `python {Path(__file__).name} --child` process per round imports the hook, reads",
        "      the connection, then waits; timed with perf_counter inside the child around",
        "      ContentExporterHook().download_export(hash, DEST, overwrite=True) only (the HTTP request",
        "      included); size and sha256 checked against the artifact's; peak RSS = the child's ru_maxrss.",
        f"      Hook source sha256 {', '.join(sources)}.{note}",
        f"  (b) `curl -sS -o DEST -H 'CEX-API-KEY: ...' URL` ({curl_version()}), same URL and export hash",
        "      as (a): wall time around the process (its start-up included); size checked.",
        "  (c) `cp ARTIFACT DEST` of the emulator's artifact file: wall time around the process.",
        "  Emulator: its own process (python -m airflow_provider_cex.emulator) on 127.0.0.1, --quiet.",
        "  DEST: one folder on the artifact's filesystem; no sync (page-cache writes for all three).",
        f"  Each large leg started {start}.",
        f"  MB/s = 10^6 bytes/s. {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average (1 min)"
        f" {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other processes compete).",
    ]
    if Path("/sys/module/page_reporting").exists():
        lines.append(
            "  Note: free page reporting (virtio-balloon) is on here; the cost of page-cache writes varies"
            " from run to run (see --settle)."
        )
    print("\n" + "\n".join(lines))
    return all(ok for _name, ok, _detail in targets)


def run_benchmark(args: argparse.Namespace, work: Path, emulators: list[Emulator]) -> bool:
    load_start = os.getloadavg()[0]
    api_key = "cexk_" + secrets.token_hex(18)[:35]  # 40 characters, like a real key
    big_size, small_size = args.size_mib * MIB, args.small_mib * MIB
    print(
        f"Writing and hashing the {size_label(big_size)} and {size_label(small_size)} artifacts...",
        flush=True,
    )
    t0 = time.perf_counter()
    big = start_emulator(api_key, big_size, work, "large", emulators)
    small = start_emulator(api_key, small_size, work, "small", emulators)
    print(f"  two emulators ready in {time.perf_counter() - t0:.1f} s", flush=True)

    dest_dir = work / "dest"
    dest_dir.mkdir()
    big_hash, small_hash = start_export(big, api_key), start_export(small, api_key)
    env_big = child_env(work, big.base_url, api_key)
    env_small = child_env(work, small.base_url, api_key)
    url = f"{big.base_url}/api/remoteExport/{big_hash}/download"
    dest_hook, dest_curl, dest_cp = dest_dir / "hook.bin", dest_dir / "curl.bin", dest_dir / "cp.bin"
    dest_small = dest_dir / "hook-small.bin"
    curl_cmd = ["curl", "-sS", "-o", str(dest_curl), "-H", f"CEX-API-KEY: {api_key}", url]
    cp_cmd = ["cp", str(big.artifact), str(dest_cp)]

    child_log = work / "child-stderr.log"
    kept = KeptFile()

    def before_large() -> None:
        kept.drop()
        if args.settle > 0:
            time.sleep(args.settle)

    a = LegResults(f"(a) hook download_export, sha256 ({size_label(big_size)})", big_size)
    b = LegResults(f"(b) curl -sS -o ({size_label(big_size)})", big_size)
    c = LegResults(f"(c) cp ({size_label(big_size)})", big_size)
    a_small = LegResults(f"(a) hook download_export ({size_label(small_size)})", small_size)
    try:
        for rnd in range(args.rounds + 1):
            leg_a = run_hook_leg(big, big_hash, dest_hook, env_big, before_large, child_log)
            kept.replace(dest_hook)
            leg_b = run_command_leg(curl_cmd, dest_curl, big_size, before_large)
            kept.replace(dest_curl)
            leg_c = run_command_leg(cp_cmd, dest_cp, big_size, before_large)
            kept.replace(dest_cp)
            leg_small = run_hook_leg(small, small_hash, dest_small, env_small, lambda: None, child_log)
            dest_small.unlink()
            assert leg_a.child is not None and leg_small.child is not None
            print(
                f"  {'warm-up' if rnd == 0 else f'round {rnd}'}: a {leg_a.seconds:.3f} s, "
                f"b {leg_b.seconds:.3f} s, c {leg_c.seconds:.3f} s, a_small {leg_small.seconds:.3f} s; "
                "peak RSS a "
                f"{fmt_mib(leg_a.child['peak_rss_kib'])}, a_small {fmt_mib(leg_small.child['peak_rss_kib'])}",
                flush=True,
            )
            if rnd > 0:
                for results, leg in ((a, leg_a), (b, leg_b), (c, leg_c), (a_small, leg_small)):
                    results.runs.append(leg)
    finally:
        kept.drop()
    return print_report(args, [a, b, c, a_small], big, small, load_start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024, help="artifact size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per leg (default 5)")
    parser.add_argument(
        "--small-mib", type=int, default=10, help="artifact of the RSS comparison, MiB (default 10)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds between deleting the previous large leg's file and starting the next (default 0)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--child", nargs=2, metavar=("HASH", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.rounds < 1 or args.size_mib < 1 or args.small_mib < 1 or args.settle < 0:
        parser.error("--rounds, --size-mib and --small-mib must be at least 1, --settle >= 0")

    emulators: list[Emulator] = []
    work = Path(tempfile.mkdtemp(prefix="cex-download-bench-", dir="/tmp"))
    try:
        with sigterm_as_exit():
            passed = run_benchmark(args, work, emulators)
    finally:
        for emu in emulators:
            stop_process(emu.proc)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())

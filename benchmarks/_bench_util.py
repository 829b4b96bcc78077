"""Process plumbing for the download benchmark: emulators in their own processes, children that wait for "go",
CPU time of a child from ``os.wait4``, and clean-up that survives SIGTERM.
"""

from __future__ import annotations

import inspect
import json
import os
import queue
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
GIB = 1 << 30
MB = 1_000_000
#: Children prefix their protocol lines with this (Airflow logging may share stdout).
MARKER = "@@cex-download-bench@@"
#: The emulator process reads the API key from here, never from its command line.
KEY_ENV = "CEX_BENCH_API_KEY"
EMULATOR_START_TIMEOUT_S = 300


# --------------------------------------------------------------------------- emulator process


def emulator_has_tls() -> bool:
    """True once ``ContentExporterEmulator`` takes ``tls=True`` (HTTPS legs are skipped before)."""
    from airflow_provider_cex.emulator.server import ContentExporterEmulator

    return "tls" in inspect.signature(ContentExporterEmulator).parameters


def serve_emulator(size: int, artifact_dir: str, tls: bool) -> int:
    """Child: run one emulator until stdin closes or SIGTERM; announce its URL, CA and artifact on stdout."""
    from airflow_provider_cex.emulator.server import ContentExporterEmulator

    extra: dict[str, Any] = {"tls": True} if tls else {}
    emulator = ContentExporterEmulator(
        os.environ[KEY_ENV], export_seconds=0, artifact_bytes=size, artifact_dir=artifact_dir, **extra
    )
    with sigterm_as_exit():
        emulator.start(timeout=EMULATOR_START_TIMEOUT_S)
        try:
            info = {
                "base_url": emulator.base_url,
                "ca_path": getattr(emulator, "ca_path", None),
                "artifact": str(emulator.artifact_path),
                "sha256": emulator.artifact_sha256,
                "size": emulator.artifact_size,
            }
            print(f"{MARKER} emulator {json.dumps(info)}", flush=True)
            sys.stdin.read()  # until the parent closes the pipe (or SIGTERM)
        finally:
            emulator.stop()
    return 0


@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    size: int
    tls: bool
    base_url: str = ""
    ca_path: str | None = None
    artifact: Path = field(default_factory=Path)
    sha256: str = ""


def start_emulator(
    script: Path, api_key: str, size: int, work: Path, name: str, tls: bool, started: list[Emulator]
) -> Emulator:
    """Start ``script --serve-emulator``; appended to ``started`` at once so the caller can stop it."""
    artifact_dir = work / f"artifact-{name}"
    artifact_dir.mkdir()
    cmd = [sys.executable, str(script), "--serve-emulator", str(size), str(artifact_dir)]
    cmd += ["--tls"] if tls else []
    env = {**os.environ, KEY_ENV: api_key}
    log = work / f"emulator-{name}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
    emulator = Emulator(proc=proc, size=size, tls=tls)
    started.append(emulator)
    try:
        info = json.loads(LineReader(proc).marker("emulator", EMULATOR_START_TIMEOUT_S))
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"the {name} emulator did not start: {exc}\n{log.read_text()[-2000:]}") from None
    emulator.base_url, emulator.ca_path = info["base_url"], info["ca_path"]
    emulator.artifact, emulator.sha256 = Path(info["artifact"]), info["sha256"]
    if info["size"] != size or emulator.artifact.stat().st_size != size:
        raise RuntimeError(f"the {name} emulator serves {info['size']} bytes, expected {size}")
    if tls and not (emulator.base_url.startswith("https://") and emulator.ca_path):
        raise RuntimeError(f"the {name} emulator was asked for TLS but serves {emulator.base_url}")
    return emulator


# --------------------------------------------------------------------------- processes


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_with_rusage(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, resource.struct_rusage]:
    """Reap ``proc`` with ``os.wait4`` (its user + sys time, threads included); kill it after ``timeout``."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def cpu_of(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + sys seconds a running process (all its threads) has used so far; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


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


class KeptFile:
    """The previous large leg's output, deleted just before the next large leg starts.

    Deleting it right before (not right after) its own leg gives every large leg about 1 GiB of just-freed
    page cache to reuse, whatever ran in between (a child's imports, a small leg): on this VM
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


# --------------------------------------------------------------------------- results


@dataclass
class Leg:
    """One timed run of a leg: wall seconds and the CPU (user + sys) its client process spent on it."""

    seconds: float
    cpu_s: float
    child: dict[str, Any] | None = None  # Python legs: what the child reported
    server_cpu_s: float | None = None  # the emulator process's CPU during the leg


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

    def cpu_per_gib(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs) * GIB / self.size

    def server_cpu_per_gib(self) -> float | None:
        values = [r.server_cpu_s for r in self.runs if r.server_cpu_s is not None]
        return statistics.median(values) * GIB / self.size if values else None

    def mb_per_s(self) -> float:
        return self.size / self.median() / MB


def fmt_mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def size_label(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:g} MiB"


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``256MiB`` or a plain number of MiB, in bytes."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"G": GIB, "M": MIB, "K": 1024}.get(value[-1:], MIB)
    number = value[:-1] if value[-1:] in "GMK" else value
    try:
        size = int(float(number) * scale)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 1G, 256M)") from None
    if size < MIB:
        raise ValueError(f"size {text!r} is below 1 MiB")
    return size


def curl_version() -> str:
    try:
        out = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "curl ?"
    return " ".join(out.split()[:2])

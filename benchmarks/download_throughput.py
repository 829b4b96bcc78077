"""Measure ``ContentExporterHook.download_export`` (sha256 on) against a plain ``requests`` + ``hashlib`` loop
and ``curl -o``, over HTTPS and plain HTTP, with ``cp`` as context, in interleaved rounds, each leg in a fresh
process; and the hook's peak RSS at the large size against a 10 MiB download.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: sys.path[0] is benchmarks/, not the project
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._bench_util import (
    GIB,
    KEY_ENV,
    MARKER,
    MIB,
    ROOT,
    Emulator,
    KeptFile,
    Leg,
    LegResults,
    LineReader,
    cpu_of,
    emulator_has_tls,
    parse_size,
    process_cpu_s,
    serve_emulator,
    sigterm_as_exit,
    size_label,
    start_emulator,
    stop_process,
    wait_with_rusage,
)

SCRIPT = Path(__file__).resolve()
CONN_ENV = "AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"
#: The requests child's ``verify``: the emulator's CA bundle over HTTPS.
VERIFY_ENV = "CEX_BENCH_VERIFY"
PAGE_ID = "424242"
LEG_TIMEOUT_S = 600
READ_SIZE = MIB


# --------------------------------------------------------------------------- children: legs (a) and (b)


def child_main(kind: str, target: str, destination: str) -> int:
    """Run in a fresh interpreter: import and set up, say ready, wait for "go", time one download.

    ``kind`` is ``hook`` (``target`` = export hash) or ``requests`` (``target`` = the download URL).
    """
    t_start = time.perf_counter()
    download: Callable[[], tuple[int, str]]
    lineage_s = 0.0
    if kind == "hook":
        from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
        from airflow_provider_cex.lineage import report_hook_output

        t_imported = time.perf_counter()
        hook = ContentExporterHook()
        _ = hook.settings  # reads the connection (env var) and registers the key with the masker
        # download_export reports lineage; its first call in a process imports every provider's asset
        # handlers (boto3 with the amazon provider). A one-time cost like the imports: paid and timed here.
        t_lineage = time.perf_counter()
        report_hook_output(hook, "file:///dev/null", 0, hashlib.sha256().hexdigest())
        lineage_s = time.perf_counter() - t_lineage

        def download() -> tuple[int, str]:
            result = hook.download_export(target, destination, overwrite=True)
            return result.size_bytes, result.sha256

    else:
        import requests

        t_imported = time.perf_counter()
        session = requests.Session()
        headers = {"CEX-API-KEY": os.environ[KEY_ENV]}
        verify: bool | str = os.environ.get(VERIFY_ENV) or True

        def download() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with session.get(target, headers=headers, stream=True, verify=verify) as resp:
                resp.raise_for_status()
                with open(destination, "wb") as out:
                    for chunk in resp.iter_content(READ_SIZE):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            return size, digest.hexdigest()

    t_ready = time.perf_counter()
    ready = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{MARKER} ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 3
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    size, sha256 = download()
    t1 = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "import_s": t_imported - t_start,
        "setup_s": t_ready - t_imported,
        "lineage_first_s": lineage_s,
        "ready_cpu_s": cpu_of(ready),
        "download_s": t1 - t0,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "minflt": after.ru_minflt - before.ru_minflt,
        "rss_before_kib": before.ru_maxrss,
        "peak_rss_kib": after.ru_maxrss,
        "size": size,
        "sha256": sha256,
    }
    if kind == "hook":
        from airflow_provider_cex.hooks import download as download_module

        report["loop_source_sha256"] = hashlib.sha256(Path(download_module.__file__).read_bytes()).hexdigest()
    print(f"{MARKER} result {json.dumps(report)}", flush=True)
    return 0


# --------------------------------------------------------------------------- legs


def run_python_leg(
    kind: str,
    target: str,
    dest: Path,
    env: dict[str, str],
    before_start: Callable[[], None],
    stderr_log: Path,
) -> Leg:
    """Legs (a) and (b): a fresh child; ``before_start`` runs once it is imported and ready.

    Wall time and CPU (user + sys, all threads, from ``getrusage(RUSAGE_SELF)``) are taken inside the child
    around the download only: interpreter start-up and imports are reported apart. ``os.wait4`` gives the
    whole process's CPU as a cross-check.
    """
    cmd = [sys.executable, str(SCRIPT), "--child", kind, target, str(dest)]
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
                raise RuntimeError(f"{kind} child failed: {exc}\n{err.read()[-3000:]}") from None
            proc.stdin.close()
            _code, usage = wait_with_rusage(proc, 60)
        finally:
            stop_process(proc)
    data["process_cpu_s"] = cpu_of(usage)
    return Leg(seconds=data["download_s"], cpu_s=data["user_s"] + data["sys_s"], child=data)


def run_command_leg(cmd: list[str], before_start: Callable[[], None]) -> Leg:
    """Legs (c) and cp: wall time around the process (its start-up included), CPU from ``os.wait4``."""
    before_start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    code, usage = wait_with_rusage(proc, LEG_TIMEOUT_S)
    wall = time.perf_counter() - t0
    assert proc.stderr is not None
    error = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if code != 0:
        raise RuntimeError(f"{cmd[0]} failed ({code}): {error[-2000:]}")
    return Leg(seconds=wall, cpu_s=cpu_of(usage))


def check_output(leg: Leg, dest: Path, emulator: Emulator, what: str) -> None:
    """The file is whole and right (its sha256 as the child computed it; its size on disk)."""
    on_disk = dest.stat().st_size
    if on_disk != emulator.size:
        raise RuntimeError(f"{what} wrote {on_disk} bytes, expected {emulator.size}")
    if leg.child is not None and (leg.child["size"], leg.child["sha256"]) != (emulator.size, emulator.sha256):
        raise RuntimeError(f"{what} reported {leg.child['size']} bytes, sha256 {leg.child['sha256']}")
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.endswith(".part")]
    if leftovers:
        raise RuntimeError(f"{what} left temporary files: {leftovers}")


def start_export(emulator: Emulator, api_key: str) -> str:
    request = urllib.request.Request(
        f"{emulator.base_url}/api/remoteExport/{PAGE_ID}/init",
        data=json.dumps({"rootContentId": PAGE_ID}).encode(),
        headers={"CEX-API-KEY": api_key, "Content-Type": "application/json"},
        method="POST",
    )
    context = None
    if emulator.ca_path:
        import ssl

        context = ssl.create_default_context(cafile=emulator.ca_path)
    with urllib.request.urlopen(request, timeout=30, context=context) as resp:
        return str(json.load(resp)["hash"])


def child_env(work: Path, emulator: Emulator, api_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(work / "airflow_home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    conn: dict[str, Any] = {"conn_type": "content_exporter", "host": emulator.base_url, "password": api_key}
    if emulator.ca_path:
        conn["extra"] = {"verify": emulator.ca_path}
        env[VERIFY_ENV] = emulator.ca_path
    env[CONN_ENV] = json.dumps(conn)
    env[KEY_ENV] = api_key
    # A private bytecode cache (inside the work dir, filled by the warm-up round): without it, with
    # PYTHONDONTWRITEBYTECODE and no __pycache__ in the venv, every child compiles Airflow from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


# --------------------------------------------------------------------------- one protocol


@dataclass
class Protocol:
    """The legs of one scheme (https or http): large emulator, small one (RSS), and their results."""

    name: str
    big: Emulator
    small: Emulator
    big_hash: str
    small_hash: str
    env_big: dict[str, str]
    env_small: dict[str, str]
    curl_cmd: list[str]
    dest_curl: Path
    curl_hash_cmd: list[str]
    dest_curl_hash: Path
    a: LegResults
    b: LegResults
    c: LegResults
    d: LegResults
    a_small: LegResults

    @property
    def url(self) -> str:
        return f"{self.big.base_url}/api/remoteExport/{self.big_hash}/download"


def make_protocol(
    name: str, api_key: str, big_size: int, small_size: int, work: Path, started: list[Emulator]
) -> Protocol:
    tls = name == "https"
    big = start_emulator(SCRIPT, api_key, big_size, work, f"{name}-large", tls, started)
    small = start_emulator(SCRIPT, api_key, small_size, work, f"{name}-small", tls, started)
    big_hash, small_hash = start_export(big, api_key), start_export(small, api_key)
    header_file = work / "curl-headers.txt"  # the key goes to curl in a file, never on its command line
    header_file.write_text(f"CEX-API-KEY: {api_key}\n")
    header_file.chmod(0o600)
    url = f"{big.base_url}/api/remoteExport/{big_hash}/download"
    dest_curl = work / "dest" / f"curl-{name}.bin"
    curl_cmd = ["curl", "-sS", "--fail", "-o", str(dest_curl), "-H", f"@{header_file}"]
    curl_cmd += ["--cacert", big.ca_path] if big.ca_path else []
    # (d) curl doing what the hook does: one pass that saves and hashes (tee | sha256sum).
    dest_curl_hash = work / "dest" / f"curl-sha256-{name}.bin"
    fetch = ["curl", "-sS", "--fail", "-H", f"@{header_file}"] + (
        ["--cacert", big.ca_path] if big.ca_path else []
    )
    pipeline = " ".join(fetch) + ' "$0" | tee "$1" | openssl dgst -sha256 > /dev/null'
    label = size_label(big_size)
    return Protocol(
        name=name,
        big=big,
        small=small,
        big_hash=big_hash,
        small_hash=small_hash,
        env_big=child_env(work, big, api_key),
        env_small=child_env(work, small, api_key),
        curl_cmd=[*curl_cmd, url],
        dest_curl=dest_curl,
        curl_hash_cmd=["sh", "-c", pipeline, url, str(dest_curl_hash)],
        dest_curl_hash=dest_curl_hash,
        a=LegResults(f"(a) hook download_export, sha256 ({label})", big_size),
        b=LegResults(f"(b) requests + hashlib loop ({label})", big_size),
        c=LegResults(f"(c) curl -o{' --cacert' if tls else ''} ({label})", big_size),
        d=LegResults(f"(d) curl | tee | openssl sha256 ({label})", big_size),
        a_small=LegResults(f"(a) hook download_export ({size_label(small_size)})", small_size),
    )


# --------------------------------------------------------------------------- the run


def run_benchmark(args: argparse.Namespace, work: Path, emulators: list[Emulator]) -> bool:
    load_start = os.getloadavg()[0]
    api_key = "cexk_" + secrets.token_hex(18)[:35]  # 40 characters, like a real key
    big_size, small_size = args.size, args.small_size
    names = [name for name in ("https", "http") if name in args.protocols]
    if "https" in names and not emulator_has_tls():
        print("HTTPS legs skipped: this emulator has no tls option yet (ContentExporterEmulator(tls=True)).")
        names.remove("https")
    if not names:
        raise SystemExit("nothing to measure")
    print(
        f"Writing the {size_label(big_size)} and {size_label(small_size)} artifacts ({', '.join(names)})..."
    )
    t0 = time.perf_counter()
    (work / "dest").mkdir()
    protocols = [make_protocol(name, api_key, big_size, small_size, work, emulators) for name in names]
    print(f"  {len(emulators)} emulators ready in {time.perf_counter() - t0:.1f} s", flush=True)

    dest_dir = work / "dest"
    dest_cp = dest_dir / "cp.bin"
    cp_leg = LegResults(f"cp of the artifact file ({size_label(big_size)})", big_size)
    child_log = work / "child-stderr.log"
    kept = KeptFile()

    def before_large() -> None:
        kept.drop()
        if args.settle > 0:
            time.sleep(args.settle)

    try:
        for rnd in range(args.rounds + 1):  # round 0 is a warm-up (bytecode cache, page cache), discarded
            parts: list[str] = []
            for proto in protocols[rnd % len(protocols) :] + protocols[: rnd % len(protocols)]:
                legs = run_round(proto, rnd, dest_dir, before_large, kept, child_log)
                parts.append(
                    f"{proto.name}: " + ", ".join(f"{k} {v.seconds:.2f}/{v.cpu_s:.2f}" for k, v in legs)
                )
                if rnd > 0:
                    for key, leg in legs:
                        getattr(proto, key).runs.append(leg)
            cp = run_command_leg(["cp", str(protocols[0].big.artifact), str(dest_cp)], before_large)
            kept.replace(dest_cp)
            if rnd > 0:
                cp_leg.runs.append(cp)
            label = "warm-up" if rnd == 0 else f"round {rnd}"
            print(
                f"  {label} (wall/CPU s): {'; '.join(parts)}; cp {cp.seconds:.2f}/{cp.cpu_s:.2f}", flush=True
            )
    finally:
        kept.drop()
    from benchmarks._download_report import print_report

    return print_report(args, SCRIPT.name, protocols, cp_leg, load_start)


def run_round(
    proto: Protocol, rnd: int, dest_dir: Path, before_large: Callable[[], None], kept: KeptFile, log: Path
) -> list[tuple[str, Leg]]:
    """One round of a protocol: a, b, c in an order rotated per round, then the small hook leg (RSS)."""
    name = proto.name
    dests = {
        "a": dest_dir / f"hook-{name}.bin",
        "b": dest_dir / f"requests-{name}.bin",
        "c": proto.dest_curl,
        "d": proto.dest_curl_hash,
    }
    runners: dict[str, Callable[[], Leg]] = {
        "a": lambda: run_python_leg("hook", proto.big_hash, dests["a"], proto.env_big, before_large, log),
        "b": lambda: run_python_leg("requests", proto.url, dests["b"], proto.env_big, before_large, log),
        "c": lambda: run_command_leg(proto.curl_cmd, before_large),
        "d": lambda: run_command_leg(proto.curl_hash_cmd, before_large),
    }
    order = ["a", "b", "c", "d"]
    order = order[rnd % 4 :] + order[: rnd % 4]
    results: list[tuple[str, Leg]] = []
    for key in order:
        server_before = process_cpu_s(proto.big.proc.pid)
        leg = runners[key]()
        leg.server_cpu_s = process_cpu_s(proto.big.proc.pid) - server_before
        check_output(leg, dests[key], proto.big, f"{name} leg ({key})")
        kept.replace(dests[key])
        results.append((key, leg))
    dest_small = dest_dir / f"hook-small-{name}.bin"
    small = run_python_leg("hook", proto.small_hash, dest_small, proto.env_small, lambda: None, log)
    check_output(small, dest_small, proto.small, f"{name} leg (a, small)")
    dest_small.unlink()
    results.append(("a_small", small))
    return sorted(results, key=lambda item: ["a", "b", "c", "d", "a_small"].index(item[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=GIB, help="artifact size: 1G (default), 256M, ...")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per leg (default 5)")
    parser.add_argument(
        "--small-size", type=parse_size, default=10 * MIB, help="artifact of the RSS comparison (default 10M)"
    )
    parser.add_argument(
        "--protocols",
        type=lambda text: {p.strip().lower() for p in text.split(",") if p.strip()},
        default={"https", "http"},
        help="comma-separated: https,http (default both)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds between deleting the previous large leg's file and starting the next (default 0)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "TARGET", "DEST"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-emulator", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.serve_emulator:
        return serve_emulator(int(args.serve_emulator[0]), args.serve_emulator[1], args.tls)
    if args.rounds < 1 or args.settle < 0:
        parser.error("--rounds must be at least 1, --settle >= 0")
    if not args.protocols or not args.protocols <= {"https", "http"}:
        parser.error("--protocols takes https, http or both")

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

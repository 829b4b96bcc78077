"""Peak RSS and wall time of saving an export to S3 (``save_export``: download, then multipart upload),
for a 10 MiB and a 200 MiB artifact, each in a fresh process, against the emulator and moto's S3 server,
both on 127.0.0.1.

The worker's memory must not grow with the file: the target is a 200 MiB peak at most 64 MiB above the
10 MiB one. Runs with the provider's part size and, for comparison, with s3fs's default 50 MiB part.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, sys.path[0] is benchmarks/, not the project
    sys.path.insert(0, str(ROOT))

from benchmarks._bench_util import fmt_mib, sigterm_as_exit, size_label, stop_process  # noqa: E402

MIB = 1 << 20
MB = 1_000_000
BUCKET = "cex-bench"
CHILD_TIMEOUT_S = 600
TARGET_RSS_GROWTH_MIB = 64.0
S3FS_DEFAULT_PART_MIB = 50
CONN_ENV = "AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"
PAGE_ID = "424242"
EMULATOR_START_TIMEOUT_S = 180


# ------------------------------------------------------------- helpers (self-contained: no other benchmark)


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line a child prints on stdout, read on a thread so that waiting has a timeout."""
    lines: queue.Queue[str] = queue.Queue()
    stream = proc.stdout
    assert stream is not None
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no output within {timeout} s") from None


def start_server(cmd: list[str], prefix: str, log: Path, started: list[subprocess.Popen[str]]) -> str:
    """Start a loopback server process that prints ``prefix`` + its URL; it joins ``started`` at once."""
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    started.append(proc)
    line = first_line(proc, EMULATOR_START_TIMEOUT_S)
    if not line.startswith(prefix):
        raise RuntimeError(f"{cmd[2]} did not start: {line!r}\n{log.read_text()[-2000:]}")
    return line[len(prefix) :].strip()


@dataclass
class Emulator:
    base_url: str
    size: int
    sha256: str


def start_emulator(api_key: str, size: int, work: Path, started: list[subprocess.Popen[str]]) -> Emulator:
    """The emulator in its own process, serving ``size`` deterministic bytes; with their sha256."""
    artifact_dir = work / f"artifact-{size}"
    artifact_dir.mkdir()
    cmd = [sys.executable, "-m", "airflow_provider_cex.emulator", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--api-key", api_key, "--export-seconds", "0", "--artifact-bytes", str(size)]
    cmd += ["--artifact-dir", str(artifact_dir), "--quiet"]
    url = start_server(cmd, "Content Exporter emulator listening on ", work / f"emulator-{size}.log", started)
    found = list(artifact_dir.glob(f"cex-emulator-*/export-{size}.bin"))
    if len(found) != 1 or found[0].stat().st_size != size:
        raise RuntimeError(f"expected one {size}-byte artifact under {artifact_dir}, found {found}")
    digest = hashlib.sha256()
    with found[0].open("rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return Emulator(url, size, digest.hexdigest())


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
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a private bytecode cache, filled by the warm-up child
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


# --------------------------------------------------------------------------- child


def child_main(export_hash: str, output: str, part_mib: int, result_file: str) -> int:
    """Run in a fresh interpreter: import and set up, then time one ``save_export`` to S3."""
    import airflow.providers.amazon.aws.fs.s3  # noqa: F401  (imported by the upload: not timed here)
    import s3fs  # noqa: F401

    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.operators import destinations

    if part_mib:
        destinations.UPLOAD_PART_BYTES = part_mib * MIB
    hook = ContentExporterHook()
    _ = hook.settings  # reads the connection (env var)
    download_s = 0.0
    download = hook.download_export

    def timed_download(*args: Any, **kwargs: Any) -> Any:
        nonlocal download_s
        t = time.perf_counter()
        try:
            return download(*args, **kwargs)
        finally:
            download_s = time.perf_counter() - t

    hook.download_export = timed_download  # type: ignore[method-assign]
    hwm_before = vm_hwm_kib()
    log = logging.getLogger("s3-bench")
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    final, meta = destinations.save_export(
        hook, export_hash, output, overwrite=True, output_conn_id="aws_default", fsync=False, log=log
    )
    total_s = time.perf_counter() - t0
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    hook.close()
    report = {
        "total_s": total_s,
        "download_s": download_s,
        "upload_s": total_s - download_s,
        "cpu_s": (usage_after.ru_utime - usage_before.ru_utime)
        + (usage_after.ru_stime - usage_before.ru_stime),
        "rss_before_kib": usage_before.ru_maxrss,
        "peak_rss_kib": usage_after.ru_maxrss,
        "hwm_before_kib": hwm_before,
        "hwm_kib": vm_hwm_kib(),
        "size": meta["size_bytes"],
        "sha256": meta["sha256"],
        "final": final,
    }
    Path(result_file).write_text(json.dumps(report))  # not stdout: Airflow's logging may take it over
    return 0


def vm_hwm_kib() -> int:
    """This process's peak RSS since its exec (``VmHWM``); unlike ru_maxrss, never the parent's at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- parent


@dataclass
class Case:
    label: str
    emulator: Emulator
    part_mib: int  # 0: the provider's own part size
    runs: list[dict[str, Any]] = field(default_factory=list)

    def peak_kib(self) -> int:
        return max(r["peak_rss_kib"] for r in self.runs)

    def hwm_kib(self) -> int:
        return max(r["hwm_kib"] for r in self.runs)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)


def object_sha256(client: Any, key: str) -> tuple[str, dict[str, Any]]:
    found = client.get_object(Bucket=BUCKET, Key=key)
    digest = hashlib.sha256()
    for chunk in found["Body"].iter_chunks(MIB):
        digest.update(chunk)
    return digest.hexdigest(), found


def run_child(case: Case, export_hash: str, key_prefix: str, env: dict[str, str], log_path: Path) -> dict:
    output = f"s3://{BUCKET}/{key_prefix}/"
    result_file = log_path.with_suffix(".json")
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", export_hash, output, str(case.part_mib)]
    cmd.append(str(result_file))
    with log_path.open("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            code = proc.wait(timeout=CHILD_TIMEOUT_S)
        finally:
            stop_process(proc)
        if code != 0 or not result_file.exists():
            out.seek(0)
            raise RuntimeError(f"child failed (exit {code}):\n{out.read()[-3000:]}")
    data: dict[str, Any] = json.loads(result_file.read_text())
    return data


def check_object(client: Any, case: Case, data: dict[str, Any], key_prefix: str) -> int:
    """The object is the artifact, byte for byte, with its content type; return its part count."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix + "/").get("Contents", [])
    if len(listed) != 1:
        raise RuntimeError(f"expected one object under {key_prefix}/, found {[o['Key'] for o in listed]}")
    key = listed[0]["Key"]
    sha, found = object_sha256(client, key)
    if sha != case.emulator.sha256 or found["ContentLength"] != case.emulator.size:
        raise RuntimeError(f"{key}: {found['ContentLength']} bytes, sha256 {sha}; expected the artifact")
    if data["sha256"] != case.emulator.sha256:
        raise RuntimeError("the child's sha256 differs from the artifact's")
    if found.get("ContentType") != "application/pdf":
        raise RuntimeError(f"{key}: ContentType {found.get('ContentType')!r}")
    if client.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
        raise RuntimeError("a multipart upload was left open")
    etag = found["ETag"].strip('"')
    client.delete_object(Bucket=BUCKET, Key=key)  # keep moto's memory (this process) small
    return int(etag.rsplit("-", 1)[1]) if "-" in etag else 1


def print_report(cases: list[Case], rounds: int, load_start: float) -> bool:
    header = " | ".join(
        [
            f"{'case':<26}",
            f"{'ru_maxrss':>10}",
            f"{'before':>10}",
            f"{'growth':>9}",
            f"{'VmHWM':>10}",
            f"{'parts':>5}",
            f"{'total s':>7}",
            f"{'download s':>10}",
            f"{'upload s':>8}",
            f"{'upload MB/s':>11}",
        ]
    )
    print("\n" + header)
    print("-" * len(header))
    for case in cases:
        before = statistics.median(r["rss_before_kib"] for r in case.runs)
        upload_s = case.median("upload_s")
        cells = [
            f"{case.label:<26}",
            f"{fmt_mib(case.peak_kib()):>10}",
            f"{fmt_mib(before):>10}",
            f"{fmt_mib(case.peak_kib() - before):>9}",
            f"{fmt_mib(case.hwm_kib()):>10}",
            f"{case.runs[0]['parts']:>5}",
            f"{case.median('total_s'):>7.2f}",
            f"{case.median('download_s'):>10.2f}",
            f"{upload_s:>8.2f}",
            f"{case.emulator.size / upload_s / MB:>11.0f}",
        ]
        print(" | ".join(cells))
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"  ru_maxrss = max over {rounds} fresh child processes of getrusage(RUSAGE_SELF).ru_maxrss after\n"
        "  save_export; before = its median just before the call (imports incl. s3fs, hook and connection\n"
        "  done); growth = peak - before; VmHWM = the child's own peak from /proc (cross-check: ru_maxrss\n"
        f"  also counts the parent's RSS at fork, {fmt_mib(parent)} here). Times are medians."
    )

    print("\nRSS growth from the small to the large artifact (ru_maxrss peak minus peak; VmHWM alike):")
    verdicts: list[tuple[str, bool, str]] = []
    for small, big in zip(cases[::2], cases[1::2], strict=True):
        growth = (big.peak_kib() - small.peak_kib()) / 1024
        hwm_growth = (big.hwm_kib() - small.hwm_kib()) / 1024
        ratio = big.peak_kib() / small.peak_kib()
        part = f"{big.part_mib} MiB parts" if big.part_mib else "provider's parts"
        print(f"  {part:<18}: {growth:+7.1f} MiB (ratio {ratio:.2f}; VmHWM {hwm_growth:+.1f} MiB)")
        if not big.part_mib:
            verdicts.append(
                (
                    f"{size_label(big.emulator.size)} peak <= {size_label(small.emulator.size)} peak"
                    f" + {TARGET_RSS_GROWTH_MIB:g} MiB",
                    growth <= TARGET_RSS_GROWTH_MIB,
                    f"{growth:+.1f} MiB",
                )
            )
    print("\nTarget:")
    for name, ok, detail in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {name} ({detail})")
    lines = [
        "\nHow it was measured: for each case, one fresh `python s3_upload_rss.py --child` process per round",
        "  (after one discarded warm-up child that fills the bytecode cache) calls",
        "  destinations.save_export(hook, HASH, 's3://BUCKET/PREFIX/', output_conn_id='aws_default'):",
        "  download to a temp folder, then upload through ObjectStoragePath and s3fs. The emulator and",
        "  moto's S3 server (python -m testkit.s3) run in processes of their own, on 127.0.0.1. Each object",
        "  is checked (size, sha256, ContentType, no multipart upload left open), then deleted.",
        f"  {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average (1 min)"
        f" {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
    ]
    print("\n".join(lines))
    return all(ok for _name, ok, _detail in verdicts)


def run_benchmark(args: argparse.Namespace, work: Path, started: list[subprocess.Popen[str]]) -> bool:
    import boto3

    from testkit.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, aws_connection_json, offline_aws_env

    load_start = os.getloadavg()[0]
    api_key = "cexk_" + secrets.token_hex(18)[:35]
    small = start_emulator(api_key, args.small_mib * MIB, work, started)
    big = start_emulator(api_key, args.size_mib * MIB, work, started)
    # moto in its own process too: this one stays small, so no child inherits a large ru_maxrss at fork.
    moto_url = start_server(
        [sys.executable, "-m", "testkit.s3"], "moto S3 listening on ", work / "moto.log", started
    )
    os.environ.update(offline_aws_env())  # this process's boto3 client too: never AWS
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    client.create_bucket(Bucket=BUCKET)
    cases: list[Case] = []
    for part_mib in (0, args.compare_part_mib):
        part = "provider parts" if not part_mib else f"{part_mib} MiB parts"
        for emu in (small, big):
            cases.append(Case(f"{size_label(emu.size)}, {part}", emu, part_mib))
    # Round 0 is a warm-up of the first case, discarded: its child compiles the bytecode cache, which
    # costs memory once (about 10 MiB of peak RSS) and would flatter the comparison.
    for rnd in range(args.rounds + 1):
        for i, case in enumerate(cases[:1] if rnd == 0 else cases):
            env = child_env(work, case.emulator.base_url, api_key)
            env.update(offline_aws_env())
            env["AIRFLOW_CONN_AWS_DEFAULT"] = aws_connection_json(moto_url)
            export_hash = start_export(case.emulator, api_key)
            prefix = f"r{rnd}-c{i}"
            data = run_child(case, export_hash, prefix, env, work / "child-stderr.log")
            data["parts"] = check_object(client, case, data, prefix)
            if rnd > 0:
                case.runs.append(data)
            name = f"round {rnd}" if rnd else "warm-up"
            print(
                f"  {name}, {case.label}: ru_maxrss {fmt_mib(data['peak_rss_kib'])}, "
                f"{data['total_s']:.2f} s, {data['parts']} part(s)",
                flush=True,
            )
    return print_report(cases, args.rounds, load_start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=200, help="large artifact, MiB (default 200)")
    parser.add_argument("--small-mib", type=int, default=10, help="small artifact, MiB (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per case (default 3)")
    parser.add_argument(
        "--compare-part-mib",
        type=int,
        default=S3FS_DEFAULT_PART_MIB,
        help=f"part size of the comparison cases, MiB (default {S3FS_DEFAULT_PART_MIB}, s3fs's own)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument(
        "--child", nargs=4, metavar=("HASH", "OUTPUT", "PART_MIB", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        export_hash, output, part_mib, result_file = args.child
        return child_main(export_hash, output, int(part_mib), result_file)
    if args.rounds < 1 or args.small_mib < 1 or args.size_mib <= args.small_mib or args.compare_part_mib < 5:
        parser.error("--rounds >= 1, --size-mib > --small-mib >= 1, --compare-part-mib >= 5")

    started: list[subprocess.Popen[str]] = []
    work = Path(tempfile.mkdtemp(prefix="cex-s3-bench-", dir="/tmp"))
    try:
        with sigterm_as_exit():
            passed = run_benchmark(args, work, started)
    finally:
        for proc in started:
            stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())

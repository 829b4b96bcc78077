"""Fault matrix: seeded runs of start -> poll -> download through the hook against a faulty emulator.

Each run ends as a success with a byte-identical file, a clean failure (a provider error with a
key-free message, nothing at the destination), or a bad outcome (anything else). Loopback only,
bounded in count and time. A first cut of issue #6: it covers the emulator's existing fault knobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

KEY = "cexk_" + "7f3a9c2e1b4d6f8a0c2e4b6d8f1a3c5e7b9d"[:35]
RUN_LIMIT_S = 20.0


def fault_kinds(endpoint: str) -> dict[str, Callable[[Any, random.Random], None]]:
    """Fault name -> a function arming it on the emulator for one run."""

    def status(code: int, retry_after: Callable[[random.Random], str | None] = lambda r: None):
        return lambda emu, rng: emu.inject(
            endpoint, status=code, times=rng.randint(1, 6), retry_after=retry_after(rng)
        )

    kinds: dict[str, Callable[[Any, random.Random], None]] = {
        "429 Retry-After seconds": status(429, lambda r: "0"),
        "429 Retry-After HTTP date": status(429, lambda r: formatdate(time.time() + 0.5, usegmt=True)),
        "429 no Retry-After": status(429),
        "500 HTML": status(500),
        "502 HTML": status(502),
        "503 HTML": status(503),
        "504 HTML": status(504),
        "outage 1.5 s (503)": lambda emu, rng: emu.outage(endpoint, seconds=1.5, status=503, retry_after="0"),
    }
    if endpoint == "download_export":
        for kind in ("truncate", "stall", "ignore_range", "wrong_range", "chunked", "chunked_truncate"):
            kinds[f"body: {kind}"] = _body_fault(kind)
    if endpoint == "export_progress":
        kinds["export failed"] = lambda emu, rng: emu.fail_pages(["4242"])
    return kinds


def _body_fault(kind: str) -> Callable[[Any, random.Random], None]:
    def arm(emu: Any, rng: random.Random) -> None:
        if kind in ("ignore_range", "wrong_range"):  # these only matter once a resume asks for a range
            emu.download_fault("truncate", after_bytes=rng.randint(1, 3) * 1024 * 1024)
        emu.download_fault(
            kind, after_bytes=rng.randint(0, 4) * 1024 * 1024, times=rng.randint(1, 6), seconds=1.0
        )

    return arm


def one_run(
    emu: Any, endpoint: str, arm: Callable[[Any, random.Random], None], seed: int, log_text: list[str]
):
    """Arm one fault, run the pipeline, classify the outcome: ('success'|'clean'|'bad', detail)."""
    from airflow_provider_cex.exceptions import ContentExporterError
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.protocol import RetryPolicy

    rng = random.Random(seed)
    emu.clear_faults()
    emu.clear_failing_pages()
    emu.reset_counters()
    page = "4242"
    if endpoint != "start_export":
        arm_later = arm
    else:
        arm(emu, rng)
        arm_later = None
    folder = Path(tempfile.mkdtemp(prefix="cex-matrix-"))
    started = time.monotonic()
    try:
        hook = ContentExporterHook(
            retry_policy=RetryPolicy(max_retries=4, backoff_base=0.01, backoff_max=0.1)
        )
        with hook:
            export_hash = hook.start_export(page, {"exportFormat": "pdf"})
            if arm_later is not None and endpoint == "export_progress":
                arm_later(emu, rng)
            while True:
                progress = hook.get_export_progress(export_hash)
                if progress.is_complete or progress.is_failed or time.monotonic() - started > RUN_LIMIT_S:
                    break
                time.sleep(0.05)
            if progress.is_failed:
                outcome = ("clean", "export failed: " + (progress.message or ""))
            elif not progress.is_complete:
                outcome = ("bad", "did not complete in time")
            else:
                if arm_later is not None and endpoint == "download_export":
                    arm_later(emu, rng)
                result = hook.download_export(export_hash, folder / "out.bin")
                ok = (
                    result.sha256
                    == emu.artifact_sha256
                    == hashlib.sha256((folder / "out.bin").read_bytes()).hexdigest()
                )
                outcome = ("success", "") if ok else ("bad", "file differs")
    except ContentExporterError as err:
        outcome = ("clean", str(err)[:80])
        if KEY in str(err):
            outcome = ("bad", "key in exception")
    except Exception as err:  # anything else is a defect
        outcome = ("bad", f"{type(err).__name__}: {str(err)[:80]}")
    elapsed = time.monotonic() - started
    leftovers = [p.name for p in folder.iterdir() if p.name != "out.bin"]
    if outcome[0] != "success" and (folder / "out.bin").exists():
        outcome = ("bad", "file at destination after a failure")
    if leftovers:
        outcome = ("bad", f"temp files left: {leftovers}")
    if emu.counts["start_export"] - _non_processed_starts(emu) > 1:
        outcome = ("bad", "a second export was started")
    if elapsed > RUN_LIMIT_S + 10:
        outcome = ("bad", f"took {elapsed:.0f} s")
    if any(KEY in line for line in log_text):
        outcome = ("bad", "key in logs")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    requests_made = sum(emu.counts.values())
    return outcome, requests_made


def _non_processed_starts(emu: Any) -> int:
    """Start calls answered by an injected fault (never reached the service), which may be repeated."""
    return sum(
        1 for r in emu.requests if r.endpoint == "start_export" and r.status in (429, 500, 502, 503, 504)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=6, help="seeded runs per fault kind and endpoint")
    parser.add_argument("--check", action="store_true", help="exit 1 when any outcome is bad")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="cex-matrix-home-")
    os.environ["AIRFLOW_HOME"] = home
    from airflow_provider_cex.emulator import run_emulator

    log_text: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_text.append(self.format(record))

    logging.getLogger().addHandler(Capture())
    logging.getLogger().setLevel(logging.INFO)
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "success": 0, "clean": 0, "bad": 0, "requests": 0, "details": []}
    )
    started = time.monotonic()
    with run_emulator(api_key=KEY, export_seconds=0.2, artifact_bytes=5 * 1024 * 1024 + 11) as emu:
        os.environ["AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"] = json.dumps(
            {
                "conn_type": "content_exporter",
                "host": emu.base_url,
                "password": KEY,
                "extra": {"timeout": [2, 0.5]},
            }
        )
        for endpoint in ("start_export", "export_progress", "download_export"):
            for name, arm in fault_kinds(endpoint).items():
                for seed in range(args.seeds):
                    log_text.clear()
                    (kind, detail), requests_made = one_run(emu, endpoint, arm, seed, log_text)
                    row = rows[(name, endpoint)]
                    row["runs"] += 1
                    row[kind] += 1
                    row["requests"] += requests_made
                    if kind == "bad":
                        row["details"].append(detail)
    total = {k: sum(r[k] for r in rows.values()) for k in ("runs", "success", "clean", "bad")}
    elapsed = time.monotonic() - started
    print(f"fault matrix: {total['runs']} seeded runs in {elapsed:.0f} s (loopback emulator)\n")
    print(f"{'fault':30} {'endpoint':16} {'runs':>4} {'success':>7} {'clean':>5} {'bad':>3} {'requests':>8}")
    for (name, endpoint), r in rows.items():
        counts = f"{r['runs']:4} {r['success']:7} {r['clean']:5} {r['bad']:3} {r['requests']:8}"
        print(f"{name:30} {endpoint:16} {counts}")
        for detail in r["details"][:3]:
            print(f"{'':47}bad: {detail}")
    print(
        f"\ntotal: {total['runs']} runs, {total['success']} successes, {total['clean']} clean failures, ",
        end="",
    )
    print(f"{total['bad']} bad")
    print("requests = HTTP requests the emulator received (3 per run without faults, more with retries)")
    print("key check: exception texts and stdlib log records (not Airflow's structlog stdout)")
    return 1 if args.check and total["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure the import time our operators and sensor add on top of ``airflow.sdk`` (what every DAG file
using the provider pays at every parse), beside the same figure for the http provider's operator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OURS_MODULES = (
    "airflow_provider_cex.operators.content_exporter",
    "airflow_provider_cex.operators.export",
    "airflow_provider_cex.sensors.content_exporter",
)
HTTP_MODULES = ("airflow.providers.http.operators.http",)
HEAVY_MODULES = (
    "requests",
    "aiohttp",
    "httpx",
    "airflow_provider_cex.emulator",
    "airflow_provider_cex.hooks.content_exporter",
)
#: Written to stderr after the subject's imports: importtime lines after it (e.g. ``gc`` imported at
#: interpreter shutdown) are not the subject's.
END_MARKER = "@@import-cost-end@@"
TARGET_FLOOR_MS = 20.0
TARGET_FRACTION_OF_HTTP = 1 / 5
SUBPROCESS_TIMEOUT_S = 300

# "import time: self [us] | cumulative | imported package"; the name is indented 2 spaces per level.
_IMPORTTIME_RE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S.*)$")


@dataclass(frozen=True)
class Entry:
    name: str
    level: int
    self_us: int
    cumulative_us: int


@dataclass(frozen=True)
class Subject:
    label: str
    modules: tuple[str, ...]


@dataclass
class RunResult:
    sdk_us: int
    added_us: int
    added: list[Entry]
    #: perf_counter around the subject's import statements: a cross-check that also sees modules loaded
    #: through ``importlib.import_module`` (lazy ``__getattr__``), which importtime does not report.
    wall_us: int


@dataclass
class SubjectResults:
    subject: Subject
    runs: list[RunResult] = field(default_factory=list)

    def added_ms(self) -> list[float]:
        return [r.added_us / 1000 for r in self.runs]

    def median_ms(self) -> float:
        return statistics.median(self.added_ms())

    def median_wall_ms(self) -> float:
        return statistics.median(r.wall_us / 1000 for r in self.runs)

    def median_run(self) -> RunResult:
        ordered = sorted(self.runs, key=lambda r: r.added_us)
        return ordered[(len(ordered) - 1) // 2]


def parse_importtime(stderr: str) -> RunResult:
    """Split importtime output into ``airflow.sdk``'s own import and what came after it (up to the marker)."""
    sdk_us: int | None = None
    added: list[Entry] = []
    for line in stderr.splitlines():
        if line.startswith(END_MARKER):
            wall_us = int(line.split()[1]) // 1000
            break
        match = _IMPORTTIME_RE.match(line)
        if not match:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        entry = Entry(name.strip(), len(indent) // 2, int(self_us), int(cumulative_us))
        if sdk_us is None:
            # airflow.sdk also shows up nested (imported by airflow/__init__); only its top-level line counts.
            if entry.level == 0 and entry.name == "airflow.sdk":
                sdk_us = entry.cumulative_us
            continue
        added.append(entry)
    else:
        raise RuntimeError(f"end marker not found in importtime output:\n{stderr[-2000:]}")
    if sdk_us is None:
        raise RuntimeError("no top-level airflow.sdk line in importtime output")
    added_us = sum(e.cumulative_us for e in added if e.level == 0)
    return RunResult(sdk_us=sdk_us, added_us=added_us, added=added, wall_us=wall_us)


def subject_code(modules: tuple[str, ...]) -> str:
    lines = [
        "import time",
        "import airflow.sdk",
        "_t0 = time.perf_counter_ns()",
        *(f"import {m}" for m in modules),
        "_t1 = time.perf_counter_ns()",
        # sys is already loaded, so this adds no importtime line; flush orders it after the C-level writes.
        f"import sys; sys.stderr.write(f'{END_MARKER} {{_t1 - _t0}}\\n'); sys.stderr.flush()",
    ]
    return "\n".join(lines)


def run_python(code: str, env: dict[str, str], importtime: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:-1])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def heavy_check_and_warm_up(env: dict[str, str]) -> dict[str, list[str]]:
    """Which heavy modules ours pull in; also imports every subject once so the bytecode cache is warm."""
    code = "\n".join(
        [
            "import importlib, json, sys",
            "import airflow.sdk",
            "before = set(sys.modules)",
            *(f"import {m}" for m in OURS_MODULES),
            "after = set(sys.modules)",
            f"heavy = {HEAVY_MODULES!r}",
            "new = sorted(after - before)",
            "print(json.dumps({",
            "    'by_sdk': [m for m in heavy if m in before],",
            "    'by_us': [m for m in heavy if m in after and m not in before],",
            "    'new': new,",
            "}))",
            *(f"importlib.import_module({m!r})" for m in HTTP_MODULES),
        ]
    )
    return json.loads(run_python(code, env, importtime=False).stdout)


def child_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(tmp / "airflow_home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    # Measure with cached bytecode, as a DAG processor parses: a private cache (nothing written to the
    # venv or the tree), filled by the warm-up process. Without it (PYTHONDONTWRITEBYTECODE and no
    # __pycache__) every run compiles Airflow from source and the figures mostly measure the compiler.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def print_top(results: SubjectResults, count: int = 10) -> None:
    run = results.median_run()
    print(f"\n{results.subject.label}: top {count} by cumulative time added (median run, {run.added_us} us)")
    print(f"  {'cumul ms':>9} {'self ms':>8}  module (indented by import depth)")
    for e in sorted(run.added, key=lambda e: e.cumulative_us, reverse=True)[:count]:
        print(f"  {e.cumulative_us / 1000:9.1f} {e.self_us / 1000:8.1f}  {'  ' * e.level}{e.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per subject (default 5)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument("--verbose", action="store_true", help="show the top 10 added modules per subject")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    baseline = SubjectResults(Subject("baseline (airflow.sdk only)", ()))
    ours = SubjectResults(Subject("ours (operators + sensor)", OURS_MODULES))
    http = SubjectResults(Subject("http provider (reference)", HTTP_MODULES))
    all_results = (baseline, ours, http)

    tmp = Path(tempfile.mkdtemp(prefix="cex-import-cost-"))
    try:
        env = child_env(tmp)
        heavy = heavy_check_and_warm_up(env)
        for _ in range(args.runs):  # interleaved, so machine noise hits every subject alike
            for res in all_results:
                proc = run_python(subject_code(res.subject.modules), env, importtime=True)
                res.runs.append(parse_importtime(proc.stderr))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    sdk_ms = statistics.median(r.sdk_us / 1000 for res in all_results for r in res.runs)
    print(
        f"Measured: {args.runs} fresh processes per subject, interleaved (baseline, ours, http, ...),\n"
        "  `python -X importtime -c 'import airflow.sdk; import <modules>'`, after one warm-up process\n"
        "  (bytecode cache warm, AIRFLOW_HOME a temp dir, AIRFLOW__CORE__LOAD_EXAMPLES=False).\n"
        "  added = sum of the cumulative us of the top-level imports after airflow.sdk's own line;\n"
        "  wall = perf_counter around the same import statements (cross-check).\n"
    )
    print(f"airflow.sdk itself: median {sdk_ms:.0f} ms (all processes, under importtime)")
    print(f"baseline, added after airflow.sdk (should be ~0): median {baseline.median_ms():.1f} ms\n")
    print(f"{'subject':<28} | {'median ms added':>15} | {'min':>7} | {'max':>7} | {'wall ms':>7}")
    print(f"{'-' * 28}-+-{'-' * 15}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 7}")
    for res in (ours, http):
        ms = res.added_ms()
        print(
            f"{res.subject.label:<28} | {res.median_ms():>15.1f} | {min(ms):>7.1f} | {max(ms):>7.1f}"
            f" | {res.median_wall_ms():>7.1f}"
        )

    ours_ms, http_ms = ours.median_ms(), http.median_ms()
    target_ms = max(TARGET_FLOOR_MS, http_ms * TARGET_FRACTION_OF_HTTP)
    ratio = f"{ours_ms / http_ms:.2f}" if http_ms > 0 else "n/a"
    passed = ours_ms <= target_ms
    print(f"\nratio ours/http: {ratio}")
    http_share = http_ms * TARGET_FRACTION_OF_HTTP
    print(f"target: ours <= max({TARGET_FLOOR_MS:.0f} ms, http/5 = {http_share:.1f} ms) = {target_ms:.1f} ms")
    print(f"result: {'PASS' if passed else 'FAIL'} ({ours_ms:.1f} ms)")

    print("\nHeavy modules (importing our two modules after airflow.sdk, one extra process):")
    for name in HEAVY_MODULES:
        if name in heavy["by_us"]:
            state = "LOADED BY US"
        elif name in heavy["by_sdk"]:
            state = "already loaded by airflow.sdk"
        else:
            state = "not loaded"
        print(f"  {name:<44} {state}")
    new = heavy["new"]
    shown = new if len(new) <= 12 else sorted({".".join(m.split(".")[:3]) for m in new})
    print(f"  our modules added {len(new)} modules to sys.modules{'' if shown is new else ' (prefixes)'}:")
    for name in shown:
        print(f"    {name}")

    if args.verbose:
        for res in (ours, http):
            print_top(res)

    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The download benchmark's report: per protocol the legs' median wall and CPU time per GiB, the ratios, the
hook's peak RSS, and the targets as PASS/FAIL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks._bench_util import LegResults, curl_version, fmt_mib, size_label

if TYPE_CHECKING:
    from benchmarks.download_throughput import Protocol

TARGET_VS_LOOP = 1.05
TARGET_VS_CURL = 1.0
TARGET_RSS_GROWTH_MIB = 32.0


def leg_row(leg: LegResults) -> str:
    server_cpu = leg.server_cpu_per_gib()
    server = "" if server_cpu is None else f"{server_cpu:.3f}"
    return (
        f"{leg.label:<44} | {leg.median():>7.3f} | {min(leg.seconds):>6.3f} | {max(leg.seconds):>6.3f}"
        f" | {leg.mb_per_s():>5.0f} | {leg.cpu_per_gib():>9.3f} | {server:>9}"
    )


def median_of(leg: LegResults, key: str) -> float:
    return statistics.median(d[key] for d in leg.children)


def print_protocol(proto: Protocol, cp_leg: LegResults) -> tuple[list[tuple[str, bool, str]], float]:
    """Print one protocol's table and ratios; return its targets and the RSS growth (MiB)."""
    a, b, c, d = proto.a, proto.b, proto.c, proto.d
    print(f"\n{proto.name.upper()} ({proto.big.base_url}), {size_label(a.size)}, {len(a.runs)} rounds")
    header = (
        f"{'leg':<44} | {'wall s':>7} | {'min s':>6} | {'max s':>6} | {'MB/s':>5} | {'CPU s/GiB':>9}"
        f" | {'server CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for leg in (a, b, c, d, cp_leg):
        print(leg_row(leg))
    for leg, name in ((a, "(a)"), (b, "(b)")):
        print(
            f"  {name} CPU split: user {median_of(leg, 'user_s'):.2f} + sys {median_of(leg, 'sys_s'):.2f} s; "
            f"minor faults {median_of(leg, 'minflt'):.0f}; whole process (os.wait4) "
            f"{median_of(leg, 'process_cpu_s'):.2f} s, of which start-up and imports "
            f"{median_of(leg, 'ready_cpu_s'):.2f} s"
        )
    wall_ab, cpu_ab = a.median() / b.median(), a.cpu_per_gib() / b.cpu_per_gib()
    wall_ac, cpu_ac = a.median() / c.median(), a.cpu_per_gib() / c.cpu_per_gib()
    print(f"  ratio a/b (hook / requests loop): wall {wall_ab:.3f}, CPU {cpu_ab:.3f}")
    print(f"  ratio a/c (hook / curl):          wall {wall_ac:.3f}, CPU {cpu_ac:.3f}")
    wall_ad, cpu_ad = a.median() / d.median(), a.cpu_per_gib() / d.cpu_per_gib()
    print(f"  ratio a/d (hook / curl + sha256): wall {wall_ad:.3f}, CPU {cpu_ad:.3f}  (context, no target)")

    peaks: list[int] = []
    print("  peak RSS of (a), ru_maxrss of the child (max over rounds [min-max]; median before the call):")
    for leg in (a, proto.a_small):
        values = [d["peak_rss_kib"] for d in leg.children]
        peaks.append(max(values))
        print(
            f"    {size_label(leg.size):>8}: {fmt_mib(max(values))}  [{fmt_mib(min(values))}-"
            f"{fmt_mib(max(values))}]  (before the call: {fmt_mib(median_of(leg, 'rss_before_kib'))})"
        )
    growth = (peaks[0] - peaks[1]) / 1024
    print(f"    difference: {growth:+.1f} MiB")

    name = proto.name.upper()
    targets = [
        (f"{name} a/b wall <= {TARGET_VS_LOOP}", wall_ab <= TARGET_VS_LOOP, f"{wall_ab:.3f}"),
        (f"{name} a/b CPU <= {TARGET_VS_LOOP}", cpu_ab <= TARGET_VS_LOOP, f"{cpu_ab:.3f}"),
    ]
    if proto.name == "https":
        targets.append((f"{name} a/c wall <= {TARGET_VS_CURL}", wall_ac <= TARGET_VS_CURL, f"{wall_ac:.3f}"))
    small = size_label(proto.a_small.size)
    label = f"{name} peak RSS {size_label(a.size)} <= {small} + {TARGET_RSS_GROWTH_MIB:g} MiB"
    targets.append((label, growth <= TARGET_RSS_GROWTH_MIB, f"{growth:+.1f} MiB"))
    return targets, growth


def print_report(
    args: argparse.Namespace, script: str, protocols: list[Protocol], cp_leg: LegResults, load_start: float
) -> bool:
    targets: list[tuple[str, bool, str]] = []
    for proto in protocols:
        targets += print_protocol(proto, cp_leg)[0]

    children = [d for p in protocols for leg in (p.a, p.a_small) for d in leg.children]
    print(
        f"\n(a) one-time costs, not in (a)'s figures (median of {len(children)} children): import of the "
        f"hook module {statistics.median(d['import_s'] for d in children):.3f} s, hook + connection + first "
        f"lineage report {statistics.median(d['setup_s'] for d in children):.3f} s (of which the lineage "
        f"report {statistics.median(d['lineage_first_s'] for d in children):.3f} s)."
    )
    print("\nTargets:")
    for name, ok, detail in targets:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<44} ({detail})")
    if "https" in args.protocols and all(p.name != "https" for p in protocols):
        print("  SKIP  HTTPS targets (no TLS emulator)")

    sources = sorted({d["loop_source_sha256"][:12] for d in children})
    note = "" if len(sources) == 1 else "  WARNING: the download loop's source changed during the run!"
    if args.settle > 0:
        start = f"{args.settle:g} s after the previous large leg's file was deleted (freed memory cold)"
    else:
        start = "right after the previous large leg's file was deleted (freed memory still warm)"
    lines = [
        f"How it was measured: {args.rounds} rounds after 1 discarded warm-up round; per round and protocol",
        "  legs a, b, c in an order rotated each round, then (a) at the small size; then cp; the protocols",
        "  alternate which goes first. Every leg is a fresh process.",
        f"  (a) `python {script} --child hook`: imports the hook, reads the connection (the CA bundle in the",
        "      extra 'verify' over HTTPS), makes the first lineage report, then waits for 'go'; timed inside",
        "      the child around ContentExporterHook().download_export(hash, DEST, overwrite=True) only",
        "      (connection, TLS handshake and request included).",
        f"      Download loop source sha256 {', '.join(sources)}.{note}",
        f"  (b) `python {script} --child requests`: requests.Session().get(URL, stream=True), iter_content",
        "      (1 MiB), sha256 and write inline; timed like (a).",
        f"  (c) `curl -sS --fail -o DEST -H @headers [--cacert CA] URL` ({curl_version()}); wall time around",
        "      the process (its start-up included), CPU from os.wait4.",
        "  (d) `sh -c 'curl ... URL | tee DEST | openssl dgst -sha256'`: curl doing the hook's work",
        "      (save and hash in one pass; openssl uses SHA-NI, coreutils' sha256sum was 6x slower here),",
        "      as context; CPU from os.wait4 of sh, which includes the pipeline it waited for.",
        "  cp: `cp ARTIFACT DEST` of the large artifact file, as context (no network, no hashing).",
        "  CPU s/GiB = median user + sys of the client process (all threads) during the download, per GiB:",
        "      getrusage(RUSAGE_SELF) deltas inside (a) and (b); os.wait4 of the whole process for (c), cp.",
        "  server CPU = s/GiB the emulator process (all threads) used during the leg, from /proc/PID/stat:",
        "      near wall time, the server was the bottleneck.",
        "  Every file is checked (size on disk; sha256 for (a) and (b)) and no .part file may be left.",
        "  Emulators: ContentExporterEmulator in their own processes on 127.0.0.1 (HTTPS with its own CA).",
        f"  DEST: one folder on /tmp; no sync (page-cache writes). Each large leg started {start}.",
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

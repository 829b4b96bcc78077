"""Fault matrix (issue #6): seeded start -> poll -> download runs against a hostile emulator, as a table.

Every chaos kind of the emulator (``airflow_provider_cex/emulator/chaos.py``) on every endpoint it applies
to, the download body faults, refused connections, a failed export and a seeded chaos schedule over all
endpoints; progress faults also through the deferrable sensor's trigger. Each run ends as a success with a
byte-identical file, a clean failure (a provider error with a clear, key-free message and nothing at the
destination), or a bad outcome; see ``testkit/fault_matrix.py`` for the exact rules. Loopback only, bounded
in count and time. ``tests/faults/test_fault_matrix.py`` runs one seed per cell in CI.

    .venv/bin/python -m benchmarks.fault_matrix --seeds 6 --check   # from the repository root
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=6, help="seeded runs per fault kind and endpoint")
    parser.add_argument("--check", action="store_true", help="exit 1 when any outcome is bad")
    parser.add_argument("--only", default=None, help="run only rows whose fault or endpoint contains this")
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="cex-matrix-home-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    from testkit.fault_matrix import format_table, run_matrix

    only = None
    if args.only:
        only = lambda name, endpoint: args.only in name or args.only in endpoint  # noqa: E731
    started = time.monotonic()
    rows = run_matrix(args.seeds, only=only, progress=lambda line: print(line, flush=True))
    print(format_table(rows, time.monotonic() - started))
    print("\nclean failures, first message per row:")
    for (name, endpoint), row in rows.items():
        if row.failures:
            print(f"  {name} / {endpoint}: {row.failures[0]}")
    return 1 if args.check and any(r.bad for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

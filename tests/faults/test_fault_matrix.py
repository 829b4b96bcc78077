"""The fast subset of the fault matrix: one seeded run of every fault kind on every endpoint it applies to.

The full matrix (several seeds per cell, a few hundred runs) is ``make faults`` /
``python -m benchmarks.fault_matrix``; both classify runs with ``testkit/fault_matrix.py``.
"""

from __future__ import annotations

import time

import pytest

from testkit.fault_matrix import MUST_SUCCEED, fault_kinds, format_table, run_matrix


@pytest.mark.timeout(600)
def test_every_fault_kind_ends_in_success_or_a_clean_failure_never_a_bad_outcome():
    started = time.monotonic()
    rows = run_matrix(seeds=1)
    table = format_table(rows, time.monotonic() - started)
    assert set(rows) == set(fault_kinds()), "every (fault, endpoint) cell ran"
    assert sum(r.bad for r in rows.values()) == 0, table
    # The matrix must exercise both outcomes, or it proves nothing about the classification.
    assert sum(r.success for r in rows.values()) >= len(MUST_SUCCEED), table
    assert sum(r.clean for r in rows.values()) > 0, table

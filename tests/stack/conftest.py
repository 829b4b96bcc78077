"""The real Airflow stack (scripts/airflow_stack.py) for the tests in this folder, started once.

These tests start an api-server, scheduler, dag-processor and triggerer (minutes on two cores),
so they run only when ``CEX_STACK_TESTS=1``; ``make test`` skips them otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENABLED = os.environ.get("CEX_STACK_TESTS") == "1"
#: For the test modules: ``pytestmark = requires_stack``.
requires_stack = pytest.mark.skipif(not ENABLED, reason="real Airflow stack tests: set CEX_STACK_TESTS=1")
#: Exports take 25 s: the 30 s sensor pokes once before and once after it completes.
EXPORT_SECONDS = 25.0
#: Setup (migrate, start, parse) plus the first runs, on a loaded 2-core machine.
STACK_TEST_TIMEOUT = 600


def load_stack_module() -> ModuleType:
    """scripts/airflow_stack.py, imported by path (scripts/ is no package)."""
    name = "airflow_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "airflow_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="package")
def stack() -> Iterator[Any]:
    """One stack for every test in this folder, stopped after the last one (not at the session's end).

    Its home, logs included, stays in ``.demo/stack-test`` for a look after a failure.
    """
    if not ENABLED:
        pytest.skip("real Airflow stack tests: set CEX_STACK_TESTS=1")
    module = load_stack_module()
    started = time.monotonic()
    with module.airflow_stack(
        ROOT / ".demo" / "stack-test",
        export_seconds=EXPORT_SECONDS,
        scheduled_runs=False,  # only the runs the tests trigger
        log=lambda message: print(f"[stack] {message}", file=sys.stderr, flush=True),
    ) as running:
        print(f"[stack] ready after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        yield running
    leftovers = running.pids()
    assert not leftovers, f"processes of the stack still running after it stopped: {leftovers}"

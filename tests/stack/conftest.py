"""The real Airflow stack (scripts/airflow_stack.py) for the tests in this folder, started once.

These tests start an api-server, scheduler, dag-processor and triggerer (minutes on two cores),
so they run only when ``CEX_STACK_TESTS=1``; ``make test`` skips them otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
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
#: Debian's Chromium (scripts/install_browser.sh); Playwright never downloads a browser.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


def load_celery_stack_module() -> ModuleType:
    """scripts/celery_stack.py, imported by path (it imports scripts/airflow_stack.py itself)."""
    load_stack_module()
    name = "celery_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "celery_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def celery_stack() -> Iterator[Any]:
    """The CeleryExecutor stack (scripts/celery_stack.py) for one test module, stopped after its last test.

    PostgreSQL, Redis, moto S3, the emulator and two Celery workers; its home stays in
    ``.demo/celery-stack-test`` for a look after a failure.
    """
    if not ENABLED:
        pytest.skip("real Airflow stack tests: set CEX_STACK_TESTS=1")
    module = load_celery_stack_module()
    started = time.monotonic()
    with module.celery_stack(
        ROOT / ".demo" / "celery-stack-test",
        export_seconds=EXPORT_SECONDS,
        scheduled_runs=False,
        log=lambda message: print(f"[celery-stack] {message}", file=sys.stderr, flush=True),
    ) as running:
        print(f"[celery-stack] ready after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        yield running
    leftovers = running.pids() + running.service_pids()
    assert not leftovers, f"processes of the Celery stack still running after it stopped: {leftovers}"


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A Playwright page in a fresh headless Chromium profile (1280 x 1100)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_browser.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1100},
        )
        try:
            context.set_default_timeout(60_000)
            yield context.new_page()
        finally:
            context.close()


def log_in(stack: Any, page: Any) -> None:
    """Sign in to the UI (simple auth manager: the user and password the stack wrote to its password file)."""
    page.goto(stack.ui_url)
    page.get_by_label("Username").fill(stack.username)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Dags").first.wait_for()


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Call ``probe`` until it returns something true (returned), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

"""What a data engineer sees while a one-task export runs, and when one fails: the real UI, in Chromium.

On the real Airflow 3 stack: a run of ``example_content_exporter_one_task`` without a logical date (REST,
``"logical_date": null``). While its task is still running, REST ``…/links`` already holds the "Confluence
page" URL, the task's log page shows the page id and a percentage, and its Details tab shows the link. A
run for page 666 (the stack's emulator fails every export of it) shows the failure, naming the page and the
progress reached. The two pictures of the README are taken here (``docs/running-export-log.png`` and
``docs/failed-export-log.png``; ``CEX_LOG_SCREENSHOTS`` puts them in another folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.stack.conftest import EXPORT_SECONDS, ROOT, STACK_TEST_TIMEOUT, log_in, requires_stack, wait_for

pytestmark = [requires_stack, pytest.mark.timeout(STACK_TEST_TIMEOUT)]

DAG_ID = "example_content_exporter_one_task"
TASK_ID = "export_page_tree"
RUNNING_PAGE = "779101"
SCREENSHOTS = Path(os.environ.get("CEX_LOG_SCREENSHOTS") or ROOT / "docs")
#: Wide enough for a whole failure line (it starts indented under "Task failed with exception").
SCREENSHOT_SIZE = {"width": 1760, "height": 680}
#: Long enough for a browser to open the log page while the export runs (the one-task DAG polls every 10 s).
SLOW_EXPORT_SECONDS = 90.0


def _task_url(stack: Any, run_id: str, tab: str = "") -> str:
    return f"{stack.ui_url}dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{TASK_ID}{tab}"


def _rest(stack: Any, run_id: str, suffix: str = "") -> Any:
    with stack.session() as http:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK_ID}{suffix}"
        answer = http.get(f"{stack.api_url}{path}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def slow_exports(stack: Any) -> Any:
    """Exports take 90 s while the test looks at one (the stack's other tests run with 25 s)."""
    stack.emulator.export_seconds = SLOW_EXPORT_SECONDS
    try:
        yield
    finally:
        stack.emulator.export_seconds = EXPORT_SECONDS


def test_a_running_export_shows_page_progress_and_link_in_the_ui(
    stack: Any, page: Any, slow_exports: Any
) -> None:
    link = f"https://acme.atlassian.net/wiki/pages/viewpage.action?pageId={RUNNING_PAGE}"
    run_id = stack.trigger(DAG_ID, logical_date=None, conf={"page_id": RUNNING_PAGE})

    # REST: the link is there while the task runs (Airflow 3 writes the link's XCom only when a task ends).
    def running_with_link() -> bool:
        links = _rest(stack, run_id, "/links")["extra_links"]
        return bool(links.get("Confluence page")) and _rest(stack, run_id)["state"] == "running"

    wait_for("the running task's Confluence link through REST", running_with_link, timeout=180, every=1)
    assert _rest(stack, run_id, "/links")["extra_links"] == {"Confluence page": link}

    # The log page: the start line with the link, then a progress line with the page id and a percentage.
    log_in(stack, page)
    page.goto(_task_url(stack, run_id))
    # The second poll's line (10 s after the start): a percentage above 0 and an estimate.
    estimate = rf"page {RUNNING_PAGE}: [1-9]\d* % after \d+ s, about .* left \(export [0-9a-f]+\)"
    progress = page.get_by_text(re.compile(estimate)).first
    try:
        progress.wait_for(timeout=30_000)
    except Exception:  # the log view had not fetched that line yet: load it again
        page.reload()
        progress.wait_for(timeout=30_000)
    assert page.get_by_text(f"page {RUNNING_PAGE}: export started").first.is_visible()
    assert page.get_by_role("link", name=link).first.get_attribute("href") == link
    assert _rest(stack, run_id)["state"] == "running", "the task ended before the log page was seen"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(SCREENSHOT_SIZE)
    page.screenshot(path=str(SCREENSHOTS / "running-export-log.png"))

    # The Details tab: the "Confluence page" button, while the task is still running.
    page.goto(_task_url(stack, run_id, "/details"))
    button = page.get_by_role("link", name="Confluence page")
    button.wait_for()
    assert button.get_attribute("href") == link
    assert _rest(stack, run_id)["state"] == "running", "the task ended before the Details tab was seen"

    stack.emulator.export_seconds = EXPORT_SECONDS  # let it finish now
    assert stack.wait_for_run(DAG_ID, run_id, timeout=120) == "success"


def test_a_failed_export_says_which_page_how_far_and_why_in_the_log(stack: Any, page: Any) -> None:
    from tests.stack.conftest import load_stack_module

    failing = load_stack_module().FAILING_PAGE_ID
    run_id = stack.trigger(DAG_ID, logical_date=None, conf={"page_id": failing})
    assert stack.wait_for_run(DAG_ID, run_id, timeout=240) == "failed"
    assert _rest(stack, run_id)["try_number"] == 1  # a failed export is not retried: it would fail again

    log_in(stack, page)
    page.goto(_task_url(stack, run_id))
    failure = page.get_by_text(
        re.compile(rf"page {failing}: the export failed at 50 % after .*: page tree could not be rendered")
    ).first
    failure.wait_for()
    assert page.get_by_text(re.compile(rf"page {failing}: \d+ % after")).count() >= 1  # the wait before it
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(SCREENSHOT_SIZE)
    page.screenshot(path=str(SCREENSHOTS / "failed-export-log.png"))

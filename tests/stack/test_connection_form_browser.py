"""The connection form as a person sees it: Debian's Chromium, driven by Playwright, on the real stack.

Logs in with the simple auth manager, opens Admin -> Connections -> Add Connection, picks
"Content Exporter for Confluence", checks the provider's labels and fields, saves the picture
to ``docs/connection-form.png`` (the form's two sections side by side: the UI opens one at a
time), then saves the connection and reads it back through the REST API.

Needs ``/usr/bin/chromium`` (``scripts/install_browser.sh``); Playwright never downloads a browser.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.stack.conftest import ROOT, STACK_TEST_TIMEOUT, log_in, requires_stack

pytestmark = [requires_stack, pytest.mark.timeout(STACK_TEST_TIMEOUT)]

#: The documentation's picture; CEX_FORM_SCREENSHOT puts it elsewhere (e.g. to leave docs/ untouched).
SCREENSHOT = Path(os.environ.get("CEX_FORM_SCREENSHOT") or ROOT / "docs" / "connection-form.png")
#: The form of test_empty_region_and_two_timeouts_save_and_the_hook_reads_them, filled in.
FILLED_SCREENSHOT = Path(os.environ.get("CEX_FILLED_FORM_SCREENSHOT") or "/tmp/conn-form.png")
NEW_CONN_ID = "content_exporter_eu"
PAIR_CONN_ID = "content_exporter_timeouts"
EXAMPLE_KEY = "cexk_example_not_a_real_key_0123456789"


def _side_by_side(page: Any, left: bytes, right: bytes, path: Path) -> None:
    """One PNG of two screenshots, composed by the browser itself (no imaging library needed)."""
    images = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">' for png in (left, right)
    )
    page.set_content(
        "<html><body style='margin:0;background:#f4f6f8'>"
        f"<div id='pair' style='display:inline-flex;gap:16px;padding:16px;align-items:flex-start'>{images}"
        "</div></body></html>"
    )
    page.wait_for_function("Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#pair").screenshot(path=str(path))


def _open_add_connection(stack: Any, page: Any, conn_id: str) -> Any:
    """Log in, open Admin -> Connections -> Add Connection, pick our type; return the dialog."""
    log_in(stack, page)

    # Admin -> Connections: the connection the stack created with `airflow connections add` is listed.
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    page.get_by_text("content_exporter_default").wait_for()

    # Add Connection, type "Content Exporter for Confluence".
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(conn_id)
    conn_type = dialog.get_by_role("combobox", name="Connection Type")
    conn_type.click()
    conn_type.fill("Content Exporter")
    page.get_by_role("option", name="Content Exporter for Confluence").click()
    return dialog


def test_add_connection_form_shows_the_content_exporter_fields(stack: Any, page: Any) -> None:
    dialog = _open_add_connection(stack, page, NEW_CONN_ID)

    # Standard fields, relabelled; schema, login and port hidden; the key is a password input.
    application_url = dialog.get_by_label("Application URL")
    api_key = dialog.get_by_label("API key")
    application_url.wait_for()
    assert application_url.is_visible() and api_key.is_visible()
    assert "content-exporter-new.addon.meta-inf.hu" in (application_url.get_attribute("placeholder") or "")
    assert api_key.get_attribute("type") == "password"
    for hidden in ("Login", "Port", "Schema", "Host"):
        assert dialog.get_by_text(hidden, exact=True).count() == 0, f"{hidden} should be hidden"
    api_key.fill(EXAMPLE_KEY)
    standard_png = dialog.screenshot()

    # Extra fields from the provider's conn-fields: Region (us/eu), Confluence URL, Timeout.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    region = dialog.get_by_role("combobox", name="Region")
    region.wait_for()
    confluence_url = dialog.locator("input[name='element_confluence_url']")
    timeout = dialog.locator("textarea[name='element_timeout']")  # several JSON types: one text box
    for label in ("Region", "Confluence URL", "Timeout (seconds)"):
        assert dialog.get_by_text(label, exact=True).is_visible(), label
    assert confluence_url.is_visible() and timeout.is_visible()
    assert dialog.get_by_text("adds a 'Confluence page' link", exact=False).is_visible()
    region.click()
    page.get_by_role("option", name="eu", exact=True).click()
    confluence_url.fill("https://acme.atlassian.net/wiki")
    timeout.fill("60")
    extra_png = dialog.screenshot()

    _side_by_side(page.context.new_page(), standard_png, extra_png, SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000

    # Saving stores the extra fields in the connection's extra, the key as its password.
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")
    with stack.session() as http:
        answer = http.get(f"{stack.api_url}/api/v2/connections/{NEW_CONN_ID}", timeout=30)
        assert answer.status_code == 200, answer.text
        saved = answer.json()
        assert saved["conn_type"] == "content_exporter"
        extra = json.loads(saved["extra"])
        assert extra["region"] == "eu"
        assert extra["confluence_url"] == "https://acme.atlassian.net/wiki"
        assert float(extra["timeout"]) == 60
        assert EXAMPLE_KEY not in answer.text, "the REST API shows the API key"
        http.delete(f"{stack.api_url}/api/v2/connections/{NEW_CONN_ID}", timeout=30).raise_for_status()


def test_empty_region_and_two_timeouts_save_and_the_hook_reads_them(
    stack: Any, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the Airflow 3 form stores for an untouched Region and a "connect, read" timeout is what the hook
    parses: no region (the host decides; without one, us), connect 5 s, read 60 s."""
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    dialog = _open_add_connection(stack, page, PAIR_CONN_ID)
    dialog.get_by_label("Application URL").fill(stack.emulator_url)
    dialog.get_by_label("API key").fill(EXAMPLE_KEY)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    region = dialog.get_by_role("combobox", name="Region")
    region.wait_for()
    region.click()  # the choices: us, eu and "not set (us)" (null); leave it empty
    for choice in ("us", "eu", "not set (us)"):
        assert page.get_by_role("option", name=choice, exact=True).is_visible(), choice
    region.click()  # closes the list (Escape would close the whole dialog)
    timeout = dialog.locator("textarea[name='element_timeout']")
    timeout.fill("5, 60")
    timeout.press("Tab")  # leave the box
    FILLED_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    dialog.screenshot(path=str(FILLED_SCREENSHOT))
    assert dialog.get_by_text("Value must be one of", exact=False).count() == 0

    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")
    try:
        with stack.session() as http:
            answer = http.get(f"{stack.api_url}/api/v2/connections/{PAIR_CONN_ID}", timeout=30)
            assert answer.status_code == 200, answer.text
            saved = answer.json()
        assert saved["conn_type"] == "content_exporter"
        extra = json.loads(saved["extra"] or "{}")
        assert extra.get("region") is None, extra  # stored as null (or left out)
        assert extra["timeout"] == "5, 60", extra  # not JSON: kept as text

        # The hook reads the connection exactly as saved (with its key, from the CLI's export).
        exported = stack.airflow("connections", "export", "-", "--file-format", "json").stdout
        stored = json.loads(exported[exported.index("{") :])[PAIR_CONN_ID]
        assert stored["password"] == EXAMPLE_KEY and json.loads(stored["extra"]) == extra
        stored["extra"] = json.loads(stored["extra"])
        monkeypatch.setenv(f"AIRFLOW_CONN_{PAIR_CONN_ID.upper()}", json.dumps(stored))
        settings = ContentExporterHook(PAIR_CONN_ID).settings
        assert settings.base_url == stack.emulator_url.rstrip("/")
        assert (settings.connect_timeout, settings.read_timeout) == (5.0, 60.0)
        assert settings.api_key == EXAMPLE_KEY

        # And without the Application URL, the empty region means us.
        stored["host"] = None
        monkeypatch.setenv(f"AIRFLOW_CONN_{PAIR_CONN_ID.upper()}", json.dumps(stored))
        from airflow_provider_cex import US_APPLICATION_URL

        assert ContentExporterHook(PAIR_CONN_ID).settings.base_url == US_APPLICATION_URL
    finally:
        with stack.session() as http:
            http.delete(f"{stack.api_url}/api/v2/connections/{PAIR_CONN_ID}", timeout=30)

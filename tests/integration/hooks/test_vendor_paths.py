"""The vendor's documented start path, and what a user is told when a path is wrong (over loopback HTTP)."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_cex.emulator import run_emulator
from airflow_provider_cex.exceptions import ContentExporterNotFoundError
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.policy import RetryPolicy
from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger
from tests.conftest import API_KEY, CONN_ENV, connection_json

FAST_RETRIES = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02)
#: The path this provider assumed before it followed the vendor's documentation.
OLD_START = "/api/remote/export/{page_id}"
ELSEWHERE = {
    "start_export": "/v2/exports/{page_id}/begin",
    "export_progress": "/v2/exports/{export_hash}/state",
    "download_export": "/v2/exports/{export_hash}/file",
}


def make_hook() -> ContentExporterHook:
    return ContentExporterHook(retry_policy=FAST_RETRIES)


def test_the_first_call_goes_to_the_documented_init_path(served_emulator):
    with make_hook() as hook:
        export_hash = hook.start_export("123456", {"pageSettings": {"size": "A4"}})
    first = served_emulator.requests[0]
    assert (first.method, first.path, first.status) == ("POST", "/api/remoteExport/123456/init", 200)
    assert served_emulator.exports[export_hash].body["rootContentId"] == "123456"


def test_a_wrong_start_path_is_reported_as_a_wrong_path_not_an_expired_export(served_emulator, monkeypatch):
    monkeypatch.setenv(
        CONN_ENV, connection_json(served_emulator.base_url, endpoints={"start_export": OLD_START})
    )
    with make_hook() as hook, pytest.raises(ContentExporterNotFoundError) as err:
        hook.start_export("123456")
    message = str(err.value)
    assert "start-export endpoint" in message and "path is probably wrong" in message
    assert "/api/remoteExport/<PAGE_ID>/init" in message  # what the vendor documents
    assert "from the 'endpoints' extra" in message and "python -m airflow_provider_cex.openapi" in message
    assert "expired" not in message and API_KEY not in message
    assert served_emulator.exports == {}


def test_default_paths_against_a_service_elsewhere_name_the_documented_default(monkeypatch):
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=ELSEWHERE) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url))
        with make_hook() as hook, pytest.raises(ContentExporterNotFoundError) as err:
            hook.start_export("123456")
    assert "the vendor's documented path" in str(err.value) and "Application URL is probably wrong" in str(
        err.value
    )
    assert "path is probably wrong" in str(err.value)


def test_a_wrong_progress_path_right_after_a_start_blames_the_path_not_the_hash(served_emulator, monkeypatch):
    monkeypatch.setenv(
        CONN_ENV,
        connection_json(
            served_emulator.base_url, endpoints={"export_progress": "/api/remoteExport/{export_hash}"}
        ),
    )
    with make_hook() as hook:
        export_hash = hook.start_export("77")
        with pytest.raises(ContentExporterNotFoundError) as err:
            hook.get_export_progress(export_hash)
    message = str(err.value)
    assert "path is probably wrong, not the export hash" in message
    assert "'export_progress' path in the 'endpoints' extra" in message
    assert "has expired" not in message


def test_an_assumed_progress_path_is_labelled_assumed_when_it_fails(monkeypatch):
    paths = {**ELSEWHERE, "start_export": "/api/remoteExport/{page_id}/init"}
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=paths) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url))
        with make_hook() as hook:
            export_hash = hook.start_export("77")
            with pytest.raises(ContentExporterNotFoundError) as err:
                hook.get_export_progress(export_hash)
            with pytest.raises(ContentExporterNotFoundError) as download_err:
                hook.download_export(export_hash, f"/tmp/cex-never-{export_hash}/")
    assert "assumed default, not documented by the vendor" in str(err.value)
    assert "/api/remoteExport/{export_hash}/progress" in str(err.value)
    assert "/api/remoteExport/{export_hash}/download" in str(download_err.value)


def test_the_trigger_blames_a_wrong_progress_path_too(served_emulator, monkeypatch):
    monkeypatch.setenv(
        CONN_ENV,
        connection_json(served_emulator.base_url, endpoints={"export_progress": "/nowhere/{export_hash}"}),
    )
    with make_hook() as hook:
        export_hash = hook.start_export("77")

    async def first_event() -> dict:
        trigger = ContentExporterExportTrigger(export_hash, end_time=time.time() + 30, poll_interval=0.1)
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger fired nothing")

    event = asyncio.run(first_event())
    assert event["status"] == "error"
    assert "path is probably wrong" in event["message"] and API_KEY not in event["message"]


# --------------------------------------------------------------------------- Test Connection


def test_test_connection_with_the_right_paths_says_what_it_proved(served_emulator):
    ok, message = make_hook().test_connection()
    assert ok, message
    assert "the API key was accepted" in message
    assert (
        "start-export path /api/remoteExport/{page_id}/init (the vendor's documented path) exists" in message
    )
    assert "progress path /api/remoteExport/{export_hash}/progress (assumed default" in message
    assert "download path" in message and "cannot be checked" in message
    assert served_emulator.exports == {}  # probing started nothing


def test_test_connection_with_paths_from_the_extra_says_so(monkeypatch):
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=ELSEWHERE) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url, endpoints=ELSEWHERE))
        ok, message = make_hook().test_connection()
    assert ok, message
    assert "/v2/exports/{export_hash}/state (from the 'endpoints' extra) exists" in message


def test_test_connection_fails_when_the_paths_are_wrong(monkeypatch):
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=ELSEWHERE) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url))
        ok, message = make_hook().test_connection()
        assert emu.exports == {}
    assert not ok, message
    assert "nothing answers at the progress path" in message and "Those paths are probably wrong" in message
    assert "nothing answers at the start-export path" in message
    assert "python -m airflow_provider_cex.openapi" in message and "'endpoints' extra" in message
    assert "accepted" not in message


def test_test_connection_fails_when_only_the_start_path_is_wrong(served_emulator, monkeypatch):
    monkeypatch.setenv(
        CONN_ENV, connection_json(served_emulator.base_url, endpoints={"start_export": OLD_START})
    )
    ok, message = make_hook().test_connection()
    assert not ok, message
    assert "start-export path /api/remote/export/{page_id} (from the 'endpoints' extra)" in message


def test_test_connection_with_a_wrong_key_says_the_key_was_rejected(emulator, monkeypatch):
    monkeypatch.setenv(CONN_ENV, connection_json(emulator.base_url, api_key="cexk_" + "y" * 35))
    ok, message = make_hook().test_connection()
    assert not ok and "rejected the API key" in message and "y" * 35 not in message


# The server-down branch: test_hook.py::test_test_connection_tells_an_unreachable_host.


def _test_as_airflows_ui_does(base_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, str, str]:
    """Test Connection as Airflow's UI and REST API run it: an unsaved connection under a made-up id, exported
    as ``AIRFLOW_CONN_<ID>`` for the test (``airflow.api_fastapi...connections.test_connection``, and 2.11's
    ``connection_endpoint.test_connection``)."""
    from airflow.models.connection import Connection
    from airflow.utils.strings import get_random_string

    transient = get_random_string()
    conn = Connection(conn_id=transient, conn_type="content_exporter", host=base_url, password=API_KEY)
    monkeypatch.setenv(f"AIRFLOW_CONN_{transient.upper()}", conn.get_uri())
    ok, message = conn.test_connection()
    return ok, message, transient


def test_test_connection_from_the_ui_says_this_connection_not_the_id_airflow_made_up(monkeypatch):
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=ELSEWHERE) as emu:
        ok, message, transient = _test_as_airflows_ui_does(emu.base_url, monkeypatch)
    assert not ok, message
    assert "'endpoints' extra of this connection" in message
    assert transient not in message


def test_test_connection_from_the_ui_says_it_runs_on_the_api_server(monkeypatch):
    ok, message, transient = _test_as_airflows_ui_does("http://127.0.0.1:9", monkeypatch)  # nothing listens
    assert not ok, message
    assert "the Airflow API server (the webserver on Airflow 2.11), where Test Connection runs" in message
    assert "worker" not in message and transient not in message


def test_test_connection_from_the_cli_names_the_connection_and_this_machine(monkeypatch):
    """``airflow connections test <id>`` runs under the real id, on the machine it is typed on."""
    monkeypatch.setenv(CONN_ENV, connection_json("http://127.0.0.1:9"))
    ok, message = make_hook().test_connection()
    assert not ok, message
    assert "this machine can reach it" in message and "worker" not in message
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=ELSEWHERE) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url))
        ok, message = make_hook().test_connection()
    assert not ok and "'endpoints' extra of connection 'content_exporter_default'" in message

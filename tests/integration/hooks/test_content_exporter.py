"""ContentExporterHook against the emulator over real loopback HTTP: each behaviour a user relies on."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterNotFoundError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.policy import RetryPolicy
from tests.conftest import API_KEY, CONN_ENV, connection_json

FAST_RETRIES = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05, retry_after_cap=5)


def make_hook(**kwargs) -> ContentExporterHook:
    return ContentExporterHook(retry_policy=kwargs.pop("retry_policy", FAST_RETRIES), **kwargs)


def wait_until_done(hook: ContentExporterHook, export_hash: str, limit: float = 10.0):
    deadline = time.monotonic() + limit
    while True:
        progress = hook.get_export_progress(export_hash)
        if progress.is_complete or progress.is_failed or time.monotonic() > deadline:
            return progress
        time.sleep(0.05)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- the happy path


def test_round_trip_exports_a_page_to_a_byte_identical_file(served_emulator, tmp_path):
    emu = served_emulator
    with make_hook() as hook:
        export_hash = hook.start_export("424242", {"pageSettings": {"size": "A4", "orientation": "PORTRAIT"}})
        progress = wait_until_done(hook, export_hash)
        assert progress.is_complete and progress.progress == 100.0
        result = hook.download_export(export_hash, tmp_path / "out" / "report.pdf")
    data = (tmp_path / "out" / "report.pdf").read_bytes()
    assert data.startswith(b"%PDF-")
    assert hashlib.sha256(data).hexdigest() == emu.artifact_sha256 == result.sha256
    assert result.size_bytes == emu.artifact_size and result.content_type == "application/pdf"
    assert emu.exports[export_hash].body == {
        "pageSettings": {"size": "A4", "orientation": "PORTRAIT"},
        "rootContentId": "424242",
    }
    assert leftovers(tmp_path / "out") == ["report.pdf"]


def test_folder_destination_keeps_the_servers_file_name_and_creates_folders(served_emulator, tmp_path):
    with make_hook() as hook:
        export_hash = hook.start_export(77)
        wait_until_done(hook, export_hash)
        result = hook.download_export(export_hash, f"{tmp_path}/exports/2026-11-26/")
    assert result.path == str(tmp_path / "exports" / "2026-11-26" / "page-77.pdf")
    assert result.filename == "page-77.pdf" and Path(result.path).is_file()


def test_progress_climbs_while_the_export_runs(served_emulator):
    served_emulator.export_seconds = 1.0
    with make_hook() as hook:
        export_hash = hook.start_export("1")
        first = hook.get_export_progress(export_hash)
        assert not first.is_complete and 0 <= first.progress < 100
        assert wait_until_done(hook, export_hash).progress == 100.0


# --------------------------------------------------------------------------- errors a caller can tell apart


def test_rejected_key_fails_at_once_with_advice_and_without_the_key(emulator, monkeypatch, caplog):
    wrong_key = "cexk_wrongwrongwrongwrongwrongwrongwrong00"
    monkeypatch.setenv(CONN_ENV, connection_json(emulator.base_url, api_key=wrong_key))
    with make_hook() as hook, pytest.raises(ContentExporterAuthError) as err:
        hook.start_export("1")
    assert "rejected the API key" in str(err.value) and "admin page" in str(err.value)
    assert wrong_key not in str(err.value) and wrong_key not in caplog.text
    assert emulator.counts["start_export"] == 1  # no retries


def test_unknown_hash_is_not_found_without_retries(served_emulator):
    expected = r"unknown or has expired.*start a new export"
    with make_hook() as hook, pytest.raises(ContentExporterNotFoundError, match=expected):
        hook.get_export_progress("deadbeef")
    # One attempt with the key (no retries), then one without it that tells an unknown hash from a wrong path.
    asked = [(r.had_api_key, r.status) for r in served_emulator.requests if r.endpoint == "export_progress"]
    assert asked == [(True, 404), (False, 401)]


def test_failed_export_is_reported_with_the_servers_message(served_emulator):
    served_emulator.fail_pages(["666"], message="Page tree too large to render")
    with make_hook() as hook:
        progress = wait_until_done(hook, hook.start_export("666"))
    assert progress.is_failed and not progress.is_complete
    assert progress.message == "Page tree too large to render"


def test_bad_input_fails_before_any_http_call(served_emulator, tmp_path):
    with make_hook() as hook:
        for bad in ("", "12a", "../1"):
            with pytest.raises(ValueError, match="page_id"):
                hook.start_export(bad)
        with pytest.raises(ValueError, match="export_body"):
            hook.start_export("1", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="export_hash"):
            hook.get_export_progress(" ")
    assert sum(served_emulator.counts.values()) == 0


# --------------------------------------------------------------------------- retries


def test_rate_limited_progress_is_retried_honouring_retry_after(served_emulator):
    served_emulator.inject("export_progress", status=429, times=2, retry_after="1")
    with make_hook() as hook:
        export_hash = hook.start_export("5")
        started = time.monotonic()
        hook.get_export_progress(export_hash)
        elapsed = time.monotonic() - started
    assert served_emulator.counts["export_progress"] == 3
    assert elapsed >= 2.0  # slept the two Retry-After: 1 answers


def test_start_is_retried_after_503_and_starts_exactly_one_export(served_emulator):
    served_emulator.inject("start_export", status=503, times=2)
    with make_hook() as hook:
        hook.start_export("5")
    assert served_emulator.counts["start_export"] == 3
    assert len(served_emulator.exports) == 1


def test_start_is_not_repeated_after_a_500_that_may_have_been_processed(served_emulator):
    served_emulator.inject("start_export", status=500, times=1)
    with make_hook() as hook, pytest.raises(ContentExporterStartUncertainError, match="not repeated"):
        hook.start_export("5")
    assert served_emulator.counts["start_export"] == 1


def test_outage_longer_than_the_budget_gives_up_as_transient(served_emulator):
    served_emulator.outage("export_progress", seconds=30, status=502)
    with make_hook() as hook, pytest.raises(ContentExporterTransientError, match="after 4 attempts"):
        hook.get_export_progress("abc")
    assert served_emulator.counts["export_progress"] == 4


def test_an_hour_long_retry_after_is_not_slept_through(served_emulator):
    served_emulator.inject("export_progress", status=429, times=1, retry_after="3600")
    started = time.monotonic()
    with make_hook() as hook, pytest.raises(ContentExporterTransientError, match="3600 s"):
        hook.get_export_progress("abc")
    assert time.monotonic() - started < 2 and served_emulator.counts["export_progress"] == 1


def test_connection_refused_is_retried_then_reported(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(CONN_ENV, connection_json(f"http://127.0.0.1:{port}"))
    waits: list[float] = []
    retries: list[int] = []
    hook = make_hook(sleep=waits.append, on_retry=lambda event: retries.append(event.retry))
    with pytest.raises(ContentExporterTransientError, match="connection refused"):
        hook.start_export("1")  # safe to retry even a POST: nothing reached a server
    assert len(waits) == 3 and retries == [1, 2, 3]


# --------------------------------------------------------------------------- key handling


def test_key_goes_to_the_application_origin_only_not_across_a_redirect(served_emulator, tmp_path):
    from airflow_provider_cex.emulator import run_emulator

    emu = served_emulator
    with run_emulator(api_key="other-origin-key-000000000000000000000000") as storage:
        storage.accept_foreign_downloads(emu)
        emu.redirect_downloads_to(storage.base_url)
        with make_hook() as hook:
            export_hash = hook.start_export("9")
            wait_until_done(hook, export_hash)
            result = hook.download_export(export_hash, tmp_path / "f.pdf")
        assert result.sha256 == emu.artifact_sha256
        assert [r.had_api_key for r in storage.requests] == [False]
    assert all(r.had_api_key for r in emu.requests)


def test_key_is_masked_by_airflows_secret_masker(served_emulator):
    from airflow.providers.common.compat.sdk import redact

    make_hook().settings  # noqa: B018 - reading the connection registers the key
    assert API_KEY not in str(redact(f"header CEX-API-KEY: {API_KEY}"))


def test_key_never_appears_in_logs_or_errors_across_failures(served_emulator, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    served_emulator.inject("export_progress", status=503, times=1)
    served_emulator.fail_pages(["13"])
    messages = []
    with make_hook() as hook:
        wait_until_done(hook, hook.start_export("13"))
        for call in (
            lambda: hook.get_export_progress("nope"),
            lambda: hook.download_export("nope", tmp_path),
        ):
            with pytest.raises(Exception) as err:
                call()
            messages.append(str(err.value))
    assert API_KEY not in caplog.text and not any(API_KEY in m for m in messages)


# --------------------------------------------------------------------------- downloads


def test_a_download_cut_short_once_is_restarted_and_complete(served_emulator, tmp_path):
    emu = served_emulator
    with make_hook() as hook:
        export_hash = hook.start_export("3")
        wait_until_done(hook, export_hash)
        emu.truncate_downloads(after_bytes=100, times=1)
        result = hook.download_export(export_hash, tmp_path / "a.pdf")
    assert result.sha256 == emu.artifact_sha256 and emu.counts["download_export"] == 2
    assert leftovers(tmp_path) == ["a.pdf"]


def test_a_download_that_keeps_failing_leaves_nothing_behind(served_emulator, tmp_path):
    emu = served_emulator
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("unrelated")
    with make_hook() as hook:
        export_hash = hook.start_export("3")
        wait_until_done(hook, export_hash)
        emu.truncate_downloads(after_bytes=100, times=10)
        with pytest.raises(ContentExporterTransientError, match="download"):
            hook.download_export(export_hash, target / "a.pdf")
    assert leftovers(target) == ["keep.txt"]


def test_overwrite_false_refuses_an_existing_file_without_downloading(served_emulator, tmp_path):
    existing = tmp_path / "a.pdf"
    existing.write_bytes(b"previous run")
    with make_hook() as hook:
        export_hash = hook.start_export("3")
        with pytest.raises(FileExistsError, match="overwrite"):
            hook.download_export(export_hash, existing, overwrite=False)
    assert existing.read_bytes() == b"previous run"
    assert served_emulator.counts["download_export"] == 0


def test_overwrite_true_replaces_the_file(served_emulator, tmp_path):
    existing = tmp_path / "a.pdf"
    existing.write_bytes(b"previous run")
    with make_hook() as hook:
        export_hash = hook.start_export("3")
        wait_until_done(hook, export_hash)
        hook.download_export(export_hash, existing)
    assert hashlib.sha256(existing.read_bytes()).hexdigest() == served_emulator.artifact_sha256


def test_download_before_the_export_finished_says_to_wait(served_emulator, tmp_path):
    served_emulator.export_seconds = 30
    with make_hook() as hook:
        export_hash = hook.start_export("3")
        with pytest.raises(Exception, match="progress reaches 100"):
            hook.download_export(export_hash, tmp_path / "a.pdf")
    assert leftovers(tmp_path) == []


def test_large_download_streams_in_chunks(emulator, monkeypatch, tmp_path):
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=8 * 1024 * 1024 + 5) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url))
        with make_hook() as hook:
            result = hook.download_export(hook.start_export("8"), tmp_path)
        assert result.size_bytes == 8 * 1024 * 1024 + 5 and result.sha256 == emu.artifact_sha256
        assert os.path.getsize(result.path) == result.size_bytes


# --------------------------------------------------------------------------- test_connection


def test_test_connection_accepts_a_good_key(served_emulator):
    ok, message = make_hook().test_connection()
    assert ok and "accepted" in message


def test_test_connection_tells_a_rejected_key(emulator, monkeypatch):
    monkeypatch.setenv(CONN_ENV, connection_json(emulator.base_url, api_key="cexk_" + "x" * 35))
    ok, message = make_hook().test_connection()
    assert not ok and "rejected the API key" in message


def test_test_connection_tells_an_unreachable_host(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(CONN_ENV, connection_json(f"http://127.0.0.1:{port}"))
    ok, message = make_hook().test_connection()
    assert not ok and "Cannot reach" in message and API_KEY not in message

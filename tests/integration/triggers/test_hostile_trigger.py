"""ContentExporterExportTrigger and the async hook (aiohttp) against a hostile service over loopback.

The same hostile answers as ``tests/integration/hooks/test_hostile_service.py`` (the sync hook): what a
user notices here is the trigger's one event (never a false success), that the triggerer's event loop keeps
ticking, its memory stays small, the deadline holds, and the API key goes nowhere.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_cex.exceptions import ContentExporterTransientError
from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook
from airflow_provider_cex.policy import RetryPolicy
from airflow_provider_cex.triggers.content_exporter import DEADLINE_GRACE, ContentExporterExportTrigger
from tests import hostile
from tests.conftest import API_KEY
from tests.hostile import HASH, NO_RETRIES, assert_no_key, point_connection, progress_json, progress_server

#: The shared fixtures, under the names the tests ask for (pytest finds a fixture as a module attribute).
serve, logs = hostile.serve, hostile.logs


async def collect(trigger: ContentExporterExportTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def run_trigger(seconds: float = 30.0, poll_interval: float = 0.1) -> list[dict]:
    return asyncio.run(
        collect(ContentExporterExportTrigger(HASH, time.time() + seconds, poll_interval=poll_interval))
    )


def statuses(events: list[dict]) -> list[str]:
    return [event["status"] for event in events]


async def progress_of(retry_policy: RetryPolicy | None = None):
    async with ContentExporterAsyncHook(retry_policy=retry_policy or NO_RETRIES) as hook:
        return await hook.get_export_progress(HASH)


# --------------------------------------------------------------------------- 1. the reading rule


@pytest.mark.parametrize("coding", hostile.CODINGS)
def test_a_compressed_bomb_ends_the_trigger_in_an_error_without_blocking_the_loop(serve, monkeypatch, coding):
    body = hostile.bomb(coding)  # 64 MiB inflated, "complete" if read whole
    progress_server(serve, monkeypatch, body, {"Content-Encoding": hostile.HEADER_OF[coding]})

    async def main() -> tuple[list[dict], float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        events = await collect(ContentExporterExportTrigger(HASH, time.time() + 30, poll_interval=0.1))
        done.set()
        await ticking
        return events, max(gaps)

    with hostile.PeakMemory() as memory:
        events, longest_gap = asyncio.run(main())
    assert statuses(events) == ["error"]
    assert "unreadable" in events[0]["message"] and "larger than 1024 KiB" in events[0]["message"]
    assert longest_gap < 0.5  # the loop was never blocked inflating
    assert memory.growth < 32 * hostile.MIB  # inflating it all would take 64 MiB at least


@pytest.mark.parametrize("coding", hostile.CODINGS)
def test_a_small_compressed_progress_answer_completes_the_trigger(serve, monkeypatch, coding):
    body = hostile.compress(progress_json(100), coding)
    progress_server(serve, monkeypatch, body, {"Content-Encoding": hostile.HEADER_OF[coding]})
    assert run_trigger() == [{"status": "success", "export_hash": HASH, "progress": 100.0}]


@pytest.mark.parametrize("coding", hostile.CODINGS)
def test_a_compressed_answer_whose_first_byte_arrives_alone_completes_the_trigger(serve, monkeypatch, coding):
    hostile.first_byte_alone_server(serve, monkeypatch, coding)
    assert statuses(run_trigger()) == ["success"]


def test_an_unsupported_content_encoding_ends_the_trigger_in_an_error(serve, monkeypatch):
    progress_server(serve, monkeypatch, b"\x1b\x15\x00\xf8", {"Content-Encoding": "br"})
    events = run_trigger()
    assert statuses(events) == ["error"]
    assert "unreadable" in events[0]["message"] and "Content-Encoding 'br'" in events[0]["message"]


# --------------------------------------------------------------------------- 2. deep JSON


def test_deep_json_progress_ends_the_trigger_in_an_error_not_a_recursion_error(serve, monkeypatch):
    progress_server(serve, monkeypatch, hostile.DEEP)
    events = run_trigger()  # a RecursionError would escape run() and fail here
    assert statuses(events) == ["error"] and "nested too deeply" in events[0]["message"]


# --------------------------------------------------------------------------- 3. deadlines


@pytest.mark.parametrize("handler", [hostile.silent, hostile.dripping], ids=["silent", "dripping"])
def test_a_service_that_never_answers_fires_timeout_by_the_deadline(serve, monkeypatch, handler):
    server = serve(handler)
    point_connection(monkeypatch, server.base_url, timeout=[1, 30])
    started = time.monotonic()
    end_time = time.time() + 2
    events = asyncio.run(collect(ContentExporterExportTrigger(HASH, end_time, poll_interval=0.5)))
    fired, elapsed = time.time(), time.monotonic() - started
    assert statuses(events) == ["timeout"] and "had not answered" in events[0]["message"]
    assert fired < end_time + DEADLINE_GRACE + 1.5  # not the 30 s read timeout
    assert elapsed >= 1.5


def test_a_dripping_answer_ends_an_async_attempt_at_connect_plus_read_seconds(serve, monkeypatch):
    server = hostile.short_timeouts_server(serve, monkeypatch, hostile.dripping)
    started = time.monotonic()
    with pytest.raises(ContentExporterTransientError) as err:
        asyncio.run(progress_of(NO_RETRIES))
    hostile.assert_ended_at_connect_plus_read(err.value, time.monotonic() - started, server)


def test_dripping_headers_end_an_async_attempt_at_connect_plus_read_seconds(serve, monkeypatch):
    server = hostile.short_timeouts_server(serve, monkeypatch, hostile.dripping_headers)
    started = time.monotonic()
    with pytest.raises(ContentExporterTransientError, match="took longer than 2 s in all"):
        asyncio.run(progress_of(NO_RETRIES))
    assert time.monotonic() - started < 6  # the server would drip for 6.5 s
    assert server.count() == 1


# --------------------------------------------------------------------------- 5. the key


@pytest.mark.parametrize("kind", ["query", "userinfo", "file", "percent-encoded"])
def test_a_redirect_holding_the_key_is_not_followed(serve, monkeypatch, logs, kind):
    server, key = hostile.redirecting_with_the_key(serve, monkeypatch, kind)
    events = run_trigger()
    assert statuses(events) == ["error"] and "contains the API key" in events[0]["message"]
    assert server.count() == 1  # not followed
    assert_no_key(repr(events), key)
    assert_no_key(logs.text(), key)


def test_a_redirect_with_user_info_is_followed_without_it(serve, monkeypatch, logs):
    first, elsewhere = hostile.redirecting_with_user_info(serve, monkeypatch)
    assert statuses(run_trigger()) == ["success"]
    hostile.assert_followed_without_user_info(first, elsewhere, logs)


def test_an_error_body_echoing_the_key_is_scrubbed(serve, monkeypatch, logs):
    hostile.key_echoing_server(serve, monkeypatch, hostile.KEY_ECHO)
    events = run_trigger()
    assert statuses(events) == ["error"] and "HTTP 400" in events[0]["message"]
    assert "bad key ***" in events[0]["message"] and "k=***" in events[0]["message"]
    assert_no_key(repr(events), hostile.SPECIAL_KEY)
    assert_no_key(logs.text(), hostile.SPECIAL_KEY)


@pytest.mark.parametrize("form", list(hostile.ECHOED_FORMS))
def test_an_error_body_with_the_key_cut_at_the_snippets_end_shows_no_part_of_it(serve, monkeypatch, form):
    hostile.key_echoing_server(serve, monkeypatch, hostile.key_cut_by_the_snippet(form))
    events = run_trigger()
    assert statuses(events) == ["error"] and "HTTP 400" in events[0]["message"]
    hostile.assert_no_part_of_the_key(repr(events))


def test_a_key_pasted_with_spaces_or_a_line_break_is_sent_trimmed_with_one_warning(serve, monkeypatch, logs):
    server = serve(hostile.answering(progress_json(100)))
    point_connection(monkeypatch, server.base_url, f"  {API_KEY}\n")
    assert statuses(run_trigger()) == ["success"]
    assert asyncio.run(progress_of()).is_complete  # a second hook, settings from the cache
    assert hostile.keys_sent(server) == [f" {API_KEY}"] * 2  # "CEX-API-KEY: <key>": nothing around the key
    assert logs.count(hostile.TRIMMED) == 2  # once per trigger run (per hook), not per request
    assert API_KEY not in logs.text()


def test_a_trimmed_key_is_warned_once_per_run_not_per_poll(serve, monkeypatch, logs):
    answers = iter([b'{"progressValue": 10}', b'{"progressValue": 50}', b'{"progressValue": 100}'])

    def handle(_req: hostile.Seen, conn: hostile.Conn) -> None:
        conn.respond(200, next(answers, b'{"progressValue": 100}'), {"Content-Type": "application/json"})

    server = serve(handle)
    point_connection(monkeypatch, server.base_url, f"{API_KEY}\r\n")
    assert statuses(run_trigger(poll_interval=0.05)) == ["success"]
    assert server.count() == 3
    assert logs.count(hostile.TRIMMED) == 1 and API_KEY not in logs.text()


def assert_refused_before_any_request(serve, monkeypatch, password: str, words: str) -> None:
    """With ``password`` as the key, the trigger's one event is an error saying ``words``; nothing is sent."""
    server = serve(hostile.answering(progress_json(100)))
    point_connection(monkeypatch, server.base_url, password)
    events = run_trigger()
    assert statuses(events) == ["error"] and words in events[0]["message"]
    assert server.count() == 0


@pytest.mark.parametrize("password", hostile.UNSENDABLE_KEYS)
def test_a_key_that_cannot_be_a_header_ends_the_trigger_before_any_request(serve, monkeypatch, password):
    assert_refused_before_any_request(serve, monkeypatch, password, "cannot be sent as an HTTP header")


@pytest.mark.parametrize("password", hostile.BLANK_KEYS)
def test_a_whitespace_only_key_ends_the_trigger_with_no_key(serve, monkeypatch, password):
    assert_refused_before_any_request(serve, monkeypatch, password, "has no API key")


# --------------------------------------------------------------------------- 6. progress must be finite


@pytest.mark.parametrize("raw", hostile.NOT_FINITE)
def test_a_progress_that_is_not_a_finite_number_ends_the_trigger_in_an_error(serve, monkeypatch, raw):
    progress_server(serve, monkeypatch, progress_json(raw))
    events = run_trigger()
    assert statuses(events) == ["error"]  # never "success"
    assert "not a finite number" in events[0]["message"]


@pytest.mark.parametrize("raw", list(hostile.READABLE))
def test_a_progress_with_a_percent_sign_or_spaces_is_read_by_the_async_hook(serve, monkeypatch, raw):
    progress_server(serve, monkeypatch, progress_json(raw))
    progress = asyncio.run(progress_of())
    assert progress.progress == hostile.READABLE[raw] and not progress.is_complete and not progress.is_failed

"""ContentExporterExportTrigger and the async hook (aiohttp) against a hostile service over loopback.

The same hostile answers as ``tests/integration/hooks/test_hostile_service.py`` (the sync hook): what a
user notices here is the trigger's one event (never a false success), that the triggerer's event loop keeps
ticking, its memory stays small, the deadline holds, and the API key goes nowhere.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from airflow_provider_cex.core import RetryPolicy
from airflow_provider_cex.exceptions import ContentExporterTransientError
from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook
from airflow_provider_cex.triggers.content_exporter import DEADLINE_GRACE, ContentExporterExportTrigger
from tests.conftest import API_KEY
from tests.hostile import (
    HEADER_OF,
    MIB,
    Conn,
    HostileServer,
    Logged,
    PeakMemory,
    Seen,
    bomb,
    compress,
    point_connection,
    servers,
)

SPECIAL_KEY = "cexk+4f9a/8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e="
HASH = "h0st1le"
NO_RETRIES = RetryPolicy(max_retries=0)
TRIMMED = "had spaces or a line break around it"
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def serve() -> Iterator[Callable[..., HostileServer]]:
    with servers() as start:
        yield start


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Logged:
    return Logged(caplog, capsys)


def answering(body: bytes, headers: dict[str, str] | None = None, status: int = 200):
    def handle(_req: Seen, conn: Conn) -> None:
        conn.respond(status, body, {"Content-Type": "application/json", **(headers or {})})

    return handle


def progress_server(serve, monkeypatch, body: bytes, headers=None, api_key: str = API_KEY, **extra):
    server = serve(answering(body, headers))
    point_connection(monkeypatch, server.base_url, api_key, **extra)
    return server


async def collect(trigger: ContentExporterExportTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def run_trigger(seconds: float = 30.0, poll_interval: float = 0.1) -> list[dict]:
    return asyncio.run(
        collect(ContentExporterExportTrigger(HASH, time.time() + seconds, poll_interval=poll_interval))
    )


def statuses(events: list[dict]) -> list[str]:
    return [event["status"] for event in events]


def assert_no_key(text: str, key: str = API_KEY) -> None:
    for form in {key, quote(key, safe=""), quote(key)}:
        assert form not in text


async def progress_of(retry_policy: RetryPolicy | None = None):
    async with ContentExporterAsyncHook(retry_policy=retry_policy or NO_RETRIES) as hook:
        return await hook.get_export_progress(HASH)


# --------------------------------------------------------------------------- 1. the reading rule


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_bomb_ends_the_trigger_in_an_error_without_blocking_the_loop(serve, monkeypatch, coding):
    body = bomb(coding)  # 64 MiB inflated, "complete" if read whole
    progress_server(serve, monkeypatch, body, {"Content-Encoding": HEADER_OF[coding]})

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

    with PeakMemory() as memory:
        events, longest_gap = asyncio.run(main())
    assert statuses(events) == ["error"]
    assert "unreadable" in events[0]["message"] and "larger than 1024 KiB" in events[0]["message"]
    assert longest_gap < 0.5  # the loop was never blocked inflating
    assert memory.growth < 32 * MIB  # inflating it all would take 64 MiB at least


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_small_compressed_progress_answer_completes_the_trigger(serve, monkeypatch, coding):
    body = compress(b'{"progressValue": 100}', coding)
    progress_server(serve, monkeypatch, body, {"Content-Encoding": HEADER_OF[coding]})
    assert run_trigger() == [{"status": "success", "export_hash": HASH, "progress": 100.0}]


def first_byte_alone(body: bytes, coding: str, pause: float):
    """The compressed body's first byte in its own read, the rest ``pause`` seconds later."""

    def handle(_req: Seen, conn: Conn) -> None:
        headers = {"Content-Type": "application/json", "Content-Encoding": coding}
        conn.head(200, {**headers, "Content-Length": str(len(body))})
        conn.send(body[:1])
        if conn.wait(pause):
            conn.send(body[1:])

    return handle


@pytest.mark.parametrize(
    "coding",
    [
        "gzip",
        "deflate",
        "raw-deflate",
    ],
)
def test_a_compressed_answer_whose_first_byte_arrives_alone_completes_the_trigger(serve, monkeypatch, coding):
    body = compress(b'{"progressValue": 100}', coding)
    pause = 1.0 if coding == "raw-deflate" else 0.2  # long enough that byte 0 is surely read alone
    server = serve(first_byte_alone(body, HEADER_OF[coding], pause))
    point_connection(monkeypatch, server.base_url, timeout=[5, 5])
    assert statuses(run_trigger()) == ["success"]


def test_an_unsupported_content_encoding_ends_the_trigger_in_an_error(serve, monkeypatch):
    progress_server(serve, monkeypatch, b"\x1b\x15\x00\xf8", {"Content-Encoding": "br"})
    events = run_trigger()
    assert statuses(events) == ["error"]
    assert "unreadable" in events[0]["message"] and "Content-Encoding 'br'" in events[0]["message"]


# --------------------------------------------------------------------------- 2. deep JSON


def test_deep_json_progress_ends_the_trigger_in_an_error_not_a_recursion_error(serve, monkeypatch):
    progress_server(serve, monkeypatch, DEEP)
    events = run_trigger()  # a RecursionError would escape run() and fail here
    assert statuses(events) == ["error"] and "nested too deeply" in events[0]["message"]


# --------------------------------------------------------------------------- 3. deadlines


def silent(_req: Seen, conn: Conn) -> None:
    conn.wait(60)  # accepts, reads the request, never answers (until the server stops)


def dripping(_req: Seen, conn: Conn) -> None:
    conn.head(200, {"Content-Type": "application/json", "Content-Length": "1000"})
    for _ in range(1000):
        conn.send(b" ")
        if not conn.wait(0.3):
            return


@pytest.mark.parametrize("handler", [silent, dripping], ids=["silent", "dripping"])
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
    server = serve(dripping)
    point_connection(monkeypatch, server.base_url, timeout=[1, 1])
    started = time.monotonic()
    with pytest.raises(ContentExporterTransientError) as err:
        asyncio.run(progress_of(NO_RETRIES))
    elapsed = time.monotonic() - started
    assert "took longer than 2 s in all" in str(err.value)
    assert 1.9 <= elapsed < 6  # the 1 s read timeout never fired: a byte came every 0.3 s
    assert server.count() == 1


def dripping_headers(_req: Seen, conn: Conn) -> None:
    """The status line and headers one byte every 0.2 s (a 1,000-byte header), giving up after 6.5 s."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 1000 + b"\r\n\r\n"
    for offset in range(33):
        conn.send(head[offset : offset + 1])
        if not conn.wait(0.2):
            return


def test_dripping_headers_end_an_async_attempt_at_connect_plus_read_seconds(serve, monkeypatch):
    server = serve(dripping_headers)
    point_connection(monkeypatch, server.base_url, timeout=[1, 1])
    started = time.monotonic()
    with pytest.raises(ContentExporterTransientError, match="took longer than 2 s in all"):
        asyncio.run(progress_of(NO_RETRIES))
    assert time.monotonic() - started < 6  # the server would drip for 6.5 s
    assert server.count() == 1


# --------------------------------------------------------------------------- 5. the key

REDIRECTS_WITH_THE_KEY = {
    "query": lambda key, port: f"/x?k={key}",
    "userinfo": lambda key, port: f"http://{key}@127.0.0.1:{port}/x",
    "file": lambda key, port: f"file:///{key}",
    "percent-encoded": lambda key, port: f"/x?k={quote(key, safe='')}",
}


@pytest.mark.parametrize("kind", list(REDIRECTS_WITH_THE_KEY))
def test_a_redirect_holding_the_key_is_not_followed(serve, monkeypatch, logs, kind):
    key = SPECIAL_KEY if kind == "percent-encoded" else API_KEY
    ports: list[int] = []

    def handle(req: Seen, conn: Conn) -> None:
        if req.target.endswith("/progress"):
            conn.respond(302, b"", {"Location": REDIRECTS_WITH_THE_KEY[kind](key, ports[0])})
        else:
            conn.json({"progressValue": 100})

    server = serve(handle)
    ports.append(server.port)
    point_connection(monkeypatch, server.base_url, key)
    events = run_trigger()
    assert statuses(events) == ["error"] and "contains the API key" in events[0]["message"]
    assert server.count() == 1  # not followed
    assert_no_key(repr(events), key)
    assert_no_key(logs.text(), key)


def test_a_redirect_with_user_info_is_followed_without_it(serve, monkeypatch, logs):
    elsewhere = serve(lambda req, conn: conn.json({"progressValue": 100}))
    target = f"http://user:pw@127.0.0.1:{elsewhere.port}/elsewhere"
    first = serve(lambda req, conn: conn.respond(302, b"", {"Location": target}))
    point_connection(monkeypatch, first.base_url)
    assert statuses(run_trigger()) == ["success"]
    (seen,) = elsewhere.requests
    assert seen.target == "/elsewhere"
    assert seen.header("authorization") is None and seen.header("cex-api-key") is None
    assert first.requests[0].header("cex-api-key") == API_KEY
    text = logs.text()
    assert f"Following redirect to 127.0.0.1:{elsewhere.port}" in text  # the capture sees the hook's lines
    assert "user:pw" not in text and "pw@" not in text


def test_an_error_body_echoing_the_key_is_scrubbed(serve, monkeypatch, logs):
    echo = f"bad key {SPECIAL_KEY} (sent as k={quote(SPECIAL_KEY, safe='')})".encode()
    server = serve(answering(echo, {"Content-Type": "text/plain"}, status=400))
    point_connection(monkeypatch, server.base_url, SPECIAL_KEY)
    events = run_trigger()
    assert statuses(events) == ["error"] and "HTTP 400" in events[0]["message"]
    assert "bad key ***" in events[0]["message"] and "k=***" in events[0]["message"]
    assert_no_key(repr(events), SPECIAL_KEY)
    assert_no_key(logs.text(), SPECIAL_KEY)


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


#: How a server may echo the key (a key with '+', '/', '='): as is, or percent-encoded as URLs carry it.
ECHOED_FORMS = {
    "plain": lambda key: key,
    "percent-encoded": lambda key: quote(key, safe=""),
    "percent-encoded-keeping-slash": quote,
    "percent-encoded-lower-case": lambda key: lower_hex(quote(key, safe="")),
}


def key_cut_by_the_snippet(form: str) -> bytes:
    """An error body of blanks, then the echoed key, placed so snippet's bounded head ends one character
    before the key's end (the blanks collapse, so the key would be the quoted text)."""
    head = 8 * 200 + 4 * len(SPECIAL_KEY)  # protocol.snippet's head for the default limit
    echoed = ECHOED_FORMS[form](SPECIAL_KEY)
    return (" " * (head - len(echoed) + 1) + echoed + " and more" * 20).encode()


@pytest.mark.parametrize(
    "form",
    [
        "plain",
        "percent-encoded",
        "percent-encoded-keeping-slash",
        "percent-encoded-lower-case",
    ],
)
def test_an_error_body_with_the_key_cut_at_the_snippets_end_shows_no_part_of_it(serve, monkeypatch, form):
    server = serve(answering(key_cut_by_the_snippet(form), {"Content-Type": "text/plain"}, status=400))
    point_connection(monkeypatch, server.base_url, SPECIAL_KEY)
    events = run_trigger()
    assert statuses(events) == ["error"] and "HTTP 400" in events[0]["message"]
    for echo in ECHOED_FORMS.values():
        assert echo(SPECIAL_KEY)[:16].lower() not in repr(events).lower()


def test_a_key_pasted_with_spaces_or_a_line_break_is_sent_trimmed_with_one_warning(serve, monkeypatch, logs):
    server = serve(answering(b'{"progressValue": 100}'))
    point_connection(monkeypatch, server.base_url, f"  {API_KEY}\n")
    assert statuses(run_trigger()) == ["success"]
    assert asyncio.run(progress_of()).is_complete  # a second hook, settings from the cache
    sent = [value for r in server.requests for name, value in r.raw_headers if name.lower() == "cex-api-key"]
    assert sent == [f" {API_KEY}"] * 2  # "CEX-API-KEY: <key>": nothing around the key
    assert logs.count(TRIMMED) == 2  # once per trigger run (per hook), not per request
    assert API_KEY not in logs.text()


def test_a_trimmed_key_is_warned_once_per_run_not_per_poll(serve, monkeypatch, logs):
    answers = iter([b'{"progressValue": 10}', b'{"progressValue": 50}', b'{"progressValue": 100}'])

    def handle(_req: Seen, conn: Conn) -> None:
        conn.respond(200, next(answers, b'{"progressValue": 100}'), {"Content-Type": "application/json"})

    server = serve(handle)
    point_connection(monkeypatch, server.base_url, f"{API_KEY}\r\n")
    assert statuses(run_trigger(poll_interval=0.05)) == ["success"]
    assert server.count() == 3
    assert logs.count(TRIMMED) == 1 and API_KEY not in logs.text()


@pytest.mark.parametrize("password", ["ab\ncd-key", "kéy-123456", "abc\x7fdef-key"])
def test_a_key_that_cannot_be_a_header_ends_the_trigger_before_any_request(serve, monkeypatch, password):
    server = serve(answering(b'{"progressValue": 100}'))
    point_connection(monkeypatch, server.base_url, password)
    events = run_trigger()
    assert statuses(events) == ["error"] and "cannot be sent as an HTTP header" in events[0]["message"]
    assert server.count() == 0


@pytest.mark.parametrize("password", [" ", " \n\t "])
def test_a_whitespace_only_key_ends_the_trigger_with_no_key(serve, monkeypatch, password):
    server = serve(answering(b'{"progressValue": 100}'))
    point_connection(monkeypatch, server.base_url, password)
    events = run_trigger()
    assert statuses(events) == ["error"] and "has no API key" in events[0]["message"]
    assert server.count() == 0


# --------------------------------------------------------------------------- 6. progress must be finite

NOT_FINITE = ["Infinity", "-Infinity", "NaN", "1e999", '"inf"', '"1e999"', '"1_0_0"', r'"\u0661\u0660\u0660"']
READABLE = {'"42%"': 42.0, "42": 42.0, '" 42.5 "': 42.5}


@pytest.mark.parametrize("raw", NOT_FINITE)
def test_a_progress_that_is_not_a_finite_number_ends_the_trigger_in_an_error(serve, monkeypatch, raw):
    progress_server(serve, monkeypatch, b'{"progressValue": ' + raw.encode() + b"}")
    events = run_trigger()
    assert statuses(events) == ["error"]  # never "success"
    assert "not a finite number" in events[0]["message"]


@pytest.mark.parametrize("raw", list(READABLE))
def test_a_progress_with_a_percent_sign_or_spaces_is_read_by_the_async_hook(serve, monkeypatch, raw):
    progress_server(serve, monkeypatch, b'{"progressValue": ' + raw.encode() + b"}")
    progress = asyncio.run(progress_of())
    assert progress.progress == READABLE[raw] and not progress.is_complete and not progress.is_failed

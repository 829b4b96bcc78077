"""ContentExporterHook (requests) against a hostile service over loopback: bombs, deep JSON, drips, slow
downloads, a server fishing for the API key, progress values that are not numbers, encoded downloads.

Each test asserts what a user would notice: the error class and its words, the saved file, what the server
received, what was logged. The trigger's side of the same cases is in
``tests/integration/triggers/test_hostile_trigger.py``.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterProtocolError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.policy import RetryPolicy
from airflow_provider_cex.redaction import snippet
from airflow_provider_cex.settings import parse_low_speed
from tests import hostile
from tests.conftest import API_KEY
from tests.hostile import HASH, MIB, Conn, Seen, assert_no_key, point_connection, progress_server

#: The shared fixtures, under the names the tests ask for (pytest finds a fixture as a module attribute).
serve, logs = hostile.serve, hostile.logs

FAST = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02, retry_after_cap=1)


def make_hook(retry_policy: RetryPolicy = FAST) -> ContentExporterHook:
    return ContentExporterHook(retry_policy=retry_policy, sleep=lambda _seconds: None)


# --------------------------------------------------------------------------- 1. the reading rule


@pytest.mark.parametrize("coding", hostile.CODINGS)
def test_a_compressed_bomb_is_unreadable_and_costs_little_memory(serve, monkeypatch, coding):
    body = hostile.bomb(coding)  # 64 MiB inflated
    assert len(body) < 200 * 1024  # ~65 KiB on the wire, with its correct Content-Length
    progress_server(serve, monkeypatch, body, {"Content-Encoding": hostile.HEADER_OF[coding]})
    with make_hook() as hook:
        assert hook.settings and hook.get_conn()  # the connection is read before measuring
        with hostile.PeakMemory() as memory, pytest.raises(ContentExporterProtocolError) as err:
            hook.get_export_progress(HASH)
    assert "unreadable" in str(err.value) and "larger than 1024 KiB" in str(err.value)
    assert memory.growth < 32 * MIB  # inflating it all would take 64 MiB at least


@pytest.mark.parametrize("coding", hostile.CODINGS)
def test_a_small_compressed_progress_answer_is_read(serve, monkeypatch, coding):
    body = hostile.compress(hostile.progress_json(100), coding)
    progress_server(serve, monkeypatch, body, {"Content-Encoding": hostile.HEADER_OF[coding]})
    with make_hook() as hook:
        progress = hook.get_export_progress(HASH)
    assert progress.is_complete and progress.progress == 100.0


@pytest.mark.parametrize("coding", hostile.CODINGS)
def test_a_compressed_answer_whose_first_byte_arrives_alone_is_read(serve, monkeypatch, coding):
    hostile.first_byte_alone_server(serve, monkeypatch, coding)
    with make_hook() as hook:
        assert hook.get_export_progress(HASH).is_complete


def test_an_unsupported_content_encoding_is_unreadable_and_named(serve, monkeypatch):
    progress_server(serve, monkeypatch, b"\x1b\x15\x00\xf8", {"Content-Encoding": "br"})
    with make_hook() as hook, pytest.raises(ContentExporterProtocolError) as err:
        hook.get_export_progress(HASH)
    assert "unreadable" in str(err.value) and "Content-Encoding 'br'" in str(err.value)


# --------------------------------------------------------------------------- 2. deep JSON, snippets


def test_deep_json_progress_is_a_provider_error_not_a_recursion_error(serve, monkeypatch):
    progress_server(serve, monkeypatch, hostile.DEEP)
    with make_hook() as hook, pytest.raises(ContentExporterProtocolError, match="nested too deeply"):
        hook.get_export_progress(HASH)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_deep_json_answer_to_a_start_is_uncertain_and_not_repeated(serve, monkeypatch, content_type):
    server = serve(hostile.answering(hostile.DEEP, {"Content-Type": content_type}))
    point_connection(monkeypatch, server.base_url)
    hook = make_hook(RetryPolicy(max_retries=3, backoff_base=0.01))
    with hook, pytest.raises(ContentExporterStartUncertainError) as err:
        hook.start_export("42")
    assert server.count("POST") == 1 and server.count() == 1
    assert "may be running" in str(err.value)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x01\x02\x7f" * (MIB // 3), id="1MiB-control-bytes"),
        pytest.param("\x01\x02 \n" * (MIB // 4), id="1MiB-control-str"),
        pytest.param("x" * MIB, id="1MiB-str"),
        pytest.param(b"\x00" * (64 * MIB), id="64MiB-bytes"),
        pytest.param(" " * (64 * MIB), id="64MiB-spaces-str"),
    ],
)
def test_a_snippet_looks_at_a_bounded_head_of_a_huge_body(body):
    started = time.perf_counter()
    text = snippet(body, API_KEY)
    elapsed = time.perf_counter() - started
    assert len(text) <= 200
    assert elapsed < 0.2  # reading all of 64 MiB character by character would take seconds


# --------------------------------------------------------------------------- 3. deadlines


def test_a_dripping_progress_answer_ends_at_connect_plus_read_seconds(serve, monkeypatch):
    server = hostile.short_timeouts_server(serve, monkeypatch, hostile.dripping)
    with make_hook(hostile.NO_RETRIES) as hook:
        hook.settings  # noqa: B018 - read the connection before timing
        started = time.monotonic()
        with pytest.raises(ContentExporterTransientError) as err:
            hook.get_export_progress(HASH)
        elapsed = time.monotonic() - started
    hostile.assert_ended_at_connect_plus_read(err.value, elapsed, server)


def test_a_dripping_answer_to_a_start_is_uncertain_and_not_repeated(serve, monkeypatch):
    server = hostile.short_timeouts_server(serve, monkeypatch, hostile.dripping)
    with make_hook(RetryPolicy(max_retries=3, backoff_base=0.01)) as hook:
        hook.settings  # noqa: B018
        started = time.monotonic()
        with pytest.raises(ContentExporterStartUncertainError) as err:
            hook.start_export("42")
        elapsed = time.monotonic() - started
    assert "took longer than 2 s in all" in str(err.value) and "not repeated" in str(err.value)
    assert elapsed < 6
    assert server.count("POST") == 1 and server.count() == 1


def test_dripping_headers_end_the_attempt_at_connect_plus_read_seconds(serve, monkeypatch):
    hostile.short_timeouts_server(serve, monkeypatch, hostile.dripping_headers)
    with make_hook(hostile.NO_RETRIES) as hook:
        hook.settings  # noqa: B018
        started = time.monotonic()
        with pytest.raises(ContentExporterTransientError, match="took longer than 2 s in all"):
            hook.get_export_progress(HASH)
        elapsed = time.monotonic() - started
    assert elapsed < 6


# --------------------------------------------------------------------------- 4. download low speed

FILE = random.Random(7).randbytes(200_000)
FAST_PART = 100_000


def slow_then_resumable(req: Seen, conn: Conn) -> None:
    """The first answer sends half the file at once, then a byte every 0.2 s; a Range request: the rest."""
    wanted = re.fullmatch(r"bytes=(\d+)-", req.header("range") or "")
    if wanted:
        start = int(wanted[1])
        conn.head(
            206,
            {
                "Content-Type": "application/pdf",
                "Accept-Ranges": "bytes",
                "Content-Range": f"bytes {start}-{len(FILE) - 1}/{len(FILE)}",
                "Content-Length": str(len(FILE) - start),
            },
        )
        conn.send(FILE[start:])
        return
    conn.head(
        200, {"Content-Type": "application/pdf", "Accept-Ranges": "bytes", "Content-Length": str(len(FILE))}
    )
    conn.send(FILE[:FAST_PART])
    for offset in range(FAST_PART, len(FILE)):
        conn.send(FILE[offset : offset + 1])
        if not conn.wait(0.2):
            return


def slow_download(serve, monkeypatch, tmp_path):
    server = serve(slow_then_resumable)
    point_connection(monkeypatch, server.base_url, timeout=[5, 5], low_speed=[10000, 1])
    started = time.monotonic()
    with make_hook() as hook:
        result = hook.download_export(HASH, tmp_path / "export.pdf")
    return server, result, time.monotonic() - started


def test_a_download_slower_than_low_speed_is_resumed_with_a_range_request(serve, monkeypatch, logs, tmp_path):
    server, _result, elapsed = slow_download(serve, monkeypatch, tmp_path)
    ranges = [r.header("range") for r in server.requests]
    assert ranges[0] is None and len(ranges) == 2
    resumed_from = int(re.fullmatch(r"bytes=(\d+)-", ranges[1] or "")[1])
    assert FAST_PART < resumed_from < len(FILE)
    assert "low_speed" in logs.text()
    assert elapsed < 15  # the drip alone would take 20,000 s


def test_a_download_resumed_after_low_speed_is_byte_identical(serve, monkeypatch, tmp_path):
    _server, result, _elapsed = slow_download(serve, monkeypatch, tmp_path)
    saved = (tmp_path / "export.pdf").read_bytes()
    assert result.size_bytes == len(FILE)
    assert saved == FILE and result.sha256 == hashlib.sha256(FILE).hexdigest()


@pytest.mark.parametrize("value", [[0, 0], "0, 0", "[0, 0]"])
def test_low_speed_zero_zero_turns_the_check_off(monkeypatch, value):
    assert parse_low_speed([0, 0]) == (0.0, 0.0)
    point_connection(monkeypatch, "http://127.0.0.1:9", low_speed=value)
    assert make_hook().settings.low_speed == (0.0, 0.0)


@pytest.mark.parametrize("value", [[-1, 5], "fast", [1024, 0], [True, 5], [1, 2, 3]])
def test_a_bad_low_speed_is_refused(monkeypatch, value):
    point_connection(monkeypatch, "http://127.0.0.1:9", low_speed=value)
    with pytest.raises(ContentExporterError, match="Connection extra 'low_speed' must be"):
        make_hook().settings  # noqa: B018


# --------------------------------------------------------------------------- 5. the key


@pytest.mark.parametrize("kind", list(hostile.REDIRECTS_WITH_THE_KEY))
def test_a_redirect_holding_the_key_is_not_followed(serve, monkeypatch, logs, kind):
    server, key = hostile.redirecting_with_the_key(serve, monkeypatch, kind)
    with (
        make_hook() as hook,
        pytest.raises(ContentExporterProtocolError, match="contains the API key") as err,
    ):
        hook.get_export_progress(HASH)
    assert server.count() == 1  # not followed
    assert_no_key(str(err.value), key)
    assert_no_key(logs.text(), key)


def test_a_redirect_with_user_info_is_followed_without_it(serve, monkeypatch, logs):
    first, elsewhere = hostile.redirecting_with_user_info(serve, monkeypatch)
    with make_hook() as hook:
        assert hook.get_export_progress(HASH).is_complete
    hostile.assert_followed_without_user_info(first, elsewhere, logs)


def test_an_error_body_echoing_the_key_is_scrubbed(serve, monkeypatch, logs):
    hostile.key_echoing_server(serve, monkeypatch, hostile.KEY_ECHO)
    with make_hook() as hook, pytest.raises(ContentExporterProtocolError, match="HTTP 400") as err:
        hook.get_export_progress(HASH)
    assert "bad key ***" in str(err.value) and "k=***" in str(err.value)
    assert_no_key(str(err.value), hostile.SPECIAL_KEY)
    assert_no_key(logs.text(), hostile.SPECIAL_KEY)


@pytest.mark.parametrize("form", list(hostile.ECHOED_FORMS))
def test_an_error_body_with_the_key_cut_at_the_snippets_end_shows_no_part_of_it(serve, monkeypatch, form):
    hostile.key_echoing_server(serve, monkeypatch, hostile.key_cut_by_the_snippet(form))
    with make_hook() as hook, pytest.raises(ContentExporterProtocolError, match="HTTP 400") as err:
        hook.get_export_progress(HASH)
    hostile.assert_no_part_of_the_key(str(err.value))


DISPOSITIONS = {
    "quoted": lambda key: f'attachment; filename="{key}.pdf"',
    "rfc2231": lambda key: f"attachment; filename*=UTF-8''{quote(key, safe='')}.pdf",
    "rfc2231-every-character-encoded": lambda key: (
        "attachment; filename*=UTF-8''" + "".join(f"%{ord(ch):02X}" for ch in key) + ".pdf"
    ),
    "rfc2231-continuations": lambda key: f'attachment; filename*0="{key[:20]}"; filename*1="{key[20:]}.pdf"',
}


@pytest.mark.parametrize(
    "disposition",
    [
        "quoted",
        "rfc2231",
        "rfc2231-every-character-encoded",
        "rfc2231-continuations",
    ],
)
def test_a_download_whose_name_or_type_echoes_the_key_does_not_carry_it(
    serve, monkeypatch, logs, tmp_path, disposition
):
    content = b"%PDF-1.7\n" + FILE[:5000]

    def handle(_req: Seen, conn: Conn) -> None:
        conn.respond(
            200,
            content,
            {
                "Content-Type": f"application/pdf; name={API_KEY}",
                "Content-Disposition": DISPOSITIONS[disposition](API_KEY),
            },
        )

    server = serve(handle)
    point_connection(monkeypatch, server.base_url)
    with make_hook() as hook:
        result = hook.download_export(HASH, f"{tmp_path}/out/")
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert names == [result.filename] and Path(result.path).read_bytes() == content
    for text in (result.path, result.filename, result.content_type or "", " ".join(names)):
        assert_no_key(text)
    hook.log.warning("capture check")
    assert "capture check" in logs.text()  # the capture sees the hook's lines
    assert_no_key(logs.text())


def key_recorder(req: Seen, conn: Conn) -> None:
    if req.method == "POST":
        conn.json({"hash": HASH})
    else:
        conn.json({"progressValue": 100})


def test_a_key_pasted_with_spaces_or_a_line_break_is_sent_trimmed_with_one_warning(serve, monkeypatch, logs):
    server = serve(key_recorder)
    point_connection(monkeypatch, server.base_url, f"  {API_KEY}\n")
    with make_hook() as hook:
        assert hook.start_export("42") == HASH
        assert hook.get_export_progress(HASH).is_complete
    assert hostile.keys_sent(server) == [f" {API_KEY}"] * 2  # "CEX-API-KEY: <key>": nothing around the key
    assert logs.count(hostile.TRIMMED) == 1 and "warning" in logs.text().lower()
    assert API_KEY not in logs.text()


@pytest.mark.parametrize("password", [*hostile.UNSENDABLE_KEYS, "abc\r\nX-Evil: 1"])
def test_a_key_that_cannot_be_a_header_is_refused_before_any_request(serve, monkeypatch, password):
    server = serve(key_recorder)
    point_connection(monkeypatch, server.base_url, password)
    with (
        make_hook() as hook,
        pytest.raises(ContentExporterAuthError, match="cannot be sent as an HTTP header"),
    ):
        hook.start_export("42")
    assert server.count() == 0


@pytest.mark.parametrize("password", [*hostile.BLANK_KEYS, "\r\n"])
def test_a_whitespace_only_key_is_no_key(serve, monkeypatch, password):
    server = serve(key_recorder)
    point_connection(monkeypatch, server.base_url, password)
    with make_hook() as hook, pytest.raises(ContentExporterAuthError, match="has no API key"):
        hook.get_export_progress(HASH)
    assert server.count() == 0


# --------------------------------------------------------------------------- 6. progress must be finite


@pytest.mark.parametrize("raw", hostile.NOT_FINITE)
def test_a_progress_that_is_not_a_finite_number_is_refused(serve, monkeypatch, raw):
    progress_server(serve, monkeypatch, hostile.progress_json(raw))
    with make_hook() as hook, pytest.raises(ContentExporterProtocolError, match="not a finite number"):
        hook.get_export_progress(HASH)


@pytest.mark.parametrize("raw", list(hostile.READABLE))
def test_a_progress_with_a_percent_sign_or_spaces_is_read(serve, monkeypatch, raw):
    progress_server(serve, monkeypatch, hostile.progress_json(raw))
    with make_hook() as hook:
        progress = hook.get_export_progress(HASH)
    assert progress.progress == hostile.READABLE[raw] and not progress.is_complete and not progress.is_failed


# --------------------------------------------------------------------------- 7. download Content-Encoding

PDF = b"%PDF-1.7\n" + FILE


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_download_sent_with_content_encoding_is_saved_decoded(serve, monkeypatch, tmp_path, coding):
    wire = hostile.compress(PDF, coding)
    server = serve(hostile.answering(wire, {"Content-Type": "application/pdf", "Content-Encoding": coding}))
    point_connection(monkeypatch, server.base_url)
    with make_hook() as hook:
        result = hook.download_export(HASH, tmp_path / "export.pdf")
    saved = (tmp_path / "export.pdf").read_bytes()
    assert saved == PDF and result.size_bytes == len(PDF)
    assert result.sha256 == hashlib.sha256(saved).hexdigest()


def test_a_gzip_file_sent_with_gzip_encoding_is_saved_as_sent(serve, monkeypatch, tmp_path):
    wire = hostile.compress(PDF, "gzip")
    server = serve(hostile.answering(wire, {"Content-Type": "application/gzip", "Content-Encoding": "gzip"}))
    point_connection(monkeypatch, server.base_url)
    with make_hook() as hook:
        result = hook.download_export(HASH, tmp_path / "export.pdf.gz")
    saved = (tmp_path / "export.pdf.gz").read_bytes()
    assert saved == wire and result.sha256 == hashlib.sha256(wire).hexdigest()

"""Unit tests of the pure Remote API contract: validation, URL building, parsing, retry policy, file names."""

from __future__ import annotations

import os
import random
import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_cex import EU_APPLICATION_URL, US_APPLICATION_URL
from airflow_provider_cex.answers import parse_export_hash, parse_progress
from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterProtocolError,
)
from airflow_provider_cex.failures import error_for_status
from airflow_provider_cex.files import default_filename, filename_from_content_disposition, sanitize_filename
from airflow_provider_cex.inputs import build_start_body, validate_export_hash, validate_page_id
from airflow_provider_cex.policy import Call, RetryPolicy, is_retryable_status, parse_retry_after
from airflow_provider_cex.redaction import snippet
from airflow_provider_cex.settings import (
    parse_endpoints,
    parse_timeout,
    render_endpoint,
    resolve_base_url,
    settings_from_connection,
)

KEY = "cexk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e"


# --------------------------------------------------------------------------- page id, hash, body


@pytest.mark.parametrize("page_id", ["123", 123, " 456 ", "0012"])
def test_page_id_accepts_digits(page_id):
    assert validate_page_id(page_id) == str(page_id).strip()


@pytest.mark.parametrize(
    "page_id", ["", "  ", None, True, "12a", "-5", "1.5", "../1", "١٢٣", "1 2", "9" * 21, "12/../3", "12?x=1"]
)
def test_page_id_rejects_non_digits_with_a_message_naming_the_parameter(page_id):
    with pytest.raises(ValueError, match="page_id"):
        validate_page_id(page_id)


@pytest.mark.parametrize(
    "bad", ["", "   ", None, 42, "a/b", "a?b", "a#b", "a b", "%2e%2e", "..", ".", "x" * 300]
)
def test_export_hash_rejects_empty_or_path_like_values(bad):
    with pytest.raises(ValueError, match="export_hash"):
        validate_export_hash(bad)


def test_start_body_sets_root_content_id_and_keeps_the_callers_dict_untouched():
    body = {"templateId": "pdf", "scope": "descendants"}
    page, payload = build_start_body(" 98765 ", body)
    assert page == "98765"
    assert payload == {"templateId": "pdf", "scope": "descendants", "rootContentId": "98765"}
    assert "rootContentId" not in body


def test_start_body_rejects_conflicting_root_content_id():
    with pytest.raises(ValueError, match="rootContentId"):
        build_start_body("1", {"rootContentId": "2"})


@pytest.mark.parametrize("body", [[1, 2], "{}", 3, ("a",)])
def test_start_body_must_be_a_json_object(body):
    with pytest.raises(ValueError, match="export_body must be a JSON object"):
        build_start_body("1", body)


# --------------------------------------------------------------------------- connection settings


def test_base_url_from_region_when_host_is_empty():
    assert resolve_base_url(None, None, None) == US_APPLICATION_URL
    assert resolve_base_url("", None, "eu") == EU_APPLICATION_URL
    for bad in ("apac", "EU", ""):  # exactly the form's choices (tests/unit/test_connection_form_schema.py)
        with pytest.raises(ValueError, match="region"):
            resolve_base_url("", None, bad)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("http://127.0.0.1:8085/", None, "http://127.0.0.1:8085"),
        ("content-exporter-new.addon.meta-inf.hu", None, US_APPLICATION_URL),
        ("example.test", 8443, "https://example.test:8443"),
        ("https://proxy.example.test/cex/", None, "https://proxy.example.test/cex"),
    ],
)
def test_base_url_from_host(host, port, expected):
    assert resolve_base_url(host, port, "eu") == expected


@pytest.mark.parametrize("host", ["ftp://x.test", "https://user:pw@x.test", "https://x.test/?a=1", "http://"])
def test_base_url_rejects_unusable_hosts(host):
    with pytest.raises(ValueError):
        resolve_base_url(host)


def test_settings_without_api_key_say_where_to_put_it():
    with pytest.raises(ContentExporterAuthError, match="password"):
        settings_from_connection("cex", "http://127.0.0.1:1", None, None, {})


def test_settings_repr_never_shows_the_key():
    settings = settings_from_connection("cex", "http://127.0.0.1:1", KEY, None, {})
    assert KEY not in repr(settings) and KEY not in str(settings)


def test_misconfigured_extra_names_the_connection():
    with pytest.raises(ContentExporterError, match=r"'cex' is misconfigured.*timeout"):
        settings_from_connection("cex", "http://127.0.0.1:1", KEY, None, {"timeout": "soon"})


def test_timeout_forms():
    assert parse_timeout(None) == (10.0, 60.0)
    assert parse_timeout("5") == (5.0, 5.0)
    assert parse_timeout(120) == (10.0, 120.0)
    assert parse_timeout([3, 30]) == (3.0, 30.0)
    for bad in (0, -1, "nan", "inf", "x"):
        with pytest.raises(ValueError):
            parse_timeout(bad)


def test_endpoint_templates_are_validated():
    assert parse_endpoints({"start_export": "/v2/export/{page_id}"}) == {
        "start_export": "/v2/export/{page_id}"
    }
    for bad in (
        {"unknown": "/x/{page_id}"},
        {"start_export": "v2/{page_id}"},
        {"start_export": "/v2/{export_hash}"},
        {"export_progress": "/p/{export_hash}/{export_hash}"},
        {"export_progress": "/p/{export_hash}?q=1"},
        "not-a-dict",
    ):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


@given(st.text(min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_endpoint_rendering_never_injects_a_path_segment_or_query(value):
    path = render_endpoint("/api/remoteExport/{export_hash}/progress", value)
    assert path.startswith("/api/remoteExport/") and path.endswith("/progress")
    middle = path[len("/api/remoteExport/") : -len("/progress")]
    assert "/" not in middle and "?" not in middle and "#" not in middle


# --------------------------------------------------------------------------- start response


@pytest.mark.parametrize(
    ("body", "ctype", "expected"),
    [
        (b'{"hash": "abc123"}', "application/json", "abc123"),
        (b'{"exportHash": "h-1"}', "application/json", "h-1"),
        (b'{"export_hash": "h_2"}', "application/json", "h_2"),
        (b'{"id": 77}', "application/json", "77"),
        (b'"quoted-hash"', "application/json", "quoted-hash"),
        (b"plainhash\n", "text/plain", "plainhash"),
        (b"plainhash", None, "plainhash"),
        (b"plainhash", "text/plain; charset=utf-8", "plainhash"),
    ],
)
def test_hash_extraction_accepts_every_documented_shape(body, ctype, expected):
    assert parse_export_hash(body, ctype) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"hash": ""}',
        b"[1,2]",
        b"null",
        b'{"hash": "a/b"}',
        b"<html>502 Bad Gateway</html>" * 40,
    ],
)
def test_hash_extraction_rejects_anything_else_quoting_at_most_200_characters(body):
    with pytest.raises(ContentExporterProtocolError) as err:
        parse_export_hash(body, "application/json" if body.startswith((b"{", b"[", b"n")) else "text/html")
    quoted = str(err.value).split("got: ")[1].rsplit(". If the vendor", 1)[0]
    assert len(quoted) <= 203  # 200 characters and the quotes


def test_a_one_word_html_page_is_not_taken_for_a_hash():
    with pytest.raises(ContentExporterProtocolError):
        parse_export_hash(b"Maintenance", "text/html")


def test_hash_extraction_error_never_echoes_the_key():
    with pytest.raises(ContentExporterProtocolError) as err:
        parse_export_hash(f"bad request with key {KEY} inside".encode(), "text/html", KEY)
    assert KEY not in str(err.value)


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize(
    ("value", "expected"),
    [(45, 45.0), (45.5, 45.5), ("45", 45.0), ("99.9", 99.9), ("100%", 100.0), (150, 100.0), (-3, 0.0)],
)
def test_progress_accepts_numbers_and_numeric_strings_clamped(value, expected):
    progress = parse_progress("h", {"progressValue": value})
    assert progress.progress == expected
    assert progress.is_complete == (expected >= 100)
    assert not progress.is_failed


@pytest.mark.parametrize(
    "payload",
    [
        {"progressValue": 30, "status": "failed", "errorMessage": "Out of memory"},
        {"progressValue": 30, "state": "CANCELLED", "message": "Out of memory"},
        {"progressValue": 100, "error": "Out of memory"},
        {"progressValue": 10, "error_message": "Out of memory"},
        {"status": "ABORTED", "error": {"message": "Out of memory"}},
    ],
)
def test_failure_is_detected_with_the_servers_message(payload):
    progress = parse_progress("h", payload)
    assert progress.is_failed and not progress.is_complete
    assert progress.message == "Out of memory"


def test_failure_without_message_still_says_something():
    progress = parse_progress("h", {"status": "ERROR", "progressValue": 5})
    assert progress.is_failed and "ERROR" in (progress.message or "")


def test_empty_error_field_is_not_a_failure():
    assert not parse_progress("h", {"progressValue": 10, "error": "", "errorMessage": None}).is_failed


def test_done_status_without_progress_value_is_complete():
    assert parse_progress("h", {"status": "DONE"}).is_complete


@pytest.mark.parametrize(
    "payload", [[], "50", None, {}, {"progressValue": None}, {"progressValue": True}, {"progressValue": "x"}]
)
def test_unreadable_progress_is_a_protocol_error(payload):
    with pytest.raises(ContentExporterProtocolError, match="progress"):
        parse_progress("h", payload)


@given(
    st.dictionaries(st.text(max_size=15), st.none() | st.booleans() | st.integers() | st.floats() | st.text())
)
@settings(max_examples=300, deadline=None)
def test_progress_parser_either_reads_a_value_in_range_or_raises_a_protocol_error(payload):
    try:
        progress = parse_progress("h", payload)
    except ContentExporterProtocolError:
        return
    assert 0.0 <= progress.progress <= 100.0
    assert not (progress.is_failed and progress.is_complete)


# --------------------------------------------------------------------------- retries


def test_retry_after_seconds_and_http_date():
    now = time.time()
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1.5)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    for junk in (None, "", "soon", "-5", "1.5e9x", "Wed, 99 Foo 2020"):
        assert parse_retry_after(junk, now) is None


@given(st.text(max_size=40))
def test_retry_after_never_crashes_and_never_negative(value):
    result = parse_retry_after(value, time.time())
    assert result is None or result >= 0


def test_retry_policy_backs_off_exponentially_with_jitter_and_caps():
    policy = RetryPolicy(max_retries=4, backoff_base=1.0, backoff_max=5.0, retry_after_cap=60)
    rng = random.Random(1)
    waits = [policy.wait(n, None, rng) for n in (1, 2, 3, 4)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0
    assert 2.5 <= waits[3] <= 5.0  # capped at backoff_max
    assert policy.wait(5, None, rng) is None  # budget exhausted
    assert policy.wait(1, 12.0, rng) == 12.0  # Retry-After honoured
    assert policy.wait(1, 3600.0, rng) is None  # an hour is not slept through


def test_post_is_retried_only_where_it_surely_was_not_processed():
    assert is_retryable_status(429, idempotent=False) and is_retryable_status(503, idempotent=False)
    assert not is_retryable_status(500, idempotent=False) and not is_retryable_status(502, idempotent=False)
    assert all(is_retryable_status(s, idempotent=True) for s in (429, 500, 502, 503, 504))
    assert not any(is_retryable_status(s, idempotent=True) for s in (400, 401, 403, 404, 409, 422))


def test_error_messages_are_actionable_and_typed():
    auth = error_for_status(401, Call("start_export", "1"), url="https://x", body=KEY, secret=KEY)
    assert isinstance(auth, ContentExporterAuthError)
    assert "admin page" in str(auth) and KEY not in str(auth)


def test_snippet_is_bounded_printable_and_redacted():
    text = snippet(("\x00\x1b[31m" + KEY + " ") * 500, KEY)
    assert len(text) <= 200 and KEY not in text and "\x1b" not in text and "\x00" not in text


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="Team Space.pdf"', "Team Space.pdf"),
        ("attachment; filename*=UTF-8''Espa%C3%B1a%20plan.docx", "España plan.docx"),
        ("attachment", None),
        (None, None),
    ],
)
def test_content_disposition_filename(header, expected):
    assert filename_from_content_disposition(header) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("..", "fallback.pdf"),
        (".hidden.pdf", "hidden.pdf"),
        ("a\x00b\x07c.pdf", "a_b_c.pdf"),
        ("CON.pdf", "_CON.pdf"),
        ("lpt1", "_lpt1"),
        ("", "fallback.pdf"),
        (None, "fallback.pdf"),
        ('re:port<1>|"?*.pdf', "re_port_1_____.pdf"),
    ],
)
def test_sanitize_filename_hostile_names(name, expected):
    assert sanitize_filename(name, "fallback.pdf") == expected


def test_sanitize_filename_truncates_long_names_keeping_the_extension():
    result = sanitize_filename("x" * 10_000 + ".pdf", "f.pdf")
    assert result.endswith(".pdf") and len(result.encode()) <= 200


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_sanitized_name_always_stays_inside_the_output_folder(name):
    result = sanitize_filename(name, "fallback.bin")
    folder = os.path.abspath("/srv/exports")
    assert result and "/" not in result and "\\" not in result and "\x00" not in result
    assert result not in (".", "..") and not result.startswith(".")
    assert os.path.dirname(os.path.abspath(os.path.join(folder, result))) == folder
    assert len(result.encode("utf-8")) <= 200


def test_default_filename_uses_content_type():
    assert default_filename("abc", "application/pdf") == "export-abc.pdf"
    assert default_filename("a/b", None) == "export-a_b.bin"

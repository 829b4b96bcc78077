"""Property-based tests (hypothesis) for every parser and sanitiser of the Remote API contract."""

from __future__ import annotations

import json
import os
import time
from email.utils import formatdate

from hypothesis import example, given, settings
from hypothesis import strategies as st

from airflow_provider_cex.answers import parse_export_hash, parse_progress
from airflow_provider_cex.endpoints import DEFAULT_PATHS, ENDPOINT_NAMES, PLACEHOLDER
from airflow_provider_cex.exceptions import ContentExporterProtocolError
from airflow_provider_cex.files import filename_from_content_disposition, sanitize_filename
from airflow_provider_cex.inputs import validate_export_hash
from airflow_provider_cex.policy import RetryPolicy, parse_retry_after
from airflow_provider_cex.redaction import snippet
from airflow_provider_cex.settings import render_endpoint

KEY = "cexk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
hashes = st.text(alphabet="abcdefABCDEF0123456789-_.", min_size=1, max_size=64).filter(
    lambda h: set(h) != {"."}
)


@given(st.binary(max_size=400), st.sampled_from([None, "application/json", "text/plain", "text/html"]))
@settings(max_examples=400, deadline=None)
def test_hash_extraction_returns_a_valid_hash_or_a_bounded_protocol_error(body, content_type):
    try:
        result = parse_export_hash(body, content_type, KEY)
    except ContentExporterProtocolError as err:
        assert len(str(err)) < 500 and KEY not in str(err)
        return
    assert validate_export_hash(result) == result


@given(hashes, st.sampled_from(["hash", "exportHash", "export_hash", "id"]), json_values)
def test_hash_is_found_under_any_documented_key(value, key, noise):
    body = json.dumps({"unrelated": noise, key: value}).encode()
    assert parse_export_hash(body, "application/json") == value.strip()


@given(
    st.dictionaries(
        st.sampled_from(
            ["progressValue", "status", "state", "error", "errorMessage", "error_message", "message"]
        ),
        json_values,
    )
)
@settings(max_examples=400, deadline=None)
def test_progress_is_in_range_and_never_both_failed_and_complete(payload):
    try:
        progress = parse_progress("h", payload, KEY)
    except ContentExporterProtocolError:
        return
    assert 0.0 <= progress.progress <= 100.0
    assert not (progress.is_failed and progress.is_complete)
    assert not progress.is_failed or progress.message  # a failure always says something


@given(st.sampled_from(["FAILED", "failure", "Error", "cancelled", "CANCELED", "aborted"]), json_values)
def test_any_documented_failure_state_is_detected(state, noise):
    progress = parse_progress("h", {"progressValue": 100, "status": state, "x": noise})
    assert progress.is_failed and not progress.is_complete


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_seconds_round_trip(seconds):
    assert parse_retry_after(str(seconds), time.time()) == seconds


@given(st.integers(min_value=0, max_value=86_400))
def test_retry_after_http_date_is_the_remaining_wait(seconds):
    now = time.time()
    parsed = parse_retry_after(formatdate(now + seconds, usegmt=True), now)
    assert parsed is not None and abs(parsed - seconds) <= 1.0


@given(st.integers(min_value=1, max_value=20), st.one_of(st.none(), st.floats(min_value=0, max_value=10**6)))
def test_retry_waits_are_bounded(retry_number, retry_after):
    policy = RetryPolicy()
    wait = policy.wait(retry_number, retry_after)
    if wait is not None:
        assert 0 <= wait <= max(policy.backoff_max, policy.retry_after_cap)


@given(st.sampled_from(sorted(ENDPOINT_NAMES)), st.text(max_size=80))
@settings(max_examples=400, deadline=None)
def test_endpoint_templating_cannot_inject_a_path_segment_query_or_fragment(endpoint, value):
    template = DEFAULT_PATHS[endpoint]
    path = render_endpoint(template, value)
    prefix, _, suffix = template.partition("{" + PLACEHOLDER[endpoint] + "}")
    assert path.startswith(prefix) and path.endswith(suffix)
    segment = path[len(prefix) : len(path) - len(suffix)]
    assert not any(ch in segment for ch in "/?#\\") and segment not in (".", "..")


def test_dot_segments_cannot_climb_out_of_the_path():
    assert render_endpoint("/api/remoteExport/{export_hash}/progress", "..") == (
        "/api/remoteExport/%2E%2E/progress"
    )


@given(st.text(max_size=300))
@settings(max_examples=400, deadline=None)
def test_content_disposition_names_always_sanitise_to_a_file_inside_the_folder(name):
    header = "attachment; filename*=UTF-8''" + __import__("urllib.parse").parse.quote(name)
    result = sanitize_filename(filename_from_content_disposition(header), "fallback.pdf")
    folder = os.path.abspath("/srv/exports")
    assert os.path.dirname(os.path.abspath(os.path.join(folder, result))) == folder
    assert result not in (".", "..") and "\x00" not in result and len(result.encode()) <= 200


@given(st.text(max_size=2000))
def test_snippets_are_bounded_printable_and_never_hold_the_key(text):
    out = snippet(text + KEY + text, KEY)
    assert len(out) <= 200 and KEY not in out and out.isprintable()


_HOSTILE_PIECES = st.sampled_from(
    [
        "../",
        "..\\",
        "/",
        "\\",
        "/etc/passwd",
        "C:\\Windows\\",
        "\x00",
        "\r\n",
        "\x07",
        "\x1b[31m",
        "\u202e",
        "CON",
        "nul",
        "COM1",
        "LPT9",
        "aux.",
        ".",
        "..",
        " ",
        ".bashrc",
        "~",
        "%2F",
        '*?<>|:"',
    ]
)
_LONG_RUNS = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["A", "é", "😀", ".", "/"]), st.integers(0, 10_000)
)


@given(st.lists(_HOSTILE_PIECES | _LONG_RUNS | st.text(max_size=20), max_size=8), st.booleans())
@settings(max_examples=400, deadline=None)
@example(pieces=[".", " "], with_extension=True)  # once sanitised to the hidden ".pdf"
def test_hostile_server_file_names_become_one_valid_name_inside_the_folder(pieces, with_extension):
    from urllib.parse import quote

    name = "".join(pieces) + (".pdf" if with_extension else "")
    for header in (f"attachment; filename*=UTF-8''{quote(name)}", f'attachment; filename="{name}"'):
        result = sanitize_filename(filename_from_content_disposition(header), "fallback.pdf")
        folder = os.path.abspath("/srv/exports")
        assert os.path.dirname(os.path.abspath(os.path.join(folder, result))) == folder
        assert result and result.isprintable() and not result.startswith(".")
        assert not any(ch in result for ch in '/\\\x00<>:"|?*')
        assert len(result.encode("utf-8")) <= 200
        stem = result.split(".")[0].upper()
        assert stem not in {"CON", "PRN", "AUX", "NUL"} | {
            f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)
        }

"""The call policy without sockets: retries, the POST rule, redirects and the key, over random sequences."""

from __future__ import annotations

import random

import pytest

from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS
from airflow_provider_cex.exceptions import (
    ContentExporterProtocolError,
    ContentExporterTransientError,
)
from airflow_provider_cex.failures import (
    failure_for_status,
    network_failure,
    route_exists,
    should_probe_route,
)
from airflow_provider_cex.policy import (
    Call,
    Retries,
    RetryableFailure,
    RetryEvent,
    RetryPolicy,
    redirect,
)
from airflow_provider_cex.settings import settings_from_connection

KEY = "cexk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e"
APP = "https://cex.example.com"
SETTINGS = settings_from_connection("cex", APP, KEY, None, {})
POLICY = RetryPolicy(max_retries=4, backoff_base=1.0, backoff_max=30.0, retry_after_cap=60.0)

#: One attempt's fate: an HTTP status (with a Retry-After header or none), or a network error that
#: surely did not send the request (refused) or may have (reset, timeout). The property tests of whole
#: calls, over random answers, drive the core itself: tests/unit/test_calls.py.


def run_call(call: Call, fates: list[tuple]) -> tuple[list[tuple], Exception | None, list[float]]:
    """The policy's decisions over a list of fates; returns (attempts made, final error or None, waits)."""
    retries = Retries(call, POLICY, APP, rng=random.Random(7))
    made: list[tuple] = []
    waits: list[float] = []
    for fate in fates:
        made.append(fate)
        kind, value, retry_after = fate
        if kind == "status" and 200 <= value < 300:
            return made, None, waits
        if kind == "status":
            failure = failure_for_status(
                value, call, SETTINGS, url=f"{APP}/x", body=b"", retry_after=retry_after
            )
        else:
            failure = network_failure(call, "the connection broke", surely_not_sent=value)
        if not isinstance(failure, RetryableFailure):
            return made, failure, waits
        try:
            waits.append(retries.wait_after(failure).wait)
        except ContentExporterTransientError as err:
            return made, err, waits
    return made, None, waits


def test_a_retry_after_longer_than_the_cap_ends_the_call_at_once_as_transient():
    made, error, waits = run_call(
        Call(EXPORT_PROGRESS, "h"), [("status", 429, "3600"), ("status", 200, None)]
    )
    assert len(made) == 1 and waits == []
    assert isinstance(error, ContentExporterTransientError) and "longer than this task waits" in str(error)


def test_retry_after_within_the_cap_is_honoured_and_reported_to_on_retry():
    events: list[RetryEvent] = []
    retries = Retries(Call(DOWNLOAD_EXPORT, "h"), POLICY, APP, on_retry=events.append)
    event = retries.wait_after(RetryableFailure("HTTP 429", retry_after=12.0))
    assert event.wait == 12.0 and events == [event] and (event.retry, event.max_retries) == (1, 4)


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (303, "POST", "GET"),
        (302, "POST", "GET"),
        (301, "POST", "GET"),
        (307, "POST", "POST"),
        (308, "POST", "POST"),
    ]
    + [(s, "GET", "GET") for s in (301, 302, 303, 307, 308)],
)
def test_redirects_change_the_method_as_browsers_do(status, method, expected):
    hop = redirect(method, f"{APP}/a", status, "/b", SETTINGS)
    assert hop is not None and hop.method == expected and hop.url == f"{APP}/b" and hop.send_key


def test_a_final_answer_or_a_redirect_without_location_is_not_followed():
    assert redirect("GET", f"{APP}/a", 200, "/b", SETTINGS) is None
    assert redirect("GET", f"{APP}/a", 302, None, SETTINGS) is None


def test_a_redirect_to_a_non_http_scheme_is_refused():
    with pytest.raises(ContentExporterProtocolError, match="non-HTTP"):
        redirect("GET", f"{APP}/a", 302, "file:///etc/passwd", SETTINGS)


def test_a_401_from_another_origin_blames_the_redirect_not_the_key():
    error = failure_for_status(
        401, Call(DOWNLOAD_EXPORT, "h"), SETTINGS, url="https://files.example/x", body=b""
    )
    assert isinstance(error, ContentExporterProtocolError) and "redirected" in str(error)


def test_a_404_is_explained_by_a_keyless_probe_on_the_application_origin_only():
    assert should_probe_route(404, f"{APP}/x", SETTINGS)
    assert not should_probe_route(404, "https://files.example/x", SETTINGS)
    assert not should_probe_route(500, f"{APP}/x", SETTINGS)
    assert [route_exists(s) for s in (401, 403, 404, 400, None)] == [True, True, False, None, None]

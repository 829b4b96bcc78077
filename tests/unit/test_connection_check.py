"""What a user reads when a call gets a 404 or presses Test Connection: built from facts, never guessed."""

from __future__ import annotations

import pytest

from airflow_provider_cex.connection_check import ProbeAnswers, verdict
from airflow_provider_cex.endpoints import (
    DEFAULT_PATHS,
    DOCUMENTED,
    DOWNLOAD_EXPORT,
    ENDPOINT_NAMES,
    EXPORT_PROGRESS,
    KEY_HEADER,
    METHOD,
    PLACEHOLDER,
    START_EXPORT,
)
from airflow_provider_cex.exceptions import ContentExporterNotFoundError, ContentExporterTransientError
from airflow_provider_cex.failures import failure_for_status, not_found_error
from airflow_provider_cex.policy import Call, RetryableFailure
from airflow_provider_cex.settings import settings_from_connection

KEY = "cexk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e"
URL = "https://cex.example.com/api/remoteExport/1/init"


def settings(**extra: object):
    return settings_from_connection("cex", "https://cex.example.com", KEY, None, dict(extra))


def test_the_defaults_follow_the_vendors_documentation():
    assert DEFAULT_PATHS[START_EXPORT] == "/api/remoteExport/{page_id}/init"
    assert DEFAULT_PATHS[EXPORT_PROGRESS] == "/api/remoteExport/{export_hash}/progress"
    assert DEFAULT_PATHS[DOWNLOAD_EXPORT] == "/api/remoteExport/{export_hash}/download"
    assert sorted(DOCUMENTED) == [START_EXPORT]
    assert settings().url(START_EXPORT, "42") == "https://cex.example.com/api/remoteExport/42/init"
    assert KEY_HEADER == "CEX-API-KEY"


def test_every_table_of_the_api_is_keyed_by_the_three_names_in_call_order():
    assert ENDPOINT_NAMES == (START_EXPORT, EXPORT_PROGRESS, DOWNLOAD_EXPORT)
    assert tuple(METHOD) == tuple(PLACEHOLDER) == tuple(DEFAULT_PATHS) == ENDPOINT_NAMES
    assert DOCUMENTED.issubset(ENDPOINT_NAMES)
    for name in ENDPOINT_NAMES:
        assert DEFAULT_PATHS[name].count("{") == 1 and "{" + PLACEHOLDER[name] + "}" in DEFAULT_PATHS[name]


def test_calls_describe_themselves_and_only_the_start_is_not_idempotent():
    assert str(Call(START_EXPORT, "42")) == "start an export of page 42"
    assert str(Call(EXPORT_PROGRESS, "h")) == "check the progress of export h"
    assert str(Call(DOWNLOAD_EXPORT, "h")) == "download export h"
    assert [Call(e, "x").idempotent for e in (START_EXPORT, EXPORT_PROGRESS, DOWNLOAD_EXPORT)] == [
        False,
        True,
        True,
    ]
    assert Call(START_EXPORT, "1").method == "POST" and Call(DOWNLOAD_EXPORT, "h").method == "GET"


def test_a_404_on_start_with_a_missing_route_blames_the_path_and_names_the_tools():
    err = not_found_error(Call(START_EXPORT, "42"), settings(), url=URL, body=b"", route_exists=False)
    text = str(err)
    assert isinstance(err, ContentExporterNotFoundError)
    assert "no start-export endpoint" in text and "Application URL is probably wrong" in text
    assert "'endpoints' extra" in text and "python -m airflow_provider_cex.openapi" in text
    assert "expired" not in text


def test_a_404_on_start_from_a_guarded_route_blames_the_page():
    err = not_found_error(Call(START_EXPORT, "42"), settings(), url=URL, body=b"", route_exists=True)
    assert "does not know page 42" in str(err) and "path is probably wrong" not in str(err)


def test_a_404_on_start_without_evidence_names_both_causes():
    err = not_found_error(Call(START_EXPORT, "42"), settings(), url=URL, body=b"", route_exists=None)
    text = str(err)
    assert "no start-export endpoint at that URL" in text and "does not know page 42" in text


@pytest.mark.parametrize("endpoint", [EXPORT_PROGRESS, DOWNLOAD_EXPORT])
def test_a_404_by_hash_tells_an_expired_export_from_a_wrong_path(endpoint):
    call = Call(endpoint, "abc")
    expired = str(not_found_error(call, settings(), url=URL, body=b"", route_exists=True))
    wrong = str(not_found_error(call, settings(), url=URL, body=b"", route_exists=False))
    unknown = str(not_found_error(call, settings(), url=URL, body=b"", route_exists=None))
    assert "has expired" in expired and "path is probably wrong" not in expired
    assert "path is probably wrong, not the export hash" in wrong and "has expired" not in wrong
    assert "assumed default, not documented by the vendor" in wrong
    assert "started moments ago" in unknown and "has expired" in unknown


def test_a_path_from_the_extra_is_named_as_such():
    custom = settings(endpoints={"export_progress": "/x/{export_hash}"})
    text = str(not_found_error(Call(EXPORT_PROGRESS, "h"), custom, url=URL, body=b"", route_exists=False))
    assert "/x/{export_hash} (from the 'endpoints' extra)" in text


def test_the_server_body_is_quoted_without_the_key():
    text = str(not_found_error(Call(START_EXPORT, "1"), settings(), url=URL, body=f"no {KEY} here"))
    assert KEY not in text and "no *** here" in text


def test_failure_for_status_keeps_the_post_rule():
    start, poll = Call(START_EXPORT, "1"), Call(EXPORT_PROGRESS, "h")
    assert isinstance(failure_for_status(503, start, settings(), url=URL, body=b""), RetryableFailure)
    assert not isinstance(failure_for_status(502, start, settings(), url=URL, body=b""), RetryableFailure)
    assert isinstance(failure_for_status(502, poll, settings(), url=URL, body=b""), RetryableFailure)
    assert isinstance(
        failure_for_status(501, poll, settings(), url=URL, body=b""), ContentExporterTransientError
    )
    assert isinstance(
        failure_for_status(404, poll, settings(), url=URL, body=b""), ContentExporterNotFoundError
    )


# --------------------------------------------------------------------------- Test Connection verdicts


def test_verdict_key_rejected():
    ok, text = verdict(settings(), ProbeAnswers(progress_with_key=401, progress_without_key=401))
    assert not ok and "rejected the API key" in text


@pytest.mark.parametrize("status", [429, 500, 503])
def test_verdict_service_down(status):
    ok, text = verdict(settings(), ProbeAnswers(progress_with_key=status))
    assert not ok and "try again later" in text


def test_verdict_right_paths_proves_the_key_and_the_paths():
    ok, text = verdict(settings(), ProbeAnswers(404, progress_without_key=401, start_without_key=401))
    assert ok and "the API key was accepted" in text
    assert "(the vendor's documented path) exists" in text
    assert "(assumed default, not documented by the vendor) exists" in text
    assert "download path" in text and "cannot be checked" in text


def test_verdict_wrong_progress_path_fails_and_says_how_to_fix():
    ok, text = verdict(settings(), ProbeAnswers(404, progress_without_key=404, start_without_key=401))
    assert not ok and "nothing answers at the progress path" in text and "That path is probably wrong" in text
    assert "python -m airflow_provider_cex.openapi" in text and "accepted" not in text


def test_verdict_wrong_start_path_fails_even_when_progress_is_fine():
    ok, text = verdict(settings(), ProbeAnswers(404, progress_without_key=401, start_without_key=404))
    assert not ok and "nothing answers at the start-export path" in text


def test_verdict_start_path_with_another_method_fails():
    ok, text = verdict(settings(), ProbeAnswers(404, progress_without_key=401, start_without_key=405))
    assert not ok and "HTTP 405" in text


def test_verdict_without_evidence_claims_only_that_the_key_was_not_rejected():
    ok, text = verdict(settings(), ProbeAnswers(404, progress_without_key=None, start_without_key=400))
    assert ok and "the API key was not rejected" in text and "accepted" not in text
    assert "could not be confirmed (HTTP 400 without the key)" in text
    assert "could not be confirmed (no answer without the key)" in text

"""Stories of a user turning a browser HAR recording into an export_body JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_cex.profile import HarProfileError, body_from_har, main

SITE = "https://content-exporter-new.addon.meta-inf.hu"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqb2huIn0.c2lnbmF0dXJlLW9mLXRoZS1qd3Q"
BEARER = "bearer-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
SESSION_COOKIE = "sess-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
XSRF_COOKIE = "xsrf-5566778899aabbccddeeff001122"

SETTINGS: dict[str, Any] = {
    "pageSettings": {"size": "A4", "orientation": "PORTRAIT"},
    "margins": [{"top": 1, "bottom": 1, "right": 0.5, "left": 0.5}],
    "unit": "CM",
    "rootContentId": "123456",
    "title": "Handbuch: Übersicht",
    "exportType": "PDF",
}


def entry(
    url: str,
    method: str = "POST",
    payload: Any = None,
    text: str | None = None,
    mime: str = "application/json",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    """One HAR entry as a browser saves it; ``payload`` is sent as JSON unless ``text`` is given."""
    request: dict[str, Any] = {
        "method": method,
        "url": url,
        "httpVersion": "HTTP/2",
        "headers": [{"name": k, "value": v} for k, v in (headers or {}).items()],
        "cookies": [{"name": k, "value": v} for k, v in (cookies or {}).items()],
        "queryString": [],
    }
    if text is None and payload is not None:
        text = json.dumps(payload)
    if text is not None:
        request["postData"] = {"mimeType": mime, "text": text}
    return {
        "startedDateTime": "2024-05-01T10:00:00.000Z",
        "request": request,
        "response": {"status": status, "content": {"mimeType": "application/json", "text": '{"ok":1}'}},
    }


def init_url(page_id: str | None = "123456", query: str = "") -> str:
    middle = f"/{page_id}" if page_id else ""
    return f"{SITE}/api/remoteExport{middle}/init{query}"


def write_har(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "export.har"
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": list(entries)}}), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def page(page_id: str, marker: str) -> dict[str, Any]:
    return {"pageSettings": {"size": marker}, "rootContentId": page_id}


# --------------------------------------------------------------------------- the happy path


def test_one_recorded_export_becomes_the_export_body_without_root_content_id(tmp_path, capsys):
    har = write_har(tmp_path, entry(f"{SITE}/rest/status", method="GET"), entry(init_url(), payload=SETTINGS))

    code, out, err = run(capsys, "--from-har", str(har))

    assert code == 0
    expected = {k: v for k, v in SETTINGS.items() if k != "rootContentId"}
    assert json.loads(out) == expected
    assert list(json.loads(out)) == list(expected)  # original key order kept
    assert out.endswith("}\n") and '\n  "pageSettings"' in out and "Übersicht" in out
    assert "POST /api/remoteExport/123456/init" in err and "1 of 1" in err
    assert "rootContentId" in err and "page_id" in err
    assert "delete it now" in err and "session cookies" in err


def test_the_profile_written_to_a_file_is_accepted_by_the_operator_body_builder(tmp_path, capsys):
    from airflow_provider_cex.inputs import build_start_body

    har = write_har(tmp_path, entry(init_url("999"), payload={**SETTINGS, "rootContentId": 999}))
    code, out, _ = run(capsys, "--from-har", str(har))
    assert code == 0
    profile = tmp_path / "space.json"
    profile.write_text(out, encoding="utf-8")

    with profile.open(encoding="utf-8") as f:
        page_id, body = build_start_body("123456", json.load(f))

    assert page_id == "123456"
    assert body["rootContentId"] == "123456"
    assert body["pageSettings"] == SETTINGS["pageSettings"]


def test_a_user_runs_the_command_with_python_dash_m(tmp_path):
    har = write_har(tmp_path, entry(init_url(query=f"?jwt={JWT}"), payload=SETTINGS))

    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_cex.profile", "--from-har", str(har)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unit"] == "CM"
    assert "rootContentId" not in done.stdout
    assert "delete it now" in done.stderr and JWT not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_missing_har_file_through_python_dash_m_exits_2_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_cex.profile", "--from-har", str(tmp_path / "nope.har")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "No such file" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- choosing among several exports


def several_exports(tmp_path: Path) -> Path:
    return write_har(
        tmp_path,
        entry(init_url("111"), payload=page("111", "A3")),
        entry(init_url("222"), payload=page("222", "A4")),
        entry(f"{SITE}/api/remoteExport/init/", payload=page("333", "A5")),  # trailing slash, id in payload
        entry(init_url("444"), payload=page("444", "LETTER")),
        entry(f"{SITE}/api/remoteExport/444/progress", method="GET"),
    )


def test_several_recorded_exports_take_the_last_one_by_default(tmp_path, capsys):
    code, out, err = run(capsys, "--from-har", str(several_exports(tmp_path)))
    assert code == 0
    assert json.loads(out) == {"pageSettings": {"size": "LETTER"}}
    assert "4 of 4" in err and "--page-id" in err


def test_page_id_picks_the_export_of_that_page_by_its_url(tmp_path, capsys):
    code, out, err = run(capsys, "--from-har", str(several_exports(tmp_path)), "--page-id", "222")
    assert code == 0
    assert json.loads(out) == {"pageSettings": {"size": "A4"}}
    assert "POST /api/remoteExport/222/init" in err and "2 of 4" in err


def test_page_id_finds_an_export_whose_url_has_no_id_by_its_root_content_id(tmp_path, capsys):
    code, out, err = run(capsys, "--from-har", str(several_exports(tmp_path)), "--page-id", "333")
    assert code == 0
    assert json.loads(out) == {"pageSettings": {"size": "A5"}}
    assert "POST /api/remoteExport/init " in err and "3 of 4" in err


def test_root_content_id_sent_as_a_number_still_matches_the_page_id():
    har = {"log": {"entries": [entry(f"{SITE}/x/init", payload={"rootContentId": 555, "unit": "MM"})]}}
    assert body_from_har(har, "555") == {"unit": "MM"}


def test_an_unknown_page_id_exits_2_naming_the_pages_seen(tmp_path, capsys):
    code, out, err = run(capsys, "--from-har", str(several_exports(tmp_path)), "--page-id", "999")
    assert code == 2
    assert out == ""
    assert "999" in err
    for seen in ("111", "222", "333", "444"):
        assert seen in err


def test_a_page_id_that_is_not_digits_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--from-har", str(several_exports(tmp_path)), "--page-id", "12a"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().out == ""
    with pytest.raises(HarProfileError, match="digits"):
        body_from_har({"log": {"entries": []}}, "../1")


def test_the_ui_may_use_another_base_path_than_the_remote_api(tmp_path, capsys):
    har = write_har(tmp_path, entry(f"{SITE}/rest/ui/export/777/init#top", payload={"unit": "IN"}))
    code, out, err = run(capsys, "--from-har", str(har))
    assert code == 0 and json.loads(out) == {"unit": "IN"}
    assert "POST /rest/ui/export/777/init" in err


# --------------------------------------------------------------------------- secrets


def test_har_with_session_cookies_never_leaks_them(tmp_path, capsys):
    secret_headers = {
        "Authorization": f"Bearer {BEARER}",
        "Cookie": f"JSESSIONID={SESSION_COOKIE}; atl.xsrf.token={XSRF_COOKIE}",
        "X-Atlassian-Token": "no-check-but-long-enough",
    }
    cookies = {"JSESSIONID": SESSION_COOKIE, "atl.xsrf.token": XSRF_COOKIE}
    har = write_har(
        tmp_path,
        entry(f"{SITE}/wiki/login?jwt={JWT}", method="GET", headers=secret_headers, cookies=cookies),
        entry(
            init_url(query=f"?jwt={JWT}&lic=active"),
            payload=SETTINGS,
            headers=secret_headers,
            cookies=cookies,
        ),
    )
    raw = json.loads(har.read_text())
    raw["log"]["entries"][1]["request"]["queryString"] = [{"name": "jwt", "value": JWT}]
    raw["log"]["entries"][1]["response"]["content"]["text"] = json.dumps({"hash": "resp-" + BEARER})
    har.write_text(json.dumps(raw))

    code, out, err = run(capsys, "--from-har", str(har))

    assert code == 0
    for secret in (JWT, BEARER, SESSION_COOKIE, XSRF_COOKIE, "no-check-but-long-enough", "jwt=", "lic="):
        assert secret not in out
        assert secret not in err
    assert "/api/remoteExport/123456/init" in err


def test_credential_keys_and_echoed_header_values_are_dropped_by_name_only(tmp_path, capsys):
    payload = {
        "token": "tok-abcdef0123456789",
        "auth": {"apiKey": "key-abcdef0123456789", "user": "john"},
        "pageSettings": {"size": "A4"},
        "headerEcho": BEARER,
        "recipients": ["john@example.com", SESSION_COOKIE],
        "unit": "CM",
        "rootContentId": "123456",
    }
    har = write_har(
        tmp_path,
        entry(
            init_url(),
            payload=payload,
            headers={"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"},
            cookies={"JSESSIONID": SESSION_COOKIE},
        ),
    )

    code, out, err = run(capsys, "--from-har", str(har))

    assert code == 0
    assert json.loads(out) == {
        "auth": {"user": "john"},
        "pageSettings": {"size": "A4"},
        "recipients": ["john@example.com"],
        "unit": "CM",
    }
    assert "token" in err and "auth.apiKey" in err
    assert "headerEcho" in err and "recipients[1]" in err
    for secret in ("tok-abcdef0123456789", "key-abcdef0123456789", BEARER, SESSION_COOKIE):
        assert secret not in out and secret not in err


def test_public_header_values_like_the_content_type_are_not_mistaken_for_secrets():
    payload = {"format": "application/json", "origin": SITE}
    har = {"log": {"entries": [entry(init_url(), payload=payload, headers={"Origin": SITE})]}}
    assert body_from_har(har) == payload


# --------------------------------------------------------------------------- what is not an export profile


def test_a_har_without_an_init_call_says_how_to_record_one(tmp_path, capsys):
    har = write_har(
        tmp_path,
        entry(f"{SITE}/wiki/spaces/DOC", method="GET"),
        entry(f"{SITE}/api/remoteExport/123456/init", method="GET"),
        entry(f"{SITE}/api/other", payload={"rootContentId": "1"}),
        entry(f"{SITE}/api/reinit", payload={"rootContentId": "1"}),
    )
    code, out, err = run(capsys, "--from-har", str(har))
    assert code == 2
    assert out == ""
    assert "No POST …/init" in err
    assert "Network" in err and "Save all as HAR" in err and "start the export" in err
    assert "Traceback" not in err


def test_a_form_encoded_payload_is_not_an_export_profile(tmp_path, capsys):
    form = "pageSettings=A4&password=hunter2hunter2"
    har = write_har(tmp_path, entry(init_url(), text=form, mime="application/x-www-form-urlencoded"))
    code, out, err = run(capsys, "--from-har", str(har))
    assert code == 2 and out == ""
    assert "not JSON" in err and "application/x-www-form-urlencoded" in err
    assert "hunter2" not in err


def test_a_json_array_payload_is_not_an_export_profile(tmp_path, capsys):
    har = write_har(tmp_path, entry(init_url(), payload=[{"unit": "CM"}]))
    code, out, err = run(capsys, "--from-har", str(har))
    assert code == 2 and out == ""
    assert "not a JSON object" in err


def test_an_init_call_without_payload_exits_2(tmp_path, capsys):
    har = write_har(tmp_path, entry(init_url()))
    code, out, err = run(capsys, "--from-har", str(har))
    assert code == 2 and out == ""
    assert "no payload" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"foo": 1}', "not a HAR file"),
        ('{"log": {"entries": {}}}', "not a HAR file"),
        ("[1, 2]", "not a HAR file"),
        ("this is not json {", "not a HAR file"),
        (b"\xff\xfe\x00garbage", "not a HAR file"),
    ],
)
def test_a_file_that_is_not_a_har_exits_2_and_says_how_to_save_one(tmp_path, capsys, content, message):
    path = tmp_path / "export.har"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "--from-har", str(path))
    assert code == 2 and out == ""
    assert message in err and "Save all as HAR" in err
    assert "Traceback" not in err


def test_a_missing_har_file_exits_2(tmp_path, capsys):
    code, out, err = run(capsys, "--from-har", str(tmp_path / "missing.har"))
    assert code == 2 and out == ""
    assert "No such file" in err and "missing.har" in err


def test_a_har_with_odd_entries_is_read_tolerantly():
    har = {
        "log": {
            "entries": [
                None,
                {},
                {"request": None},
                {"request": {"method": "POST"}},
                {"request": {"method": "post", "url": init_url(), "postData": {"text": '{"unit": "PT"}'}}},
            ]
        }
    }
    assert body_from_har(har) == {"unit": "PT"}

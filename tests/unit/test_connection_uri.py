"""Connections written as URIs (``AIRFLOW_CONN_<ID>='content-exporter://...'``) read like their JSON form.

Airflow parses URIs in three places: the Task SDK (tasks, triggers and, in Airflow 3, hooks used outside
a task), ``airflow.models.Connection`` (Airflow 2.11 everywhere; in Airflow 3 the api-server, e.g. the
form's Test button, and the CLI), and the SDK's cache of URIs. They differ: Airflow 3's models
``Connection`` reads JSON in query values (``?timeout=[5,60]`` becomes a list), the SDK and Airflow 2.11
keep them as text. Every URI below gives the same settings as its JSON twin in each of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from airflow_provider_cex import EU_APPLICATION_URL, US_APPLICATION_URL
from airflow_provider_cex.exceptions import ContentExporterAuthError
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.hooks.content_exporter_async import lookup_settings
from airflow_provider_cex.settings import settings_from_connection
from tests.conftest import AIRFLOW_V3

#: An API key with every character a URI must percent-encode.
KEY = "cexk_p@ss/w:rd#?&%+ =~_0123456789"  # every character a URI must encode (keys are ASCII)
QKEY = quote(KEY, safe="")
ENDPOINTS = {
    "start_export": "/api/v2/export/{page_id}/init",
    "export_progress": "/api/v2/export/{export_hash}/progress",
}
CONFLUENCE = "https://acme.atlassian.net/wiki"
EXTRA = {"region": "eu", "timeout": [5, 60], "endpoints": ENDPOINTS, "confluence_url": CONFLUENCE}


def as_query(extra: dict[str, Any]) -> str:
    """Extras as plain query parameters (objects and lists as JSON text)."""
    return urlencode(
        {k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for k, v in extra.items()}
    )


def as_extra_param(extra: dict[str, Any]) -> str:
    """Extras as Airflow's ``__extra__`` query parameter: the JSON object, percent-encoded."""
    return urlencode({"__extra__": json.dumps(extra)})


def twin(host: str | None, extra: dict[str, Any], port: int | None = None) -> str:
    conn: dict[str, Any] = {"conn_type": "content_exporter", "password": KEY, "extra": extra}
    if host is not None:
        conn["host"] = host
    if port is not None:
        conn["port"] = port
    return json.dumps(conn)


# (id, URI, its JSON twin, the base URL both resolve to)
CASES = [
    (
        "https-host-as-second-scheme",
        f"content-exporter://https://:{QKEY}@cex.example.test?{as_query(EXTRA)}",
        twin("https://cex.example.test", EXTRA),
        "https://cex.example.test",
    ),
    (
        "https-host-with-port-and-path",
        f"content-exporter://https://:{QKEY}@cex.example.test:8443/cex?{as_query(EXTRA)}",
        twin("https://cex.example.test:8443", EXTRA),
        "https://cex.example.test:8443",
    ),
    (
        "http-host-as-second-scheme",
        f"content-exporter://http://:{QKEY}@127.0.0.1:8085?{as_query(EXTRA)}",
        twin("http://127.0.0.1:8085", EXTRA),
        "http://127.0.0.1:8085",
    ),
    (
        "host-with-percent-encoded-scheme",
        f"content-exporter://:{QKEY}@{quote('https://cex.example.test', safe='')}?{as_query(EXTRA)}",
        twin("https://cex.example.test", EXTRA),
        "https://cex.example.test",
    ),
    (
        "bare-host-means-https",
        f"content-exporter://:{QKEY}@cex.example.test:8443?{as_query(EXTRA)}",
        twin("cex.example.test", EXTRA, port=8443),
        "https://cex.example.test:8443",
    ),
    (
        "extras-as-__extra__",
        f"content-exporter://https://:{QKEY}@cex.example.test/?{as_extra_param(EXTRA)}",
        twin("https://cex.example.test", EXTRA),
        "https://cex.example.test",
    ),
    (
        "no-host-region-eu",
        f"content-exporter://:{QKEY}@?{as_query(EXTRA)}",
        twin(None, EXTRA),
        EU_APPLICATION_URL,
    ),
    (
        "no-host-no-extras",
        f"content-exporter://:{QKEY}@",
        twin(None, {}),
        US_APPLICATION_URL,
    ),
    (
        "timeout-as-text-pair",
        f"content-exporter://https://:{QKEY}@cex.example.test?timeout=5%2C+60&region=eu",
        twin("https://cex.example.test", {"timeout": [5, 60], "region": "eu"}),
        "https://cex.example.test",
    ),
]
IDS = [case[0] for case in CASES]


def observable(settings: Any) -> dict[str, Any]:
    return {
        "base_url": settings.base_url,
        "api_key": settings.api_key,
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "endpoints": settings.endpoints,
        "confluence_url": settings.confluence_url,
        "verify": settings.verify,
        "proxies": settings.proxies,
    }


def hook_settings(monkeypatch: pytest.MonkeyPatch, conn_id: str, value: str) -> dict[str, Any]:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
    return observable(ContentExporterHook(conn_id).settings)


def from_model(uri: str) -> dict[str, Any]:
    """``airflow.models.Connection(uri=...)``: Airflow 2.11, and the api-server and CLI in Airflow 3."""
    from airflow.models.connection import Connection

    conn = Connection(conn_id="cex_uri", uri=uri)
    assert conn.conn_type == "content_exporter"
    return observable(
        settings_from_connection("cex_uri", conn.host, conn.password, conn.port, conn.extra_dejson)
    )


@pytest.mark.parametrize(("uri", "json_form", "base_url"), [case[1:] for case in CASES], ids=IDS)
def test_uri_reads_like_its_json_form(monkeypatch, uri, json_form, base_url):
    expected = hook_settings(monkeypatch, "cex_json", json_form)
    assert expected["base_url"] == base_url and expected["api_key"] == KEY

    assert hook_settings(monkeypatch, "cex_uri", uri) == expected  # the hook, as a task uses it
    assert from_model(uri) == expected
    if AIRFLOW_V3:  # the Task SDK's parser (tasks, triggers, the SDK's cache of URIs)
        from airflow.sdk.definitions.connection import Connection as SdkConnection

        conn = SdkConnection.from_uri(uri, conn_id="cex_uri")
        got = settings_from_connection("cex_uri", conn.host, conn.password, conn.port, conn.extra_dejson)
        assert observable(got) == expected


@pytest.mark.parametrize(("uri", "json_form", "base_url"), [CASES[0][1:], CASES[6][1:]], ids=[IDS[0], IDS[6]])
def test_uri_reads_like_its_json_form_in_triggers(monkeypatch, uri, json_form, base_url):
    monkeypatch.setenv("AIRFLOW_CONN_CEX_JSON", json_form)
    monkeypatch.setenv("AIRFLOW_CONN_CEX_URI", uri)
    expected = observable(asyncio.run(lookup_settings("cex_json")))
    assert expected["base_url"] == base_url
    assert observable(asyncio.run(lookup_settings("cex_uri"))) == expected


def test_the_json_twins_hold_what_they_say(monkeypatch):
    got = hook_settings(monkeypatch, "cex_json", CASES[0][2])
    assert got["connect_timeout"] == 5.0 and got["read_timeout"] == 60.0
    assert got["endpoints"] == ENDPOINTS and got["confluence_url"] == CONFLUENCE


def test_the_connection_round_trips_through_airflows_own_uri(monkeypatch):
    """Airflow writes URIs itself (its URI cache, the CLI's export): ours survive that too."""
    from airflow.models.connection import Connection

    conn = Connection(conn_id="cex_json", **{k: v for k, v in json.loads(CASES[1][2]).items()})
    uri = conn.get_uri()
    assert uri.startswith("content-exporter://https://")
    assert hook_settings(monkeypatch, "cex_uri", uri) == hook_settings(monkeypatch, "cex_json", CASES[1][2])


# --------------------------------------------------------------------------- what does not work


def test_an_underscore_scheme_reads_as_an_empty_connection_and_the_hook_says_why(monkeypatch):
    """``content_exporter://``: Python's URL parser takes no '_' in a scheme, so Airflow gets no type, host
    or password (in both versions, without a warning); the hook's error names the fix."""
    from airflow.models.connection import Connection

    uri = f"content_exporter://:{QKEY}@cex.example.test?region=eu"
    conn = Connection(conn_id="cex_uri", uri=uri)
    assert (conn.conn_type, conn.host, conn.password) == ("", "", None)
    monkeypatch.setenv("AIRFLOW_CONN_CEX_UNDERSCORE", uri)
    with pytest.raises(ContentExporterAuthError, match=r"content-exporter://"):
        _ = ContentExporterHook("cex_underscore").settings


def test_an_unencoded_key_makes_the_uri_unreadable(monkeypatch):
    """A key with '/' or '#' written as is: Airflow cannot read the URI and reports the id as undefined."""
    monkeypatch.setenv("AIRFLOW_CONN_CEX_RAW", "content-exporter://https://:pa/ss#word@cex.example.test")
    with pytest.raises(Exception, match="isn't defined"):
        _ = ContentExporterHook("cex_raw").settings


# --------------------------------------------------------------------------- the '_' warning


def test_the_scheme_warning_comes_from_airflows_get_uri_not_from_the_hook(monkeypatch, caplog, capsys):
    """``Connection schemes (type: content_exporter) shall not contain '_'`` is logged by
    ``airflow.models.Connection.get_uri()``. Airflow 2.11 warns for every connection of our type (it looks at
    the normalised type) and calls ``get_uri`` itself at every ``BaseHook.get_connection`` (to fill its URI
    cache). Airflow 3 warns only when the type was written with '_' (JSON, UI, CLI), not for a
    ``content-exporter://`` URI, and only in the api-server and CLI (the Test button, ``airflow connections
    get/list``): hooks read connections through the Task SDK, whose ``get_uri`` does not warn. The
    provider's code never calls ``get_uri``: nothing for it to avoid."""
    from airflow.models.connection import Connection

    def logged() -> str:  # Airflow 2.11 logs through logging, Airflow 3 through structlog to stdout
        out, err = capsys.readouterr()
        text = caplog.text + out + err
        caplog.clear()
        return text

    caplog.set_level(logging.WARNING)
    logged()
    Connection(conn_id="x", conn_type="content_exporter", host="https://cex.example.test").get_uri()
    assert "shall not contain '_'" in logged()
    Connection(conn_id="x", uri="content-exporter://https://cex.example.test").get_uri()  # '-' as written
    assert ("shall not contain" in logged()) is not AIRFLOW_V3

    callers: list[str] = []
    classes = [Connection]
    if AIRFLOW_V3:
        from airflow.sdk.definitions.connection import Connection as SdkConnection

        classes.append(SdkConnection)
    for cls in classes:
        original = cls.get_uri

        def recording(self: Any, _original: Any = original) -> str:
            callers.append(sys._getframe(1).f_globals.get("__name__", "?"))
            return _original(self)

        monkeypatch.setattr(cls, "get_uri", recording)
    hook_settings(monkeypatch, "cex_json", CASES[0][2])
    hook_settings(monkeypatch, "cex_uri", CASES[0][1])
    asyncio.run(lookup_settings("cex_json"))
    assert callers, "Airflow no longer builds URIs when reading a connection: update the docs"
    assert not [name for name in callers if name.startswith("airflow_provider_cex")], callers
    assert ("shall not contain" in logged()) is not AIRFLOW_V3  # Airflow 2.11 warns at every lookup

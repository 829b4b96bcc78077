"""Proxies: the ``proxies`` extra and HTTP(S)_PROXY/NO_PROXY, for the sync hook and the trigger's async hook.

Requests go through a forwarding proxy on loopback (:mod:`tests.proxy`) that counts what it forwards and
records whether the API key went along; the emulator counts what reached it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook
from airflow_provider_cex.policy import RetryPolicy
from airflow_provider_cex.redaction import redact_url
from airflow_provider_cex.settings import parse_proxies, settings_from_connection
from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger
from tests.conftest import API_KEY, CONN_ENV, connection_json
from tests.proxy import ForwardingProxy

FAST_RETRIES = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02, retry_after_cap=5)
PROXY_USER, PROXY_PASSWORD = "user", "s3cret-proxy-pass"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's proxy settings must not leak in: both spellings, as requests and aiohttp read both."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")  # nor a ~/.netrc with credentials for 127.0.0.1


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    with ForwardingProxy() as running:
        yield running


def use_connection(monkeypatch: pytest.MonkeyPatch, base_url: str, **extra: object) -> None:
    monkeypatch.setenv(CONN_ENV, connection_json(base_url, **extra))


def set_env_proxy(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setenv(name.lower(), value)


def make_hook(**kwargs) -> ContentExporterHook:
    return ContentExporterHook(retry_policy=kwargs.pop("retry_policy", FAST_RETRIES), **kwargs)


def export_through_sync_hook(tmp_path, page_id: str = "7") -> tuple[str, str]:
    """start -> progress until done -> download; returns (hash, sha256 of the file)."""
    with make_hook() as hook:
        export_hash = hook.start_export(page_id)
        deadline = time.monotonic() + 10
        while not hook.get_export_progress(export_hash).is_complete:
            assert time.monotonic() < deadline, "the export did not finish"
            time.sleep(0.05)
        result = hook.download_export(export_hash, tmp_path / "out.pdf")
    data = (tmp_path / "out.pdf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == result.sha256
    return export_hash, result.sha256


class _FewRetriesTrigger(ContentExporterExportTrigger):
    """The trigger, polling with one retry per call instead of the default policy's five."""

    def make_hook(self) -> ContentExporterAsyncHook:
        one_retry = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02)
        return ContentExporterAsyncHook(self.content_exporter_conn_id, retry_policy=one_retry)


def run_trigger(export_hash: str, seconds: float = 15.0, *, few_retries: bool = False) -> list[dict]:
    trigger_class = _FewRetriesTrigger if few_retries else ContentExporterExportTrigger
    trigger = trigger_class(export_hash, end_time=time.time() + seconds, poll_interval=0.1)

    async def collect() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def free_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def target_of(base_url: str) -> str:
    return base_url.split("//", 1)[1]


def progress_polls(proxy: ForwardingProxy) -> int:
    return sum(1 for r in proxy.forwarded if r.path.endswith("/progress"))


# --------------------------------------------------------------------------- the extra, parsed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        ({}, {}),
        ({"https": "http://proxy.example.com:3128"}, {"https": "http://proxy.example.com:3128"}),
        ({"HTTP": " http://proxy:3128/ "}, {"http": "http://proxy:3128"}),
        (
            {"http": "http://user:p%40ss@proxy:3128", "https": "https://proxy.example.com"},
            {"http": "http://user:p%40ss@proxy:3128", "https": "https://proxy.example.com"},
        ),
    ],
)
def test_parse_proxies_accepts_http_and_https_proxy_urls(value, expected):
    assert parse_proxies(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://user:s3cret-proxy-pass@proxy:3128", "must be an object"),
        (["http://proxy:3128"], "must be an object"),
        ({"ftp": "http://proxy:3128"}, "unknown key 'ftp'"),
        ({"all": "http://proxy:3128"}, "unknown key 'all'"),
        ({"https": 3128}, "proxy int"),
        ({"https": None}, "proxy NoneType"),
        ({"https": "proxy:3128"}, "unusable 'https' proxy"),
        ({"https": "socks5://user:s3cret-proxy-pass@proxy:1080"}, "'socks5://proxy:1080'"),
        ({"http": "http://:3128"}, "unusable 'http' proxy"),
        ({"http": "http://proxy:0"}, "unusable"),
        ({"http": "http://proxy:99999"}, "unusable"),
        ({"http": "http://proxy:3128/path"}, "unusable"),
        ({"http": "http://proxy:3128?x=1"}, "unusable"),
        ({"http": "http://user:s3cret/proxy-pass@proxy:3128"}, "percent-encoded"),
        ({"http": "http://user:s3cret#proxy-pass@proxy:3128"}, "percent-encoded"),
    ],
)
def test_parse_proxies_rejects_anything_else_with_an_example_and_without_credentials(value, says):
    with pytest.raises(ValueError) as err:
        parse_proxies(value)
    message = str(err.value)
    assert "Connection extra 'proxies'" in message and '{"https": "http://proxy.example.com:3128"}' in message
    assert says in message
    assert "s3cret" not in message and "proxy-pass" not in message


def test_a_bad_proxies_extra_names_the_connection_and_hides_the_password():
    with pytest.raises(ContentExporterError, match="Connection 'cex' is misconfigured") as err:
        settings_from_connection(
            "cex", "https://cex.example.com", API_KEY, None, {"proxies": {"http": "ftp://u:s3cret@p:21"}}
        )
    assert "s3cret" not in str(err.value)


def test_settings_repr_shows_proxies_without_credentials():
    settings = settings_from_connection(
        "cex",
        "https://cex.example.com",
        API_KEY,
        None,
        {"proxies": {"https": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy:3128"}},
    )
    assert settings.proxies == {"https": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy:3128"}
    assert "http://proxy:3128" in repr(settings)
    assert PROXY_PASSWORD not in repr(settings) and API_KEY not in repr(settings)
    assert settings.proxy_for("https://cex.example.com/x") == settings.proxies["https"]
    assert settings.proxy_for("http://cex.example.com/x") is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@proxy:3128", "http://proxy:3128"),
        ("http://us@er:p@ss@proxy:3128", "http://proxy:3128"),
        ("http://user:pa/ss#x@proxy:3128", "http://proxy:3128"),
        ("user:pw@proxy:3128", "proxy:3128"),
        ("http://proxy:3128", "http://proxy:3128"),
    ],
)
def test_redact_url_drops_every_credential(url, shown):
    assert redact_url(url) == shown


# --------------------------------------------------------------------------- the sync hook


def test_sync_hook_exports_through_the_proxies_extra(emulator, proxy, monkeypatch, tmp_path):
    use_connection(monkeypatch, emulator.base_url, proxies={"http": proxy.url})
    _hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256
    forwarded = proxy.forwarded
    assert proxy.counts == {target_of(emulator.base_url): len(forwarded)}
    assert [r.method for r in forwarded][:2] == ["POST", "GET"] and forwarded[-1].path.endswith("/download")
    assert all(r.had_api_key for r in forwarded)
    assert sum(emulator.counts.values()) == len(forwarded)  # everything went through the proxy


def test_sync_hook_sends_the_proxy_credentials_from_the_url(emulator, monkeypatch, tmp_path):
    with ForwardingProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD)
        use_connection(monkeypatch, emulator.base_url, proxies={"http": url})
        _hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256
    assert proxy.forwarded and all(r.had_proxy_auth for r in proxy.forwarded)


def test_a_proxy_password_is_masked_by_airflows_secret_masker(emulator, monkeypatch):
    from airflow.providers.common.compat.sdk import redact

    url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:3128"
    use_connection(monkeypatch, emulator.base_url, proxies={"http": url})
    make_hook().settings  # noqa: B018 - reading the connection registers the secrets
    assert PROXY_PASSWORD not in str(redact(f"proxy {url}"))


def test_sync_hook_follows_http_proxy_from_the_environment(emulator, proxy, monkeypatch, tmp_path):
    use_connection(monkeypatch, emulator.base_url)
    set_env_proxy(monkeypatch, "HTTP_PROXY", proxy.url)
    _hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256
    assert proxy.counts[target_of(emulator.base_url)] == sum(emulator.counts.values()) >= 3


def test_sync_hook_goes_direct_for_hosts_in_no_proxy(emulator, proxy, monkeypatch, tmp_path):
    use_connection(monkeypatch, emulator.base_url)
    set_env_proxy(monkeypatch, "HTTP_PROXY", proxy.url)
    set_env_proxy(monkeypatch, "NO_PROXY", "127.0.0.1")
    _hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256
    assert proxy.requests == [] and sum(emulator.counts.values()) >= 3


def test_the_extra_wins_over_the_environment_and_no_proxy(emulator, proxy, monkeypatch, tmp_path):
    """Precedence: the 'proxies' extra, for the schemes it names, over HTTP(S)_PROXY and NO_PROXY."""
    use_connection(monkeypatch, emulator.base_url, proxies={"http": proxy.url})
    set_env_proxy(monkeypatch, "HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # would fail if used
    set_env_proxy(monkeypatch, "NO_PROXY", "127.0.0.1")
    export_hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256
    assert proxy.counts[target_of(emulator.base_url)] == sum(emulator.counts.values())
    polls_before = progress_polls(proxy)
    assert [e["status"] for e in run_trigger(export_hash)] == ["success"]
    assert progress_polls(proxy) > polls_before


def test_an_extra_for_the_other_scheme_leaves_the_environment_in_charge(
    emulator, proxy, monkeypatch, tmp_path
):
    use_connection(monkeypatch, emulator.base_url, proxies={"https": f"http://127.0.0.1:{free_port()}"})
    set_env_proxy(monkeypatch, "HTTP_PROXY", proxy.url)
    export_hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256 and proxy.counts[target_of(emulator.base_url)] >= 3
    polls_before = progress_polls(proxy)
    assert [e["status"] for e in run_trigger(export_hash)] == ["success"]
    assert progress_polls(proxy) > polls_before


def test_the_key_does_not_follow_a_redirect_to_another_origin_through_the_proxy(
    emulator, proxy, monkeypatch, tmp_path
):
    from airflow_provider_cex.emulator import run_emulator

    use_connection(monkeypatch, emulator.base_url, proxies={"http": proxy.url})
    with run_emulator(api_key="other-origin-key-000000000000000000000000") as storage:
        storage.accept_foreign_downloads(emulator)
        emulator.redirect_downloads_to(storage.base_url)
        _hash, sha256 = export_through_sync_hook(tmp_path)
        assert sha256 == emulator.artifact_sha256
        to_storage = [r for r in proxy.forwarded if r.target == target_of(storage.base_url)]
        assert [(r.method, r.had_api_key) for r in to_storage] == [("GET", False)]
        assert [r.had_api_key for r in storage.requests] == [False]
    to_application = [r for r in proxy.forwarded if r.target == target_of(emulator.base_url)]
    assert to_application and all(r.had_api_key for r in to_application)


# --------------------------------------------------------------------------- the trigger (aiohttp)


def start_export_direct(monkeypatch, emulator, page_id: str = "1") -> str:
    use_connection(monkeypatch, emulator.base_url)
    with make_hook() as hook:
        return hook.start_export(page_id)


def test_trigger_polls_through_the_proxies_extra(emulator, proxy, monkeypatch):
    export_hash = start_export_direct(monkeypatch, emulator)
    use_connection(monkeypatch, emulator.base_url, proxies={"http": proxy.url})
    events = run_trigger(export_hash)
    assert events == [{"status": "success", "export_hash": export_hash, "progress": 100.0}]
    assert progress_polls(proxy) == emulator.counts["export_progress"] >= 1
    assert all(r.had_api_key and r.target == target_of(emulator.base_url) for r in proxy.forwarded)


def test_trigger_sends_the_proxy_credentials_from_the_url(emulator, monkeypatch):
    export_hash = start_export_direct(monkeypatch, emulator)
    with ForwardingProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD)
        use_connection(monkeypatch, emulator.base_url, proxies={"http": url})
        assert [e["status"] for e in run_trigger(export_hash)] == ["success"]
    assert proxy.forwarded and all(r.had_proxy_auth for r in proxy.forwarded)


def test_trigger_follows_http_proxy_from_the_environment(emulator, proxy, monkeypatch):
    export_hash = start_export_direct(monkeypatch, emulator)
    set_env_proxy(monkeypatch, "HTTP_PROXY", proxy.url)
    assert [e["status"] for e in run_trigger(export_hash)] == ["success"]
    assert progress_polls(proxy) == emulator.counts["export_progress"] >= 1


def test_trigger_goes_direct_for_hosts_in_no_proxy(emulator, proxy, monkeypatch):
    export_hash = start_export_direct(monkeypatch, emulator)
    set_env_proxy(monkeypatch, "HTTP_PROXY", proxy.url)
    set_env_proxy(monkeypatch, "NO_PROXY", "127.0.0.1")
    assert [e["status"] for e in run_trigger(export_hash)] == ["success"]
    assert proxy.requests == [] and emulator.counts["export_progress"] >= 1


@pytest.mark.parametrize(
    ("variables", "proxied"),
    [
        pytest.param({"ALL_PROXY": "{proxy}"}, True, id="ALL_PROXY"),
        pytest.param({"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.0/8"}, False, id="NO_PROXY-CIDR"),
        pytest.param(
            {"HTTP_PROXY": "{proxy}", "NO_PROXY": ".invalid,127.0.0.1:1"}, True, id="NO_PROXY-other"
        ),
    ],
)
def test_both_hooks_follow_one_proxy_rule(emulator, proxy, monkeypatch, tmp_path, variables, proxied):
    """The sync hook and the trigger choose the same way (``ConnectionSettings.choose_proxy``): before,
    the trigger ignored ALL_PROXY and CIDR ranges in NO_PROXY, which requests honours."""
    use_connection(monkeypatch, emulator.base_url)
    for name, value in variables.items():
        set_env_proxy(monkeypatch, name, value.format(proxy=proxy.url))
    export_hash, sha256 = export_through_sync_hook(tmp_path)
    assert sha256 == emulator.artifact_sha256
    sync_through_proxy = proxy.counts[target_of(emulator.base_url)]
    polls_before = progress_polls(proxy)
    assert [e["status"] for e in run_trigger(export_hash)] == ["success"]
    trigger_through_proxy = progress_polls(proxy) - polls_before
    if proxied:
        assert sync_through_proxy >= 3 and trigger_through_proxy >= 1
    else:
        assert proxy.requests == [] and emulator.counts["export_progress"] >= 2


def test_trigger_explains_a_404_through_the_proxy(emulator, proxy, monkeypatch):
    use_connection(monkeypatch, emulator.base_url, proxies={"http": proxy.url})
    events = run_trigger("nosuchhash")
    assert [e["status"] for e in events] == ["error"] and "unknown or has expired" in events[0]["message"]
    # The keyless probe that tells an unknown hash from a wrong path went through the proxy too.
    assert [r.had_api_key for r in proxy.forwarded] == [True, False]


# --------------------------------------------------------------------------- a proxy that fails


def assert_names_the_proxy_without_credentials(message: str, proxy_url: str) -> None:
    assert proxy_url in message, message
    assert PROXY_PASSWORD not in message and f"{PROXY_USER}:{PROXY_PASSWORD}" not in message


def test_407_from_the_proxy_is_the_proxys_login_not_the_api_key(emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with ForwardingProxy(credentials=(PROXY_USER, "another-password")) as proxy:
        url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD)
        use_connection(monkeypatch, emulator.base_url, proxies={"http": url})
        with make_hook() as hook, pytest.raises(ContentExporterError) as err:
            hook.start_export("1")
        ok, checked = make_hook().test_connection()
    message = str(err.value)
    assert not isinstance(err.value, (ContentExporterAuthError, ContentExporterTransientError))
    assert not isinstance(err.value, ContentExporterStartUncertainError)
    assert "407 Proxy Authentication Required" in message and "rejected the API key" not in message
    assert "'proxies' extra" in message and "http://user:password@proxy:3128" in message
    assert_names_the_proxy_without_credentials(message, proxy.url)
    assert not ok and "407" in checked and "rejected the API key" not in checked
    assert_names_the_proxy_without_credentials(checked, proxy.url)
    assert [r.method for r in proxy.requests] == ["POST", "GET"]  # no retries of a 407, no keyless probe
    assert sum(emulator.counts.values()) == 0
    assert PROXY_PASSWORD not in caplog.text


def test_407_from_the_proxy_ends_the_trigger_with_a_clear_error(emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    export_hash = start_export_direct(monkeypatch, emulator)
    with ForwardingProxy(answer_status=407) as proxy:
        url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD)
        use_connection(monkeypatch, emulator.base_url, proxies={"http": url})
        events = run_trigger(export_hash)
    assert [e["status"] for e in events] == ["error"]
    message = events[0]["message"]
    assert "407" in message and "proxy's own login" in message and "rejected the API key" not in message
    assert_names_the_proxy_without_credentials(message, proxy.url)
    assert len(proxy.requests) == 1 and emulator.counts["export_progress"] == 0
    assert PROXY_PASSWORD not in caplog.text


def test_407_to_connect_for_an_https_service_is_reported_by_both_transports(monkeypatch, caplog):
    """For an https:// service the client asks the proxy for a tunnel (CONNECT); a 407 there too."""
    caplog.set_level(logging.DEBUG)
    with ForwardingProxy(credentials=(PROXY_USER, "another-password")) as proxy:
        url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD)
        use_connection(monkeypatch, f"https://127.0.0.1:{free_port()}", proxies={"https": url})
        with make_hook() as hook, pytest.raises(ContentExporterError) as err:
            hook.start_export("1")
        events = run_trigger("somehash")
    for message in (str(err.value), events[0]["message"]):
        assert "407 Proxy Authentication Required" in message and "rejected the API key" not in message
        assert_names_the_proxy_without_credentials(message, proxy.url)
    assert not isinstance(err.value, (ContentExporterStartUncertainError, ContentExporterTransientError))
    assert [e["status"] for e in events] == ["error"]
    assert [r.method for r in proxy.requests] == ["CONNECT", "CONNECT"]
    assert PROXY_PASSWORD not in caplog.text


def test_a_refused_proxy_is_transient_and_named(emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    use_connection(
        monkeypatch,
        emulator.base_url,
        proxies={"http": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"},
    )
    retries: list[int] = []
    with make_hook(on_retry=lambda event: retries.append(event.retry)) as hook:
        with pytest.raises(ContentExporterTransientError) as err:
            hook.start_export("1")  # retried: nothing can have reached the service
        ok, checked = hook.test_connection()
    message = str(err.value)
    assert "could not connect to proxy" in message and "connection refused" in message
    assert "running, reachable from this worker" in message and "connection refused" in message
    assert_names_the_proxy_without_credentials(message, f"http://127.0.0.1:{port}")
    assert retries == [1, 2]
    assert not ok and "could not connect to proxy" in checked
    assert_names_the_proxy_without_credentials(checked, f"http://127.0.0.1:{port}")
    assert sum(emulator.counts.values()) == 0
    assert PROXY_PASSWORD not in caplog.text


def test_a_refused_proxy_makes_the_trigger_retry_until_the_deadline(emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    export_hash = start_export_direct(monkeypatch, emulator)
    port = free_port()
    use_connection(
        monkeypatch,
        emulator.base_url,
        proxies={"http": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"},
        timeout=[0.5, 5],
    )
    events = run_trigger(export_hash, seconds=0.5, few_retries=True)
    assert [e["status"] for e in events] == ["error"]
    message = events[0]["message"]
    assert "could not connect to proxy" in message
    assert_names_the_proxy_without_credentials(message, f"http://127.0.0.1:{port}")
    assert emulator.counts["export_progress"] == 0
    assert PROXY_PASSWORD not in caplog.text


def test_a_502_from_the_proxy_is_retried_then_named(emulator, monkeypatch):
    with ForwardingProxy(answer_status=502) as proxy:
        use_connection(monkeypatch, emulator.base_url, proxies={"http": proxy.url})
        with make_hook() as hook, pytest.raises(ContentExporterTransientError) as err:
            hook.get_export_progress("abc")
        with make_hook() as hook, pytest.raises(ContentExporterStartUncertainError) as uncertain:
            hook.start_export("1")  # a 502 to a POST: maybe from the service's own gateway, not repeated
    assert f"HTTP 502 through proxy {proxy.url}" in str(err.value)
    assert "allowed to reach" in str(err.value) and "after 3 attempts" in str(err.value)
    assert f"through proxy {proxy.url}" in str(uncertain.value)
    assert [r.method for r in proxy.requests] == ["GET"] * 3 + ["POST"]


def test_a_refused_tunnel_to_an_https_service_is_transient_even_for_a_start(monkeypatch):
    """The proxy answers CONNECT with 502 (it opens no tunnels): nothing reached the service, so retry."""
    with ForwardingProxy() as proxy:
        use_connection(monkeypatch, f"https://127.0.0.1:{free_port()}", proxies={"https": proxy.url})
        with make_hook() as hook, pytest.raises(ContentExporterTransientError) as err:
            hook.start_export("1")
        events = run_trigger("somehash", seconds=0.3, few_retries=True)
    assert [e["status"] for e in events] == ["error"]
    for message in (str(err.value), events[0]["message"]):
        assert f"proxy {proxy.url}" in message and "refused to open a connection" in message
        assert "HTTP 502" in message and "after" in message
    assert [r.method for r in proxy.requests][:3] == ["CONNECT"] * 3  # the start, retried twice

"""What :class:`~airflow_provider_cex.hooks.content_exporter.ContentExporterHook` needs from requests besides
sending: reading a capped body, telling network errors apart and naming the proxy a request went through.

Decisions (retry or not, which error, which words) stay in :mod:`airflow_provider_cex.core`; this module
only turns requests' exceptions and settings into the facts the core asks for.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import requests

from airflow_provider_cex.core import Call, network_failure, proxy_failure, tls_failure
from airflow_provider_cex.protocol import ConnectionSettings, proxy_label

if TYPE_CHECKING:
    from requests import Response

#: How http.client reports a proxy's non-200 answer to CONNECT (the tunnel to an https:// URL).
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})")


def read_capped(resp: Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a streamed body."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def proxy_in_use(settings: ConnectionSettings, url: str) -> str | None:
    """How messages name the proxy requests sends ``url`` through, or None when it goes direct.

    The connection's ``proxies`` extra wins for the schemes it names; otherwise requests' own reading of
    ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` (the session trusts the environment).
    """
    explicit = settings.proxy_for(url)
    if explicit:
        return proxy_label(explicit, from_extra=True)
    from_env = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    return proxy_label(from_env, from_extra=False) if from_env else None


def failure_of(
    err: requests.RequestException, call: Call, settings: ConnectionSettings, url: str
) -> Exception:
    """The core's answer to a requests exception (on ``url``, or the redirect it failed on)."""
    url = getattr(err.request, "url", None) or url
    if isinstance(err, requests.exceptions.ProxyError):  # the request never got past the proxy
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

        inner = err.args[0] if err.args else None
        cause = getattr(getattr(inner, "reason", inner), "original_error", None)
        tunnel = _TUNNEL_FAILED.search(str(cause)) if cause is not None else None
        if isinstance(cause, NewConnectionError):  # a subclass of ConnectTimeoutError: test it first
            reason = "connection refused or host unreachable"
        elif isinstance(cause, (ConnectTimeoutError, TimeoutError)):
            reason = "connection timed out"
        else:
            reason = f"the connection failed ({type(cause or err).__name__})"
        status = int(tunnel[1]) if tunnel else None
        return proxy_failure(call, settings, proxy_in_use(settings, url), status=status, reason=reason)
    if isinstance(err, requests.exceptions.SSLError):
        return tls_failure(call, settings)
    return network_failure(call, describe_network_error(err), surely_not_sent=surely_not_sent(err))


def surely_not_sent(err: requests.RequestException) -> bool:
    """True when the connection was never established, so the server cannot have seen the request."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(err, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def describe_network_error(err: requests.RequestException) -> str:
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.exceptions.ReadTimeout):
        return "the server did not answer in time (read timeout)"
    if surely_not_sent(err):
        return "connection refused or host unreachable"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke while reading the response"
    if isinstance(err, requests.exceptions.ConnectionError):
        return "the connection was reset"
    return type(err).__name__

"""What :class:`~airflow_provider_cex.hooks.content_exporter.ContentExporterHook` needs from requests besides
sending: reading a capped body, telling network errors apart and naming the proxy a request went through.

Decisions (retry or not, which error, which words) stay in :mod:`airflow_provider_cex.policy` and
:mod:`airflow_provider_cex.failures`; this module only turns requests' exceptions and settings into the facts
they ask for.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3

from airflow_provider_cex.answers import BodyDecoder
from airflow_provider_cex.failures import CONNECTION_REFUSED, network_failure, proxy_failure
from airflow_provider_cex.policy import Call
from airflow_provider_cex.settings import ConnectionSettings, proxy_label
from airflow_provider_cex.tls import tls_failure

if TYPE_CHECKING:
    from requests import Response

#: How http.client reports a proxy's non-200 answer to CONNECT (the tunnel to an https:// URL).
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})")


class Deadline:
    """When one call attempt must be over: ``seconds`` from now for connecting and all reads together.

    The connection's ``timeout`` is ``(connect, read)``; a JSON call gets ``connect + read`` seconds in all,
    so a server that drips its answer a byte at a time cannot hold a worker beyond that. Reads of the body
    wait at most the time left; while the status line and headers arrive (inside requests), a watchdog
    (:meth:`guarding`) shuts the connection's socket down when the time is up.
    """

    def __init__(self, seconds: float, read_timeout: float) -> None:
        self.seconds, self.read_timeout = seconds, read_timeout
        self.end = time.monotonic() + seconds
        self.fired = False
        #: The urllib3 connection the attempt uses now (set by :class:`WatchedAdapter`'s pools).
        self.connection: object | None = None

    @contextlib.contextmanager
    def guarding(self) -> Iterator[Deadline]:
        """Within the block, requests sent through a :class:`WatchedAdapter` are cut when the time is up."""
        previous = getattr(_WATCHED, "deadline", None)
        _WATCHED.deadline = self
        timer = threading.Timer(max(0.0, self.remaining()), self._cut)
        timer.daemon = True
        timer.start()
        try:
            yield self
        finally:
            timer.cancel()
            _WATCHED.deadline = previous

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"the answer took longer than {self.seconds:g} s in all")

    def _cut(self) -> None:
        self.fired = True
        sock = getattr(self.connection, "sock", None)
        if isinstance(sock, socket.socket):  # the base method: an SSLSocket's own would touch its TLS state
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def read_timeout_now(self) -> float:
        """The read timeout for the next read: the connection's, or less if the deadline is nearer."""
        return max(0.001, min(self.read_timeout, self.remaining()))


class DeadlineExceeded(requests.exceptions.Timeout):
    """The whole answer did not arrive by the attempt's :class:`Deadline`."""


#: The :class:`Deadline` guarding this thread's request, if any (a hook is used by one thread at a time).
_WATCHED = threading.local()


class _WatchedPool:
    """Tells the guarding :class:`Deadline` which connection the request goes out on (urllib3 1.26 and 2.x
    both hand connections out through ``_get_conn``)."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        deadline = getattr(_WATCHED, "deadline", None)
        if deadline is not None:
            deadline.connection = conn
        return conn


class _WatchedHTTPPool(_WatchedPool, urllib3.HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_WatchedPool, urllib3.HTTPSConnectionPool):
    pass


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with pools that let a :class:`Deadline` cut a request waiting for its headers."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def raw_reader(resp: Response) -> Callable[[int], bytes]:
    """Reads the body as sent (not decoded), returning after each network read rather than when ``n``
    bytes have arrived, so a slow or dripping body can be timed between reads.

    ``http.client``'s ``read1`` under urllib3's response (both urllib3 1.26 and 2.x keep it as ``_fp``); it
    keeps the chunked framing and the Content-Length. Elsewhere urllib3's own ``read``.
    """
    fp = getattr(resp.raw, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        return fp.read1
    return functools.partial(resp.raw.read, decode_content=False)


def response_socket(resp: Response) -> socket.socket | None:
    """The socket a streamed response is read from (to shorten its read timeout), or None if hidden."""
    fp = getattr(resp.raw, "_fp", None)
    sock = getattr(getattr(getattr(fp, "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def read_body(resp: Response, limit: int, *, strict: bool = True, deadline: Deadline | None = None) -> bytes:
    """A small body, decoded (gzip, deflate) up to ``limit`` bytes by
    :class:`~airflow_provider_cex.answers.BodyDecoder`.

    ``strict``: a body over the limit, corrupt or in an unknown coding raises
    :class:`~airflow_provider_cex.answers.UnreadableBody`; otherwise what was read is returned (error bodies,
    to quote). ``deadline``: each read waits at most until it, and reading stops there with
    :class:`DeadlineExceeded`. Network errors are raised as requests' exceptions, as ``iter_content`` does.
    """
    decoder = BodyDecoder(resp.headers.get("Content-Encoding"), limit, strict=strict)
    read = raw_reader(resp)
    sock = response_socket(resp) if deadline is not None else None
    received, chunk = 0, b""
    try:
        while True:
            if deadline is not None:
                if deadline.remaining() <= 0 or deadline.fired:
                    raise deadline.exceeded()
                if sock is not None:
                    sock.settimeout(deadline.read_timeout_now())
            chunk = read(_READ_SIZE)
            received += len(chunk)
            if not chunk or not decoder.feed(chunk):
                break
        declared = resp.headers.get("Content-Length", "").strip()
        if not chunk and declared.isdigit() and received < int(declared):  # http.client's read1 does not say
            raise requests.exceptions.ChunkedEncodingError(
                f"the body ended after {received} of {declared} bytes"
            )
        if not chunk:  # read to its end past urllib3, which would close the connection: keep it alive
            resp.raw.release_conn()
    except requests.RequestException:
        raise
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as err:
        if deadline is not None and (deadline.remaining() <= 0 or deadline.fired):
            raise deadline.exceeded() from None
        raise requests.exceptions.ReadTimeout(err) from None
    except (http.client.HTTPException, urllib3.exceptions.ProtocolError) as err:
        raise requests.exceptions.ChunkedEncodingError(err) from None
    except (ssl.SSLError, urllib3.exceptions.SSLError) as err:
        raise requests.exceptions.SSLError(err) from None
    except (OSError, urllib3.exceptions.HTTPError) as err:
        raise requests.exceptions.ConnectionError(err) from None
    return decoder.result()


#: One network read of a small body at most this much.
_READ_SIZE = 64 * 1024


def proxy_in_use(settings: ConnectionSettings, url: str) -> str | None:
    """How messages name the proxy ``url`` goes through, or None when it goes direct (the choice:
    :meth:`~airflow_provider_cex.settings.ConnectionSettings.choose_proxy`)."""
    proxy, from_extra = settings.choose_proxy(url)
    return proxy_label(proxy, from_extra=from_extra) if proxy else None


def requests_proxies(settings: ConnectionSettings, url: str) -> dict[str, Any]:
    """The ``proxies`` argument that makes requests send ``url`` as
    :meth:`~airflow_provider_cex.settings.ConnectionSettings.choose_proxy` says: its scheme's proxy, and
    None for every other entry, so requests adds nothing of its own reading of the environment (None
    entries are dropped after the merge)."""
    proxy, _ = settings.choose_proxy(url)
    chosen: dict[str, Any] = {"http": None, "https": None, "all": None}  # str or None: stubs say str only
    if proxy:
        chosen[urlsplit(url).scheme.lower()] = proxy
    return chosen


def failure_of(
    err: requests.RequestException, call: Call, settings: ConnectionSettings, url: str
) -> Exception:
    """The failure (:mod:`~airflow_provider_cex.failures`) for a requests exception (on ``url``, or the
    redirect it failed on)."""
    url = getattr(err.request, "url", None) or url
    if isinstance(err, requests.exceptions.ProxyError):  # the request never got past the proxy
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

        inner = err.args[0] if err.args else None
        cause = getattr(getattr(inner, "reason", inner), "original_error", None)
        tunnel = _TUNNEL_FAILED.search(str(cause)) if cause is not None else None
        if isinstance(cause, NewConnectionError):  # a subclass of ConnectTimeoutError: test it first
            reason = CONNECTION_REFUSED
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
    if isinstance(err, DeadlineExceeded):
        return f"{err} (the connection's timeout, connect + read, bounds a whole call)"
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.exceptions.ReadTimeout):
        return "the server did not answer in time (read timeout)"
    if surely_not_sent(err):
        return CONNECTION_REFUSED
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke while reading the response"
    if isinstance(err, requests.exceptions.ConnectionError):
        return "the connection was reset"
    return type(err).__name__

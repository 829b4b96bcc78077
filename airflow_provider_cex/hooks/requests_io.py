"""The requests transport of :class:`~airflow_provider_cex.hooks.content_exporter.ContentExporterHook`: it
performs the steps of a call (:mod:`airflow_provider_cex.calls`) and only moves bytes.

:class:`RequestsTransport` sends, reads a capped body (:func:`read_body`) and sleeps; a :class:`Deadline` cuts
an attempt that outlasts its budget; :func:`broken` tells what a requests exception says about the network.
What happens next, and in which words, the steps decide.
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
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3

from airflow_provider_cex.answers import BodyDecoder, UnreadableBody
from airflow_provider_cex.calls import Broken, Discard, Head, Probe, Read, Send, Steps, out_of_time
from airflow_provider_cex.failures import CONNECTION_REFUSED
from airflow_provider_cex.settings import ConnectionSettings

if TYPE_CHECKING:
    from requests import Response

T = TypeVar("T")

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


class RequestsTransport:
    """Performs the steps of a call (:mod:`airflow_provider_cex.calls`) over one ``requests.Session``.

    It sends, reads and sleeps; what to send next, and what an answer or a failure means, the steps decide.
    Each attempt with a budget is guarded by a :class:`Deadline` from its first request to its last read.
    """

    def __init__(
        self, session: requests.Session, settings: ConnectionSettings, sleep: Callable[[float], Any]
    ) -> None:
        self.session, self.settings, self.sleep = session, settings, sleep

    def run(self, steps: Steps[T]) -> T:
        """Perform ``steps`` to their end; the answer's body is read and closed."""
        result, resp = self.open(steps)
        if resp is not None:
            resp.close()
        return result

    def open(self, steps: Steps[T]) -> tuple[T, Response | None]:
        """Perform ``steps`` to their end and return their result with the answer still open (a download's
        body, for the caller to read and close), or None if it was read."""
        resp: Response | None = None
        deadline: Deadline | None = None
        guard = contextlib.ExitStack()
        outcome: Any = None
        try:
            while True:
                try:
                    action = steps.send(outcome)
                except StopIteration as done:
                    kept, resp = resp, None
                    return done.value, kept
                if isinstance(action, Send):
                    if resp is not None:
                        resp.close()
                    if action.first_hop:
                        guard.close()
                        deadline = None
                        if action.budget:
                            deadline = Deadline(action.budget, self.settings.read_timeout)
                            guard.enter_context(deadline.guarding())
                    resp, outcome = self._send(action, deadline)
                elif isinstance(action, Read):
                    outcome = self._read(resp, action, deadline)
                    resp = None
                elif isinstance(action, Discard):
                    if resp is not None:
                        resp.close()
                    resp = outcome = None
                elif isinstance(action, Probe):
                    outcome = self.keyless_status(action.method, action.url)
                else:
                    guard.close()
                    outcome = self.sleep(action.seconds)
        finally:
            guard.close()
            if resp is not None:
                resp.close()

    def _send(self, action: Send, deadline: Deadline | None) -> tuple[Response | None, Head | Broken]:
        settings = self.settings
        if deadline is not None and deadline.remaining() <= 0:
            return None, out_of_time(deadline.seconds)
        read_timeout = deadline.read_timeout_now() if deadline is not None else settings.read_timeout
        try:
            resp = self.session.request(
                action.method,
                action.url,
                json=action.json,
                headers=dict(action.headers),
                timeout=(settings.connect_timeout, read_timeout),
                allow_redirects=False,
                stream=True,
                verify=settings.verify,
                proxies=requests_proxies(settings, action.url),  # the one proxy rule, not requests' own
            )
        except requests.RequestException as err:
            return None, broken(err, deadline)
        return resp, Head(resp.status_code, resp.headers)

    def _read(self, resp: Response | None, action: Read, deadline: Deadline | None) -> Any:
        assert resp is not None, "Read follows a Send"
        try:
            with resp:
                return read_body(resp, action.limit, strict=action.strict, deadline=deadline)
        except UnreadableBody as err:
            return err
        except requests.RequestException as err:
            return broken(err, deadline)

    def keyless_status(self, method: str, url: str) -> int | None:
        """The status of ``method url`` sent without the API key and without a body; None if unreachable.

        Explains a 404, and is what Test Connection asks: a request without a key cannot start an
        export, and its answer tells a guarded endpoint (401/403) from a missing one (404).
        """
        settings = self.settings
        try:
            resp = self.session.request(
                method,
                url,
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=False,
                stream=True,
                verify=settings.verify,
                proxies=requests_proxies(settings, url),
            )
        except requests.RequestException:
            return None
        resp.close()
        return resp.status_code


def broken(err: requests.RequestException, deadline: Deadline | None = None) -> Broken:
    """What a requests exception says about the network, for :func:`airflow_provider_cex.calls.failure_of`."""
    if deadline is not None and (deadline.fired or isinstance(err, DeadlineExceeded)):
        return out_of_time(deadline.seconds)  # whatever broke when the watchdog cut in, the time was up
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
        return Broken(reason, at_proxy=True, proxy_status=int(tunnel[1]) if tunnel else None)
    if isinstance(err, requests.exceptions.SSLError):
        return Broken(type(err).__name__, tls=err)  # worded by tls.tls_failure
    return Broken(describe_network_error(err), surely_not_sent=surely_not_sent(err))


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
        return CONNECTION_REFUSED
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke while reading the response"
    if isinstance(err, requests.exceptions.ConnectionError):
        return "the connection was reset"
    return type(err).__name__

"""The decisions of every Remote API call, written once and free of I/O; both transports drive them.

Given what happened to one attempt (a status with its headers, a redirect, or a network error),
these functions answer: done, retry after N seconds, follow a redirect (with or without the key),
or fail with this error. The retry budget, ``Retry-After``, the rule that a start POST that may
have been processed is never repeated, cross-origin key stripping, the redirect limit and the
status-to-error mapping live here and nowhere else. The requests hook and the aiohttp hook only
send, read and sleep.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from airflow_provider_cex import DEFAULT_CONN_ID, __version__
from airflow_provider_cex.endpoints import (
    DEFAULT_PATHS,
    DOCUMENTED,
    EXPORT_PROGRESS,
    KEY_HEADER,
    METHOD,
    START_EXPORT,
)
from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterNotFoundError,
    ContentExporterProtocolError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.protocol import (
    ConnectionSettings,
    ExportProgress,
    holds_secret,
    origin_of,
    parse_progress,
    snippet,
)
from airflow_provider_cex.tls import tls_failure as tls_failure  # re-exported: both transports use it

#: Bodies of JSON answers and errors are read up to this size: a hostile server cannot make us buffer more.
MAX_SMALL_BODY = 1024 * 1024
#: Error bodies are read up to this size (decompressed), to quote their start in the message.
MAX_ERROR_BODY = 64 * 1024
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ACCEPT = "application/json, text/plain;q=0.9, */*;q=0.5"
#: The codings :class:`BodyDecoder` decodes; sent on every request, so a server has no reason to use others.
ACCEPT_ENCODING = "gzip, deflate"
#: How both transports name a connection the server never accepted (nothing was sent).
CONNECTION_REFUSED = "connection refused or host unreachable"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(min(int(text), 10**9))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with jitter, ``Retry-After`` honoured.

    :param max_retries: retries after the first attempt (so ``max_retries + 1`` attempts).
    :param backoff_base: first backoff in seconds; doubles each retry.
    :param backoff_max: cap of one backoff.
    :param retry_after_cap: longest ``Retry-After`` slept through; a longer one ends retrying at
        once (reported as transient) instead of blocking a worker for it.
    """

    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Wait before retry ``retry_number`` (1-based): 'equal jitter' over the exponential step."""
        step = min(self.backoff_max, self.backoff_base * (2 ** max(0, retry_number - 1)))
        return step / 2 + (rng or random).uniform(0, step / 2)

    def wait(
        self, retry_number: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget or cap is exhausted."""
        if retry_number > self.max_retries:
            return None
        if retry_after is not None:
            if retry_after > self.retry_after_cap:
                return None
            return max(retry_after, 0.0)
        return self.backoff(retry_number, rng)


#: Statuses retried for every method: the request surely was not processed.
RETRY_ALWAYS = frozenset({429, 503})
#: Statuses retried only for idempotent requests (a POST may have been processed).
RETRY_IDEMPOTENT = frozenset({500, 502, 504})


def is_retryable_status(status: int, idempotent: bool) -> bool:
    return status in RETRY_ALWAYS or (idempotent and status in RETRY_IDEMPOTENT)


class RetryableFailure(Exception):
    """One attempt failed in a way another attempt may fix; ``advice``: what to do if retries do not help."""

    def __init__(self, reason: str, retry_after: float | None = None, *, advice: str | None = None):
        super().__init__(reason)
        self.reason, self.retry_after, self.advice = reason, retry_after, advice


@dataclass(frozen=True)
class Call:
    """One Remote API call: which endpoint, for which page id or export hash.

    Retry decisions (``idempotent``) and error messages are derived from it, so no code compares
    sentences to find out which call failed.
    """

    endpoint: str
    subject: str

    @property
    def method(self) -> str:
        return METHOD[self.endpoint]

    @property
    def idempotent(self) -> bool:
        """False for the start call: a POST that may have been processed must not be repeated."""
        return self.endpoint != START_EXPORT

    def __str__(self) -> str:
        """The call in words, to follow 'while trying to' or 'Could not'."""
        if self.endpoint == START_EXPORT:
            return f"start an export of page {self.subject}"
        if self.endpoint == EXPORT_PROGRESS:
            return f"check the progress of export {self.subject}"
        return f"download export {self.subject}"


#: The command that derives the ``endpoints`` extra from the vendor's OpenAPI descriptor.
DESCRIPTOR_COMMAND = "python -m airflow_provider_cex.openapi remote-api.json"


def path_origin(settings: ConnectionSettings, endpoint: str) -> str:
    """Where the path of ``endpoint`` comes from: the ``endpoints`` extra, or a documented/assumed default."""
    template = settings.endpoints.get(endpoint)
    if template:
        return f"{template} (from the 'endpoints' extra)"
    if endpoint in DOCUMENTED:
        return f"{DEFAULT_PATHS[endpoint]} (the vendor's documented path)"
    return f"{DEFAULT_PATHS[endpoint]} (assumed default, not documented by the vendor)"


def failure_for_status(
    status: int,
    call: Call,
    settings: ConnectionSettings,
    *,
    url: str,
    body: bytes | str | None,
    retry_after: str | None = None,
    route_exists: bool | None = None,
    proxy: str | None = None,
) -> Exception:
    """The exception for a non-2xx answer: ``RetryableFailure`` when another attempt is safe and useful.

    A 401/403 from another origin (after a redirect, where the key is deliberately not sent) is reported
    as a redirect problem, not a bad key; a 407 as the proxy's login. ``route_exists`` is what a transport
    learned about a 404 (see :func:`not_found_error`); ``proxy`` names the proxy used, if any
    (:func:`~airflow_provider_cex.protocol.proxy_label`).
    """
    if status == 407:
        return proxy_failure(call, settings, proxy, status=407)
    if status in (401, 403) and origin_of(url) != settings.origin:
        return ContentExporterProtocolError(
            f"Content Exporter redirected the request to {urlsplit(url).netloc!r}, which answered HTTP "
            f"{status} while trying to {call}. The API key is sent only to the application URL "
            f"({settings.base_url}), never to another host; if the service really moved, update the host of "
            f"connection {settings.conn_id!r}."
        )
    via = f" through proxy {proxy}" if proxy else ""
    if is_retryable_status(status, call.idempotent):  # through a proxy, a 5xx may be the proxy's own
        advice = _proxy_advice(settings) if proxy and status >= 500 else None
        return RetryableFailure(
            f"HTTP {status}{via}", parse_retry_after(retry_after, time.time()), advice=advice
        )
    secret = settings.api_key
    if status >= 500 and call.idempotent:  # e.g. 501 or 505: not worth repeating at once
        return ContentExporterTransientError(
            f"Content Exporter answered HTTP {status}{via} while trying to {call}; the task can be retried. "
            f"Server said: {snippet(body, secret)!r}."
        )
    if status >= 500:
        return ContentExporterStartUncertainError(
            f"Content Exporter answered HTTP {status}{via} while trying to {call}. The request may have "
            f"reached the server and started the export, so it was not repeated: {START_UNCERTAIN_ADVICE} "
            f"Server said: {snippet(body, secret)!r}."
        )
    if status == 404:
        return not_found_error(call, settings, url=url, body=body, route_exists=route_exists)
    return error_for_status(status, call, url=url, body=body, conn_id=settings.conn_id, secret=secret)


START_UNCERTAIN_ADVICE = (
    "a second attempt could start a second export. Check the export in Confluence; clear the task "
    "to start a new one."
)
"""What to do when a start request may have been processed but its answer was lost."""


def give_up_message(
    call: Call, failure: RetryableFailure, attempts: int, policy: RetryPolicy, base_url: str
) -> str:
    """Why retrying stopped, for the ``ContentExporterTransientError`` a transport raises."""
    if failure.retry_after is not None and failure.retry_after > policy.retry_after_cap:
        return (
            f"Could not {call}: {failure.reason}; the server asked to wait {failure.retry_after:.0f} s, "
            f"longer than this task waits ({policy.retry_after_cap:.0f} s). The failure is transient: "
            "let the task retry later (Airflow retries / retry_delay)."
        )
    advice = failure.advice or (
        f"The service may be overloaded or unreachable at {base_url}; the task can be retried later."
    )
    tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
    return f"Could not {call} after {tries}: {failure.reason}. {advice}"


def proxy_failure(
    call: Call,
    settings: ConnectionSettings,
    proxy: str | None,
    *,
    status: int | None = None,
    reason: str = "",
) -> Exception:
    """A request stopped at the proxy (``proxy`` names it, without credentials): unreachable (``reason``), or
    answering ``status`` itself (to a tunnel request, or 407). 407 is its login, final; anything else is
    retried, a start request too: nothing reached Content Exporter.
    """
    name = f"proxy {proxy}" if proxy else "a proxy"
    if status == 407:
        return ContentExporterError(
            f"Could not {call}: {name} answered HTTP 407 Proxy Authentication Required: it needs a user "
            "and password, or rejected the ones given. This is the proxy's own login, not the Content "
            "Exporter API key (the request did not get past the proxy): put them in the proxy URL where it "
            "is set, percent-encoded, e.g. http://user:password@proxy:3128 in the connection's 'proxies' "
            "extra or in HTTPS_PROXY/HTTP_PROXY."
        )
    if status is not None:
        reason = f"{name} refused to open a connection to the service (HTTP {status})"
    else:
        reason = f"could not connect to {name}: {reason}"
    return RetryableFailure(reason, advice=_proxy_advice(settings))


def _proxy_advice(settings: ConnectionSettings) -> str:
    return (
        "Check that the proxy is running, reachable from this worker and allowed to reach "
        f"{settings.base_url}, or correct its URL; the task can be retried later."
    )


def not_found_error(
    call: Call,
    settings: ConnectionSettings,
    *,
    url: str,
    body: bytes | str | None,
    route_exists: bool | None = None,
) -> ContentExporterNotFoundError:
    """The error for a 404, naming the likely cause: a wrong path, or an unknown page or export.

    :param route_exists: what the transport learned, e.g. by sending the same request without the key:
        401/403 there means an endpoint guards that path (True: the page or export is what is unknown),
        404 again means nothing answers there (False: the path is probably wrong). None: not known.
    """
    detail = snippet(body, settings.api_key)
    tail = f" Server said: {detail!r}." if detail else ""
    fix = (
        f"Check the Application URL and the {call.endpoint!r} path in the 'endpoints' extra of connection "
        f"{settings.conn_id!r}, or derive all three paths from the vendor's OpenAPI descriptor: "
        f"{DESCRIPTOR_COMMAND}."
    )
    path = f"The path in use is {path_origin(settings, call.endpoint)}."
    if call.endpoint == START_EXPORT:
        if route_exists is False:
            cause = (
                f"there is no start-export endpoint at {url} (HTTP 404, also without the API key, so "
                "nothing there checks keys): the path is probably wrong. The vendor documents "
                f"POST <APPLICATION_URL>{DEFAULT_PATHS[START_EXPORT].replace('{page_id}', '<PAGE_ID>')}"
                + (
                    "; this is that path, so the Application URL is probably wrong (it is the Content "
                    "Exporter application URL, not your Confluence site; leave it empty to pick by 'region')."
                    if START_EXPORT not in settings.endpoints
                    else "."
                )
            )
        elif route_exists:
            cause = (
                f"Content Exporter does not know page {call.subject} (HTTP 404 from {url}). Check the page "
                "id (the number in the page's URL) and that the admin who generated the API key can view it."
            )
        else:
            cause = (
                f"HTTP 404 from {url}: either the service has no start-export endpoint at that URL, or it "
                f"does not know page {call.subject} (check the page id, the number in the page's URL)."
            )
        return ContentExporterNotFoundError(f"Could not {call}: {cause} {path} {fix}{tail}")
    if route_exists:
        cause = (
            f"Content Exporter does not know export {call.subject} (HTTP 404 from {url}): the hash is "
            "unknown or has expired (an export hash is valid only for a while after the export finished): "
            "start a new export."
        )
        return ContentExporterNotFoundError(f"Could not {call}: {cause}{tail}")
    if route_exists is False:
        cause = (
            f"nothing answers at {url} (HTTP 404, also without the API key, so no endpoint checks keys "
            "there): the path is probably wrong, not the export hash."
        )
    else:
        cause = (
            f"HTTP 404 from {url}. If the export was started moments ago, the path is probably wrong; "
            "otherwise the hash is unknown or has expired (an export hash is valid only for a while after "
            "the export finished): start a new export."
        )
    return ContentExporterNotFoundError(f"Could not {call}: {cause} {path} {fix}{tail}")


def error_for_status(
    status: int,
    call: Call,
    *,
    url: str,
    body: bytes | str | None,
    conn_id: str = DEFAULT_CONN_ID,
    secret: str | None = None,
) -> ContentExporterError:
    """The exception for a final (non-retried, non-404) error status, with a message saying what to do."""
    detail = snippet(body, secret)
    tail = f" Server said: {detail!r}." if detail else ""
    if status in (401, 403):
        return ContentExporterAuthError(
            f"Content Exporter rejected the API key while trying to {call} (HTTP {status} from {url}). "
            "Generate a new key on the Content Exporter admin page (Remote API section; switching the "
            "Remote API off and on revokes the old key) and store it as the password of Airflow "
            f"connection {conn_id!r}.{tail}"
        )
    if status == 409:
        return ContentExporterProtocolError(
            f"Content Exporter is not ready to {call} (HTTP 409 from {url}): the export has not finished "
            "or has failed. Wait until its progress reaches 100 (ContentExporterExportSensor) before "
            "downloading; if it already did, the service reported completion too early: retry the "
            f"download task.{tail}"
        )
    return ContentExporterProtocolError(
        f"Content Exporter answered HTTP {status} while trying to {call} ({url}).{tail}"
    )


# --------------------------------------------------------------------------- one call, attempt by attempt


def default_headers(client: str) -> dict[str, str]:
    """Headers every request carries (never the key: see :func:`key_header`)."""
    return {
        "User-Agent": f"airflow-provider-cex/{__version__} {client}",
        "Accept": ACCEPT,
        "Accept-Encoding": ACCEPT_ENCODING,
    }


def key_header(settings: ConnectionSettings, url: str) -> dict[str, str]:
    """The key header (:data:`.endpoints.KEY_HEADER`) for ``url``: only on the application origin (scheme,
    host, port)."""
    return {KEY_HEADER: settings.api_key} if origin_of(url) == settings.origin else {}


@dataclass(frozen=True)
class Hop:
    """Where a redirect leads: the next URL and method, and whether the key may go there."""

    url: str
    method: str
    send_key: bool


def redirect(
    method: str, url: str, status: int, location: str | None, settings: ConnectionSettings
) -> Hop | None:
    """The next hop when ``status`` redirects to ``location``, else None (the answer is final).

    A 303, or a 301/302 answering a POST, turns into a GET without a body, as browsers and curl do.
    """
    if status not in REDIRECT_STATUSES or not location:
        return None
    if holds_secret(location, settings.api_key):
        # Following it would put the key in a URL: in logs, in proxies, and at whatever host it names.
        raise ContentExporterProtocolError(
            f"Content Exporter redirected to a location that contains the API key "
            f"({snippet(location, settings.api_key, limit=120)!r}); it was not followed, so the key goes "
            f"nowhere but {settings.base_url}. Check the Application URL of connection {settings.conn_id!r} "
            "(a proxy or load balancer in front of the service may be rewriting requests)."
        )
    next_url = _without_userinfo(urljoin(url, location))
    if urlsplit(next_url).scheme not in ("http", "https"):
        raise ContentExporterProtocolError(
            f"Content Exporter redirected to a non-HTTP location ({snippet(location, settings.api_key)!r})."
        )
    if status == 303 or (status in (301, 302) and method == "POST"):
        method = "GET"
    return Hop(next_url, method, origin_of(next_url) == settings.origin)


def _without_userinfo(url: str) -> str:
    """A redirect target without ``user:password@``: credentials a server chose are not sent anywhere."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def too_many_redirects(url: str) -> ContentExporterProtocolError:
    return ContentExporterProtocolError(
        f"Content Exporter redirected more than {MAX_REDIRECTS} times; stopped following "
        f"(last location: {snippet(url, limit=120)!r})."
    )


def should_probe_route(status: int, url: str, settings: ConnectionSettings) -> bool:
    """Whether to ask ``url`` again without the key to explain a 404 (only on the application origin)."""
    return status == 404 and origin_of(url) == settings.origin


def route_exists(keyless_status: int | None) -> bool | None:
    """What the keyless answer says: 401/403 an endpoint guards the path, 404 nothing lives there."""
    return {401: True, 403: True, 404: False}.get(keyless_status) if keyless_status is not None else None


def network_failure(call: Call, reason: str, *, surely_not_sent: bool) -> Exception:
    """The failure for a network error: retryable, unless a start POST may have reached the server."""
    if call.idempotent or surely_not_sent:
        return RetryableFailure(reason)
    return ContentExporterStartUncertainError(
        f"Could not {call}: {reason}. The request may have reached the server and started the "
        f"export, so it was not repeated: {START_UNCERTAIN_ADVICE}"
    )


def decode_progress(export_hash: str, raw: bytes, secret: str | None) -> ExportProgress:
    """The progress answer's body, decoded and interpreted."""
    try:
        payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except RecursionError:
        raise unreadable_answer(Call(EXPORT_PROGRESS, export_hash), "its JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ContentExporterProtocolError(
            f"The progress response for export {export_hash} is not JSON: {snippet(raw, secret)!r}."
        ) from None
    return parse_progress(export_hash, payload, secret)


def unreadable_answer(call: Call, reason: str) -> ContentExporterError:
    """The error for a 2xx answer that cannot be read (too large, badly encoded, too deeply nested).

    For a start call the export may be running (the service accepted the request): it is not repeated.
    """
    if call.endpoint == START_EXPORT:
        return ContentExporterStartUncertainError(
            f"Content Exporter accepted the request to {call}, but its answer is unreadable: {reason}. The "
            f"export may be running, so the request was not repeated: {START_UNCERTAIN_ADVICE}"
        )
    return ContentExporterProtocolError(
        f"Content Exporter's answer while trying to {call} is unreadable: {reason}. If this persists, the "
        "service or a proxy in between is misbehaving; the task can be retried."
    )


class UnreadableBody(Exception):
    """A body that cannot be read within the rules: ``reason`` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Content codings a body may arrive in (we ask for these only: :data:`ACCEPT_ENCODING`).
_DECODABLE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


#: Inflated in steps of at most this many bytes: memory per step stays small whatever the limit.
_INFLATE_STEP = 1024 * 1024


class BodyDecoder:
    """Decodes a body as it arrives (``Content-Encoding`` gzip or deflate), never past ``limit`` bytes.

    Both transports read raw bytes and feed them here, so a small compressed answer that would inflate to
    gigabytes costs at most ``limit`` bytes of memory and the CPU to inflate that much, whatever the headers
    say. :meth:`feed` returns False once ``limit`` is reached: the transport stops reading. ``strict``: a
    body over the limit, with an unknown coding or corrupt, raises :class:`UnreadableBody` (for answers that
    must be read whole); otherwise the bytes decoded so far are kept (for quoting an error body).
    """

    def __init__(
        self,
        content_encoding: str | None,
        limit: int,
        *,
        strict: bool = True,
        sink: Callable[[bytes | memoryview], None] | None = None,
    ) -> None:
        self.limit, self.strict, self.sink = limit, strict, sink
        self.size = 0
        self.truncated = False
        self.problem: str | None = None
        self._out = bytearray()
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._wbits = 0
        self._inflater: Any = None
        if len(codings) > 1 or (codings and codings[0] not in _DECODABLE):
            self.problem = f"it is sent with Content-Encoding {snippet(content_encoding, limit=40)!r}, which "
            self.problem += "this client did not ask for and does not decode"
        elif codings:
            self._wbits = _DECODABLE[codings[0]]
            self._inflater = zlib.decompressobj(self._wbits)
        self._raw_deflate_tried = False
        self._head = b""
        self._fed = 0

    @property
    def full(self) -> bool:
        return self.truncated or self.problem is not None

    def feed(self, chunk: bytes | memoryview) -> bool:
        """Take the next raw bytes; False when no more are wanted (limit reached, or decoding failed)."""
        if self.full:
            return False
        if self._inflater is None:
            self._keep(chunk)
            return not self.full
        self._fed += len(chunk)
        if self._fed > self.limit + _INFLATE_STEP:  # more compressed bytes than the answer may have, inflated
            self.truncated = True
            return False
        if (
            self._wbits == zlib.MAX_WBITS
            and not self._raw_deflate_tried
            and not self.size
            and len(self._head) < 65536
        ):
            self._head += chunk  # until 'deflate' proves zlib-wrapped, keep what came, to replay it as raw
        data = chunk
        try:
            while not self.full:
                step = min(self.limit - self.size + 1, _INFLATE_STEP)  # one byte more tells "over the limit"
                out = self._inflater.decompress(data, step)
                data = self._inflater.unconsumed_tail
                if self._inflater.eof and self._inflater.unused_data:  # a next gzip member follows
                    data = self._inflater.unused_data + data
                    self._inflater = zlib.decompressobj(self._wbits)
                self._keep(out)
                if not data and len(out) < step:  # input used up and no output held back: wait for more
                    break
        except zlib.error:
            if (
                self._wbits == zlib.MAX_WBITS
                and not self._raw_deflate_tried
                and not self.size
                and len(self._head) == self._fed
            ):
                self._raw_deflate_tried = True  # 'deflate' sent without its zlib header, as some servers do
                self._wbits = -zlib.MAX_WBITS
                self._inflater = zlib.decompressobj(self._wbits)
                head, self._head = self._head, b""
                self._fed -= len(head)  # fed again below
                return self.feed(head)
            self.problem = "its compressed body is corrupt"
        return not self.full

    def _keep(self, data: bytes | memoryview) -> None:
        room = self.limit - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        self.size += len(data)
        if self.sink is not None:
            if data:
                self.sink(data)
        else:
            self._out += data

    def result(self) -> bytes:
        """The decoded body; strict: raises :class:`UnreadableBody` if it is not whole."""
        if self.strict:
            if self.problem:
                raise UnreadableBody(self.problem)
            if self.truncated:
                raise UnreadableBody(f"it is larger than {self.limit // 1024} KiB (decompressed)")
        return bytes(self._out)


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen, for ``on_retry`` callbacks (tests, metrics) and the log line."""

    call: Call
    retry: int
    max_retries: int
    reason: str
    wait: float

    def log(self, log: Any) -> None:
        """The warning both transports write before the wait."""
        log.warning(
            "Could not %s: %s. Retry %d of %d in %.1f s.",
            self.call,
            self.reason,
            self.retry,
            self.max_retries,
            self.wait,
        )


class Retries:
    """The retry budget of one call: each failure either earns a wait or ends the call.

    :param rng: random source of the jitter (injected for repeatable tests).
    :param on_retry: called with a :class:`RetryEvent` before each wait.
    """

    def __init__(
        self,
        call: Call,
        policy: RetryPolicy,
        base_url: str,
        *,
        rng: random.Random | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self.call, self.policy, self.base_url = call, policy, base_url
        self.rng, self.on_retry = rng, on_retry
        self.retries = 0

    def wait_after(self, failure: RetryableFailure) -> RetryEvent:
        """The next wait; raises ``ContentExporterTransientError`` once the retry budget is spent."""
        self.retries += 1
        wait = self.policy.wait(self.retries, failure.retry_after, self.rng)
        if wait is None:  # "from None": the caller handles ``failure``; the traceback need not show it
            raise ContentExporterTransientError(
                give_up_message(self.call, failure, self.retries, self.policy, self.base_url)
            ) from None
        event = RetryEvent(self.call, self.retries, self.policy.max_retries, failure.reason, wait)
        if self.on_retry is not None:
            self.on_retry(event)
        return event

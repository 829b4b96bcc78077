"""One Remote API call, step by step and free of I/O: the core both transports drive (as h11 drives a
connection).

A call is a generator. It yields the next action, a transport performs it and sends back what happened,
and the generator returns the answer or raises the error. The order of the steps is written here once:
send, follow a redirect (the key to the application origin only), check the status, ask again without
the key to explain a 404, retry or wait, read and decode the body. The actions, and what comes back:

- :class:`Send`: send the request, read its status line and headers (``first_hop``: a new attempt, with
  ``budget`` seconds in all if set) -> :class:`Head`, or :class:`Broken`;
- :class:`Read`: read the body of the answer just received through a ``BodyDecoder(limit, strict)``
  -> ``bytes``, :class:`Broken`, or :class:`~airflow_provider_cex.answers.UnreadableBody`;
- :data:`DISCARD`: close the answer just received, unread -> ``None``;
- :class:`Probe`: send ``method url`` without key or body -> its status, or ``None`` if it failed;
- :class:`Wait`: sleep ``seconds`` -> ``None``.

What is retried, how redirects go and which error a failure becomes are the decisions of
:mod:`~airflow_provider_cex.policy` and :mod:`~airflow_provider_cex.failures`; this module puts them in order.
A transport turns its library's exceptions into a :class:`Broken` and decides nothing on its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from airflow_provider_cex.answers import MAX_ERROR_BODY, MAX_SMALL_BODY, UnreadableBody
from airflow_provider_cex.failures import (
    failure_for_status,
    network_failure,
    proxy_failure,
    proxy_in_use,
    route_exists,
    should_probe_route,
    unreadable_answer,
)
from airflow_provider_cex.policy import (
    MAX_REDIRECTS,
    Call,
    Retries,
    RetryableFailure,
    RetryEvent,
    RetryPolicy,
    key_header,
    redirect,
    too_many_redirects,
)
from airflow_provider_cex.settings import ConnectionSettings
from airflow_provider_cex.tls import tls_failure

T = TypeVar("T")


@dataclass(slots=True)  # not frozen: frozen __init__s set each field by object.__setattr__ (µs a poll)
class Send:
    """Send a request and read its status line and headers (not its body)."""

    method: str
    url: str
    headers: Mapping[str, str]
    json: Any = None
    #: The first request of an attempt (not a redirect's): the attempt's time starts here.
    first_hop: bool = True
    #: Seconds the whole attempt (redirects, headers, body) may take; None: only per-read timeouts.
    budget: float | None = None


@dataclass(slots=True)
class Head:
    """The status and headers of an answer (headers as the transport has them: case-insensitive)."""

    status: int
    headers: Mapping[str, str]


@dataclass(slots=True)
class Read:
    """Read the body of the answer just received, decoded, up to ``limit`` bytes (``strict``: more, or a
    corrupt coding, is an :class:`~airflow_provider_cex.answers.UnreadableBody`)."""

    limit: int
    strict: bool


class Discard:
    """Close the answer just received without reading its body (a redirect)."""


DISCARD = Discard()
#: The two reads there are: a small answer (strict), an error's body (to quote; what arrives is kept).
READ_ANSWER = Read(MAX_SMALL_BODY, strict=True)
READ_ERROR_BODY = Read(MAX_ERROR_BODY, strict=False)


@dataclass(slots=True)
class Probe:
    """Send ``method url`` without the key and without a body; only its status matters."""

    method: str
    url: str


@dataclass(slots=True)
class Wait:
    """Sleep before the next attempt."""

    seconds: float


@dataclass(slots=True)
class Broken:
    """What a transport saw when the network failed, in the terms the failures are decided in."""

    reason: str
    #: The connection was never established, so the server cannot have seen the request.
    surely_not_sent: bool = False
    #: The TLS handshake failed (the transport's exception, to say why): final.
    tls: BaseException | None = None
    #: The request stopped at the proxy: unreachable (``reason``), or it answered ``proxy_status`` itself.
    at_proxy: bool = False
    proxy_status: int | None = None


@dataclass(slots=True)
class Answer:
    """A successful small answer: its head and its decoded body."""

    head: Head
    body: bytes


Action = Send | Read | Discard | Probe | Wait
Outcome = Head | Broken | bytes | UnreadableBody | int | None
Steps = Generator[Action, Any, T]


def out_of_time(budget: float) -> Broken:
    """What a transport reports when an attempt's ``budget`` ran out (:attr:`Send.budget`)."""
    return Broken(
        f"the answer took longer than {budget:g} s in all (the connection's timeout, connect + read, "
        "bounds a whole call)"
    )


def failure_of(broken: Broken, call: Call, settings: ConnectionSettings, url: str) -> Exception:
    """The failure for what broke: a TLS error is final; a proxy's or the network's may be retried."""
    if broken.tls is not None:
        return tls_failure(call, settings, broken.tls)
    if broken.at_proxy:
        proxy = proxy_in_use(settings, url)
        return proxy_failure(call, settings, proxy, status=broken.proxy_status, reason=broken.reason)
    return network_failure(call, broken.reason, surely_not_sent=broken.surely_not_sent)


def download_headers(range_from: int = 0, validator: str | None = None) -> dict[str, str]:
    """The headers of a download request: the bytes as stored (no coding), from ``range_from`` if > 0."""
    headers = {"Accept-Encoding": "identity"}
    if range_from:
        headers["Range"] = f"bytes={range_from}-"
        if validator:
            headers["If-Range"] = validator
    return headers


class Driver:
    """The calls of one hook: its connection settings, retry policy, jitter, ``on_retry`` and log.

    Each method returns the steps of one call (a generator, see the module docstring) for a transport
    to perform.
    """

    __slots__ = ("log", "on_retry", "policy", "rng", "settings")

    def __init__(
        self,
        settings: ConnectionSettings,
        policy: RetryPolicy,
        *,
        log: Any,
        rng: random.Random | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self.settings, self.policy, self.log = settings, policy, log
        self.rng, self.on_retry = rng, on_retry

    def retries(self, call: Call) -> Retries:
        """A fresh retry budget for ``call`` (also for the breaks of a download's body)."""
        return Retries(call, self.policy, self.settings.base_url, rng=self.rng, on_retry=self.on_retry)

    def small(self, call: Call, url: str, json: Any = None) -> Steps[Answer]:
        """A call with a small answer (start, progress), retried as the policy says; returns its body.

        One attempt, redirects and body included, takes at most ``connect + read`` seconds of the
        connection's timeout.
        """
        budget = self.settings.connect_timeout + self.settings.read_timeout
        return self._retrying(call, lambda: self._attempt(call, url, json=json, budget=budget))

    def download(
        self, call: Call, url: str, range_from: int = 0, validator: str | None = None
    ) -> Steps[Head]:
        """Open the file (from byte ``range_from`` when > 0), retried as the policy says; returns the head
        of a 200 or 206 answer, whose body the transport keeps open for the caller."""
        headers = download_headers(range_from, validator)
        return self._retrying(call, lambda: self._attempt(call, url, headers=headers, stream=range_from))

    def once(self, call: Call, url: str) -> Steps[Head | Broken]:
        """One attempt, redirects followed, no retry, body discarded: the head, or what broke (Test
        Connection)."""
        try:
            head, url = yield from self._follow(call, url, {}, None, None)
        except _BrokenAt as err:
            return err.broken
        yield DISCARD
        return head

    # ------------------------------------------------------------------ the steps

    def _retrying(self, call: Call, attempt: Callable[[], Steps[T]]) -> Steps[T]:
        retries: Retries | None = None  # made on the first failure: most calls need none
        while True:
            try:
                return (yield from attempt())
            except RetryableFailure as failure:
                retries = retries or self.retries(call)
                event = retries.wait_after(failure)  # ContentExporterTransientError once spent
                event.log(self.log)
                yield Wait(event.wait)

    def _attempt(
        self,
        call: Call,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        budget: float | None = None,
        stream: int | None = None,
    ) -> Steps[Any]:
        """One attempt: ``stream`` None reads and returns an :class:`Answer`; a number (the first byte asked
        for) returns the :class:`Head` with the body left unread."""
        try:
            head, url = yield from self._follow(call, url, headers or {}, json, budget)
        except _BrokenAt as err:
            raise failure_of(err.broken, call, self.settings, err.url) from None
        status = head.status
        if 200 <= status < 300:
            if stream is not None:
                if status == 206 and not stream:
                    yield DISCARD
                    raise RetryableFailure("the server answered 206 to a request without Range")
                return head
            body = yield READ_ANSWER
            if isinstance(body, Broken):  # the request was answered, so it surely was sent
                raise failure_of(replace(body, surely_not_sent=False), call, self.settings, url)
            if isinstance(body, UnreadableBody):
                raise unreadable_answer(call, body.reason)
            return Answer(head, body)
        error_body = yield READ_ERROR_BODY
        keyless = (yield Probe(call.method, url)) if should_probe_route(status, url, self.settings) else None
        raise failure_for_status(
            status,
            call,
            self.settings,
            url=url,
            body=error_body if isinstance(error_body, bytes) else b"",
            retry_after=head.headers.get("Retry-After"),
            route_exists=route_exists(keyless),
            proxy=proxy_in_use(self.settings, url),
        )

    def _follow(
        self, call: Call, url: str, headers: Mapping[str, str], json: Any, budget: float | None
    ) -> Steps[tuple[Head, str]]:
        """Send, following redirects by hand so the key goes to the application origin only; returns the
        final head and URL. Raises :class:`_BrokenAt` when the network fails."""
        settings, method = self.settings, call.method
        send_key = True  # the first URL is built from the application URL
        for hop_number in range(MAX_REDIRECTS + 1):
            request_headers = {**headers, **key_header(settings, url)} if send_key else dict(headers)
            outcome = yield Send(method, url, request_headers, json, hop_number == 0, budget)
            if isinstance(outcome, Broken):
                raise _BrokenAt(outcome, url)
            hop = redirect(method, url, outcome.status, outcome.headers.get("Location"), settings)
            if hop is None:
                return outcome, url
            yield DISCARD
            if hop.method != method:
                json = None
            if not hop.send_key:
                self.log.info("Following redirect to %s (without the API key)", hop.url.split("/")[2])
            url, method, send_key = hop.url, hop.method, hop.send_key
        raise too_many_redirects(url)


class _BrokenAt(Exception):
    """Internal: the network failed while sending to ``url``."""

    def __init__(self, broken: Broken, url: str) -> None:
        super().__init__(broken.reason)
        self.broken, self.url = broken, url

"""The call policy: what follows one attempt of a Remote API call, written once and free of I/O.

The core that drives each call (:mod:`~airflow_provider_cex.calls`) asks it: retry, and after how long
(:class:`RetryPolicy`, ``Retry-After``, the budget of :class:`Retries`); never repeat a start POST that may
have been processed (:class:`Call`: only the start call is not idempotent); follow a redirect or not, and
with or without the key (:func:`redirect`, :func:`key_header`: the key goes to the application origin only);
the headers every request carries. Which error a failed attempt becomes, in which words, is in
:mod:`~airflow_provider_cex.failures`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from airflow_provider_cex import __version__
from airflow_provider_cex.answers import ACCEPT_ENCODING
from airflow_provider_cex.endpoints import EXPORT_PROGRESS, KEY_HEADER, METHOD, START_EXPORT
from airflow_provider_cex.exceptions import ContentExporterProtocolError, ContentExporterTransientError
from airflow_provider_cex.redaction import holds_secret, snippet
from airflow_provider_cex.settings import ConnectionSettings, origin_of

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ACCEPT = "application/json, text/plain;q=0.9, */*;q=0.5"


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


# --------------------------------------------------------------------------- what each attempt carries


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
    # A URL under the application URL is on its origin: same "scheme://host:port/" (the poll's case), with
    # no URL parsing; any other is compared by origin.
    base = settings.base_url
    home = url.startswith(base) and url[len(base) : len(base) + 1] in "/?"
    return {KEY_HEADER: settings.api_key} if home or origin_of(url) == settings.origin else {}


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

"""ContentExporterAsyncHook: progress polling over aiohttp for triggers, on the core the sync hook drives too.

A poll's steps (send, redirect, status, retry or wait, decode) come from :mod:`airflow_provider_cex.calls`,
as the requests hook's do; this hook performs them over aiohttp: it only sends, reads and sleeps.
Everything is imported at the top, so no import runs on a triggerer's event loop (certifi included: see
:mod:`airflow_provider_cex.tls`).
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from yarl import URL

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.answers import BodyDecoder, ExportProgress, UnreadableBody, decode_progress
from airflow_provider_cex.calls import (
    Broken,
    Discard,
    Driver,
    Head,
    Probe,
    Read,
    Send,
    Steps,
    Wait,
    out_of_time,
)
from airflow_provider_cex.endpoints import EXPORT_PROGRESS
from airflow_provider_cex.failures import CONNECTION_REFUSED, unreadable_answer
from airflow_provider_cex.inputs import validate_export_hash
from airflow_provider_cex.policy import Call, RetryEvent, RetryPolicy, default_headers
from airflow_provider_cex.settings import (
    KEY_TRIMMED_WARNING,
    ConnectionSettings,
    origin_of,
    settings_from_connection,
)
from airflow_provider_cex.tls import VERIFY_OFF_WARNING, ssl_context

T = TypeVar("T")


class ContentExporterAsyncHook(BaseHook):
    """
    Non-blocking twin of :class:`~airflow_provider_cex.hooks.content_exporter.ContentExporterHook` for
    triggers: progress polling over aiohttp.

    One ``aiohttp.ClientSession`` lives as long as the ``async with`` block (a trigger's whole
    life), so a poll reuses a kept-alive connection instead of paying for a new session.

    Proxies by the one rule of both hooks
    (:meth:`~airflow_provider_cex.settings.ConnectionSettings.choose_proxy`: the ``proxies`` extra, else
    ``HTTP(S)_PROXY``/``ALL_PROXY`` and ``NO_PROXY``), resolved once per origin (``trust_env=True`` would
    read the environment and ``~/.netrc`` on a thread at every poll) and passed as ``proxy=`` to each
    request.

    :param content_exporter_conn_id: Airflow connection id of type ``content_exporter``.
    :param retry_policy: as for the sync hook.
    :param rng: random source of the backoff jitter.
    :param sleep: how to wait between attempts (default ``asyncio.sleep``).
    :param on_retry: called with a :class:`~airflow_provider_cex.policy.RetryEvent` before each wait.
    """

    def __init__(
        self,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.content_exporter_conn_id = content_exporter_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.rng = rng  # None: the random module's generator (a Random() per trigger costs a urandom seed)
        self.sleep = sleep or asyncio.sleep
        self.on_retry = on_retry
        self.settings: ConnectionSettings | None = None
        #: The steps of each call (:mod:`airflow_provider_cex.calls`), made in ``async with``.
        self.driver: Driver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self._calls: dict[str, tuple[str, Call]] = {}  # a trigger polls one hash: build its URL once
        self._proxies: dict[tuple[str, str, int], URL | None] = {}  # origin -> proxy (None: direct)
        self._polled_url: str = ""  # the last URL sent to, and its proxy
        self._polled_proxy: URL | None = None

    async def __aenter__(self) -> ContentExporterAsyncHook:
        self.settings = await SETTINGS_CACHE.get(self.content_exporter_conn_id)
        if self.settings.key_trimmed:  # once per trigger run, as the sync hook says it once per hook
            self.log.warning(KEY_TRIMMED_WARNING, self.content_exporter_conn_id)
        self._ssl = ssl_context(self.settings)  # a 'verify' path that cannot be loaded fails here
        if self._ssl is False:  # once per trigger run (aiohttp itself does not warn)
            self.log.warning(VERIFY_OFF_WARNING, self.content_exporter_conn_id, self.settings.base_url)
        self._proxy_for(self.settings.base_url)  # before the session: a bad proxy URL raises here
        self.driver = Driver(
            self.settings, self.retry_policy, log=self.log, rng=self.rng, on_retry=self.on_retry
        )
        self._session = aiohttp.ClientSession(
            headers=default_headers(f"aiohttp/{aiohttp.__version__}"),
            trust_env=False,  # the environment's proxy is resolved above, not again at every poll
            auto_decompress=False,  # bodies are decoded by answers.BodyDecoder, within its limit
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.settings.connect_timeout, sock_read=self.settings.read_timeout
            ),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (also on cancellation: ``async with`` runs this in ``finally``)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def get_export_progress(self, export_hash: str, within: float | None = None) -> ExportProgress:
        """Read the progress of an export, retrying transient failures as the sync hook does.

        :param within: seconds the whole call may take, retries and their waits included; past them it
            raises ``TimeoutError`` (a trigger's deadline: one timer per call, not two).
        """
        if self.driver is None or self._session is None:
            raise RuntimeError("use ContentExporterAsyncHook in 'async with'")
        known = self._calls.get(export_hash)
        if known is None:
            export_hash = validate_export_hash(export_hash)
            url = self.driver.settings.url(EXPORT_PROGRESS, export_hash)
            known = self._calls[export_hash] = (url, Call(EXPORT_PROGRESS, export_hash))
        url, call = known
        until = None if within is None else asyncio.get_running_loop().time() + within
        answer = await self.run(self.driver.small(call, url), until)
        try:
            return decode_progress(export_hash, answer.body, self.driver.settings.api_key)
        except UnreadableBody as err:  # JSON nested too deeply
            raise unreadable_answer(call, err.reason) from None

    async def run(self, steps: Steps[T], until: float | None = None) -> T:
        """Perform the steps of a call (:mod:`airflow_provider_cex.calls`) to their end: send, read, sleep.

        One timer per call bounds each attempt by its budget (rescheduled when an attempt starts) and the
        whole call by ``until`` (loop time; past it, ``TimeoutError``). When an attempt's budget runs out,
        the steps hear that it ran out of time, and decide.
        """
        assert self._session is not None
        session, loop = self._session, asyncio.get_running_loop()
        resp: aiohttp.ClientResponse | None = None
        budget = 0.0
        outcome: Any = None
        by_deadline = until is not None  # whether the clock is set for ``until`` (not an attempt's budget)
        try:
            while True:
                clock = asyncio.timeout(until)
                try:
                    async with clock:
                        while True:
                            try:
                                action = steps.send(outcome)
                            except StopIteration as done:
                                return done.value
                            if type(action) is Send:
                                if resp is not None:
                                    resp.release()
                                    resp = None
                                if action.first_hop:
                                    budget = action.budget or 0.0
                                    end = loop.time() + budget if action.budget else None
                                    by_deadline = until is not None and (end is None or until <= end)
                                    clock.reschedule(until if by_deadline else end)
                                try:
                                    resp = await session.request(
                                        action.method,
                                        action.url,
                                        headers=action.headers,
                                        json=action.json,
                                        allow_redirects=False,
                                        ssl=self._ssl,
                                        proxy=self._proxy_for(action.url),
                                    )
                                    outcome = Head(resp.status, resp.headers)
                                except (TimeoutError, aiohttp.ClientError) as err:
                                    outcome = broken(err)
                            elif type(action) is Read:
                                assert resp is not None, "Read follows a Send"
                                outcome = await _read(resp, action)
                                resp = None
                            elif type(action) is Discard:
                                if resp is not None:
                                    resp.release()
                                resp = outcome = None
                            elif type(action) is Probe:
                                outcome = await self._keyless_status(action.method, action.url)
                            else:
                                assert isinstance(action, Wait)
                                by_deadline = until is not None
                                clock.reschedule(until)
                                outcome = await self.sleep(action.seconds)
                except TimeoutError:
                    if not clock.expired() or by_deadline:
                        raise
                    if resp is not None:
                        resp.close()
                        resp = None
                    outcome = out_of_time(budget)
        finally:
            if resp is not None:
                resp.close()

    async def _keyless_status(self, method: str, url: str) -> int | None:
        """The status of ``method url`` without the key or a body (to explain a 404); None if it fails."""
        assert self._session is not None
        try:
            proxy = self._proxy_for(url)
            async with self._session.request(
                method, url, allow_redirects=False, ssl=self._ssl, proxy=proxy
            ) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    def _proxy_for(self, url: str) -> URL | None:
        """The proxy for ``url``'s origin (None: direct), by the rule the sync hook follows too
        (:meth:`~airflow_provider_cex.settings.ConnectionSettings.choose_proxy`); looked up once per origin
        (a trigger polls one)."""
        if url == self._polled_url:  # the poll's URL: no parsing at every poll
            return self._polled_proxy
        origin = origin_of(url)
        if origin not in self._proxies:
            assert self.settings is not None
            proxy, _ = self.settings.choose_proxy(url)
            self._proxies[origin] = URL(proxy) if proxy else None
        self._polled_url, self._polled_proxy = url, self._proxies[origin]
        return self._polled_proxy


def broken(err: BaseException) -> Broken:
    """What an aiohttp exception says about the network, for :func:`airflow_provider_cex.calls.failure_of`."""
    if isinstance(err, aiohttp.ClientSSLError):  # final: tls.tls_failure says why (unknown CA, name mismatch)
        return Broken(type(err).__name__, tls=err)
    if isinstance(err, aiohttp.ClientProxyConnectionError):  # before its base class, ClientConnectorError
        return Broken(CONNECTION_REFUSED, at_proxy=True)
    if isinstance(err, aiohttp.ClientHttpProxyError):  # the proxy's answer to CONNECT (an https:// URL)
        return Broken(f"HTTP {err.status}", at_proxy=True, proxy_status=err.status)
    if isinstance(err, aiohttp.ClientConnectorError):
        return Broken(CONNECTION_REFUSED, surely_not_sent=True)
    if isinstance(err, asyncio.TimeoutError):
        return Broken("the server did not answer in time (read timeout)")
    return Broken(f"the connection broke ({type(err).__name__})")


async def _read(resp: aiohttp.ClientResponse, action: Read) -> bytes | Broken | UnreadableBody:
    """The body of ``resp`` through a decoder (:class:`~airflow_provider_cex.calls.Read`); the connection goes
    back to the pool."""
    decoder = BodyDecoder(resp.headers.get("Content-Encoding"), action.limit, strict=action.strict)
    try:
        await _read_into(resp, decoder)
        return decoder.result()
    except UnreadableBody as err:
        return err
    except (TimeoutError, aiohttp.ClientError) as err:
        return broken(err)
    finally:
        resp.release()


async def _read_into(resp: aiohttp.ClientResponse, decoder: BodyDecoder) -> None:
    """Feed the body as sent (aiohttp does not decompress: ``auto_decompress=False``) to ``decoder``, which
    decodes it and says when to stop: a body never costs more than the decoder's limit, whatever its size
    on the wire or inflated. One chunk is at most 64 KiB: inflating it holds the event loop for well under a
    millisecond."""
    async for chunk in resp.content.iter_chunked(64 * 1024):
        if not decoder.feed(chunk):
            return
    declared = resp.content_length
    if declared is not None and resp.content.total_bytes < declared:  # aiohttp raises this itself; be sure
        raise aiohttp.ClientPayloadError(
            f"the body ended after {resp.content.total_bytes} of {declared} bytes"
        )


async def lookup_settings(conn_id: str) -> ConnectionSettings:
    """Read the connection without blocking the event loop and turn it into settings."""
    conn = await get_async_connection(conn_id)
    # Airflow >= 3.3.2 masks extras asynchronously; the sync property would block the loop there.
    extra = await conn.aextra_dejson() if hasattr(conn, "aextra_dejson") else conn.extra_dejson
    return settings_from_connection(
        conn_id, conn.host, conn.password, conn.port, extra or {}, conn_type=conn.conn_type
    )


class SettingsCache:
    """Connection settings shared by the triggers of one process for ``ttl`` seconds, looked up once.

    A triggerer running 1,000 deferred exports would otherwise read the same connection 1,000 times
    in a burst: 1,000 secrets-backend calls (Vault, AWS Secrets Manager: latency, rate limits, cost)
    and ~0.6 ms of CPU each (benchmarks/trigger_scale.py). Concurrent lookups of one connection on
    one event loop share a single call. A changed connection (e.g. a rotated key) reaches triggers
    started ``ttl`` seconds later; a running trigger keeps the settings it started with.
    A failed lookup is not cached.
    """

    def __init__(
        self, ttl: float = 60.0, lookup: Callable[[str], Awaitable[ConnectionSettings]] | None = None
    ) -> None:
        self.ttl = ttl
        #: How a connection is read (default :func:`lookup_settings`); tests replace it to count calls.
        self.lookup = lookup or lookup_settings
        self._entries: dict[str, tuple[float, ConnectionSettings]] = {}
        self._inflight: dict[tuple[int, str], Any] = {}  # (id(loop), conn_id) -> asyncio.Task

    async def get(self, conn_id: str) -> ConnectionSettings:
        while True:
            entry = self._entries.get(conn_id)
            if entry is not None and entry[0] > time.monotonic():
                return entry[1]
            loop = asyncio.get_running_loop()
            key = (id(loop), conn_id)
            task = self._inflight.get(key)
            if task is None:
                task = loop.create_task(self._fetch(conn_id))
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._forget, key))
            try:
                # Shielded: one trigger cancelled while waiting must not cancel the others' lookup.
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled() and not _current_task_cancelling():
                    continue  # the lookup itself was cancelled (its loop is closing): try again
                raise

    def _forget(self, key: tuple[int, str], _task: Any) -> None:
        self._inflight.pop(key, None)

    async def _fetch(self, conn_id: str) -> ConnectionSettings:
        settings = await self.lookup(conn_id)
        self._entries[conn_id] = (time.monotonic() + self.ttl, settings)
        return settings

    def clear(self) -> None:
        self._entries.clear()


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


#: Connection settings shared by the triggers of this process (``SETTINGS_CACHE.clear()`` forgets them).
SETTINGS_CACHE = SettingsCache()

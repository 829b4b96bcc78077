"""ContentExporterAsyncHook: progress polling over aiohttp for triggers, on the same policy as the sync hook.

It makes the same decisions as the requests hook (retries, redirects, errors), from the same code
(:mod:`~airflow_provider_cex.policy`, :mod:`~airflow_provider_cex.failures`,
:mod:`~airflow_provider_cex.answers`); only sending, reading and sleeping differ. Everything is imported at
the top, so no import runs on a triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from yarl import URL

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.answers import (
    MAX_ERROR_BODY,
    MAX_SMALL_BODY,
    BodyDecoder,
    ExportProgress,
    UnreadableBody,
    decode_progress,
)
from airflow_provider_cex.endpoints import EXPORT_PROGRESS
from airflow_provider_cex.failures import (
    CONNECTION_REFUSED,
    failure_for_status,
    proxy_failure,
    route_exists,
    should_probe_route,
    unreadable_answer,
)
from airflow_provider_cex.inputs import validate_export_hash
from airflow_provider_cex.policy import (
    MAX_REDIRECTS,
    Call,
    Retries,
    RetryableFailure,
    RetryEvent,
    RetryPolicy,
    default_headers,
    key_header,
    redirect,
    too_many_redirects,
)
from airflow_provider_cex.settings import (
    KEY_TRIMMED_WARNING,
    ConnectionSettings,
    origin_of,
    proxy_label,
    settings_from_connection,
)
from airflow_provider_cex.tls import VERIFY_OFF_WARNING, ssl_context, tls_failure


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
        self.rng = rng or random.Random()
        self.sleep = sleep or asyncio.sleep
        self.on_retry = on_retry
        self.settings: ConnectionSettings | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self._calls: dict[str, tuple[str, Call]] = {}  # a trigger polls one hash: build its URL once
        self._key_header: dict[
            str, str
        ] = {}  # for the first hop, whose URL is built from the application URL
        self._proxy: URL | None = None  # for the first hop too: the application origin's proxy
        self._proxies: dict[tuple[str, str, int], URL | None] = {}  # origin -> proxy (None: direct)

    async def __aenter__(self) -> ContentExporterAsyncHook:
        self.settings = await SETTINGS_CACHE.get(self.content_exporter_conn_id)
        self._key_header = key_header(self.settings, self.settings.base_url)
        if self.settings.key_trimmed:  # once per trigger run, as the sync hook says it once per hook
            self.log.warning(KEY_TRIMMED_WARNING, self.content_exporter_conn_id)
        self._ssl = ssl_context(self.settings)  # a 'verify' path that cannot be loaded fails here
        if self._ssl is False:  # once per trigger run (aiohttp itself does not warn)
            self.log.warning(VERIFY_OFF_WARNING, self.content_exporter_conn_id, self.settings.base_url)
        self._proxy = self._proxy_for(self.settings.base_url)  # before the session: may raise
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

    async def get_export_progress(self, export_hash: str) -> ExportProgress:
        """Read the progress of an export, retrying transient failures as the sync hook does."""
        if self.settings is None or self._session is None:
            raise RuntimeError("use ContentExporterAsyncHook in 'async with'")
        known = self._calls.get(export_hash)
        if known is None:
            export_hash = validate_export_hash(export_hash)
            url = self.settings.url(EXPORT_PROGRESS, export_hash)
            known = self._calls[export_hash] = (url, Call(EXPORT_PROGRESS, export_hash))
        url, call = known
        retries: Retries | None = None  # made on the first failure: most polls need none
        budget = self.settings.connect_timeout + self.settings.read_timeout
        while True:
            try:
                async with asyncio.timeout(budget):  # connect and all reads of one attempt together
                    raw = await self._get_small(url, call)
                break
            except TimeoutError:
                failure = RetryableFailure(
                    f"the answer took longer than {budget:g} s in all (the connection's timeout, "
                    "connect + read, bounds a whole call)"
                )
            except RetryableFailure as err:
                failure = err
            retries = retries or Retries(
                call, self.retry_policy, self.settings.base_url, rng=self.rng, on_retry=self.on_retry
            )
            event = retries.wait_after(failure)
            event.log(self.log)
            await self.sleep(event.wait)
        try:
            return decode_progress(export_hash, raw, self.settings.api_key)
        except UnreadableBody as err:  # JSON nested too deeply
            raise unreadable_answer(call, err.reason) from None

    async def _get_small(self, url: str, call: Call) -> bytes:
        """One GET attempt, redirects followed by hand (the key goes to the application origin only)."""
        assert self.settings is not None and self._session is not None
        settings, session = self.settings, self._session
        send_key = True
        try:
            for hop_number in range(MAX_REDIRECTS + 1):
                if hop_number == 0:  # the first URL is built from the application URL
                    headers, proxy = self._key_header, self._proxy
                else:
                    headers = key_header(settings, url) if send_key else {}
                    proxy = self._proxy_for(url)
                async with session.get(
                    url, headers=headers, allow_redirects=False, ssl=self._ssl, proxy=proxy
                ) as resp:
                    hop = redirect("GET", url, resp.status, resp.headers.get("Location"), settings)
                    if hop is not None:
                        if not hop.send_key:
                            self.log.info(
                                "Following redirect to %s (without the API key)", hop.url.split("/")[2]
                            )
                        url, send_key = hop.url, hop.send_key
                        continue
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                    ok = 200 <= status < 300
                    limit = MAX_SMALL_BODY if ok else MAX_ERROR_BODY
                    decoder = BodyDecoder(resp.headers.get("Content-Encoding"), limit, strict=ok)
                    await _read_into(resp, decoder)
                if ok:
                    try:
                        return decoder.result()
                    except UnreadableBody as err:
                        raise unreadable_answer(call, err.reason) from None
                body = decoder.result()
                probe = should_probe_route(status, url, settings)
                raise failure_for_status(
                    status,
                    call,
                    settings,
                    url=url,
                    body=body,
                    retry_after=retry_after,
                    route_exists=route_exists(await self._keyless_status(url)) if probe else None,
                    proxy=self._proxy_label(url),
                )
        except aiohttp.ClientSSLError as err:  # final: says why (unknown CA, name mismatch)
            raise tls_failure(call, settings, err) from None
        except aiohttp.ClientProxyConnectionError:  # before its base class, ClientConnectorError
            reason = CONNECTION_REFUSED
            raise proxy_failure(call, settings, self._proxy_label(url), reason=reason) from None
        except aiohttp.ClientHttpProxyError as err:  # the proxy's answer to CONNECT (an https:// URL)
            raise proxy_failure(call, settings, self._proxy_label(url), status=err.status) from None
        except aiohttp.ClientConnectorError:
            raise RetryableFailure(CONNECTION_REFUSED) from None
        except (TimeoutError, aiohttp.ClientError) as err:
            raise RetryableFailure(_describe_error(err)) from None
        raise too_many_redirects(url)

    async def _keyless_status(self, url: str) -> int | None:
        """The status of a GET of ``url`` without the key (to explain a 404); None if it fails."""
        assert self._session is not None
        try:
            proxy = self._proxy_for(url)
            async with self._session.get(url, allow_redirects=False, ssl=self._ssl, proxy=proxy) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    def _proxy_for(self, url: str) -> URL | None:
        """The proxy for ``url``'s origin (None: direct), by the rule the sync hook follows too
        (:meth:`~airflow_provider_cex.settings.ConnectionSettings.choose_proxy`); looked up once per origin
        (a trigger polls one)."""
        origin = origin_of(url)
        if origin not in self._proxies:
            assert self.settings is not None
            proxy, _ = self.settings.choose_proxy(url)
            self._proxies[origin] = URL(proxy) if proxy else None
        return self._proxies[origin]

    def _proxy_label(self, url: str) -> str | None:
        """How messages name the proxy ``url`` went through (never with its credentials), or None."""
        proxy = self._proxies.get(origin_of(url))
        if proxy is None or self.settings is None:
            return None
        return proxy_label(str(proxy), from_extra=self.settings.proxy_for(url) is not None)


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


def _describe_error(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "the server did not answer in time (read timeout)"
    return f"the connection broke ({type(err).__name__})"


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

"""ContentExporterHook: the Remote API over requests, driving :mod:`airflow_provider_cex.policy`.

Whether to retry, follow a redirect (with the key or not) is decided in :mod:`~airflow_provider_cex.policy`,
which error a failure becomes in :mod:`~airflow_provider_cex.failures`, answers are read by
:mod:`~airflow_provider_cex.answers`: the code the async hook (:mod:`.content_exporter_async`) drives too;
the order of the steps is still this hook's own loop. Files on disk are :mod:`~airflow_provider_cex.files`'
business; the UI's part (the 2.11 form, Test Connection's probes) is :mod:`.connection_ui`.
"""

from __future__ import annotations

import functools
import os
import random
import time
import warnings
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_cex import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
)
from airflow_provider_cex.answers import (
    MAX_ERROR_BODY,
    MAX_SMALL_BODY,
    DownloadedExport,
    ExportProgress,
    UnreadableBody,
    decode_progress,
    parse_export_hash,
)
from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS, START_EXPORT
from airflow_provider_cex.exceptions import (
    ContentExporterProtocolError,
    ContentExporterStartUncertainError,
)
from airflow_provider_cex.failures import (
    START_UNCERTAIN_ADVICE,
    failure_for_status,
    route_exists,
    should_probe_route,
    unreadable_answer,
)
from airflow_provider_cex.files import TempFiles, final_path, is_folder, refuse_existing
from airflow_provider_cex.hooks.download import copy_with_resume
from airflow_provider_cex.hooks.requests_io import (
    Deadline,
    WatchedAdapter,
    failure_of,
    proxy_in_use,
    read_body,
    requests_proxies,
)
from airflow_provider_cex.inputs import build_start_body, validate_export_hash
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
from airflow_provider_cex.redaction import scrub
from airflow_provider_cex.settings import KEY_TRIMMED_WARNING, ConnectionSettings, settings_from_connection
from airflow_provider_cex.tls import (
    VERIFY_OFF_WARNING,
    quiet_insecure_request_warnings,
    ssl_context,
    tls_failure,
)

if TYPE_CHECKING:
    from requests import Response

    from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook

__all__ = ["ContentExporterAsyncHook", "ContentExporterHook", "DownloadedExport", "ExportProgress"]

T = TypeVar("T")


def __getattr__(name: str) -> Any:
    """``ContentExporterAsyncHook`` still imports from here, without loading aiohttp for sync users."""
    if name == "ContentExporterAsyncHook":
        from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook

        return ContentExporterAsyncHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ContentExporterHook(BaseHook):
    """
    Talk to the Content Exporter for Confluence Remote API.

    The connection's password is the API key (sent as ``CEX-API-KEY`` to the application
    origin only), its host the application URL (empty: chosen by the ``region`` extra, ``us``
    or ``eu``). Extras: ``timeout`` (seconds, or ``[connect, read]``), ``endpoints`` (path
    templates overriding the defaults), ``verify`` (CA bundle path; TLS is verified by default),
    ``proxies`` (``{"https": "http://proxy:3128"}``: wins over ``HTTP(S)_PROXY``/``NO_PROXY`` for the
    schemes it names; other requests follow the environment, as requests does).

    :param content_exporter_conn_id: Airflow connection id of type ``content_exporter``.
    :param retry_policy: how 429, 5xx and network errors are retried (default: 4 retries,
        exponential backoff with jitter, ``Retry-After`` honoured up to 60 s).
    :param rng: random source of the backoff jitter (default: a fresh ``random.Random``).
    :param sleep: how to wait between attempts (default ``time.sleep``).
    :param on_retry: called with a :class:`~airflow_provider_cex.policy.RetryEvent` before each wait
        (retries of a call and resumes of a broken download), e.g. to count them.
    """

    conn_name_attr = "content_exporter_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Content Exporter for Confluence"

    def __init__(
        self,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.content_exporter_conn_id = content_exporter_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.rng = rng or random.Random()
        self.sleep = sleep or time.sleep
        self.on_retry = on_retry
        self._session: requests.Session | None = None
        self._temp_files = TempFiles()

    # ------------------------------------------------------------------ connection form (Airflow 2.11 UI)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form in the Airflow 2 UI (Airflow 3 reads provider info)."""
        from airflow_provider_cex.hooks.connection_ui import form_widgets

        return form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel and hide standard connection fields in the Airflow 2 UI."""
        from airflow_provider_cex.hooks.connection_ui import field_behaviour

        return field_behaviour()

    # ------------------------------------------------------------------ configuration

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, read once and validated; the API key is registered with the secret masker."""
        from airflow.providers.common.compat.sdk import mask_secret

        conn = self.get_connection(self.content_exporter_conn_id)
        if conn.password:
            mask_secret(conn.password)
        extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
        settings = settings_from_connection(
            self.content_exporter_conn_id,
            conn.host,
            conn.password,
            conn.port,
            extra,
            conn_type=conn.conn_type,
        )
        mask_secret(settings.api_key)  # the key as sent, when the field had spaces or a line break around it
        if settings.key_trimmed:
            self.log.warning(KEY_TRIMMED_WARNING, self.content_exporter_conn_id)
        for proxy in settings.proxies.values():  # a proxy's password is a secret too
            if password := urlsplit(proxy).password:
                mask_secret(password)
        if settings.verify is False:  # once per hook, instead of urllib3's warning at every request
            self.log.warning(VERIFY_OFF_WARNING, self.content_exporter_conn_id, settings.base_url)
            quiet_insecure_request_warnings(settings.base_url)
        else:
            ssl_context(settings)  # a 'verify' path that cannot be loaded fails here, before any request
        return settings

    @property
    def base_url(self) -> str:
        """The application URL this hook talks to."""
        return self.settings.base_url

    def get_conn(self) -> requests.Session:
        """The hook's one HTTP session (created on first use, reused for every call)."""
        if self._session is None:
            session = requests.Session()
            for prefix in ("http://", "https://"):  # lets a call's deadline cut a server stalling its headers
                session.mount(prefix, WatchedAdapter())
            session.headers.update(default_headers(f"python-requests/{requests.__version__}"))
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> ContentExporterHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def start_export(self, page_id: str | int, body: dict[str, Any] | None = None) -> str:
        """Start an export of ``page_id`` (and its tree) and return the export hash.

        :param page_id: Confluence page id (digits only).
        :param body: export configuration (a JSON object); ``rootContentId`` is set to ``page_id``.
        """
        page, payload = build_start_body(page_id, body)
        call = Call(START_EXPORT, page)
        url = self.settings.url(START_EXPORT, page)
        # A POST is repeated only when it surely was not processed: failures.failure_for_status and
        # failures.network_failure decide.
        _status, headers, raw = self._with_retries(call, lambda: self._attempt_small(call, url, payload))
        try:
            export_hash = parse_export_hash(raw, headers.get("Content-Type"), self.settings.api_key)
        except ContentExporterProtocolError as err:  # a 2xx without a usable hash: the export may run
            raise ContentExporterStartUncertainError(
                f"{err} The service accepted the request, so the export may be running: "
                f"{START_UNCERTAIN_ADVICE}"
            ) from None
        # The operators log the start once, page first, with its link (airflow_provider_cex.progress).
        self.log.debug("Started Content Exporter export of page %s: hash %s", page, export_hash)
        return export_hash

    def get_export_progress(self, export_hash: str) -> ExportProgress:
        """Read the progress of an export (0-100) and whether it failed."""
        export_hash = validate_export_hash(export_hash)
        call = Call(EXPORT_PROGRESS, export_hash)
        url = self.settings.url(EXPORT_PROGRESS, export_hash)
        _status, _headers, raw = self._with_retries(call, lambda: self._attempt_small(call, url))
        try:
            return decode_progress(export_hash, raw, self.settings.api_key)
        except UnreadableBody as err:  # JSON nested too deeply
            raise unreadable_answer(call, err.reason) from None

    def download_export(
        self,
        export_hash: str,
        destination: str | os.PathLike[str],
        overwrite: bool = True,
        *,
        fsync: bool = False,
        report_lineage: bool = True,
        durable: bool | None = None,
    ) -> DownloadedExport:
        """Stream the exported file to ``destination``, atomically.

        ``destination`` is the file's full path, or a folder (ending in ``/`` or existing) in which case the
        server's file name is used, sanitised. Missing folders are created. The bytes go to a uniquely named
        temporary file beside the destination, are checked against ``Content-Length``/``Content-Range`` and
        hashed (sha256) in the same pass, and the file is moved into place only when complete. A body that
        stops short is resumed with an HTTP ``Range`` request when the server supports it, else restarted,
        a bounded number of times. A failed download leaves nothing behind.

        :param overwrite: replace an existing file (default); ``False`` fails instead.
        :param fsync: ``fsync`` the file (and its folder) before and after the rename, so a machine crash
            right after the task cannot leave an empty file. ``durable``: its deprecated name.
        :param report_lineage: tell Airflow's hook lineage collector about the file (an output asset
            ``file://<path>``, size and sha256); ``False`` for a staging copy uploaded elsewhere.
        """
        if durable is not None:
            warnings.warn("download_export(durable=...) is deprecated: use fsync=...", DeprecationWarning, 2)
            fsync = fsync or durable
        export_hash = validate_export_hash(export_hash)
        dest = os.fspath(destination)
        if not dest or not str(dest).strip():
            raise ValueError("destination is empty: pass a file path or a folder ending in '/'.")
        if not is_folder(dest):
            refuse_existing(dest, overwrite)  # before any byte is downloaded
        call = Call(DOWNLOAD_EXPORT, export_hash)
        url = self.settings.url(DOWNLOAD_EXPORT, export_hash)
        resp = self._open_download(url, call)
        try:
            key = self.settings.api_key  # a server echoing it in a header must not put it in a file name
            content_type = scrub(resp.headers.get("Content-Type") or "", key) or None
            disposition = scrub(resp.headers.get("Content-Disposition") or "", key) or None
            target = final_path(dest, export_hash, content_type, disposition, key)
            refuse_existing(target, overwrite)
            length = resp.headers.get("Content-Length", "").strip()
            expected = int(length) if length.isdigit() and not resp.headers.get("Content-Encoding") else None
            with self._temp_files.writing(
                target, overwrite=overwrite, fsync=fsync, expected_size=expected
            ) as out:
                retries = Retries(
                    call, self.retry_policy, self.settings.base_url, rng=self.rng, on_retry=self.on_retry
                )
                reopen = functools.partial(self._open_download, url, call)
                size, digest = copy_with_resume(
                    resp, out, call, reopen, retries, self.sleep, self.log, self.settings.low_speed
                )
        finally:
            resp.close()
        result = DownloadedExport(
            path=os.path.abspath(target),
            size_bytes=size,
            sha256=digest,
            content_type=content_type,
            filename=os.path.basename(target),
        )
        if report_lineage:
            from airflow_provider_cex.lineage import output_uri, report_hook_output

            report_hook_output(self, output_uri(result.path), size, digest)
        return result

    def abort_downloads(self) -> None:
        """Remove the temporary files of downloads in progress (for ``on_kill``); best effort."""
        self._temp_files.remove_all()

    def test_connection(self) -> tuple[bool, str]:
        """Check what can be checked without starting an export, and say no more than that.

        Messages name the connection, or say "this connection" when Airflow tests it under a made-up id,
        and name the machine the test runs on
        (:func:`~airflow_provider_cex.connection_check.for_test_connection`).

        Three requests, no retries: the progress of a made-up hash with the key (401/403: the key
        was rejected), the same without the key, and a keyless POST to the start path (which cannot
        start an export). 401/403 without the key shows an endpoint lives at a path; 404 shows
        nothing does, so the path is probably wrong. See :mod:`airflow_provider_cex.connection_check`.
        """
        from airflow_provider_cex.connection_check import for_test_connection
        from airflow_provider_cex.hooks.connection_ui import probe

        ok, message = probe(self)
        return ok, for_test_connection(message, self.content_exporter_conn_id)

    # ------------------------------------------------------------------ HTTP plumbing

    def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        deadline: Deadline | None = None,
    ) -> Response:
        """Send one request, following redirects by hand so the key goes to the application origin only.

        ``deadline``: no hop waits for its headers beyond it (each read waits at most the time left).
        """
        settings = self.settings
        session = self.get_conn()
        send_key = True  # the first URL is built from the application URL
        for _hop in range(MAX_REDIRECTS + 1):
            request_headers = {**(headers or {}), **(key_header(settings, url) if send_key else {})}
            if deadline is not None and deadline.remaining() <= 0:
                raise deadline.exceeded()
            read_timeout = deadline.read_timeout_now() if deadline is not None else settings.read_timeout
            resp = session.request(
                method,
                url,
                json=json_body,
                headers=request_headers,
                timeout=(settings.connect_timeout, read_timeout),
                allow_redirects=False,
                stream=True,
                verify=settings.verify,
                proxies=requests_proxies(settings, url),  # the one proxy rule, not requests' own
            )
            hop = redirect(method, url, resp.status_code, resp.headers.get("Location"), settings)
            if hop is None:
                return resp
            resp.close()
            if hop.method != method:
                json_body = None
            if not hop.send_key:
                self.log.info("Following redirect to %s (without the API key)", hop.url.split("/")[2])
            url, method, send_key = hop.url, hop.method, hop.send_key
        raise too_many_redirects(url)

    def _with_retries(self, call: Call, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it succeeds, retrying ``RetryableFailure`` per the retry policy."""
        retries = Retries(
            call, self.retry_policy, self.settings.base_url, rng=self.rng, on_retry=self.on_retry
        )
        while True:
            try:
                return attempt()
            except RetryableFailure as failure:
                event = retries.wait_after(failure)
                event.log(self.log)
                self.sleep(event.wait)

    def _check_status(self, resp: Response, call: Call, url: str, deadline: Deadline | None = None) -> None:
        """Raise for a non-2xx response: retryable ones as ``RetryableFailure``, others as final errors."""
        status = resp.status_code
        if 200 <= status < 300:
            return
        try:
            body = read_body(resp, MAX_ERROR_BODY, strict=False, deadline=deadline)
        except requests.RequestException:
            body = b""
        finally:
            resp.close()
        final_url = resp.url or url
        probe = should_probe_route(status, final_url, self.settings)
        raise failure_for_status(
            status,
            call,
            self.settings,
            url=final_url,
            body=body,
            retry_after=resp.headers.get("Retry-After"),
            route_exists=route_exists(self._keyless_status(call.method, final_url)) if probe else None,
            proxy=proxy_in_use(self.settings, final_url),
        )

    def _keyless_status(self, method: str, url: str) -> int | None:
        """The status of ``method url`` sent without the API key and without a body; None if unreachable.

        Used only to explain a 404 (and by Test Connection): a request without a key cannot start an
        export, and its answer tells a guarded endpoint (401/403) from a missing one (404).
        """
        try:
            resp = self.get_conn().request(
                method,
                url,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                allow_redirects=False,
                stream=True,
                verify=self.settings.verify,
                proxies=requests_proxies(self.settings, url),
            )
        except requests.RequestException:
            return None
        resp.close()
        return resp.status_code

    def _attempt_small(self, call: Call, url: str, json_body: Any = None) -> tuple[int, Any, bytes]:
        """One attempt of a call with a small body: returns (status, headers, body).

        The attempt as a whole (redirects, headers, body) ends by ``connect + read`` seconds of the
        connection's timeout; the body is decoded within :data:`~airflow_provider_cex.answers.MAX_SMALL_BODY`.
        """
        settings = self.settings
        deadline = Deadline(settings.connect_timeout + settings.read_timeout, settings.read_timeout)
        try:
            with deadline.guarding():
                resp = self._send(call.method, url, json_body=json_body, deadline=deadline)
                self._check_status(resp, call, url, deadline)
                with resp:
                    body = read_body(resp, MAX_SMALL_BODY, deadline=deadline)
            return resp.status_code, resp.headers, body
        except UnreadableBody as err:
            raise unreadable_answer(call, err.reason) from None
        except requests.RequestException as err:
            # The watchdog cut the connection: whatever broke then, the time was up.
            failed: requests.RequestException = deadline.exceeded() if deadline.fired else err
            if isinstance(
                failed, requests.exceptions.SSLError
            ):  # final: says why (unknown CA, name mismatch)
                raise tls_failure(call, self.settings, failed) from None
            raise failure_of(failed, call, self.settings, url) from None

    def _open_download(
        self, url: str, call: Call, range_from: int = 0, validator: str | None = None
    ) -> Response:
        """GET the file (from byte ``range_from`` when > 0), retrying 429/5xx/network errors; 200 or 206."""

        def attempt() -> Response:
            headers = {"Accept-Encoding": "identity"}
            if range_from:
                headers["Range"] = f"bytes={range_from}-"
                if validator:
                    headers["If-Range"] = validator
            try:
                resp = self._send("GET", url, headers=headers)
                if resp.status_code == 206 and not range_from:
                    resp.close()
                    raise RetryableFailure("the server answered 206 to a request without Range")
                self._check_status(resp, call, url)
                return resp
            except requests.exceptions.SSLError as err:  # final: says why (unknown CA, name mismatch)
                raise tls_failure(call, self.settings, err) from None
            except requests.RequestException as err:
                raise failure_of(err, call, self.settings, url) from None

        return self._with_retries(call, attempt)

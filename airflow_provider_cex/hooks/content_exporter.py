"""ContentExporterHook: the Remote API over requests.

Each call's steps (send, redirect, status, retry or wait, decode) come from :mod:`airflow_provider_cex.calls`,
the core the async hook (:mod:`.content_exporter_async`) drives too; :mod:`.requests_io` performs them.
A download's body is copied, hashed and resumed by :mod:`.download` into a temp file of
:mod:`airflow_provider_cex.files`. The UI's part (the 2.11 form, Test Connection's probes) is
:mod:`.connection_ui`.
"""

from __future__ import annotations

import functools
import os
import random
import time
import warnings
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_cex import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
)
from airflow_provider_cex.answers import (
    DownloadedExport,
    ExportProgress,
    UnreadableBody,
    decode_progress,
    parse_export_hash,
)
from airflow_provider_cex.calls import Driver
from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS, START_EXPORT
from airflow_provider_cex.exceptions import (
    ContentExporterProtocolError,
    ContentExporterStartUncertainError,
)
from airflow_provider_cex.failures import START_UNCERTAIN_ADVICE, unreadable_answer
from airflow_provider_cex.files import TempFiles, final_path, is_folder, refuse_existing
from airflow_provider_cex.hooks.download import copy_with_resume
from airflow_provider_cex.hooks.requests_io import RequestsTransport, WatchedAdapter
from airflow_provider_cex.inputs import build_start_body, validate_export_hash
from airflow_provider_cex.policy import Call, RetryEvent, RetryPolicy, default_headers
from airflow_provider_cex.redaction import scrub
from airflow_provider_cex.settings import KEY_TRIMMED_WARNING, ConnectionSettings, settings_from_connection
from airflow_provider_cex.tls import VERIFY_OFF_WARNING, quiet_insecure_request_warnings, ssl_context

if TYPE_CHECKING:
    from requests import Response

    from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook

__all__ = ["ContentExporterAsyncHook", "ContentExporterHook", "DownloadedExport", "ExportProgress"]


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
        answer = self.transport.run(self.driver.small(call, url, payload))
        try:
            export_hash = parse_export_hash(
                answer.body, answer.head.headers.get("Content-Type"), self.settings.api_key
            )
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
        answer = self.transport.run(self.driver.small(call, url))
        try:
            return decode_progress(export_hash, answer.body, self.settings.api_key)
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
                retries = self.driver.retries(call)
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

    # ------------------------------------------------------------------ the transport

    @cached_property
    def driver(self) -> Driver:
        """The steps of each call (:mod:`airflow_provider_cex.calls`): the order, the retries, the errors."""
        return Driver(self.settings, self.retry_policy, log=self.log, rng=self.rng, on_retry=self.on_retry)

    @property
    def transport(self) -> RequestsTransport:
        """Performs the driver's steps over the hook's session (:meth:`get_conn`)."""
        return RequestsTransport(self.get_conn(), self.settings, self.sleep)

    def _open_download(
        self, url: str, call: Call, range_from: int = 0, validator: str | None = None
    ) -> Response:
        """GET the file (from byte ``range_from`` when > 0), retrying 429/5xx/network errors; 200 or 206."""
        _head, resp = self.transport.open(self.driver.download(call, url, range_from, validator))
        assert resp is not None
        return resp

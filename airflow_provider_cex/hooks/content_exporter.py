"""ContentExporterHook: authentication, HTTP, retries, parsing and streaming downloads for the Remote API.

The hook is the only place that talks HTTP synchronously; operators and sensors call its
four methods and never see a response object.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_cex import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    HIDDEN_FIELDS,
    PLACEHOLDERS,
    RELABELING,
    __version__,
)
from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS, START_EXPORT
from airflow_provider_cex.exceptions import (
    ContentExporterError,
    ContentExporterProtocolError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.protocol import (
    API_KEY_HEADER,
    START_UNCERTAIN_ADVICE,
    Call,
    ConnectionSettings,
    DownloadedExport,
    ExportProgress,
    RetryableFailure,
    RetryPolicy,
    build_start_body,
    default_filename,
    failure_for_status,
    filename_from_content_disposition,
    give_up_message,
    origin_of,
    parse_export_hash,
    parse_progress,
    sanitize_filename,
    settings_from_connection,
    snippet,
    validate_export_hash,
)

if TYPE_CHECKING:
    from requests import Response

__all__ = ["ContentExporterAsyncHook", "ContentExporterHook", "DownloadedExport", "ExportProgress"]

T = TypeVar("T")

#: Download read size: large enough that per-chunk Python overhead vanishes next to the copy, small
#: enough that a break loses little (a partly read chunk is read again on resume).
CHUNK_SIZE = 1024 * 1024
#: Each chunk is written in slices of this size: on the machines measured, write() calls of
#: 1 MiB or more often took a slow page-cache path (benchmarks/download_throughput.py: a 1 GiB
#: download went from ~2.5x curl's time to ~1x with 512 KiB writes).
WRITE_SLICE = 256 * 1024
#: Error and JSON bodies are read up to this size; a hostile server cannot make us buffer more.
MAX_SMALL_BODY = 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class ContentExporterHook(BaseHook):
    """
    Talk to the Content Exporter for Confluence Remote API.

    The connection's password is the API key (sent as ``CEX-API-KEY`` to the application
    origin only), its host the application URL (empty: chosen by the ``region`` extra, ``us``
    or ``eu``). Extras: ``timeout`` (seconds, or ``[connect, read]``), ``endpoints`` (path
    templates overriding the defaults), ``verify`` (CA bundle path; TLS is verified by default).

    :param content_exporter_conn_id: Airflow connection id of type ``content_exporter``.
    :param retry_policy: how 429, 5xx and network errors are retried (default: 4 retries,
        exponential backoff with jitter, ``Retry-After`` honoured up to 60 s).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.content_exporter_conn_id = content_exporter_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._session: requests.Session | None = None
        self._rng = random.Random()
        self._sleep: Callable[[float], None] = time.sleep
        self._temp_files: set[str] = set()

    # ------------------------------------------------------------------ connection form (Airflow 2.11 UI)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form in the Airflow 2 UI (Airflow 3 reads provider info)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        return {
            "region": StringField(
                lazy_gettext("Region"),
                widget=BS3TextFieldWidget(),
                description="us or eu; used when Application URL is empty",
            ),
            "confluence_url": StringField(
                lazy_gettext("Confluence URL"),
                widget=BS3TextFieldWidget(),
                description="optional, e.g. https://acme.atlassian.net/wiki, for 'Confluence page' links",
            ),
            "timeout": StringField(
                lazy_gettext("Timeout (seconds)"),
                widget=BS3TextFieldWidget(),
                description="read timeout of each HTTP call (default 60)",
            ),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel and hide standard connection fields in the Airflow 2 UI."""
        return {"hidden_fields": HIDDEN_FIELDS, "relabeling": RELABELING, "placeholders": PLACEHOLDERS}

    # ------------------------------------------------------------------ configuration

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, read once and validated; the API key is registered with the secret masker."""
        conn = self.get_connection(self.content_exporter_conn_id)
        if conn.password:
            from airflow.providers.common.compat.sdk import mask_secret

            mask_secret(conn.password)
        extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
        settings = settings_from_connection(
            self.content_exporter_conn_id, conn.host, conn.password, conn.port, extra
        )
        if settings.verify is False:
            self.log.warning(
                "TLS certificate verification is OFF for connection %r (extra verify=false): "
                "point 'verify' at a CA bundle instead.",
                self.content_exporter_conn_id,
            )
        return settings

    @property
    def base_url(self) -> str:
        """The application URL this hook talks to."""
        return self.settings.base_url

    def get_conn(self) -> requests.Session:
        """The hook's one HTTP session (created on first use, reused for every call)."""
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = (
                f"airflow-provider-cex/{__version__} python-requests/{requests.__version__}"
            )
            session.headers["Accept"] = "application/json, text/plain;q=0.9, */*;q=0.5"
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
        # A POST is repeated only when it surely was not processed (see _network_failure).
        _status, headers, raw = self._with_retries(
            call, lambda: self._attempt_small(call, url, json_body=payload)
        )
        try:
            export_hash = parse_export_hash(raw, headers.get("Content-Type"), self.settings.api_key)
        except ContentExporterProtocolError as err:  # a 2xx without a usable hash: the export may run
            raise ContentExporterStartUncertainError(
                f"{err} The service accepted the request, so the export may be running: "
                f"{START_UNCERTAIN_ADVICE}"
            ) from None
        self.log.info("Started Content Exporter export of page %s: hash %s", page, export_hash)
        return export_hash

    def get_export_progress(self, export_hash: str) -> ExportProgress:
        """Read the progress of an export (0-100) and whether it failed."""
        export_hash = validate_export_hash(export_hash)
        call = Call(EXPORT_PROGRESS, export_hash)
        url = self.settings.url(EXPORT_PROGRESS, export_hash)
        _status, _headers, raw = self._with_retries(call, lambda: self._attempt_small(call, url))
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise ContentExporterProtocolError(
                f"The progress response for export {export_hash} is not JSON: "
                f"{snippet(raw, self.settings.api_key)!r}."
            ) from None
        return parse_progress(export_hash, payload, self.settings.api_key)

    def download_export(
        self,
        export_hash: str,
        destination: str | os.PathLike[str],
        overwrite: bool = True,
        *,
        durable: bool = False,
    ) -> DownloadedExport:
        """Stream the exported file to ``destination``, atomically.

        ``destination`` is the file's full path, or a folder (ending in ``/`` or existing)
        in which case the server's file name is used, sanitised. Missing folders are
        created. The bytes go to a uniquely named temporary file beside the destination,
        are checked against ``Content-Length``/``Content-Range`` and hashed (sha256) in the
        same pass, and the file is moved into place only when complete. A body that stops
        short is resumed with an HTTP ``Range`` request when the server supports it, else
        restarted, a bounded number of times. A failed download leaves nothing behind.

        :param overwrite: replace an existing file (default); ``False`` fails instead.
        :param durable: ``fsync`` the file (and its folder) before and after the rename, so
            a machine crash right after the task cannot leave an empty file.
        """
        export_hash = validate_export_hash(export_hash)
        dest = os.fspath(destination)
        if not dest or not str(dest).strip():
            raise ValueError("destination is empty: pass a file path or a folder ending in '/'.")
        as_folder = dest.endswith(("/", os.sep)) or os.path.isdir(dest)
        if not as_folder:
            self._refuse_existing(dest, overwrite)
        call = Call(DOWNLOAD_EXPORT, export_hash)
        url = self.settings.url(DOWNLOAD_EXPORT, export_hash)
        resp = self._open_download(url, call)
        temp_path: str | None = None
        try:
            content_type = resp.headers.get("Content-Type")
            if as_folder:
                server_name = filename_from_content_disposition(resp.headers.get("Content-Disposition"))
                final_path = os.path.join(
                    dest, sanitize_filename(server_name, default_filename(export_hash, content_type))
                )
            else:
                final_path = dest
            self._refuse_existing(final_path, overwrite)
            folder = os.path.dirname(os.path.abspath(final_path))
            os.makedirs(folder, exist_ok=True)
            # Unique per call: two tasks writing one destination never share a temp file.
            fd, temp_path = tempfile.mkstemp(
                prefix=f".{os.path.basename(final_path)[:60]}.", suffix=".part", dir=folder
            )
            self._temp_files.add(temp_path)
            with os.fdopen(fd, "wb") as out:
                size, digest = self._stream_with_resume(resp, url, call, out)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            self._refuse_existing(final_path, overwrite)
            os.replace(temp_path, final_path)
            self._temp_files.discard(temp_path)
            temp_path = None
            if durable:
                _fsync_folder(folder)
        finally:
            resp.close()
            if temp_path is not None:
                _remove_quietly(temp_path)
                self._temp_files.discard(temp_path)
        result = DownloadedExport(
            path=os.path.abspath(final_path),
            size_bytes=size,
            sha256=digest,
            content_type=content_type,
            filename=os.path.basename(final_path),
        )
        self.log.info(
            "Downloaded export %s to %s (%d bytes, sha256 %s)", export_hash, result.path, size, digest
        )
        return result

    def abort_downloads(self) -> None:
        """Remove the temporary files of downloads in progress (for ``on_kill``); best effort."""
        for path in list(self._temp_files):
            _remove_quietly(path)
            self._temp_files.discard(path)

    def test_connection(self) -> tuple[bool, str]:
        """Check what can be checked without starting an export, and say no more than that.

        Three requests, no retries: the progress of a made-up hash with the key (401/403: the key
        was rejected), the same without the key, and a keyless POST to the start path (which cannot
        start an export). 401/403 without the key shows an endpoint lives at a path; 404 shows
        nothing does, so the path is probably wrong. See :mod:`airflow_provider_cex.connection_check`.
        """
        from airflow_provider_cex.connection_check import PROBE_HASH, PROBE_PAGE_ID, ProbeAnswers, verdict

        try:
            settings = self.settings
            progress_url = settings.url(EXPORT_PROGRESS, PROBE_HASH)
            resp = self._send("GET", progress_url)
            resp.close()
        except ContentExporterError as err:
            return False, str(err)
        except requests.exceptions.SSLError:
            return False, (
                f"TLS verification failed for {self.settings.base_url}: set the connection extra "
                "'verify' to the path of your CA bundle."
            )
        except requests.RequestException as err:
            return False, (
                f"Cannot reach {self.settings.base_url} ({type(err).__name__}): check the Application "
                "URL or region, and that this worker can reach it."
            )
        answers = ProbeAnswers(
            progress_with_key=resp.status_code,
            progress_without_key=self._keyless_status("GET", progress_url),
            start_without_key=self._keyless_status("POST", settings.url(START_EXPORT, PROBE_PAGE_ID)),
        )
        return verdict(settings, answers)

    # ------------------------------------------------------------------ HTTP plumbing

    def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request, following redirects by hand so the key goes to the application origin only."""
        settings = self.settings
        session = self.get_conn()
        for _hop in range(MAX_REDIRECTS + 1):
            request_headers = dict(headers or {})
            if origin_of(url) == settings.origin:
                request_headers[API_KEY_HEADER] = settings.api_key
            resp = session.request(
                method,
                url,
                json=json_body,
                headers=request_headers,
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=False,
                stream=True,
                verify=settings.verify,
            )
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECT_STATUSES or not location:
                return resp
            resp.close()
            next_url = urljoin(url, location)
            if urlsplit(next_url).scheme not in ("http", "https"):
                raise ContentExporterProtocolError(
                    f"Content Exporter redirected to a non-HTTP location ({snippet(location)!r})."
                )
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, json_body = "GET", None
            if origin_of(next_url) != settings.origin:
                self.log.info("Following redirect to %s (without the API key)", urlsplit(next_url).netloc)
            url = next_url
        raise ContentExporterProtocolError(
            f"Content Exporter redirected more than {MAX_REDIRECTS} times; stopped following "
            f"(last location: {snippet(url, limit=120)!r})."
        )

    def _with_retries(self, call: Call, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it succeeds, retrying ``RetryableFailure`` per the retry policy."""
        retry = 0
        while True:
            try:
                return attempt()
            except RetryableFailure as failure:
                retry += 1
                wait = self.retry_policy.wait(retry, failure.retry_after, self._rng)
                if wait is None:
                    raise ContentExporterTransientError(
                        give_up_message(call, failure, retry, self.retry_policy, self.settings.base_url)
                    ) from None
                self.log.warning(
                    "Could not %s: %s. Retry %d of %d in %.1f s.",
                    call,
                    failure.reason,
                    retry,
                    self.retry_policy.max_retries,
                    wait,
                )
                self._sleep(wait)

    def _check_status(self, resp: Response, call: Call, url: str) -> None:
        """Raise for a non-2xx response: retryable ones as ``RetryableFailure``, others as final errors."""
        status = resp.status_code
        if 200 <= status < 300:
            return
        try:
            body = self._read_capped(resp, 64 * 1024)
        except requests.RequestException:
            body = b""
        finally:
            resp.close()
        final_url = resp.url or url
        raise failure_for_status(
            status,
            call,
            self.settings,
            url=final_url,
            body=body,
            retry_after=resp.headers.get("Retry-After"),
            route_exists=self._route_exists(call.method, final_url) if status == 404 else None,
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
            )
        except requests.RequestException:
            return None
        resp.close()
        return resp.status_code

    def _route_exists(self, method: str, url: str) -> bool | None:
        """After a 404 with the key: True if an endpoint guards ``url`` (401/403 without the key), False if
        nothing answers there (404 again), None if unknown (another answer, or another origin)."""
        if origin_of(url) != self.settings.origin:
            return None
        status = self._keyless_status(method, url)
        return {401: True, 403: True, 404: False}.get(status) if status is not None else None

    def _network_failure(self, err: requests.RequestException, call: Call) -> Exception:
        """Map a requests exception to a retryable failure or a final error."""
        reason = _describe_network_error(err)
        if isinstance(err, requests.exceptions.SSLError):
            return ContentExporterError(
                f"Could not {call}: TLS verification failed for {self.settings.base_url}. If the service "
                "uses a private CA, set the connection extra 'verify' to the CA bundle's path."
            )
        if call.idempotent or _surely_not_sent(err):
            return RetryableFailure(reason)
        return ContentExporterStartUncertainError(
            f"Could not {call}: {reason}. The request may have reached the server and started the "
            f"export, so it was not repeated: {START_UNCERTAIN_ADVICE}"
        )

    def _attempt_small(self, call: Call, url: str, *, json_body: Any = None) -> tuple[int, Any, bytes]:
        """One attempt of a call with a small body: returns (status, headers, body)."""
        try:
            resp = self._send(call.method, url, json_body=json_body)
            self._check_status(resp, call, url)
            with resp:
                body = self._read_capped(resp, MAX_SMALL_BODY)
            return resp.status_code, resp.headers, body
        except requests.RequestException as err:
            raise self._network_failure(err, call) from None

    @staticmethod
    def _read_capped(resp: Response, limit: int) -> bytes:
        """Read at most ``limit`` bytes of a streamed body."""
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(chunk_size=64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(chunks)[:limit]

    @staticmethod
    def _refuse_existing(path: str, overwrite: bool) -> None:
        if not overwrite and os.path.exists(path):
            raise FileExistsError(
                f"{path} already exists and overwrite=False: delete it, choose another output path "
                "(e.g. with {{ ds }} in it), or set overwrite=True."
            )

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
            except requests.RequestException as err:
                raise self._network_failure(err, call) from None

        return self._with_retries(call, attempt)

    def _stream_with_resume(self, resp: Response, url: str, call: Call, out: BinaryIO) -> tuple[int, str]:
        """Copy the body to ``out``, hashing in the same pass; resume or restart when it stops short."""
        digest = _BackgroundSha256()
        try:
            return self._copy_body(resp, url, call, out, digest)
        finally:
            digest.close()

    def _copy_body(
        self, resp: Response, url: str, call: Call, out: BinaryIO, digest: _BackgroundSha256
    ) -> tuple[int, str]:
        export_hash = call.subject
        written = 0
        total = _content_length(resp.headers.get("Content-Length"))
        can_resume = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        progress = _ProgressLog(self.log, export_hash, total)
        breaks = 0
        while True:
            try:
                try:
                    for chunk in _chunks(resp):
                        digest.update(chunk)  # hashed on a worker thread while we write
                        view = memoryview(chunk)
                        for start in range(0, len(view), WRITE_SLICE):
                            out.write(view[start : start + WRITE_SLICE])
                        written += len(chunk)
                        progress.update(written)
                finally:
                    resp.close()
                if total is None or written == total:
                    return written, digest.hexdigest()
                reason = f"the body ended after {written} of {total} bytes"
            except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
                reason = f"{_describe_read_error(err)} after {written} bytes"
            breaks += 1
            wait = self.retry_policy.wait(breaks, None, self._rng)
            if wait is None:
                raise ContentExporterTransientError(
                    f"Could not {call}: the download broke {breaks} times (last: {reason}); nothing was "
                    "saved. The task can be retried."
                )
            resume = can_resume and total is not None and 0 < written < total
            self.log.warning(
                "Download of export %s broke (%s); %s in %.1f s.",
                export_hash,
                reason,
                f"resuming from byte {written}" if resume else "restarting",
                wait,
            )
            self._sleep(wait)
            resp = self._open_download(url, call, range_from=written if resume else 0, validator=validator)
            if resp.status_code == 206:
                if _content_range_matches(resp.headers.get("Content-Range"), written, total):
                    continue  # append the rest: bytes already written were hashed already
                self.log.warning(
                    "The server answered the Range request with a wrong Content-Range; restarting."
                )
                resp.close()
                resp = self._open_download(url, call)
            # A plain 200 (the server ignored Range, or no resume was possible): start over.
            out.seek(0)
            out.truncate()
            digest.reset()
            written = 0
            total = _content_length(resp.headers.get("Content-Length"))
            can_resume = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
            validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            progress = _ProgressLog(self.log, export_hash, total)


class _BackgroundSha256:
    """sha256 on a worker thread (hashlib releases the GIL), so hashing overlaps reads and writes.

    At most two chunks wait to be hashed, which bounds memory; updates run in order on one thread.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cex-sha256")
        self._digest = hashlib.sha256()
        self._pending: deque[Any] = deque()

    def update(self, chunk: bytes) -> None:
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._digest.update, chunk))

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def reset(self) -> None:
        self._drain()
        self._digest = hashlib.sha256()

    def hexdigest(self) -> str:
        self._drain()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True)


class _ProgressLog:
    """Logs a long download's progress at most every ``interval`` seconds, not once per chunk."""

    def __init__(self, log: Any, export_hash: str, total: int | None, interval: float = 10.0) -> None:
        self.log, self.export_hash, self.total, self.interval = log, export_hash, total, interval
        self.started = self.last = time.monotonic()

    def update(self, written: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = written / 1e6 / max(now - self.started, 1e-6)
        if self.total:
            self.log.info(
                "Downloading export %s: %.1f of %.1f MB (%.0f%%) at %.1f MB/s",
                self.export_hash,
                written / 1e6,
                self.total / 1e6,
                100.0 * written / self.total,
                rate,
            )
        else:
            self.log.info(
                "Downloading export %s: %.1f MB at %.1f MB/s", self.export_hash, written / 1e6, rate
            )


def _chunks(resp: Response) -> Iterator[bytes]:
    """The body as sent (no decoding: the file is saved as-is), in chunks of ``CHUNK_SIZE``."""
    raw = resp.raw
    while True:
        chunk = raw.read(CHUNK_SIZE, decode_content=False)
        if not chunk:
            return
        yield chunk


def _content_range_matches(header: str | None, start: int, total: int | None) -> bool:
    """True when ``Content-Range: bytes start-(total-1)/total`` continues exactly where we stopped."""
    if not header or total is None:
        return False
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+)\s*", header)
    if not match:
        return False
    return (int(match[1]), int(match[2]), int(match[3])) == (start, total - 1, total)


def _fsync_folder(folder: str) -> None:
    """Persist a rename: fsync the folder entry (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe_read_error(err: Exception) -> str:
    if isinstance(err, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return "the server stopped sending (read timeout)"
    return "the connection broke"


def _content_length(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return int(value.strip())
    return None


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _surely_not_sent(err: requests.RequestException) -> bool:
    """True when the connection was never established, so the server cannot have seen the request."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(err, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _describe_network_error(err: requests.RequestException) -> str:
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.exceptions.ReadTimeout):
        return "the server did not answer in time (read timeout)"
    if _surely_not_sent(err):
        return "connection refused or host unreachable"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke while reading the response"
    if isinstance(err, requests.exceptions.ConnectionError):
        return "the connection was reset"
    return type(err).__name__


class ContentExporterAsyncHook(BaseHook):
    """
    Non-blocking twin of :class:`ContentExporterHook` for triggers: progress polling over aiohttp.

    One ``aiohttp.ClientSession`` lives as long as the ``async with`` block (a trigger's whole
    life), so a poll reuses a kept-alive connection instead of paying for a new session. The
    contract (URLs, parsing, failure detection, retry policy, key handling) is the same
    :mod:`airflow_provider_cex.protocol` the sync hook uses; only the transport differs.

    :param content_exporter_conn_id: Airflow connection id of type ``content_exporter``.
    :param retry_policy: as for :class:`ContentExporterHook`.
    """

    def __init__(
        self,
        content_exporter_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.content_exporter_conn_id = content_exporter_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.settings: ConnectionSettings | None = None
        self._session: Any = None  # aiohttp.ClientSession, imported lazily (aiohttp costs ~100 ms)
        self._ssl: Any = True
        self._key_header: dict[str, str] = {}
        self._progress_urls: dict[str, str] = {}  # a trigger polls one hash: build its URL once

    async def __aenter__(self) -> ContentExporterAsyncHook:
        import aiohttp

        self.settings = await _SETTINGS_CACHE.get(self.content_exporter_conn_id)
        self._key_header = {API_KEY_HEADER: self.settings.api_key}
        if isinstance(self.settings.verify, str):
            import ssl

            self._ssl = ssl.create_default_context(cafile=self.settings.verify)
        else:
            self._ssl = self.settings.verify
        self._session = aiohttp.ClientSession(
            headers={
                "User-Agent": f"airflow-provider-cex/{__version__} aiohttp/{aiohttp.__version__}",
                "Accept": "application/json, text/plain;q=0.9, */*;q=0.5",
            },
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
        """Read the progress of an export, retrying transient failures with ``asyncio.sleep``."""
        import asyncio

        if self.settings is None or self._session is None:
            raise RuntimeError("use ContentExporterAsyncHook in 'async with'")
        url = self._progress_urls.get(export_hash)
        if url is None:
            export_hash = validate_export_hash(export_hash)
            url = self._progress_urls[export_hash] = self.settings.url(EXPORT_PROGRESS, export_hash)
        call = Call(EXPORT_PROGRESS, export_hash)
        retry = 0
        while True:
            try:
                raw = await self._get_small(url, call)
                break
            except RetryableFailure as failure:
                retry += 1
                wait = self.retry_policy.wait(retry, failure.retry_after)
                if wait is None:
                    raise ContentExporterTransientError(
                        give_up_message(call, failure, retry, self.retry_policy, self.settings.base_url)
                    ) from None
                self.log.warning("Could not %s: %s. Retry %d in %.1f s.", call, failure.reason, retry, wait)
                await asyncio.sleep(wait)
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise ContentExporterProtocolError(
                f"The progress response for export {export_hash} is not JSON: "
                f"{snippet(raw, self.settings.api_key)!r}."
            ) from None
        return parse_progress(export_hash, payload, self.settings.api_key)

    async def _get_small(self, url: str, call: Call) -> bytes:
        """One GET attempt, redirects followed by hand (the key goes to the application origin only)."""
        import asyncio

        import aiohttp

        assert self.settings is not None
        settings = self.settings
        try:
            for hop in range(MAX_REDIRECTS + 1):
                # The first hop is built from the application URL; only redirects need the origin check.
                on_origin = hop == 0 or origin_of(url) == settings.origin
                headers = self._key_header if on_origin else {}
                async with self._session.get(
                    url, headers=headers, allow_redirects=False, ssl=self._ssl
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status in _REDIRECT_STATUSES and location:
                        url = urljoin(url, location)
                        if urlsplit(url).scheme not in ("http", "https"):
                            raise ContentExporterProtocolError(
                                f"Content Exporter redirected to a non-HTTP location ({snippet(location)!r})."
                            )
                        continue
                    if resp.content_length is not None and resp.content_length <= MAX_SMALL_BODY:
                        body = bytearray(await resp.read())
                    else:  # unknown or huge: read no more than the cap
                        body = bytearray()
                        async for chunk in resp.content.iter_chunked(64 * 1024):
                            body += chunk
                            if len(body) >= MAX_SMALL_BODY:
                                break
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                if 200 <= status < 300:
                    return bytes(body)
                route_exists = None
                if status == 404 and origin_of(url) == settings.origin:
                    route_exists = await self._route_exists(url)
                raise failure_for_status(
                    status,
                    call,
                    settings,
                    url=url,
                    body=bytes(body),
                    retry_after=retry_after,
                    route_exists=route_exists,
                )
        except aiohttp.ClientSSLError:
            raise ContentExporterError(
                f"Could not {call}: TLS verification failed for {settings.base_url}. If the service "
                "uses a private CA, set the connection extra 'verify' to the CA bundle's path."
            ) from None
        except aiohttp.ClientConnectorError:
            raise RetryableFailure("connection refused or host unreachable") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise RetryableFailure(_describe_async_error(err)) from None
        raise ContentExporterProtocolError(
            f"Content Exporter redirected more than {MAX_REDIRECTS} times; stopped following."
        )

    async def _route_exists(self, url: str) -> bool | None:
        """After a 404 with the key, GET ``url`` without it: 401/403 means an endpoint guards the path
        (the export is what is unknown), 404 again means nothing answers there (a wrong path)."""
        try:
            async with self._session.get(url, allow_redirects=False, ssl=self._ssl) as resp:
                return {401: True, 403: True, 404: False}.get(resp.status)
        except Exception:  # only an explanation is at stake: never let it hide the 404 itself
            return None


async def _lookup_settings(conn_id: str) -> ConnectionSettings:
    """Read the connection without blocking the event loop and turn it into settings."""
    from airflow.providers.common.compat.connection import get_async_connection

    conn = await get_async_connection(conn_id)
    # Airflow >= 3.3.2 masks extras asynchronously; the sync property would block the loop there.
    extra = await conn.aextra_dejson() if hasattr(conn, "aextra_dejson") else conn.extra_dejson
    return settings_from_connection(conn_id, conn.host, conn.password, conn.port, extra or {})


class _SettingsCache:
    """Connection settings shared by the triggers of one process for ``ttl`` seconds, looked up once.

    A triggerer running 1,000 deferred exports would otherwise read the same connection 1,000 times
    in a burst: 1,000 secrets-backend calls (Vault, AWS Secrets Manager: latency, rate limits, cost)
    and ~0.6 ms of CPU each (benchmarks/trigger_scale.py). Concurrent lookups of one connection on
    one event loop share a single call. A changed connection (e.g. a rotated key) reaches triggers
    started ``ttl`` seconds later; a running trigger keeps the settings it started with, as before.
    A failed lookup is not cached.
    """

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ConnectionSettings]] = {}
        self._inflight: dict[tuple[int, str], Any] = {}  # (id(loop), conn_id) -> asyncio.Task

    async def get(self, conn_id: str) -> ConnectionSettings:
        import asyncio

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
        settings = await _lookup_settings(conn_id)
        self._entries[conn_id] = (time.monotonic() + self.ttl, settings)
        return settings

    def clear(self) -> None:
        self._entries.clear()


def _current_task_cancelling() -> bool:
    import asyncio

    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


_SETTINGS_CACHE = _SettingsCache()


def _describe_async_error(err: BaseException) -> str:
    import asyncio

    if isinstance(err, asyncio.TimeoutError):
        return "the server did not answer in time (read timeout)"
    return f"the connection broke ({type(err).__name__})"

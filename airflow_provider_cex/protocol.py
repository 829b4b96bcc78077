"""The Content Exporter Remote API contract as pure functions: validation, URLs, parsing, retries.

Shared by the synchronous hook (requests) and the asynchronous trigger (aiohttp) so both
transports read the service the same way. Nothing here performs I/O or imports Airflow
task machinery.
"""

from __future__ import annotations

import json
import math
import mimetypes
import random
import re
import time
import unicodedata
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_cex import DEFAULT_CONN_ID, EU_APPLICATION_URL, US_APPLICATION_URL
from airflow_provider_cex.endpoints import (
    DEFAULT_PATHS,
    DOCUMENTED,
    EXPORT_PROGRESS,
    METHOD,
    PLACEHOLDER,
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

API_KEY_HEADER = "CEX-API-KEY"
REGION_URLS = {"us": US_APPLICATION_URL, "eu": EU_APPLICATION_URL}

#: Endpoint name -> (default path template, the one placeholder it takes); see :mod:`.endpoints`.
ENDPOINTS: dict[str, tuple[str, str]] = {
    name: (DEFAULT_PATHS[name], PLACEHOLDER[name]) for name in DEFAULT_PATHS
}

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
MAX_SNIPPET = 200
MAX_HASH_LENGTH = 256

_FAILED_STATES = {"FAILED", "FAILURE", "ERROR", "CANCELLED", "CANCELED", "ABORTED"}
_DONE_STATES = {"DONE", "COMPLETED", "COMPLETE", "FINISHED", "SUCCESS", "SUCCEEDED"}
_HASH_KEYS = ("hash", "exportHash", "export_hash", "id")
_ERROR_FIELDS = ("error", "errorMessage", "error_message")
_MESSAGE_FIELDS = ("errorMessage", "error_message", "error", "message")
_HASH_RE = re.compile(r"^[A-Za-z0-9._~:@!$&'()*+,;=-]+$")


# --------------------------------------------------------------------------- input validation


def validate_page_id(page_id: Any) -> str:
    """Return the page id as a string of digits, or raise ``ValueError`` saying what is wrong."""
    if isinstance(page_id, bool) or page_id is None:
        raise ValueError(f"page_id must be a Confluence page id made of digits, got {page_id!r}.")
    text = str(page_id).strip()
    if not text:
        raise ValueError("page_id is empty: pass the numeric id of the Confluence page to export.")
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ValueError(
            f"page_id must contain digits only (the number in the page's URL, e.g. "
            f".../pages/123456/...), got {_clip(text, 40)!r}."
        )
    return text


def validate_export_hash(export_hash: Any) -> str:
    """Return a non-empty export hash, or raise ``ValueError``."""
    if not isinstance(export_hash, str) or not export_hash.strip():
        raise ValueError(
            f"export_hash must be the non-empty hash returned when the export was started, got "
            f"{_clip(repr(export_hash), 60)}."
        )
    text = export_hash.strip()
    if len(text) > MAX_HASH_LENGTH or not _HASH_RE.match(text) or set(text) == {"."}:
        raise ValueError(
            f"export_hash {_clip(text, 60)!r} is not a valid export hash (expected up to "
            f"{MAX_HASH_LENGTH} URL-safe characters, no '/', '?', '#', '%' or spaces)."
        )
    return text


def validate_export_body(body: Any) -> dict[str, Any]:
    """Return a copy of the export configuration, which must be a JSON object (a dict)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError(
            f"export_body must be a JSON object (a dict, e.g. the Export Profile JSON), got "
            f"{type(body).__name__}."
        )
    return dict(body)


def build_start_body(page_id: Any, body: Any = None) -> tuple[str, dict[str, Any]]:
    """Validate inputs of a start call and return ``(page_id, body with rootContentId set)``."""
    page = validate_page_id(page_id)
    payload = validate_export_body(body)
    declared = payload.get("rootContentId")
    if declared not in (None, "") and str(declared).strip() != page:
        raise ValueError(
            f"export_body has rootContentId={_clip(str(declared), 40)!r} but page_id is {page!r}: "
            "remove rootContentId from the body (the provider sets it) or make them equal."
        )
    payload["rootContentId"] = page
    return page, payload


# --------------------------------------------------------------------------- connection settings


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything a transport needs, read once from the Airflow connection."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    endpoints: dict[str, str] = field(default_factory=dict)
    verify: bool | str = True
    confluence_url: str | None = None

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"ConnectionSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r})"

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin_of(self.base_url)

    def url(self, endpoint: str, value: str) -> str:
        """Absolute URL of an endpoint for a page id or export hash."""
        return self.base_url + render_endpoint(self.endpoints.get(endpoint) or ENDPOINTS[endpoint][0], value)


def resolve_base_url(host: str | None, port: int | None = None, region: str | None = None) -> str:
    """The application URL: the connection host when given, else the vendor URL of ``region``."""
    host = (host or "").strip()
    if not host:
        key = (region or "us").strip().lower()
        if key not in REGION_URLS:
            raise ValueError(
                f"Connection extra 'region' must be 'us' or 'eu', got {_clip(str(region), 20)!r}; "
                "or set the Application URL (host) explicitly."
            )
        return REGION_URLS[key]
    if "://" not in host:
        host = f"https://{host}"
        if port:
            host = f"{host}:{int(port)}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"Application URL {_clip(host, 80)!r} is not an http(s) URL; use e.g. {US_APPLICATION_URL}."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            "Application URL must not contain credentials, a query or a fragment: put the API key "
            "in the connection's password field."
        )
    return host.rstrip("/")


def parse_timeout(value: Any) -> tuple[float, float]:
    """Read the ``timeout`` extra: seconds (read timeout) or ``[connect, read]``."""
    if value in (None, ""):
        return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    try:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            connect, read = float(value[0]), float(value[1])
        else:
            read = float(value)
            connect = min(DEFAULT_CONNECT_TIMEOUT, read)
    except (TypeError, ValueError):
        raise ValueError(
            f"Connection extra 'timeout' must be a number of seconds, got {_clip(repr(value), 40)}."
        ) from None
    if not (math.isfinite(connect) and math.isfinite(read)) or connect <= 0 or read <= 0:
        raise ValueError(f"Connection extra 'timeout' must be positive, got {_clip(repr(value), 40)}.")
    return connect, read


def parse_endpoints(value: Any) -> dict[str, str]:
    """Read the ``endpoints`` extra: path templates overriding the assumed defaults."""
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            "Connection extra 'endpoints' must be an object such as "
            '{"start_export": "/api/remoteExport/{page_id}/init"}.'
        )
    result: dict[str, str] = {}
    for name, template in value.items():
        if name not in ENDPOINTS:
            raise ValueError(
                f"Connection extra 'endpoints' has unknown key {_clip(str(name), 40)!r}; "
                f"allowed: {', '.join(ENDPOINTS)}."
            )
        placeholder = ENDPOINTS[name][1]
        if not isinstance(template, str) or not template.startswith("/"):
            raise ValueError(f"Endpoint template {name!r} must be a path starting with '/'.")
        found = re.findall(r"{([^{}]*)}", template)
        if found != [placeholder] or "?" in template or "#" in template:
            raise ValueError(
                f"Endpoint template {name!r} must contain {{{placeholder}}} exactly once, no other "
                f"placeholder, query or fragment; got {_clip(template, 80)!r}."
            )
        result[name] = template
    return result


def parse_verify(value: Any) -> bool | str:
    """Read the ``verify`` extra: true (default), false, or the path of a CA bundle."""
    if value in (None, ""):
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    return text


def parse_confluence_url(value: Any) -> str | None:
    """Read the ``confluence_url`` extra (e.g. ``https://acme.atlassian.net/wiki``), used for UI links."""
    if value in (None, ""):
        return None
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.username:
        raise ValueError(
            f"Connection extra 'confluence_url' must be your Confluence base URL such as "
            f"https://acme.atlassian.net/wiki, got {_clip(text, 80)!r}."
        )
    return text


def confluence_page_url(confluence_url: str, page_id: str) -> str:
    """Link to a Confluence page by id (works on Cloud and Data Center)."""
    return f"{confluence_url}/pages/viewpage.action?pageId={quote(validate_page_id(page_id), safe='')}"


def settings_from_connection(
    conn_id: str, host: str | None, password: str | None, port: int | None, extra: dict[str, Any]
) -> ConnectionSettings:
    """Build :class:`ConnectionSettings` from the fields of an Airflow connection."""
    if not password:
        raise ContentExporterAuthError(
            f"Connection {conn_id!r} has no API key: put the key generated on the Content Exporter "
            "admin page (Remote API) in the connection's password field."
        )
    try:
        connect, read = parse_timeout(extra.get("timeout"))
        return ConnectionSettings(
            conn_id=conn_id,
            base_url=resolve_base_url(host, port, extra.get("region")),
            api_key=password,
            connect_timeout=connect,
            read_timeout=read,
            endpoints=parse_endpoints(extra.get("endpoints")),
            verify=parse_verify(extra.get("verify")),
            confluence_url=parse_confluence_url(extra.get("confluence_url")),
        )
    except ValueError as err:
        raise ContentExporterError(f"Connection {conn_id!r} is misconfigured: {err}") from None


def render_endpoint(template: str, value: str) -> str:
    """Fill the template's single placeholder with ``value``, percent-encoded as one path segment.

    A value made only of dots is encoded too (``%2E``): clients normalise ``.``/``..`` segments,
    which would otherwise let a value climb out of its place in the path.
    """
    segment = quote(value, safe="")
    if segment and set(segment) == {"."}:
        segment = "%2E" * len(segment)
    return re.sub(r"{[^{}]*}", lambda _m: segment, template, count=1)


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


# --------------------------------------------------------------------------- parsing responses


def snippet(body: bytes | str | None, secret: str | None = None, limit: int = MAX_SNIPPET) -> str:
    """At most ``limit`` printable characters of a response body, with the API key blanked out."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_export_hash(body: bytes, content_type: str | None, secret: str | None = None) -> str:
    """Read the hash from a start response: a JSON object, a JSON string, or plain text."""
    text = body.decode("utf-8", "replace").strip()
    candidate: Any = None
    try:
        decoded = json.loads(text) if text else None
    except ValueError:
        decoded = None
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime in ("", "text/plain"):
            candidate = text  # text/plain: the body is the hash
    else:
        if isinstance(decoded, dict):
            candidate = next((decoded[k] for k in _HASH_KEYS if decoded.get(k) not in (None, "")), None)
        elif isinstance(decoded, str):
            candidate = decoded
        elif isinstance(decoded, int) and not isinstance(decoded, bool):
            candidate = str(decoded)
    if isinstance(candidate, int) and not isinstance(candidate, bool):
        candidate = str(candidate)
    if isinstance(candidate, str):
        try:
            return validate_export_hash(candidate)
        except ValueError:
            pass
    raise ContentExporterProtocolError(
        "The start-export response holds no export hash (expected a JSON object with 'hash', "
        "'exportHash', 'export_hash' or 'id', a JSON string, or a plain-text hash); got: "
        f"{snippet(body, secret)!r}. If the vendor changed the API, check the 'endpoints' extra."
    )


@dataclass(frozen=True)
class ExportProgress:
    """One reading of an export's progress."""

    export_hash: str
    progress: float
    is_complete: bool
    is_failed: bool
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DownloadedExport:
    """A file that was downloaded completely and moved into place."""

    path: str
    size_bytes: int
    sha256: str
    content_type: str | None
    filename: str


def _as_progress(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().rstrip("%"))
        except ValueError:
            return None
    else:
        return None
    if math.isnan(number):
        return None
    return min(100.0, max(0.0, number))


def _first_text(payload: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, dict):  # e.g. {"error": {"message": "..."}}
            inner = value.get("message")
            if isinstance(inner, str) and inner.strip():
                return inner.strip()
    return None


def parse_progress(export_hash: str, payload: Any, secret: str | None = None) -> ExportProgress:
    """Interpret a progress response; failure is detected from status/state and error fields."""
    if not isinstance(payload, dict):
        raise ContentExporterProtocolError(
            f"The progress response for export {export_hash} is not a JSON object: "
            f"{snippet(repr(payload), secret)!r}."
        )
    state = payload.get("status", payload.get("state"))
    state_text = state.strip().upper() if isinstance(state, str) else ""
    failed = state_text in _FAILED_STATES or any(
        (isinstance(payload.get(k), str) and payload[k].strip()) or isinstance(payload.get(k), dict)
        for k in _ERROR_FIELDS
    )
    progress = _as_progress(payload.get("progressValue"))
    if progress is None:
        if failed:
            progress = 0.0
        elif state_text in _DONE_STATES:
            progress = 100.0
        else:
            raise ContentExporterProtocolError(
                f"The progress response for export {export_hash} has no numeric 'progressValue': "
                f"{snippet(_json_preview(payload), secret)!r}."
            )
    message = _first_text(payload, _MESSAGE_FIELDS)
    if message:  # printable, bounded, without the key; may come out empty (e.g. only control characters)
        message = snippet(message, secret, limit=1000)
    if failed and not message:
        message = f"the export ended in state {state_text or 'FAILED'} without a message"
    return ExportProgress(
        export_hash=export_hash,
        progress=progress,
        is_complete=progress >= 100.0 and not failed,
        is_failed=failed,
        message=message,
        raw=payload,
    )


def _json_preview(payload: Any) -> str:
    try:
        return json.dumps(payload)[:400]
    except (TypeError, ValueError):
        return repr(payload)[:400]


# --------------------------------------------------------------------------- errors and retries


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
    """One attempt failed in a way another attempt may fix (raised inside a transport's retry loop)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


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
) -> Exception:
    """The exception for a non-2xx answer: ``RetryableFailure`` when another attempt is safe and useful.

    A 401/403 from another origin (after a redirect, where the key is deliberately not sent) is reported
    as a redirect problem, not a bad key. ``route_exists`` is what a transport learned about a 404 (see
    :func:`not_found_error`).
    """
    if status in (401, 403) and origin_of(url) != settings.origin:
        return ContentExporterProtocolError(
            f"Content Exporter redirected the request to {urlsplit(url).netloc!r}, which answered HTTP "
            f"{status} while trying to {call}. The API key is sent only to the application URL "
            f"({settings.base_url}), never to another host; if the service really moved, update the host of "
            f"connection {settings.conn_id!r}."
        )
    if is_retryable_status(status, call.idempotent):
        return RetryableFailure(f"HTTP {status}", parse_retry_after(retry_after, time.time()))
    secret = settings.api_key
    if status >= 500 and call.idempotent:  # e.g. 501 or 505: not worth repeating at once
        return ContentExporterTransientError(
            f"Content Exporter answered HTTP {status} while trying to {call}; the task can be retried. "
            f"Server said: {snippet(body, secret)!r}."
        )
    if status >= 500:
        return ContentExporterStartUncertainError(
            f"Content Exporter answered HTTP {status} while trying to {call}. The request may have "
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
    return (
        f"Could not {call} after {attempts} attempts: {failure.reason}. The service may be overloaded "
        f"or unreachable at {base_url}; the task can be retried later."
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


# --------------------------------------------------------------------------- file names

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_BAD_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
MAX_FILENAME_BYTES = 200


def filename_from_content_disposition(header: str | None) -> str | None:
    """The file name a ``Content-Disposition`` header proposes (``filename*`` preferred), unsanitised."""
    if not header:
        return None
    msg = Message()
    msg["content-disposition"] = header
    try:
        name = msg.get_filename()
    except (TypeError, ValueError, LookupError):
        return None
    return name if isinstance(name, str) and name else None


def sanitize_filename(name: str | None, fallback: str) -> str:
    """A safe single file name from a server-proposed one: no path, no control or reserved names.

    The result never contains a path separator, is never ``.``/``..`` or hidden, fits in
    ``MAX_FILENAME_BYTES`` bytes of UTF-8 (keeping the extension), and is ``fallback`` when
    nothing usable remains.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]  # drop any directory part, either flavour
    text = _BAD_CHARS.sub("_", text)
    text = "".join(ch for ch in text if ch.isprintable())
    previous = None
    while previous != text:  # ". .pdf" must not end up as the hidden ".pdf"
        previous, text = text, text.strip().strip(".")
    if not text or set(text) <= {"_", " ", "."}:
        text = fallback
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED or text.upper() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) > MAX_FILENAME_BYTES:
        ext_part = ("." + ext) if dot and 0 < len(ext.encode()) <= 16 else ""
        budget = MAX_FILENAME_BYTES - len(ext_part.encode("utf-8"))
        head = text[: len(text) - len(ext_part)] if ext_part else text
        head = head.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
        text = (head or "export") + ext_part
    return text


def default_filename(export_hash: str, content_type: str | None) -> str:
    """File name used when the server proposes none: ``export-<hash>.<ext from Content-Type>``."""
    mime = (content_type or "").split(";")[0].strip().lower()
    ext = mimetypes.guess_extension(mime) if mime else None
    safe_hash = re.sub(r"[^A-Za-z0-9_-]", "_", export_hash)[:64]
    return f"export-{safe_hash}{ext or '.bin'}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

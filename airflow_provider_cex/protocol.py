"""The Content Exporter Remote API contract as pure functions: validation, URLs, parsing, retries.

Shared by the synchronous hook (requests) and the asynchronous trigger (aiohttp) so both
transports read the service the same way. Nothing here performs I/O or imports Airflow
task machinery.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from airflow_provider_cex import (
    CONFLUENCE_URL_PATTERN,
    EU_APPLICATION_URL,
    REGIONS,
    TIMEOUT_TEXT_MAX_LENGTH,
    TIMEOUT_TEXT_PATTERN,
    US_APPLICATION_URL,
)
from airflow_provider_cex.endpoints import (
    DEFAULT_PATHS,
    ENDPOINT_NAMES,
    PLACEHOLDER,
    is_page_id,
)
from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterProtocolError,
)

REGION_URLS = {"us": US_APPLICATION_URL, "eu": EU_APPLICATION_URL}

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_LOW_SPEED_BYTES = 1024.0
DEFAULT_LOW_SPEED_SECONDS = 60.0
MAX_SNIPPET = 200
MAX_HASH_LENGTH = 256

_FAILED_STATES = {"FAILED", "FAILURE", "ERROR", "CANCELLED", "CANCELED", "ABORTED"}
_DONE_STATES = {"DONE", "COMPLETED", "COMPLETE", "FINISHED", "SUCCESS", "SUCCEEDED"}
_HASH_KEYS = ("hash", "exportHash", "export_hash", "id")
_ERROR_FIELDS = ("error", "errorMessage", "error_message")
_MESSAGE_FIELDS = ("errorMessage", "error_message", "error", "message")
#: What an HTTP header value can carry the same way in both transports: visible ASCII, inner spaces or tabs.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")
_HASH_RE = re.compile(r"^[A-Za-z0-9._~:@!$&'()*+,;=-]+$")
KEY_TRIMMED_WARNING = (
    "The API key of connection %r had spaces or a line break around it (pasted with the line, or read from "
    "a file); they were removed and the key is sent without them. Store the key alone to silence this."
)
PROXIES_EXAMPLE = '{"https": "http://proxy.example.com:3128"}'


# --------------------------------------------------------------------------- input validation


def validate_page_id(page_id: Any) -> str:
    """Return the page id as a string of digits, or raise ``ValueError`` saying what is wrong."""
    if isinstance(page_id, bool) or page_id is None:
        raise ValueError(f"page_id must be a Confluence page id made of digits, got {page_id!r}.")
    text = str(page_id).strip()
    if not text:
        raise ValueError("page_id is empty: pass the numeric id of the Confluence page to export.")
    if not is_page_id(text):
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
    #: Scheme of the target URL (``http``/``https``) -> proxy URL, which may hold credentials: never shown.
    proxies: dict[str, str] = field(default_factory=dict, repr=False)
    #: The key had surrounding whitespace (a pasted line break, say), removed: the hook says so once.
    key_trimmed: bool = field(default=False, repr=False, compare=False)
    #: Downloads end an attempt when fewer than ``low_speed[0]`` bytes per second arrive over ``low_speed[1]``
    #: seconds (curl's ``--speed-limit``/``--speed-time``); ``(0, ...)`` turns the check off.
    low_speed: tuple[float, float] = (DEFAULT_LOW_SPEED_BYTES, DEFAULT_LOW_SPEED_SECONDS)

    def __repr__(self) -> str:  # never show the key or a proxy's credentials, even by accident
        shown = {scheme: redact_url(url) for scheme, url in self.proxies.items()}
        proxies = f", proxies={shown!r}" if shown else ""
        return f"ConnectionSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}{proxies})"

    @cached_property  # every request compares against it: parse the URL once
    def origin(self) -> tuple[str, str, int]:
        return origin_of(self.base_url)

    def url(self, endpoint: str, value: str) -> str:
        """Absolute URL of an endpoint for a page id or export hash."""
        return self.base_url + render_endpoint(self.endpoints.get(endpoint) or DEFAULT_PATHS[endpoint], value)

    def proxy_for(self, url: str) -> str | None:
        """The ``proxies`` extra's proxy for ``url`` (chosen by its scheme), or None."""
        return self.proxies.get(urlsplit(url).scheme.lower()) if self.proxies else None


def parse_region(value: Any) -> str | None:
    """Read the ``region`` extra: ``us``, ``eu``, or unset (null or absent): the form's dropdown choices."""
    if value is None:
        return None
    if isinstance(value, str) and value in REGIONS:
        return value
    raise ValueError(
        f"Connection extra 'region' must be 'us' or 'eu' (lower case) or not set, got "
        f"{_clip(repr(value), 20)}; or set the Application URL (host) explicitly."
    )


def resolve_base_url(host: str | None, port: int | None = None, region: str | None = None) -> str:
    """The application URL: the connection host when given, else the vendor URL of ``region``."""
    host = (host or "").strip()
    if not host:
        return REGION_URLS[parse_region(region) or "us"]
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if port and parts.hostname and ":" not in parts.netloc.rpartition("@")[2].rpartition("]")[2]:
        # A port of its own (a URI's: content-exporter://https://:key@host:8443) joins a host without one.
        host = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{int(port)}"))
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
    """Read the ``timeout`` extra: seconds (read timeout) or ``[connect, read]``.

    Accepts a number, a list of two numbers, or their text (``"60"``, ``"5, 60"``, ``"[5, 60]"``: what URIs
    and text inputs store); null or blank text means the defaults. Every number must be finite and > 0.
    """
    if value is None:
        return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    numbers: list[Any]
    if isinstance(value, str):
        if len(value) > TIMEOUT_TEXT_MAX_LENGTH or not re.search(TIMEOUT_TEXT_PATTERN, value):
            raise ValueError(
                "Connection extra 'timeout' must be seconds such as 60, or connect and read seconds "
                f"such as [5, 60]; got {_clip(repr(value), 40)}."
            )
        numbers = re.findall(r"[0-9.]+", value)
        if not numbers:
            return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    elif isinstance(value, list) and len(value) == 2 and all(_is_number(item) for item in value):
        numbers = value
    elif _is_number(value):
        numbers = [value]
    else:
        raise ValueError(
            "Connection extra 'timeout' must be a number of seconds or a list [connect, read] of two "
            f"numbers, got {_clip(repr(value), 40)}."
        )
    try:
        seconds = [float(number) for number in numbers]
    except OverflowError:  # an integer too large for a float
        seconds = [math.inf]
    if not all(math.isfinite(second) and second > 0 for second in seconds):
        raise ValueError(f"Connection extra 'timeout' must be positive, got {_clip(repr(value), 40)}.")
    if len(seconds) == 2:
        return seconds[0], seconds[1]
    return min(DEFAULT_CONNECT_TIMEOUT, seconds[0]), seconds[0]


def parse_low_speed(value: Any) -> tuple[float, float]:
    """Read the ``low_speed`` extra: ``[bytes_per_second, seconds]`` (or its text); null means the defaults.

    A download attempt ends when less than ``bytes_per_second`` arrive on average over ``seconds``, then
    resumes or restarts as a broken download does; ``[0, 0]`` turns the check off.
    """
    if value is None or value == "":
        return DEFAULT_LOW_SPEED_BYTES, DEFAULT_LOW_SPEED_SECONDS
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # not JSON: refused below with the rest
            value = json.loads(value if value.strip().startswith("[") else f"[{value}]")
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(_is_number(item) and math.isfinite(item) and item >= 0 for item in value)
        and (value[0] == 0 or value[1] > 0)
    ):
        return float(value[0]), float(value[1])
    raise ValueError(
        "Connection extra 'low_speed' must be [bytes_per_second, seconds] such as [1024, 60] (a download "
        f"slower than that over that many seconds is resumed or restarted), or [0, 0] for no check; got "
        f"{_clip(repr(value), 40)}."
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _object_from_text(value: Any) -> Any:
    """A JSON object given as text (a URI's query values are text) as a dict; anything else unchanged."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_endpoints(value: Any) -> dict[str, str]:
    """Read the ``endpoints`` extra: path templates overriding the defaults (an object or its JSON text)."""
    value = _object_from_text(value)
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            "Connection extra 'endpoints' must be an object such as "
            '{"start_export": "/api/remoteExport/{page_id}/init"}.'
        )
    result: dict[str, str] = {}
    for name, template in value.items():
        if name not in ENDPOINT_NAMES:
            raise ValueError(
                f"Connection extra 'endpoints' has unknown key {_clip(str(name), 40)!r}; "
                f"allowed: {', '.join(ENDPOINT_NAMES)}."
            )
        placeholder = PLACEHOLDER[name]
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
    """Read the ``confluence_url`` extra (e.g. ``https://acme.atlassian.net/wiki``), used for UI links.

    ``http(s)://host[:port][/path]`` without credentials, query or fragment; null or blank means not set.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not re.search(CONFLUENCE_URL_PATTERN, value):
        raise ValueError(
            f"Connection extra 'confluence_url' must be your Confluence base URL such as "
            f"https://acme.atlassian.net/wiki, got {_clip(repr(value), 80)}."
        )
    return value.strip(" \t\r\n").rstrip("/") or None


def parse_proxies(value: Any) -> dict[str, str]:
    """Read the ``proxies`` extra: target URL scheme -> ``http(s)://[user:password@]host[:port]``.

    An object, or its JSON text (a URI's query values are text)."""
    value = _object_from_text(value)
    if value in (None, "", {}):
        return {}
    where = f"Connection extra 'proxies' (e.g. {PROXIES_EXAMPLE})"
    if not isinstance(value, dict):  # not echoed: it may hold a proxy password
        raise ValueError(
            f"{where} must be an object mapping 'http' and/or 'https' (the scheme of the URLs to send "
            f"through the proxy) to a proxy URL; got {type(value).__name__}."
        )
    result: dict[str, str] = {}
    for key, url in value.items():
        scheme = key.strip().lower() if isinstance(key, str) else ""
        if scheme not in ("http", "https"):
            raise ValueError(f"{where} has unknown key {_clip(str(key), 40)!r}; allowed: http, https.")
        text = url.strip() if isinstance(url, str) else ""
        if not _is_proxy_url(text):
            shown = repr(_clip(redact_url(text), 80)) if isinstance(url, str) else type(url).__name__
            raise ValueError(
                f"{where} has an unusable {scheme!r} proxy {shown}: expected http(s)://host:port, or "
                "http(s)://user:password@host:port with any @ : / # in the user or password percent-encoded."
            )
        result[scheme] = text.rstrip("/")
    return result


def _is_proxy_url(text: str) -> bool:
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:  # not a number or out of range: often an unencoded ':', '/' or '@' in a password
        return False
    bare = parts.path in ("", "/") and not parts.query and not parts.fragment
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and port != 0 and bare


def redact_url(url: str) -> str:
    """``url`` without credentials (``http://user:pw@proxy:3128`` -> ``http://proxy:3128``): all up to the
    last ``@`` goes, so an unencoded ``/``, ``#`` or ``@`` in a password cannot keep part of it visible."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url.rpartition("@")[2]


def proxy_label(proxy_url: str, *, from_extra: bool) -> str:
    """How messages name a proxy: its URL without credentials, and where it was configured."""
    where = "the connection's 'proxies' extra" if from_extra else "HTTP_PROXY/HTTPS_PROXY"
    return f"{redact_url(proxy_url)} (from {where})"


def confluence_page_url(confluence_url: str, page_id: str) -> str:
    """Link to a Confluence page by id (works on Cloud and Data Center)."""
    return f"{confluence_url}/pages/viewpage.action?pageId={quote(validate_page_id(page_id), safe='')}"


def settings_from_connection(
    conn_id: str,
    host: str | None,
    password: str | None,
    port: int | None,
    extra: dict[str, Any],
    *,
    conn_type: str | None = "content_exporter",
) -> ConnectionSettings:
    """Build :class:`ConnectionSettings` from the fields of an Airflow connection."""
    key = (password or "").strip(" \t\r\n")
    if not key:
        why_empty = " (it holds only spaces or line breaks)" if password else ""
        uri_hint = ""
        if not conn_type and not host:  # what Airflow makes of AIRFLOW_CONN_X='content_exporter://...'
            uri_hint = (
                " The connection has no type and no host either: if it is a URI, write its scheme "
                "content-exporter:// (Airflow turns '-' into '_'); Python's URL parser does not accept "
                "'_' in a scheme, so content_exporter://... reads as an empty connection."
            )
        raise ContentExporterAuthError(
            f"Connection {conn_id!r} has no API key{why_empty}: put the key generated on the Content "
            f"Exporter admin page (Remote API) in the connection's password field.{uri_hint}"
        )
    if not _HEADER_VALUE.fullmatch(key):  # requests would refuse it, aiohttp send it as UTF-8: say so first
        raise ContentExporterAuthError(
            f"The API key of connection {conn_id!r} (its password field) cannot be sent as an HTTP header: "
            "it holds a line break, a control character or a non-ASCII character. Copy the key again "
            "from the Content Exporter admin page (Remote API) and paste it alone into the password field."
        )
    try:
        connect, read = parse_timeout(extra.get("timeout"))
        region = parse_region(extra.get("region"))  # checked even when the host makes it unused
        return ConnectionSettings(
            conn_id=conn_id,
            base_url=resolve_base_url(host, port, region),
            api_key=key,
            key_trimmed=key != password,
            low_speed=parse_low_speed(extra.get("low_speed")),
            connect_timeout=connect,
            read_timeout=read,
            endpoints=parse_endpoints(extra.get("endpoints")),
            verify=parse_verify(extra.get("verify")),
            confluence_url=parse_confluence_url(extra.get("confluence_url")),
            proxies=parse_proxies(extra.get("proxies")),
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


def scrub(text: str, secret: str | None = None) -> str:
    """``text`` taken from the server (a body, a header, a Location) without the key or URL credentials.

    The key goes as it is and percent-encoded (``%2B``/``+`` forms a server may echo in a URL); the user-info
    of every URL in the text (``https://user:pw@host`` -> ``https://host``) goes too.
    """
    text = _without_secret(text, secret)
    return _URL_USERINFO.sub(r"\1", text) if "@" in text else text


def holds_secret(text: str, secret: str | None) -> bool:
    """Whether ``text`` holds the key, as it is or percent-encoded."""
    return _without_secret(text, secret) != text


def _without_secret(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        for form in _secret_forms(secret):
            text = text.replace(form, "***")
            if "%" in form:  # percent-encoding may come back in either case
                text = re.sub(re.escape(form), "***", text, flags=re.IGNORECASE)
    return text


def _secret_forms(secret: str) -> set[str]:
    """The key as a server may echo it: as it is, and percent-encoded as a path, a query or a segment."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


def _partial_key_at_end(text: str, secret: str | None) -> int:
    """How many characters at the end of ``text`` are the start of the key (or of an encoded form of it)."""
    if not secret or len(secret) < 4:
        return 0
    folded = text.lower()  # percent-escapes may come back in lower case
    sizes = [
        size
        for form in _secret_forms(secret)
        for size in range(1, len(form))
        if text.endswith(form[:size]) or ("%" in form and folded.endswith(form[:size].lower()))
    ]
    return max(sizes, default=0)


#: ``scheme://user:password@`` in a text: the user-info of a URL.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*@")


def snippet(body: bytes | str | None, secret: str | None = None, limit: int = MAX_SNIPPET) -> str:
    """At most ``limit`` printable characters of a response body, without the API key or URL credentials.

    Linear in ``limit``, not in the body: only a bounded head of the body is looked at (a 1 MiB answer
    costs no more than a short one).
    """
    if body is None:
        return ""
    head = 8 * limit + 4 * len(secret or "")  # room for runs of spaces, which collapse
    if isinstance(body, bytes):
        cut = len(body) > 4 * head
        text = body[: 4 * head].decode("utf-8", "replace")
    else:
        cut, text = False, str(body)
    if len(text) > head:
        cut, text = True, text[:head]
    if cut:  # the cut may split the key or a URL's user-info: drop an unfinished last word holding either
        text = text[: len(text) - _partial_key_at_end(text, secret)]
        start = max(text.rfind(" "), text.rfind("\n")) + 1
        if "://" in text[start:]:
            text = text[:start]
    text = scrub(text, secret)
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_export_hash(body: bytes, content_type: str | None, secret: str | None = None) -> str:
    """Read the hash from a start response: a JSON object, a JSON string, or plain text."""
    text = body.decode("utf-8", "replace").strip()
    candidate: Any = None
    try:
        decoded = json.loads(text) if text else None
    except (ValueError, RecursionError):
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


#: A progress value given as text: a plain decimal number, optionally with a percent sign.
_PROGRESS_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%?\s*", re.ASCII)


def _as_progress(value: Any) -> float | None:
    """The progress in 0-100 from a number or a plain decimal text; None when it is not a finite number.

    ``Infinity``, ``NaN``, ``1e999``, ``"inf"``, ``"1_0_0"`` or digits of other scripts are not progress:
    ``float()`` would read most of them, and a value read as 100 % would download an unfinished export.
    Finite values outside 0-100 are clamped (the service has sent 100.0000001).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if len(value) > 40 or not _PROGRESS_TEXT.fullmatch(value):
            return None
        value = value.strip().rstrip("%")
    elif not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an integer too large for a float
        return None
    if not math.isfinite(number):
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
    value = payload.get("progressValue")
    progress = _as_progress(value)
    if progress is None and value is not None and not failed:
        raise ContentExporterProtocolError(
            f"The progress response for export {export_hash} has a 'progressValue' that is not a finite "
            f"number ({snippet(_json_preview(value), secret, limit=40)!r}): a progress is a number from 0 to "
            "100. The answer was not trusted as progress; the export's state is unknown."
        )
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
    except (TypeError, ValueError, RecursionError):
        return f"a {type(payload).__name__}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

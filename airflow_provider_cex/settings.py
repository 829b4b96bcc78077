"""The Airflow connection read into :class:`ConnectionSettings`: everything a transport needs, checked once.

The application URL (the connection's host, else the vendor URL of the ``region`` extra), the API key (the
password), and the extras ``timeout``, ``low_speed``, ``endpoints``, ``verify``, ``proxies`` and
``confluence_url``. Each parser raises ``ValueError`` saying what is wrong, which
:func:`settings_from_connection` reports as a misconfigured connection. Also the URLs built from the
settings: an endpoint's (:meth:`ConnectionSettings.url`), an origin (:func:`origin_of`), a Confluence page's
(:func:`confluence_page_url`). Shared by both transports; no I/O, no Airflow task machinery.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_provider_cex import (
    CONFLUENCE_URL_PATTERN,
    EU_APPLICATION_URL,
    REGIONS,
    TIMEOUT_TEXT_MAX_LENGTH,
    TIMEOUT_TEXT_PATTERN,
    US_APPLICATION_URL,
)
from airflow_provider_cex.endpoints import DEFAULT_PATHS, ENDPOINT_NAMES, PLACEHOLDER
from airflow_provider_cex.exceptions import ContentExporterAuthError, ContentExporterError
from airflow_provider_cex.inputs import clip, validate_page_id
from airflow_provider_cex.proxies import environment_proxy
from airflow_provider_cex.redaction import redact_url

REGION_URLS = {"us": US_APPLICATION_URL, "eu": EU_APPLICATION_URL}

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_LOW_SPEED_BYTES = 1024.0
DEFAULT_LOW_SPEED_SECONDS = 60.0
#: What an HTTP header value can carry the same way in both transports: visible ASCII, inner spaces or tabs.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")
KEY_TRIMMED_WARNING = (
    "The API key of connection %r had spaces or a line break around it (pasted with the line, or read from "
    "a file); they were removed and the key is sent without them. Store the key alone to silence this."
)
PROXIES_EXAMPLE = '{"https": "http://proxy.example.com:3128"}'


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

    def choose_proxy(self, url: str) -> tuple[str | None, bool]:
        """The one proxy rule of both transports: ``(proxy URL, from the extra)``, or ``(None, False)`` to go
        direct.

        The ``proxies`` extra's proxy for ``url``'s scheme wins. Otherwise the environment, read as requests
        reads it: ``HTTP_PROXY``/``HTTPS_PROXY`` for the scheme, else ``ALL_PROXY``; a host in ``NO_PROXY``
        (names, domains, ``host:port``, CIDR ranges) goes direct. ``http://`` and ``https://`` proxies both
        work in both transports; a proxy's credentials go in its URL (``~/.netrc`` is not read).
        """
        explicit = self.proxy_for(url)
        if explicit:
            return explicit, True
        return environment_proxy(url), False


def parse_region(value: Any) -> str | None:
    """Read the ``region`` extra: ``us``, ``eu``, or unset (null or absent): the form's dropdown choices."""
    if value is None:
        return None
    if isinstance(value, str) and value in REGIONS:
        return value
    raise ValueError(
        f"Connection extra 'region' must be 'us' or 'eu' (lower case) or not set, got "
        f"{clip(repr(value), 20)}; or set the Application URL (host) explicitly."
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
            f"Application URL {clip(host, 80)!r} is not an http(s) URL; use e.g. {US_APPLICATION_URL}."
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
                f"such as [5, 60]; got {clip(repr(value), 40)}."
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
            f"numbers, got {clip(repr(value), 40)}."
        )
    try:
        seconds = [float(number) for number in numbers]
    except OverflowError:  # an integer too large for a float
        seconds = [math.inf]
    if not all(math.isfinite(second) and second > 0 for second in seconds):
        raise ValueError(f"Connection extra 'timeout' must be positive, got {clip(repr(value), 40)}.")
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
        f"{clip(repr(value), 40)}."
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
                f"Connection extra 'endpoints' has unknown key {clip(str(name), 40)!r}; "
                f"allowed: {', '.join(ENDPOINT_NAMES)}."
            )
        placeholder = PLACEHOLDER[name]
        if not isinstance(template, str) or not template.startswith("/"):
            raise ValueError(f"Endpoint template {name!r} must be a path starting with '/'.")
        found = re.findall(r"{([^{}]*)}", template)
        if found != [placeholder] or "?" in template or "#" in template:
            raise ValueError(
                f"Endpoint template {name!r} must contain {{{placeholder}}} exactly once, no other "
                f"placeholder, query or fragment; got {clip(template, 80)!r}."
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
            f"https://acme.atlassian.net/wiki, got {clip(repr(value), 80)}."
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
            raise ValueError(f"{where} has unknown key {clip(str(key), 40)!r}; allowed: http, https.")
        text = url.strip() if isinstance(url, str) else ""
        if not _is_proxy_url(text):
            shown = repr(clip(redact_url(text), 80)) if isinstance(url, str) else type(url).__name__
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

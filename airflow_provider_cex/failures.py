"""Which error a failed attempt becomes, in words that say what to do; free of I/O, used by both transports.

An error status (:func:`failure_for_status`: 429 and 503 always, 500, 502 and 504 for all but the start POST
are a :class:`~airflow_provider_cex.policy.RetryableFailure`; 401/403, 404 (:func:`not_found_error`), 409 and
the rest are final), a network error (:func:`network_failure`), a proxy that stops the request
(:func:`proxy_failure`) or a 2xx answer that cannot be read (:func:`unreadable_answer`). A start request that
may have reached the service is never retried: it ends in ``ContentExporterStartUncertainError`` with
:data:`START_UNCERTAIN_ADVICE`.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from airflow_provider_cex import DEFAULT_CONN_ID
from airflow_provider_cex.endpoints import DEFAULT_PATHS, DOCUMENTED, START_EXPORT
from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterNotFoundError,
    ContentExporterProtocolError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.policy import Call, RetryableFailure, is_retryable_status, parse_retry_after
from airflow_provider_cex.redaction import snippet
from airflow_provider_cex.settings import ConnectionSettings, origin_of, proxy_label

#: How both transports name a connection the server never accepted (nothing was sent).
CONNECTION_REFUSED = "connection refused or host unreachable"
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
    proxy: str | None = None,
) -> Exception:
    """The exception for a non-2xx answer: ``RetryableFailure`` when another attempt is safe and useful.

    A 401/403 from another origin (after a redirect, where the key is deliberately not sent) is reported
    as a redirect problem, not a bad key; a 407 as the proxy's login. ``route_exists`` is what a transport
    learned about a 404 (see :func:`not_found_error`); ``proxy`` names the proxy used, if any
    (:func:`~airflow_provider_cex.settings.proxy_label`).
    """
    if status == 407:
        return proxy_failure(call, settings, proxy, status=407)
    if status in (401, 403) and origin_of(url) != settings.origin:
        return ContentExporterProtocolError(
            f"Content Exporter redirected the request to {urlsplit(url).netloc!r}, which answered HTTP "
            f"{status} while trying to {call}. The API key is sent only to the application URL "
            f"({settings.base_url}), never to another host; if the service really moved, update the host of "
            f"connection {settings.conn_id!r}."
        )
    via = f" through proxy {proxy}" if proxy else ""
    if is_retryable_status(status, call.idempotent):  # through a proxy, a 5xx may be the proxy's own
        advice = _proxy_advice(settings) if proxy and status >= 500 else None
        return RetryableFailure(
            f"HTTP {status}{via}", parse_retry_after(retry_after, time.time()), advice=advice
        )
    secret = settings.api_key
    if status >= 500 and call.idempotent:  # e.g. 501 or 505: not worth repeating at once
        return ContentExporterTransientError(
            f"Content Exporter answered HTTP {status}{via} while trying to {call}; the task can be retried. "
            f"Server said: {snippet(body, secret)!r}."
        )
    if status >= 500:
        return ContentExporterStartUncertainError(
            f"Content Exporter answered HTTP {status}{via} while trying to {call}. The request may have "
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


def proxy_in_use(settings: ConnectionSettings, url: str) -> str | None:
    """How messages name the proxy ``url`` goes through, or None when it goes direct (the choice:
    :meth:`~airflow_provider_cex.settings.ConnectionSettings.choose_proxy`)."""
    proxy, from_extra = settings.choose_proxy(url)
    return proxy_label(proxy, from_extra=from_extra) if proxy else None


def proxy_failure(
    call: Call,
    settings: ConnectionSettings,
    proxy: str | None,
    *,
    status: int | None = None,
    reason: str = "",
) -> Exception:
    """A request stopped at the proxy (``proxy`` names it, without credentials): unreachable (``reason``), or
    answering ``status`` itself (to a tunnel request, or 407). 407 is its login, final; anything else is
    retried, a start request too: nothing reached Content Exporter.
    """
    name = f"proxy {proxy}" if proxy else "a proxy"
    if status == 407:
        return ContentExporterError(
            f"Could not {call}: {name} answered HTTP 407 Proxy Authentication Required: it needs a user "
            "and password, or rejected the ones given. This is the proxy's own login, not the Content "
            "Exporter API key (the request did not get past the proxy): put them in the proxy URL where it "
            "is set, percent-encoded, e.g. http://user:password@proxy:3128 in the connection's 'proxies' "
            "extra or in HTTPS_PROXY/HTTP_PROXY."
        )
    if status is not None:
        reason = f"{name} refused to open a connection to the service (HTTP {status})"
    else:
        reason = f"could not connect to {name}: {reason}"
    return RetryableFailure(reason, advice=_proxy_advice(settings))


def _proxy_advice(settings: ConnectionSettings) -> str:
    return (
        "Check that the proxy is running, reachable from this worker and allowed to reach "
        f"{settings.base_url}, or correct its URL; the task can be retried later."
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


def should_probe_route(status: int, url: str, settings: ConnectionSettings) -> bool:
    """Whether to ask ``url`` again without the key to explain a 404 (only on the application origin)."""
    return status == 404 and origin_of(url) == settings.origin


def route_exists(keyless_status: int | None) -> bool | None:
    """What the keyless answer says: 401/403 an endpoint guards the path, 404 nothing lives there."""
    return {401: True, 403: True, 404: False}.get(keyless_status) if keyless_status is not None else None


def network_failure(call: Call, reason: str, *, surely_not_sent: bool) -> Exception:
    """The failure for a network error: retryable, unless a start POST may have reached the server."""
    if call.idempotent or surely_not_sent:
        return RetryableFailure(reason)
    return ContentExporterStartUncertainError(
        f"Could not {call}: {reason}. The request may have reached the server and started the "
        f"export, so it was not repeated: {START_UNCERTAIN_ADVICE}"
    )


def unreadable_answer(call: Call, reason: str) -> ContentExporterError:
    """The error for a 2xx answer that cannot be read (too large, badly encoded, too deeply nested).

    For a start call the export may be running (the service accepted the request): it is not repeated.
    """
    if call.endpoint == START_EXPORT:
        return ContentExporterStartUncertainError(
            f"Content Exporter accepted the request to {call}, but its answer is unreadable: {reason}. The "
            f"export may be running, so the request was not repeated: {START_UNCERTAIN_ADVICE}"
        )
    return ContentExporterProtocolError(
        f"Content Exporter's answer while trying to {call} is unreadable: {reason}. If this persists, the "
        "service or a proxy in between is misbehaving; the task can be retried."
    )

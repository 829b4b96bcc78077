"""TLS for both transports: the ``verify`` extra's CA bundle, checked before any request, and the words for a
failed certificate check. Such a failure is final (another attempt meets the same certificate), and no byte
of a request, the API key included, is sent before the handshake succeeds.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import certifi

from airflow_provider_cex.exceptions import ContentExporterError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_cex.policy import Call
    from airflow_provider_cex.settings import ConnectionSettings

#: OpenSSL verify codes saying the issuer is not trusted (the right CA bundle fixes it): unable to get the
#: issuer (2, 20), self-signed leaf (18) or chain (19), unable to verify the leaf's signature (21).
UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21})
#: OpenSSL verify codes saying the certificate is not for the host in the URL: host name (62), IP (64).
NAME_MISMATCH = frozenset({62, 64})

E = TypeVar("E", bound=BaseException)

VERIFY_OFF_WARNING = (
    "TLS certificate verification is OFF for connection %r (extra verify=false): whoever can intercept the "
    "traffic to %s can read the API key. Point 'verify' at the CA bundle of the service instead."
)
"""Logged once per hook (sync) or per trigger run (async) instead of urllib3's warning per request."""


def ssl_context(settings: ConnectionSettings) -> ssl.SSLContext | bool:
    """What to verify the server against: False (nothing), or a context holding the CAs to trust.

    ``verify: true`` trusts what ``requests`` trusts (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else
    certifi's bundle), so the sync hook and the trigger accept and refuse the same certificates. A path is
    the ``verify`` extra's CA bundle (a PEM file, or a folder of hashed certificates as ``c_rehash`` makes).
    Contexts are cached per bundle (path, size and mtime): a thousand triggers load a bundle once.

    Raises ``ContentExporterError`` naming the extra when the bundle cannot be loaded, before any request.
    """
    if settings.verify is False:
        return False
    if settings.verify is True:
        path = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or _certifi_bundle()
        if path is None:
            return True  # no bundle to mirror: the system's CAs
        from_extra = False
    else:
        path, from_extra = settings.verify, True
    try:
        return _load_context(path)
    except FileNotFoundError:
        why = "does not exist on this worker"
    except PermissionError:
        why = "cannot be read by this worker (permission denied)"
    except ssl.SSLError as err:  # before OSError, its base class
        why = f"holds no usable PEM certificate ({err.reason or type(err).__name__})"
    except OSError as err:
        why = f"cannot be read ({err.strerror or type(err).__name__})"
    if not from_extra:
        raise ContentExporterError(
            f"The CA bundle {path!r} (from REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or certifi) {why}. Fix that "
            "environment variable on this worker, or set the extra 'verify' of connection "
            f"{settings.conn_id!r} to the path of a PEM file holding the service's CA certificate(s)."
        )
    raise ContentExporterError(
        f"The extra 'verify' of connection {settings.conn_id!r} names the CA bundle {path!r}, which {why}. "
        "Set 'verify' to the path of a PEM file holding the service's CA certificate(s), readable on this "
        "worker, or remove it to trust the default CAs (REQUESTS_CA_BUNDLE, else certifi's)."
    )


_CONTEXTS: dict[tuple[str, int, int], ssl.SSLContext] = {}


def _load_context(path: str) -> ssl.SSLContext:
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    context = _CONTEXTS.get(key)
    if context is None:
        if os.path.isdir(path):
            context = ssl.create_default_context(capath=path)
        else:
            context = ssl.create_default_context(cafile=path)
        if len(_CONTEXTS) >= 16:  # bounded: bundles rarely change, but never grow without limit
            _CONTEXTS.clear()
        _CONTEXTS[key] = context
    return context


def _certifi_bundle() -> str | None:
    return str(certifi.where())  # imported with this module: never on a triggerer's event loop


def quiet_insecure_request_warnings(base_url: str) -> None:
    """Silence urllib3's ``InsecureRequestWarning`` for the application's host only: the hook logs
    :data:`VERIFY_OFF_WARNING` instead of a warning per request."""
    import re
    import warnings

    from urllib3.exceptions import InsecureRequestWarning

    host = urlsplit(base_url).hostname or ""
    message = f"Unverified HTTPS request is being made to host '{re.escape(host)}'"
    warnings.filterwarnings("ignore", message=message, category=InsecureRequestWarning)


def tls_failure(
    call: Call, settings: ConnectionSettings, err: BaseException | None = None
) -> ContentExporterError:
    """The final error for a failed TLS handshake (``err``: the transport's exception, to say why)."""
    return ContentExporterError(f"Could not {call}: {tls_problem(settings, err)}")


def tls_problem(settings: ConnectionSettings, err: BaseException | None) -> str:
    """What went wrong in the handshake and what to change: the ``verify`` extra or the Application URL."""
    cert_error = _find(err, ssl.SSLCertVerificationError)
    code = getattr(cert_error, "verify_code", None)
    why = str(getattr(cert_error, "verify_message", "") or "").rstrip(".")
    # urllib3 1.26 matches an IP-address host itself, after the handshake, and raises its own
    # CertificateError (a ValueError), not the ssl module's verification error.
    legacy_mismatch = next(
        (e for e in _walk(err) if type(e).__name__ == "CertificateError" and "urllib3" in type(e).__module__),
        None,
    )
    if legacy_mismatch is not None and cert_error is None:
        code, why = min(NAME_MISMATCH), str(legacy_mismatch).rstrip(".")
    where = f"connection {settings.conn_id!r}"
    bundle = settings.verify if isinstance(settings.verify, str) else None
    failed = f"TLS certificate verification failed for {settings.base_url}"
    if code in NAME_MISMATCH:
        host = urlsplit(settings.base_url).hostname
        return (
            f"{failed}: the server's certificate is not valid for {host!r} ({why}). Use a host name the "
            f"certificate lists in the Application URL of {where}; a CA bundle in the 'verify' extra "
            "cannot fix a name mismatch."
        )
    if code in UNTRUSTED_ISSUER and bundle:
        return (
            f"{failed}: {why}: the CA bundle {bundle!r} (extra 'verify' of {where}) does not hold the CA "
            "that issued the server's certificate. Point 'verify' at that CA's bundle (a PEM file)."
        )
    if code in UNTRUSTED_ISSUER:
        return (
            f"{failed}: {why}: the server's certificate is not issued by a CA this worker trusts. If the "
            f"service uses a private CA, set the extra 'verify' of {where} to the path of its CA bundle "
            '(a PEM file), e.g. {"verify": "/etc/ssl/certs/company-ca.pem"}.'
        )
    if cert_error is not None:
        checked = f" (checked against the CA bundle {bundle!r} from the extra 'verify')" if bundle else ""
        return f"{failed}{checked}: {why or 'the certificate was rejected'}. Check the server's certificate."
    ssl_error = _find(err, ssl.SSLError)
    reason = (getattr(ssl_error, "reason", None) or type(ssl_error or err).__name__) if err else "unknown"
    return (
        f"TLS handshake with {settings.base_url} failed ({reason}). Check that the service speaks HTTPS at "
        f"that URL (the scheme and port of the Application URL of {where})."
    )


def _find(err: BaseException | None, kind: type[E]) -> E | None:
    """The first ``kind`` raised by the ``ssl`` module in what ``err`` wraps (requests and aiohttp nest it;
    aiohttp's own error also subclasses ``ssl.CertificateError``, without the verify code)."""
    for current in _walk(err):
        if isinstance(current, kind) and type(current).__module__ in (
            "ssl",
            "_ssl",
        ):  # not aiohttp's subclass
            return current
    return None


def _walk(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and what it wraps, breadth first (bounded: transports nest a handful of levels)."""
    todo: list[BaseException | None] = [err]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        linked = [getattr(current, name, None) for name in ("reason", "certificate_error", "os_error")]
        linked += [*current.args, current.__cause__, current.__context__]
        todo += [item for item in linked if isinstance(item, BaseException)]

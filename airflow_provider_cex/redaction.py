"""Keeping the API key and URL credentials out of every text the provider shows (messages, logs, reprs).

:func:`scrub` removes them from a text the server sent (a body, a header, a ``Location``), the key as it is
and percent-encoded; :func:`snippet` quotes the start of a body that way, printable and bounded;
:func:`holds_secret` tells whether a text holds the key; :func:`redact_url` shows a URL without its user and
password. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

MAX_SNIPPET = 200


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


def redact_url(url: str) -> str:
    """``url`` without credentials (``http://user:pw@proxy:3128`` -> ``http://proxy:3128``): all up to the
    last ``@`` goes, so an unencoded ``/``, ``#`` or ``@`` in a password cannot keep part of it visible."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url.rpartition("@")[2]

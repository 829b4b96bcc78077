"""The proxy the environment names for a URL, read as requests reads it, once per origin and environment.

``requests.utils.get_environ_proxies`` scans every environment variable, twice, at each call: about 0.1 ms,
which a triggerer starting 1,000 deferred waits paid 1,000 times (``benchmarks/trigger_scale.py``). The
answer depends only on the proxy variables and the URL's origin, so it is kept per (their values, origin)
and read again when one of them changes.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

#: What requests' environment reading looks at for http(s) URLs (REQUEST_METHOD: CGI ignores HTTP_PROXY).
_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
)
_CHOSEN: dict[tuple[tuple[str | None, ...], str, str], str | None] = {}


def environment_proxy(url: str) -> str | None:
    """The proxy ``HTTP(S)_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` choose for ``url``, or None: go direct."""
    parts = urlsplit(url)
    key = (tuple(map(os.environ.get, _VARIABLES)), parts.scheme.lower(), parts.netloc.lower())
    if key not in _CHOSEN:
        import requests.utils

        if len(_CHOSEN) >= 256:  # bounded: a process talks to few origins
            _CHOSEN.clear()
        _CHOSEN[key] = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url)) or None
    return _CHOSEN[key]

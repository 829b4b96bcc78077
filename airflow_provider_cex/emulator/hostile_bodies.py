"""The parameters and bodies of a hostile service's answers (:data:`~.chaos.HOSTILE_KINDS`), for chaos mode.

What :func:`~.chaos.random_chaos` gives each hostile kind (sizes, intervals, durations, variants) and the
bytes the emulator sends for it: :func:`inflating_body` (a compression bomb), :func:`deep_json_body`,
:func:`non_finite_progress_body`, and the ``echoed_key`` variants (:func:`echo_variant`). The kinds
themselves are described in :mod:`.chaos`; :mod:`.serving` puts these answers on the wire.
"""

from __future__ import annotations

import functools
import zlib

from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS, START_EXPORT

INFLATE_SIZE = 64 * 1024 * 1024
"""Inflated size :func:`~.chaos.random_chaos` gives ``inflating_body`` (about 1000:1: 64 KiB sent)."""
INFLATE_ENCODINGS: tuple[tuple[str, int], ...] = (("gzip", 31), ("deflate", 15), ("deflate", -15))
"""(``Content-Encoding``, zlib ``wbits``) per ``inflating_body`` variant: gzip, zlib, raw deflate."""
INFLATE_PREFIXES: dict[str, bytes] = {
    START_EXPORT: b'{"pad": "',
    EXPORT_PROGRESS: b'{"progressValue": 5, "pad": "',
    DOWNLOAD_EXPORT: b'{"error": "',
}
INFLATE_SUFFIX = b'"}'
INFLATE_ERROR_STATUSES = (500, 502, 503, 504)

DEEP_JSON_DEPTH = 100_000
DEEP_JSON_VARIANTS = 3

DRIP_INTERVAL = 0.2
"""Seconds between two bytes of ``dripping_body`` in :func:`~.chaos.random_chaos` (5 bytes a second)."""
DRIP_PAD = 4096
"""Leading spaces before a dripped JSON answer: at 5 bytes a second it would take 14 minutes."""
HANG_SECONDS = 45.0
"""How long ``dripping_body`` and ``silent`` last in :func:`~.chaos.random_chaos` unless the client hangs
up: longer than a fault-matrix run may take, so a client that does not end its attempt shows as a run past
its bound."""

NON_FINITE_PROGRESS: tuple[bytes, ...] = (
    b"Infinity",
    b"-Infinity",
    b"NaN",
    b"1e999",
    b'"inf"',
    b'"1e999"',
    b'"1_0_0"',
    '"\u0661\u0660\u0660"'.encode(),  # Arabic-Indic digits 100, sent as UTF-8
)
"""Raw JSON values of ``non_finite_progress``: Python's ``float()`` reads most of them as inf or 100."""

ECHO_VARIANTS: dict[str, tuple[str, ...]] = {
    START_EXPORT: ("redirect_query", "redirect_file", "redirect_userinfo", "error_body"),
    EXPORT_PROGRESS: (
        "redirect_query",
        "redirect_file",
        "redirect_userinfo",
        "error_body",
        "progress_message",
        "failed_message",
    ),
    DOWNLOAD_EXPORT: ("redirect_query", "redirect_file", "redirect_userinfo", "error_body", "disposition"),
}
"""What ``echoed_key`` answers, per endpoint, by ``variant`` (see the :mod:`.chaos` module docstring)."""
ECHO_REDIRECTS: dict[str, tuple[int, ...]] = {
    # The start was processed before the redirect: a 307/308 would make a client repeat the POST.
    START_EXPORT: (302, 303),
    EXPORT_PROGRESS: (301, 302, 303, 307, 308),
    DOWNLOAD_EXPORT: (301, 302, 303, 307, 308),
}
ECHO_ERRORS: dict[str, tuple[int, ...]] = {
    START_EXPORT: (400, 403, 500, 502),  # none that a client may retry after a processed POST (429, 503)
    EXPORT_PROGRESS: (400, 403, 500, 502, 503, 504),
    DOWNLOAD_EXPORT: (400, 403, 500, 502, 503, 504),
}


@functools.lru_cache(maxsize=16)
def inflating_body(size: int, variant: int, endpoint: str) -> bytes:
    """Compressed bytes (per :data:`INFLATE_ENCODINGS` ``[variant]``) that inflate to ``size`` bytes.

    The inflated text is the endpoint's :data:`INFLATE_PREFIXES` JSON prefix, spaces, then ``"}``: valid
    JSON for a client that reads it all. Compressed in 1 MiB steps (the inflated bytes are never held) and
    cached per arguments: 64 MiB take about 0.7 s once, then nothing.
    """
    _encoding, wbits = INFLATE_ENCODINGS[variant % len(INFLATE_ENCODINGS)]
    prefix = INFLATE_PREFIXES[endpoint]
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits, 9)
    parts = [compressor.compress(prefix)]
    spaces = max(0, size - len(prefix) - len(INFLATE_SUFFIX))
    block = b" " * (1 << 20)
    while spaces > 0:
        step = min(spaces, len(block))
        parts.append(compressor.compress(block[:step]))
        spaces -= step
    parts.append(compressor.compress(INFLATE_SUFFIX))
    parts.append(compressor.flush())
    return b"".join(parts)


def inflating_encoding(variant: int) -> str:
    """The ``Content-Encoding`` header of ``inflating_body`` ``variant``."""
    return INFLATE_ENCODINGS[variant % len(INFLATE_ENCODINGS)][0]


@functools.lru_cache(maxsize=8)
def deep_json_body(endpoint: str, variant: int) -> bytes:
    """A JSON text nested :data:`DEEP_JSON_DEPTH` levels deep (valid JSON; too deep for recursive parsers)."""
    depth = DEEP_JSON_DEPTH
    variant %= DEEP_JSON_VARIANTS
    if variant == 0:
        return b"[" * depth + b"]" * depth
    if variant == 1:
        return b'{"a":' * depth + b"1" + b"}" * depth
    key = b"hash" if endpoint == START_EXPORT else b"progressValue"
    return b'{"' + key + b'": ' + b"[" * depth + b"]" * depth + b"}"


def non_finite_progress_body(variant: int) -> bytes:
    value = NON_FINITE_PROGRESS[variant % len(NON_FINITE_PROGRESS)]
    return b'{"progressValue": ' + value + b', "status": "RUNNING"}'


def echo_variant(endpoint: str, variant: int) -> str:
    """The name of ``echoed_key`` ``variant`` on ``endpoint`` (one of :data:`ECHO_VARIANTS`)."""
    variants = ECHO_VARIANTS[endpoint]
    return variants[variant % len(variants)]

"""Chaos mode for the emulator: hostile and broken answers, armed one by one or from a seeded schedule.

A :class:`Chaos` describes one spoiled answer. ``ContentExporterEmulator.chaos(endpoint, kind, ...)`` queues
one (or ``times``) for an endpoint; ``ContentExporterEmulator.chaos_schedule(ChaosSchedule(seed, rate=...))``
spoils each request with probability ``rate``, the n-th request to an endpoint always getting the same fault
for the same seed (:func:`scheduled_chaos`), so a failing run can be replayed exactly.

Kinds, and the endpoints they apply to (:data:`APPLIES_TO`):

- ``status``: a 429 (``Retry-After`` as seconds, an HTTP date, or absent) or a 500/502/503/504 HTML page.
- ``reset_before_headers``: the connection is reset (RST) before any byte of the answer.
- ``stall_before_headers``: nothing is sent for ``seconds`` (a client read timeout), then the connection
  closes.
- ``truncated_body``: full headers with a ``Content-Length``, part of the body, then a clean close (FIN).
- ``reset_mid_body``: as ``truncated_body`` but the connection is reset (RST).
- ``non_json``: a 200 whose body is not JSON (an HTML page, text, nothing, binary, cut-off JSON).
- ``wrong_json``: a 200 whose JSON has the wrong shape or types (start and progress).
- ``progress_backwards``: a progress value lower than the real one (and never DONE).
- ``progress_over_100``: a progress value above 100 (or absurdly large) while the export still runs.
- ``redirect_loop``: a redirect to the same URL, every time.
- ``redirect_foreign``: a redirect to another origin (``target``, e.g. a second emulator) + the same path.
- ``huge_error_body``: an error status with a body of ``size`` bytes (tens of MB).
- ``hostile_filename``: the download's ``Content-Disposition`` proposes a hostile file name.

The answers of a hostile service (not drawn by a :class:`ChaosSchedule` unless named in its ``kinds``;
their parameters and bodies are in :mod:`.hostile_bodies`):

- ``inflating_body``: a 200 (on the download, an error ``status``) whose body is sent with
  ``Content-Encoding: gzip`` (variants: ``deflate`` as zlib, ``deflate`` as raw deflate) and a correct
  compressed ``Content-Length``, and inflates to ``size`` bytes: a JSON prefix, spaces, ``"}``
  (:func:`~.hostile_bodies.inflating_body`, compressed once per size and variant, without ever holding
  the inflated bytes).
- ``deep_json``: a 200 ``application/json`` body nested :data:`~.hostile_bodies.DEEP_JSON_DEPTH` levels
  deep: ``[[[...]]]``, ``{"a":{"a":...}}``, or the nesting as the value of ``hash`` / ``progressValue``.
- ``dripping_body``: the status line and headers with a ``Content-Length``, then one byte every ``interval``
  seconds (the answer is padded with :data:`~.hostile_bodies.DRIP_PAD` leading spaces, so it never
  completes in a test), until the client hangs up or ``seconds`` have passed; then the connection closes.
  On the download the bytes are the artifact's (from the requested ``Range``), so a resume continues where
  the drip stopped.
- ``silent``: the request is read, then nothing is sent for ``seconds`` (longer than any read timeout),
  unless the client hangs up first; then the connection closes. Nothing reaches the service.
- ``non_finite_progress``: a 200 whose ``progressValue`` is not a finite number but reads like one
  (:data:`~.hostile_bodies.NON_FINITE_PROGRESS`: ``Infinity``, ``NaN``, ``1e999``, ``"inf"``, ``"1_0_0"``,
  Arabic-Indic digits...), with ``status: RUNNING``.
- ``echoed_key``: the answer echoes the ``CEX-API-KEY`` the request carried
  (:data:`~.hostile_bodies.ECHO_VARIANTS`): a redirect (``status``) to the same URL with ``?k=<key>``, to
  ``file:///<key>`` or to ``http://<key>@host/...``; an error ``status`` whose body holds the key; a
  download named ``<key>.pdf``; a progress answer whose ``message``, or a failure whose ``errorMessage``,
  holds the key.

Start-endpoint faults that spoil the *answer* (``truncated_body``, ``reset_mid_body``, ``non_json``,
``wrong_json``, ``inflating_body``, ``deep_json``, ``dripping_body``, ``echoed_key``) happen after the export
was started, the worst case for a client: the service did the work but the client cannot read the hash, and
must not start a second export by retrying.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, ENDPOINT_NAMES, EXPORT_PROGRESS, START_EXPORT

from .hostile_bodies import (
    DEEP_JSON_VARIANTS,
    DRIP_INTERVAL,
    ECHO_ERRORS,
    ECHO_REDIRECTS,
    ECHO_VARIANTS,
    HANG_SECONDS,
    INFLATE_ENCODINGS,
    INFLATE_ERROR_STATUSES,
    INFLATE_SIZE,
    NON_FINITE_PROGRESS,
)

_ALL = ENDPOINT_NAMES
_JSON = (START_EXPORT, EXPORT_PROGRESS)

APPLIES_TO: dict[str, tuple[str, ...]] = {
    "status": _ALL,
    "reset_before_headers": _ALL,
    "stall_before_headers": _ALL,
    "truncated_body": _ALL,
    "reset_mid_body": _ALL,
    "non_json": _JSON,
    "wrong_json": _JSON,
    "progress_backwards": (EXPORT_PROGRESS,),
    "progress_over_100": (EXPORT_PROGRESS,),
    "redirect_loop": _ALL,
    "redirect_foreign": _ALL,
    "huge_error_body": _ALL,
    "hostile_filename": (DOWNLOAD_EXPORT,),
    "inflating_body": _ALL,
    "deep_json": _JSON,
    "dripping_body": _ALL,
    "silent": _ALL,
    "non_finite_progress": (EXPORT_PROGRESS,),
    "echoed_key": _ALL,
}
CHAOS_KINDS: tuple[str, ...] = tuple(APPLIES_TO)

HOSTILE_KINDS: tuple[str, ...] = (
    "inflating_body",
    "deep_json",
    "dripping_body",
    "silent",
    "non_finite_progress",
    "echoed_key",
)
"""The answers of a hostile service; a :class:`ChaosSchedule` draws them only when named in its ``kinds``."""
SCHEDULED_KINDS: tuple[str, ...] = tuple(k for k in CHAOS_KINDS if k not in HOSTILE_KINDS)
"""What a :class:`ChaosSchedule` draws from by default (the same faults for a seed as before they came)."""

#: Kinds answered before the request reaches the service (no key check, no export started).
BEFORE_SERVICE = frozenset(
    {"status", "reset_before_headers", "stall_before_headers", "redirect_loop", "redirect_foreign", "silent"}
)

NON_JSON_BODIES: tuple[tuple[str, bytes], ...] = (
    ("text/html", b"<html><body><h1>Welcome to nginx!</h1></body></html>"),
    ("text/plain", b"OK"),
    ("application/json", b""),
    ("application/octet-stream", b"\xff\xfe\x00\x01garbage\x80"),
    ("application/json", b'{"hash": "abc'),
    ("application/json", b"\xef\xbb\xbf{]"),
)

WRONG_JSON: dict[str, tuple[Any, ...]] = {
    START_EXPORT: (
        {"hash": 123},
        {"hash": None},
        [],
        "abc",
        {"hash": ""},
        {"hash": "../../admin?x=1#f"},
        {"hash": {"$ne": 1}},
        {"hash": "a" * 10_000},
        {"result": "no hash here"},
        {"hash": True},
        {"hash": "ab\r\nX-Injected: 1"},
        {"hash": ".."},
    ),
    EXPORT_PROGRESS: (
        {"progressValue": "fifty"},
        {"progressValue": None},
        {"progressValue": [50]},
        {"progressValue": True},
        [],
        "RUNNING",
        {},
        {"progressValue": {"value": 50}},
        42,
        {"progressValue": "NaN"},
        {"progressValue": 10, "status": ["FAILED"]},
    ),
}

OVER_100: tuple[Any, ...] = (150, 1e308, "250", 100.5, 10**30)


HOSTILE_DISPOSITIONS: tuple[str, ...] = (
    'attachment; filename="../../x.pdf"',
    'attachment; filename="/etc/passwd"',
    "attachment; filename*=UTF-8''..%2F..%2F..%2Ftmp%2Fx.pdf",
    "attachment; filename*=UTF-8''a%00b.pdf",
    "attachment; filename*=UTF-8''line%0D%0Abreak%07bell%1B%5B31m.pdf",
    'attachment; filename="' + "A" * 10_000 + '.pdf"',
    'attachment; filename="CON"',
    'attachment; filename="nul.pdf"',
    'attachment; filename="COM1.tar.gz"',
    'attachment; filename=".."',
    'attachment; filename="."',
    'attachment; filename=""',
    "attachment; filename*=UTF-8''%E2%80%AEfdp.exe",
    'attachment; filename="C:\\\\Windows\\\\system32\\\\x.dll"',
    'attachment; filename=".bashrc"',
    "attachment; filename*=UTF-8''" + "%F0%9F%98%80" * 200 + ".pdf",
)


@dataclass(frozen=True)
class Chaos:
    """One spoiled answer. Fields not used by ``kind`` are ignored.

    :param kind: one of :data:`CHAOS_KINDS`.
    :param status: HTTP status for ``status`` and ``huge_error_body``; redirect status for redirects.
    :param retry_after: ``Retry-After`` header for ``status`` (verbatim), None for none.
    :param seconds: how long ``stall_before_headers`` stalls, ``silent`` stays silent and ``dripping_body``
        drips at most.
    :param variant: which of the kind's bodies/values/names to use (modulo their number).
    :param size: body size for ``huge_error_body``; inflated size for ``inflating_body``.
    :param fraction: how much of the body ``truncated_body``/``reset_mid_body`` send, in [0, 1).
    :param target: origin for ``redirect_foreign`` (``http://127.0.0.1:PORT``).
    :param interval: seconds between two bytes of ``dripping_body``.
    """

    kind: str
    status: int = 503
    retry_after: str | None = None
    seconds: float = 1.0
    variant: int = 0
    size: int = 20 * 1024 * 1024
    fraction: float = 0.5
    target: str | None = None
    interval: float = DRIP_INTERVAL

    def __post_init__(self) -> None:
        if self.kind not in APPLIES_TO:
            raise ValueError(f"unknown chaos kind {self.kind!r}; expected one of {', '.join(CHAOS_KINDS)}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {self.fraction}")
        if self.seconds < 0 or self.size < 0:
            raise ValueError("seconds and size must be >= 0")
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0, got {self.interval}")
        if self.kind == "redirect_foreign" and not self.target:
            raise ValueError("redirect_foreign needs a target origin, e.g. a second emulator's base_url")


def random_chaos(rng: random.Random, endpoint: str, kind: str, *, foreign_origin: str | None = None) -> Chaos:
    """A :class:`Chaos` of ``kind`` for ``endpoint`` with parameters drawn from ``rng``."""
    if endpoint not in APPLIES_TO[kind]:
        raise ValueError(f"chaos kind {kind!r} does not apply to {endpoint!r}")
    if kind == "status":
        status = rng.choice((429, 429, 500, 502, 503, 504))
        retry_after = None
        if status in (429, 503):
            retry_after = rng.choice(("0", "1", formatdate(time.time() + 0.5, usegmt=True), None))
        return Chaos(kind, status=status, retry_after=retry_after)
    if kind == "stall_before_headers":
        return Chaos(kind, seconds=rng.uniform(0.8, 1.5))
    if kind in ("truncated_body", "reset_mid_body"):
        return Chaos(kind, fraction=rng.uniform(0.0, 0.95))
    if kind == "non_json":
        return Chaos(kind, variant=rng.randrange(len(NON_JSON_BODIES)))
    if kind == "wrong_json":
        return Chaos(kind, variant=rng.randrange(len(WRONG_JSON[endpoint])))
    if kind == "progress_over_100":
        return Chaos(kind, variant=rng.randrange(len(OVER_100)))
    if kind in ("redirect_loop", "redirect_foreign"):
        status = rng.choice((301, 302, 303, 307, 308))
        return Chaos(kind, status=status, target=foreign_origin)
    if kind == "huge_error_body":
        return Chaos(kind, status=rng.choice((400, 404, 500, 502)), size=rng.randint(8, 40) * 1024 * 1024)
    if kind == "hostile_filename":
        return Chaos(kind, variant=rng.randrange(len(HOSTILE_DISPOSITIONS)))
    return _random_hostile(rng, endpoint, kind)


def _random_hostile(rng: random.Random, endpoint: str, kind: str) -> Chaos:
    if kind == "inflating_body":
        variant = rng.randrange(len(INFLATE_ENCODINGS))
        status = rng.choice(INFLATE_ERROR_STATUSES) if endpoint == DOWNLOAD_EXPORT else 200
        return Chaos(kind, status=status, variant=variant, size=INFLATE_SIZE)
    if kind == "deep_json":
        return Chaos(kind, variant=rng.randrange(DEEP_JSON_VARIANTS))
    if kind == "dripping_body":
        return Chaos(kind, interval=DRIP_INTERVAL, seconds=HANG_SECONDS)
    if kind == "silent":
        return Chaos(kind, seconds=HANG_SECONDS)
    if kind == "non_finite_progress":
        return Chaos(kind, variant=rng.randrange(len(NON_FINITE_PROGRESS)))
    if kind == "echoed_key":
        variants = ECHO_VARIANTS[endpoint]
        variant = rng.randrange(len(variants))
        statuses = ECHO_REDIRECTS if variants[variant].startswith("redirect") else ECHO_ERRORS
        return Chaos(kind, variant=variant, status=rng.choice(statuses[endpoint]))
    return Chaos(kind)


@dataclass(frozen=True)
class ChaosSchedule:
    """Spoil each request with probability ``rate``; the n-th request to an endpoint is reproducible.

    :param seed: any integer; the same seed gives the same faults in the same per-endpoint order.
    :param rate: probability in [0, 1] that a request is spoiled.
    :param kinds: kinds to draw from (default: :data:`SCHEDULED_KINDS`, every kind but the
        :data:`HOSTILE_KINDS`, those that apply to the endpoint; ``redirect_foreign`` only when
        ``foreign_origin`` is set).
    :param foreign_origin: origin for ``redirect_foreign``.
    """

    seed: int
    rate: float = 0.3
    kinds: tuple[str, ...] = SCHEDULED_KINDS
    foreign_origin: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")
        unknown = set(self.kinds) - set(CHAOS_KINDS)
        if unknown:
            raise ValueError(
                f"unknown chaos kinds {sorted(unknown)}; expected some of {', '.join(CHAOS_KINDS)}"
            )


def scheduled_chaos(schedule: ChaosSchedule, endpoint: str, n: int) -> Chaos | None:
    """The fault (or None) the ``n``-th request (0-based) to ``endpoint`` gets under ``schedule``."""
    rng = random.Random(f"{schedule.seed}/{endpoint}/{n}")
    if rng.random() >= schedule.rate:
        return None
    kinds = [
        k
        for k in schedule.kinds
        if endpoint in APPLIES_TO[k] and (k != "redirect_foreign" or schedule.foreign_origin)
    ]
    if not kinds:
        return None
    return random_chaos(rng, endpoint, rng.choice(kinds), foreign_origin=schedule.foreign_origin)


# ------------------------------------------------------------------------------------ wire helpers


def reset_socket(sock: socket.socket | None) -> None:
    """Make the next close of ``sock`` send a TCP RST instead of a FIN (SO_LINGER with a zero timeout)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def spoil_progress(payload: Any, kind: str, variant: int) -> Any:
    """The progress answer with its value moved backwards (``progress_backwards``) or past 100, never DONE."""
    if not isinstance(payload, dict) or payload.get("status") == "FAILED":
        return payload
    spoiled = dict(payload)
    value = spoiled.get("progressValue", 0)
    if kind == "progress_backwards":
        spoiled["progressValue"] = max(0, int(value) - 40)
    else:
        spoiled["progressValue"] = OVER_100[variant % len(OVER_100)]
    spoiled["status"] = "RUNNING"
    return spoiled


def wrong_json_body(endpoint: str, variant: int) -> bytes:
    values = WRONG_JSON[endpoint]
    return json.dumps(values[variant % len(values)]).encode("utf-8")

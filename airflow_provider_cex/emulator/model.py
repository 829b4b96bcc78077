"""The emulator's export model: started exports, their progress or failure, and the request counts and log.

No I/O and no aiohttp; every method is thread-safe through the model's own lock.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from airflow_provider_cex.endpoints import ENDPOINT_NAMES

UNKNOWN_ENDPOINT = "unknown"
"""Endpoint name recorded for requests that match no route (they are logged but not counted)."""

DEFAULT_FAILURE_MESSAGE = "Export failed: page tree could not be rendered"
FAILURE_PROGRESS = 50
"""A failing export fails once its progress would reach this value (at once when export_seconds is 0)."""


def spread_fraction(page_id: str) -> float:
    """Deterministic pseudo-random fraction in [0, 1) for a page id: the top 53 bits of its SHA-256 / 2**53.

    An export of that page takes ``export_seconds + spread_fraction(page_id) * export_seconds_spread``; over
    many page ids the fractions are uniform, and the same page id gets the same one in every emulator.
    """
    digest = hashlib.sha256(str(page_id).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered.

    :param endpoint: ``start_export``, ``export_progress``, ``download_export``, or ``unknown`` (no route).
    :param method: HTTP method.
    :param path: request path, without the query string.
    :param had_api_key: whether a ``CEX-API-KEY`` header was present at all, whatever its value.
    :param status: HTTP status of the answer.
    """

    endpoint: str
    method: str
    path: str
    had_api_key: bool
    status: int


@dataclass(frozen=True)
class ExportInfo:
    """An export the emulator started.

    :param export_hash: the hash returned to the client.
    :param page_id: the page id from the URL.
    :param body: the JSON request body.
    :param started_at: ``time.monotonic()`` when it was started.
    """

    export_hash: str
    page_id: str
    body: dict[str, Any]
    started_at: float


class Progress(NamedTuple):
    """Where an export stands: its progress value, the failure message once it failed, its page id."""

    value: int
    failure: str | None
    page_id: str


@dataclass
class _ExportState:
    info: ExportInfo
    started_wall: float  # time.time() at start, for the admin route (info.started_at is monotonic)
    spread_fraction: float  # spread_fraction(page_id), computed once
    failure_message: str | None = None  # set once the failure was observed, so it sticks


def _check_seconds(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


class ExportModel:
    """Exports, failing pages, export speed, request counts and log, behind one lock."""

    def __init__(self, export_seconds: float, export_seconds_spread: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._export_seconds = _check_seconds("export_seconds", export_seconds)
        self._export_seconds_spread = _check_seconds("export_seconds_spread", export_seconds_spread)
        self._exports: dict[str, _ExportState] = {}
        self._failing: dict[str, str] = {}
        self._counts = dict.fromkeys(ENDPOINT_NAMES, 0)
        self._records: list[RequestRecord] = []

    # ------------------------------------------------------------------ export speed

    @property
    def export_seconds(self) -> float:
        with self._lock:
            return self._export_seconds

    @export_seconds.setter
    def export_seconds(self, value: float) -> None:
        checked = _check_seconds("export_seconds", value)
        with self._lock:
            self._export_seconds = checked

    @property
    def export_seconds_spread(self) -> float:
        with self._lock:
            return self._export_seconds_spread

    @export_seconds_spread.setter
    def export_seconds_spread(self, value: float) -> None:
        checked = _check_seconds("export_seconds_spread", value)
        with self._lock:
            self._export_seconds_spread = checked

    # ------------------------------------------------------------------ exports

    def start(self, page_id: str, body: dict[str, Any]) -> ExportInfo:
        """Start an export of ``page_id`` now; returns it with its new hash."""
        info = ExportInfo(
            export_hash=uuid.uuid4().hex, page_id=page_id, body=body, started_at=time.monotonic()
        )
        state = _ExportState(info=info, started_wall=time.time(), spread_fraction=spread_fraction(page_id))
        with self._lock:
            self._exports[info.export_hash] = state
        return info

    def evaluate(self, export_hash: str, now: float) -> Progress | None:
        """The export's progress at ``now`` (``time.monotonic()``), or None for an unknown hash."""
        with self._lock:
            state = self._exports.get(export_hash)
            if state is None:
                return None
            seconds = self._duration(state)
            elapsed = now - state.info.started_at
            progress = 100 if seconds <= 0 else min(100, int(elapsed / seconds * 100))
            failure_at = FAILURE_PROGRESS if seconds > 0 else 0
            if state.failure_message is None:
                message = self._failing.get(state.info.page_id)
                if message is not None and progress >= failure_at:
                    state.failure_message = message
            if state.failure_message is not None:
                return Progress(failure_at, state.failure_message, state.info.page_id)
            return Progress(progress, None, state.info.page_id)

    def _duration(self, state: _ExportState) -> float:
        """Seconds this export takes to reach 100 (caller holds the lock)."""
        return self._export_seconds + state.spread_fraction * self._export_seconds_spread

    def exports(self) -> dict[str, ExportInfo]:
        """Started exports by hash (a copy; bodies are deep copies)."""
        with self._lock:
            infos = [state.info for state in self._exports.values()]
        return {
            info.export_hash: ExportInfo(
                info.export_hash, info.page_id, copy.deepcopy(info.body), info.started_at
            )
            for info in infos
        }

    def timeline(self) -> dict[str, dict[str, Any]]:
        """Per hash: page id, ``started_at`` and ``done_at`` (``time.time()``; None for a failing export)."""
        with self._lock:
            timeline: dict[str, dict[str, Any]] = {}
            for export_hash, state in self._exports.items():
                failing = state.failure_message is not None or state.info.page_id in self._failing
                timeline[export_hash] = {
                    "page_id": state.info.page_id,
                    "started_at": state.started_wall,
                    "done_at": None if failing else state.started_wall + self._duration(state),
                }
        return timeline

    def fail_pages(self, page_ids: Iterable[str | int], message: str) -> None:
        with self._lock:
            for page_id in page_ids:
                self._failing[str(page_id)] = message

    def clear_failing_pages(self) -> None:
        with self._lock:
            self._failing.clear()

    # ------------------------------------------------------------------ request counts and log

    def count(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def reset_counters(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(ENDPOINT_NAMES, 0)
            self._records = []

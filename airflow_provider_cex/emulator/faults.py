"""What spoils the emulator's next request: one tagged :class:`Fault` type and one queue per endpoint.

:meth:`FaultQueues.take` decides, per request, in this order: a refusal window (every endpoint), then the
endpoint's queue (a running outage sits at its head; then injected statuses, chaos and download faults in
the order they were armed), then the seeded :class:`~.chaos.ChaosSchedule`. No I/O and no aiohttp.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from dataclasses import dataclass

from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, ENDPOINT_NAMES

from .chaos import APPLIES_TO, BEFORE_SERVICE, CHAOS_KINDS, Chaos, ChaosSchedule, scheduled_chaos

#: Ways a download can go wrong (see ``ContentExporterEmulator.download_fault``).
DOWNLOAD_FAULTS = ("truncate", "stall", "ignore_range", "wrong_range", "chunked", "chunked_truncate")

REFUSE = "refuse"
"""Kind of the refusal window's fault: a request on a kept-alive connection gets its connection reset."""
ANY_ENDPOINT = "*"
"""Endpoint of the refusal window's fault: a closed port refuses every endpoint."""
FAULT_KINDS: tuple[str, ...] = (REFUSE, *CHAOS_KINDS, *DOWNLOAD_FAULTS)
"""Every kind of :class:`Fault`; ``status`` (an error answer) is what inject, outage and chaos share."""

# When a fault acts, derived from its kind (:attr:`Fault.stage`).
PROXY = "proxy"
"""Answered in front of the service: no key check, the export is not started or looked up."""
ANSWER = "answer"
"""Spoils the service's own answer (after the key check; the export was started or evaluated)."""
ARTIFACT = "artifact"
"""Spoils the artifact's body; waits for the next download that serves the artifact."""

_BODY_BREAKS = frozenset({"truncated_body", "reset_mid_body"})


@dataclass
class Fault:
    """One way to spoil requests to one endpoint, tagged by ``kind``; fields a kind does not use are ignored.

    :param kind: one of :data:`FAULT_KINDS`: ``status`` (an error answer, as ``inject``, ``outage`` and
        chaos ``status`` give), a chaos kind, a download fault of :data:`DOWNLOAD_FAULTS`, or ``refuse``.
    :param endpoint: the endpoint whose requests it spoils (:data:`ANY_ENDPOINT` for ``refuse``).
    :param remaining: how many more requests it spoils; ignored while ``until`` bounds it.
    :param until: ``time.monotonic()`` at which a time-bounded fault (an outage, a refusal window) ends;
        None for one counted by ``remaining``.
    :param status: the HTTP status of ``status``, ``huge_error_body`` and redirects.
    :param retry_after: ``Retry-After`` header of ``status`` (verbatim), None for none.
    :param seconds: how long ``stall_before_headers`` and the download fault ``stall`` stall, ``silent``
        stays silent and ``dripping_body`` drips at most.
    :param variant: which of the chaos kind's bodies, values or names (modulo their number).
    :param size: body size of ``huge_error_body``.
    :param fraction: share of the body ``truncated_body`` and ``reset_mid_body`` send, in [0, 1).
    :param target: origin of ``redirect_foreign``.
    :param after_bytes: body bytes the download faults send before they break or stall.
    :param interval: seconds between two bytes of ``dripping_body``.
    """

    kind: str
    endpoint: str
    remaining: int = 1
    until: float | None = None
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    variant: int = 0
    size: int = 0
    fraction: float = 0.5
    target: str | None = None
    after_bytes: int = 0
    interval: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")

    @property
    def stage(self) -> str:
        """When it acts: ``refuse``, :data:`PROXY`, :data:`ANSWER` or :data:`ARTIFACT`."""
        if self.kind == REFUSE:
            return REFUSE
        if self.kind in BEFORE_SERVICE:
            return PROXY
        if self.kind in DOWNLOAD_FAULTS or (self.endpoint == DOWNLOAD_EXPORT and self.kind in _BODY_BREAKS):
            return ARTIFACT  # the artifact path already knows how to break a body part-way
        return ANSWER

    @classmethod
    def from_chaos(cls, endpoint: str, chaos: Chaos, times: int = 1) -> Fault:
        return cls(
            kind=chaos.kind,
            endpoint=endpoint,
            remaining=times,
            status=chaos.status,
            retry_after=chaos.retry_after,
            seconds=chaos.seconds,
            variant=chaos.variant,
            size=chaos.size,
            fraction=chaos.fraction,
            target=chaos.target,
            interval=chaos.interval,
        )


# ---------------------------------------------------------------------------- building faults from the knobs


def check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINT_NAMES:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINT_NAMES)}")


def _check_times(times: int) -> None:
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")


def _check_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"injected status must be a 4xx or 5xx code, got {status}")


def _retry_after(retry_after: str | float | None) -> str | None:
    if retry_after is None or isinstance(retry_after, str):
        return retry_after
    return str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)


def status_fault(
    endpoint: str,
    status: int,
    retry_after: str | float | None,
    *,
    times: int = 1,
    until: float | None = None,
) -> Fault:
    """An error answer ``times`` times, or until ``until``; a numeric ``retry_after`` is in seconds."""
    check_endpoint(endpoint)
    _check_status(status)
    if until is None:
        _check_times(times)
    return Fault("status", endpoint, times, until, status=status, retry_after=_retry_after(retry_after))


def chaos_fault(endpoint: str, chaos: Chaos, times: int) -> Fault:
    check_endpoint(endpoint)
    if endpoint not in APPLIES_TO[chaos.kind]:
        raise ValueError(f"chaos kind {chaos.kind!r} does not apply to {endpoint!r}")
    _check_times(times)
    return Fault.from_chaos(endpoint, chaos, times)


def download_fault(kind: str, *, after_bytes: int, times: int, seconds: float) -> Fault:
    if kind not in DOWNLOAD_FAULTS:
        raise ValueError(f"unknown download fault {kind!r}; expected one of {', '.join(DOWNLOAD_FAULTS)}")
    if after_bytes < 0 or times < 1 or seconds < 0:
        raise ValueError("after_bytes and seconds must be >= 0 and times >= 1")
    return Fault(kind, DOWNLOAD_EXPORT, times, seconds=seconds, after_bytes=after_bytes)


# ---------------------------------------------------------------------------- the queues


class FaultQueues:
    """One FIFO queue of faults per endpoint, the refusal window and the seeded schedule; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {name: deque() for name in ENDPOINT_NAMES}
        self._refusal: Fault | None = None
        self._schedule: ChaosSchedule | None = None
        self._schedule_counts = dict.fromkeys(ENDPOINT_NAMES, 0)

    def add(self, fault: Fault) -> None:
        """Queue ``fault`` behind those armed before; a time-bounded one replaces the running one, first."""
        with self._lock:
            queue = self._queues[fault.endpoint]
            if fault.until is None:
                queue.append(fault)
                return
            if queue and queue[0].until is not None:
                queue.popleft()
            queue.appendleft(fault)  # an outage answers before anything queued

    def give_back(self, fault: Fault) -> None:
        """Put back an artifact fault whose request did not serve the artifact (a 401, 404, 409, redirect).

        It goes first in line, behind a running outage, so it spoils the next download that serves the
        artifact, as ``download_fault`` promises.
        """
        with self._lock:
            queue = self._queues[fault.endpoint]
            queue.insert(1 if queue and queue[0].until is not None else 0, fault)

    def refuse(self, until: float) -> None:
        """Reset every request on a kept-alive connection until ``until`` (the port itself is closed)."""
        with self._lock:
            self._refusal = Fault(REFUSE, ANY_ENDPOINT, until=until)

    def set_schedule(self, schedule: ChaosSchedule | None) -> None:
        """Use ``schedule`` (None: none) after the queues; the per-endpoint numbering restarts at 0."""
        with self._lock:
            self._schedule = schedule
            self._schedule_counts = dict.fromkeys(ENDPOINT_NAMES, 0)

    def clear(self) -> None:
        """Drop every queued fault, outage and the schedule; a refusal window runs to its end."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self._schedule = None
            self._schedule_counts = dict.fromkeys(ENDPOINT_NAMES, 0)

    def take(self, endpoint: str, now: float) -> Fault | None:
        """The fault that spoils this request to ``endpoint`` at ``now`` (``time.monotonic()``), if any.

        A counted fault is used up by one request (the one returned has ``remaining=1``); a time-bounded one
        stays until it ends. The schedule numbers only the requests that reach it.
        """
        with self._lock:
            refusal = self._refusal
            if refusal is not None and refusal.until is not None:
                if now < refusal.until:
                    return refusal
                self._refusal = None
            queue = self._queues[endpoint]
            while queue:
                head = queue[0]
                if head.until is None:
                    head.remaining -= 1
                    if head.remaining <= 0:
                        queue.popleft()
                    return dataclasses.replace(head, remaining=1)
                if now < head.until:
                    return head
                queue.popleft()  # an outage that has ended
            if self._schedule is None:
                return None
            n = self._schedule_counts[endpoint]
            self._schedule_counts[endpoint] = n + 1
            spoil = scheduled_chaos(self._schedule, endpoint, n)
        return Fault.from_chaos(endpoint, spoil) if spoil is not None else None

"""What a user reads while an export runs, built once for the worker, the sensor and the trigger.

One line per step, page first (``page 123456: 45 % after 2 min 10 s, about 1 min left (export cd58…)``),
the outcome of each progress check (wait, done, failed, timed out), and the messages of a failed or timed
out wait. Pure: no Airflow, no I/O. Times are Unix timestamps; durations and dates go through pendulum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pendulum

if TYPE_CHECKING:
    from airflow_provider_cex.answers import ExportProgress


class Step(StrEnum):
    """The outcome of one progress check (:func:`next_step`)."""

    WAIT = "wait"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed out"


#: Where a deferred wait logs: a line when the progress moved this many points ...
LOG_EVERY_POINTS = 10.0
#: ... and at least this many seconds passed since the last line (whichever comes later) ...
LOG_EVERY_SECONDS = 30.0
#: ... and a line anyway after this long without one, so that a stalled export still shows.
LOG_AT_LEAST_SECONDS = 600.0


def next_step(reading: ExportProgress | None, *, past_deadline: bool) -> Step:
    """What a progress check means for the wait: ``reading`` is None when the service did not answer.

    A failed or complete export ends the wait even past the deadline; otherwise the deadline decides.
    The trigger tells a timeout after no answer (an outage: an error) from one after an answer.
    """
    if reading is not None:
        if reading.is_failed:
            return Step.FAILED
        if reading.is_complete:
            return Step.DONE
    return Step.TIMED_OUT if past_deadline else Step.WAIT


# --------------------------------------------------------------------------- formatting


def clamp_percent(progress: Any) -> float:
    """``progress`` as a number in 0-100 (anything that is not a finite number counts as 0)."""
    try:
        value = float(progress)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(value):
        return 0.0
    return min(max(value, 0.0), 100.0)


def percent(progress: Any) -> str:
    """``45 %``: whole points, rounded down, so ``100 %`` means complete (99.96 shows ``99 %``)."""
    return f"{math.floor(clamp_percent(progress))} %"


def duration(seconds: float) -> str:
    """``45 s``, ``2 min 10 s``, ``1 h 5 min``, ``2 d 3 h``: two units at most, whole seconds."""
    span = pendulum.duration(seconds=max(round(seconds), 0))
    if span.days:
        return _two(span.days, "d", span.hours, "h")
    if span.hours:
        return _two(span.hours, "h", span.minutes, "min")
    if span.minutes:
        return _two(span.minutes, "min", span.remaining_seconds, "s")
    return f"{span.remaining_seconds} s"


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big} {big_unit} {small} {small_unit}" if small else f"{big} {big_unit}"


def estimate(seconds: float) -> str:
    """A time left, as precise as an estimate is: ``about 40 s``, ``about 3 min``, ``about 1 h 20 min``."""
    if seconds < 10:
        return "less than 10 s"
    if seconds < 60:
        return f"about {math.ceil(seconds / 10) * 10} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    if seconds < 86400:
        return f"about {duration(round(seconds / 600) * 600)}"
    return f"about {duration(round(seconds / 3600) * 3600)}"


def short_duration(seconds: float) -> str:
    """A download's time: tenths under 10 s (``0.4 s``), else as :func:`duration`."""
    return f"{max(seconds, 0.0):.1f} s" if seconds < 9.95 else duration(seconds)


def size(n_bytes: float) -> str:
    """``512 B``, ``1.2 kB``, ``3.4 MB``, ``1.1 GB`` (decimal units, as the speeds)."""
    value = float(max(n_bytes, 0))
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 999.95 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def timestamp(value: Any) -> float | None:
    """A Unix timestamp from a number, an ISO 8601 text or a datetime; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        if isinstance(value, str):
            parsed = pendulum.parse(value)
            return float(parsed.timestamp()) if isinstance(parsed, pendulum.DateTime) else None
        return float(pendulum.instance(value).timestamp())
    except Exception:  # a start time is a nicety for the log: never a reason to fail
        return None


def iso(at: float) -> str:
    """An ISO 8601 UTC text of a Unix timestamp (for XCom: JSON has no dates)."""
    return pendulum.from_timestamp(at, tz="UTC").to_iso8601_string()


# --------------------------------------------------------------------------- one export being watched


@dataclass
class ExportWatch:
    """One export as a wait sees it: which page, since when, and the progress seen so far.

    ``started_at`` is when the export started, or the best stand-in known (the sensor's first poke);
    elapsed times count from it. With ``zero_at_start`` (the default) the export was at 0 % then, and that
    is the first point of the rate; otherwise, or without ``started_at``, the first progress seen is. Only
    two points are kept, the first and the last, so a trigger watching for hours holds no more than one
    watching for a minute.

    :param export_hash: the export.
    :param page_id: the exported page, when known: lines then start with it.
    :param started_at: Unix time the export (or the wait) started, when known.
    :param zero_at_start: whether the progress was 0 at ``started_at`` (true of the export's start).
    """

    export_hash: str
    page_id: str | None = None
    started_at: float | None = None
    zero_at_start: bool = True
    first: tuple[float, float] | None = None
    last: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.page_id is not None:
            self.page_id = str(self.page_id)
        if self.started_at is not None and self.zero_at_start and self.first is None:
            self.first = (self.started_at, 0.0)

    # -------------------------------------------------------------- what was seen

    def observe(self, progress: Any, at: float | None = None) -> None:
        """Record a reading of ``progress`` (0-100) taken at ``at`` (default: now)."""
        point = (time.time() if at is None else at, clamp_percent(progress))
        if self.first is None:
            self.first = point
        self.last = point

    @property
    def progress(self) -> float | None:
        """The last progress seen (0-100), or None before the first reading."""
        return None if self.last is None else self.last[1]

    def elapsed(self, at: float | None = None) -> float | None:
        """Seconds since the export started, at ``at`` (default: the last reading, else now)."""
        if self.started_at is None:
            return None
        if at is None:
            at = self.last[0] if self.last is not None else time.time()
        return max(at - self.started_at, 0.0)

    def seconds_left(self) -> float | None:
        """Time to 100 % at the rate seen from the first point to the last; None before it moved."""
        if self.first is None or self.last is None:
            return None
        (t0, p0), (t1, p1) = self.first, self.last
        if p1 <= p0 or t1 <= t0:
            return None
        return (100.0 - p1) * (t1 - t0) / (p1 - p0)

    # -------------------------------------------------------------- lines

    @property
    def subject(self) -> str:
        return f"page {self.page_id}" if self.page_id else f"export {self.export_hash}"

    @property
    def tail(self) -> str:
        return f" (export {self.export_hash})" if self.page_id else ""

    def say(self, text: str) -> str:
        """``page 123456: <text> (export <hash>)``, or ``export <hash>: <text>`` when the page is unknown."""
        return f"{self.subject}: {text}{self.tail}"

    def _after(self, at: float | None = None) -> str:
        elapsed = self.elapsed(at)
        return "" if elapsed is None else f" after {duration(elapsed)}"

    def line(self, at: float | None = None) -> str:
        """The progress line of the last reading: percent, elapsed, and the time left or that it is done."""
        progress = self.progress
        if progress is None:
            return self.say(f"no progress seen yet{self._after(at)}")
        if progress >= 100.0:
            return self.say(f"100 %{self._after(at)}, complete")
        left = self.seconds_left()
        outlook = "no estimate yet" if left is None else f"{estimate(left)} left"
        return self.say(f"{percent(progress)}{self._after(at)}, {outlook}")

    def started_line(self, page_url: str | None = None) -> str:
        """The one line when an export starts: the page, its Confluence link when known, the hash."""
        link = f", {page_url}" if page_url else ""
        return self.say(f"export started{link}")

    def unavailable_line(self, error: object) -> str:
        return self.say(f"progress unavailable, will check again: {error}")

    def saved_line(
        self,
        where: str,
        size_bytes: int,
        seconds: float,
        sha256: str,
        replaced_bytes: int | None = None,
    ) -> str:
        """The one line when the file landed: where, how big, how fast, and what it replaced."""
        replaced = "" if replaced_bytes is None else f" (it replaced a file of {size(replaced_bytes)})"
        speed = size(size_bytes / max(seconds, 1e-6))
        return self.say(
            f"saved {where}{replaced}, {size(size_bytes)} in {short_duration(seconds)} at {speed}/s, "
            f"sha256 {sha256}"
        )

    # -------------------------------------------------------------- messages of errors

    def failed_message(self, server_message: str | None, at: float | None = None) -> str:
        """A failed export: the page, the progress it reached, when, the server's reason, the hash."""
        reached = "" if self.progress is None else f" at {percent(self.progress)}"
        reason = _without_failed_prefix(server_message) or "the service gave no reason"
        return f"{self.subject}: the export failed{reached}{self._after(at)}: {reason}{self.tail}"

    def timed_out_message(
        self, timeout: float | None = None, *, unanswered: bool = False, at: float | None = None
    ) -> str:
        """A wait that ran out of time: the page, the progress reached, how long, the hash."""
        reached = "" if self.progress is None else f" at {percent(self.progress)}"
        limit = "" if timeout is None else f", past its timeout of {duration(timeout)}"
        why = ", the service had not answered the last progress check" if unanswered else ""
        return f"{self.subject}: the wait timed out{reached}{self._after(at)}{limit}{why}{self.tail}"

    # -------------------------------------------------------------- across processes

    def facts(self) -> dict[str, Any]:
        """What a trigger event carries, beside the progress, so that the task resumed on a worker says the
        same: the page, the start and the time of the last reading (only what is known)."""
        facts: dict[str, Any] = {}
        if self.page_id:
            facts["page_id"] = self.page_id
        if self.started_at is not None:
            facts["started_at"] = self.started_at
            if self.last is not None:
                facts["at"] = self.last[0]
        return facts

    @classmethod
    def from_facts(cls, export_hash: str, facts: dict[str, Any]) -> ExportWatch:
        """The watch a trigger event describes (an event of an older trigger has no page or start: fine)."""
        page_id = facts.get("page_id")
        watch = cls(
            export_hash,
            page_id=str(page_id) if page_id not in (None, "") else None,
            started_at=timestamp(facts.get("started_at")),
        )
        if facts.get("progress") is not None:
            watch.observe(facts["progress"], timestamp(facts.get("at")))
        return watch

    def log_due(self, logged: tuple[float, float] | None, now: float) -> bool:
        """Whether a deferred wait logs the last reading, ``logged`` being (when, progress) of its last line.

        The first reading always; then when the progress moved :data:`LOG_EVERY_POINTS` **and**
        :data:`LOG_EVERY_SECONDS` passed, or after :data:`LOG_AT_LEAST_SECONDS` without a line.
        """
        if logged is None:
            return True
        since = now - logged[0]
        if since >= LOG_AT_LEAST_SECONDS:
            return True
        progress = self.progress
        moved = progress is not None and progress >= logged[1] + LOG_EVERY_POINTS
        return moved and since >= LOG_EVERY_SECONDS


def _without_failed_prefix(server_message: str | None) -> str | None:
    """The server's reason without a leading "Export failed:" (the line already says the export failed)."""
    if not server_message:
        return server_message
    import re

    reason = re.sub(r"^\s*(the\s+)?export\s+failed\s*[:.-]\s*", "", server_message, flags=re.IGNORECASE)
    return reason or server_message

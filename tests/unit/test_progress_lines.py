"""The lines a user reads while an export runs (airflow_provider_cex.progress): no Airflow, no service."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pendulum
import pytest

from airflow_provider_cex.answers import ExportProgress
from airflow_provider_cex.progress import (
    LOG_AT_LEAST_SECONDS,
    ExportWatch,
    Step,
    clamp_percent,
    duration,
    estimate,
    iso,
    next_step,
    percent,
    size,
    timestamp,
)

HASH = "cd58a1f0e2b34c5d"
T0 = 1_800_000_000.0  # the export started here


def watch(**kwargs: object) -> ExportWatch:
    return ExportWatch(HASH, **{"page_id": "123456", "started_at": T0, **kwargs})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the progress line


def test_the_line_names_the_page_first_then_percent_elapsed_estimate_and_hash():
    w = watch()
    w.observe(45, T0 + 130)
    # 45 points in 130 s: 55 more take about 159 s
    assert w.line() == f"page 123456: 45 % after 2 min 10 s, about 3 min left (export {HASH})"


def test_the_estimate_comes_from_the_rate_seen_so_far():
    w = ExportWatch(HASH, page_id="7")  # start unknown: the first reading is the first point
    w.observe(20, T0)
    w.observe(30, T0 + 60)  # 10 points a minute: 70 more take 7 min
    assert w.seconds_left() == pytest.approx(420)
    assert w.line().endswith(f", about 7 min left (export {HASH})")
    w.observe(80, T0 + 120)  # faster now: 60 points in 120 s over the whole wait, 20 more take 40 s
    assert w.seconds_left() == pytest.approx(40)
    assert ", about 40 s left" in w.line()


def test_no_estimate_yet_before_two_points_with_the_progress_moving():
    w = ExportWatch(HASH, page_id="7")
    w.observe(10, T0)
    assert w.line() == f"page 7: 10 %, no estimate yet (export {HASH})"  # one point, no start known
    w.observe(10, T0 + 30)
    assert "no estimate yet" in w.line()  # two points, the progress did not move
    started = watch()
    started.observe(0, T0 + 20)
    assert "0 % after 20 s, no estimate yet" in started.line()  # the start (0 %) and 0 %: not moving


def test_the_start_of_the_export_counts_as_a_point_at_zero():
    w = watch()
    w.observe(10, T0 + 60)  # one reading, but the export was at 0 % when it started
    assert w.seconds_left() == pytest.approx(540)
    assert ", about 9 min left" in w.line()


def test_a_stand_in_start_counts_the_time_but_is_no_point_of_the_rate():
    """The sensor's first poke when no start task recorded the export's start: not known to be at 0 %."""
    w = watch(zero_at_start=False)
    w.observe(40, T0 + 1)
    assert w.line() == f"page 123456: 40 % after 1 s, no estimate yet (export {HASH})"
    w.observe(50, T0 + 11)  # 10 points in 10 s: 50 more take 50 s
    assert w.line() == f"page 123456: 50 % after 11 s, about 50 s left (export {HASH})"


def test_at_100_percent_the_line_says_complete():
    w = watch()
    w.observe(100, T0 + 182)
    assert w.line() == f"page 123456: 100 % after 3 min 2 s, complete (export {HASH})"


def test_progress_is_clamped_and_never_shows_100_before_it_is_complete():
    assert [clamp_percent(v) for v in (-5, 150, math.nan, math.inf, "x", None)] == [0, 100, 0, 0, 0, 0]
    assert percent(99.96) == "99 %" and percent(100) == "100 %" and percent(-1) == "0 %"
    w = watch()
    w.observe(130, T0 + 10)
    assert w.progress == 100.0 and "100 % after 10 s, complete" in w.line()


def test_without_a_page_the_line_starts_with_the_export():
    w = ExportWatch(HASH, started_at=T0)
    w.observe(50, T0 + 30)
    assert w.line() == f"export {HASH}: 50 % after 30 s, about 30 s left"


def test_an_estimate_never_goes_negative_and_a_reading_before_the_start_is_ignored_for_the_rate():
    w = watch()
    w.observe(50, T0 - 10)  # a clock behind the recorded start
    assert w.seconds_left() is None and w.elapsed() == 0.0


# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.4, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (130, "2 min 10 s"),
        (3600, "1 h"),
        (3900, "1 h 5 min"),
        (7261, "2 h 1 min"),
        (86400 * 2 + 3 * 3600 + 59, "2 d 3 h"),
        (-5, "0 s"),
    ],
)
def test_durations_use_two_units_at_most(seconds, text):
    assert duration(seconds) == text


def test_durations_agree_with_pendulum():
    span = pendulum.duration(hours=1, minutes=5, seconds=30)
    assert duration(span.total_seconds()) == "1 h 5 min"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3, "less than 10 s"),
        (10, "about 10 s"),
        (41, "about 50 s"),
        (159, "about 3 min"),
        (4800, "about 1 h 20 min"),
        (90000, "about 1 d 1 h"),
    ],
)
def test_estimates_are_rounded_as_an_estimate_deserves(seconds, text):
    assert estimate(seconds) == text


def test_sizes_in_human_units():
    assert [size(n) for n in (0, 999, 1000, 2_100_000, 3_500_000_000)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "2.1 MB",
        "3.5 GB",
    ]


def test_timestamps_from_xcom_text_datetimes_and_numbers():
    when = pendulum.datetime(2026, 11, 26, 8, 30, tz="UTC")
    assert timestamp(iso(when.timestamp())) == when.timestamp()
    assert iso(when.timestamp()) == "2026-11-26T08:30:00Z"
    assert timestamp(datetime(2026, 11, 26, 8, 30, tzinfo=UTC)) == when.timestamp()
    assert timestamp(when.timestamp()) == when.timestamp()
    assert [timestamp(v) for v in (None, "not a date", math.nan, True, object())] == [None] * 5


# --------------------------------------------------------------------------- start, finish, failure, timeout


def test_the_start_line_has_the_page_its_link_and_the_hash():
    link = "https://acme.atlassian.net/wiki/pages/viewpage.action?pageId=123456"
    assert watch().started_line(link) == f"page 123456: export started, {link} (export {HASH})"
    assert watch().started_line(None) == f"page 123456: export started (export {HASH})"


def test_the_finish_line_has_the_path_size_speed_and_what_it_replaced():
    line = watch().saved_line("/data/page-123456.pdf", 2_100_000, 0.5, "ab" * 32)
    assert line == (
        f"page 123456: saved /data/page-123456.pdf, 2.1 MB in 0.5 s at 4.2 MB/s, sha256 {'ab' * 32} "
        f"(export {HASH})"
    )
    replaced = watch().saved_line("/data/p.pdf", 2_000, 125, "0" * 64, replaced_bytes=1_900_000)
    assert "saved /data/p.pdf (it replaced a file of 1.9 MB), 2.0 kB in 2 min 5 s at 16 B/s" in replaced


def test_a_failure_names_page_progress_elapsed_reason_and_hash():
    w = watch()
    w.observe(40, T0 + 65)
    assert w.failed_message("page tree could not be rendered") == (
        f"page 123456: the export failed at 40 % after 1 min 5 s: page tree could not be rendered "
        f"(export {HASH})"
    )
    assert w.failed_message(None).endswith(f": the service gave no reason (export {HASH})")


@pytest.mark.parametrize(
    ("server_message", "reason"),
    [
        ("Export failed: page tree could not be rendered", "page tree could not be rendered"),
        ("export failed - timeout in renderer", "timeout in renderer"),
        ("Export failed", "Export failed"),  # nothing else to say: kept
        ("Rendering failed: macro error", "Rendering failed: macro error"),
    ],
)
def test_a_failure_does_not_say_failed_twice(server_message, reason):
    """Not "the export failed at 40 %: Export failed: ..." (the server's own prefix is dropped)."""
    w = watch()
    w.observe(40, T0 + 65)
    assert w.failed_message(server_message) == (
        f"page 123456: the export failed at 40 % after 1 min 5 s: {reason} (export {HASH})"
    )


def test_a_timeout_names_page_progress_elapsed_limit_and_hash():
    w = watch()
    w.observe(40, T0 + 7260)
    assert w.timed_out_message(7200) == (
        f"page 123456: the wait timed out at 40 % after 2 h 1 min, past its timeout of 2 h (export {HASH})"
    )
    assert w.timed_out_message(unanswered=True).endswith(
        f"after 2 h 1 min, the service had not answered the last progress check (export {HASH})"
    )


def test_a_trigger_event_carries_what_the_resumed_task_needs_to_say_the_same():
    w = watch()
    w.observe(100, T0 + 182)
    event = {"status": "success", "export_hash": HASH, "progress": 100.0, **w.facts()}
    assert event["at"] == T0 + 182 and event["page_id"] == "123456"
    assert ExportWatch.from_facts(HASH, event).line() == w.line()
    # an older trigger's event: no page, no start
    assert ExportWatch.from_facts(HASH, {"progress": 100.0}).line() == f"export {HASH}: 100 %, complete"


# --------------------------------------------------------------------------- the decision and the log rate


def reading(progress: float, *, failed: bool = False) -> ExportProgress:
    return ExportProgress(HASH, progress, is_complete=progress >= 100 and not failed, is_failed=failed)


@pytest.mark.parametrize(
    ("got", "past_deadline", "step"),
    [
        (reading(40), False, Step.WAIT),
        (reading(40), True, Step.TIMED_OUT),
        (reading(100), True, Step.DONE),  # done in time for the last check: done
        (reading(40, failed=True), True, Step.FAILED),
        (None, False, Step.WAIT),  # no answer: check again
        (None, True, Step.TIMED_OUT),
    ],
)
def test_the_decision_after_each_progress_check(got, past_deadline, step):
    assert next_step(got, past_deadline=past_deadline) is step


def test_a_deferred_wait_logs_every_10_points_or_30_s_whichever_is_later():
    w = watch()
    w.observe(5, T0 + 1)
    assert w.log_due(None, T0 + 1)  # the first reading
    logged = (T0 + 1, 5.0)
    w.observe(30, T0 + 20)
    assert not w.log_due(logged, T0 + 20)  # 25 points, but 19 s
    w.observe(12, T0 + 60)
    assert not w.log_due(logged, T0 + 60)  # 59 s, but 7 points
    w.observe(15, T0 + 61)
    assert w.log_due(logged, T0 + 61)  # 10 points and 60 s
    w.observe(15, T0 + 1 + LOG_AT_LEAST_SECONDS)
    assert w.log_due((T0 + 1, 15.0), T0 + 1 + LOG_AT_LEAST_SECONDS)  # stalled: a line anyway

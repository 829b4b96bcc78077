"""The lines a user reads in the task log, in every mode, against the emulator over loopback.

The one-task operator waiting in the worker and deferred, the sensor in reschedule and poke mode (each
reschedule poke a fresh process: nothing kept on the task object), the trigger, and the download: one line
per step, page first, with percent, elapsed time and an estimate; the start once with its Confluence link;
the finish once with path, size and speed; failures and timeouts naming page, hash, progress and time.
Airflow 2.11 logs through ``logging``, Airflow 3 through structlog to stdout: both are read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import (
    DAG,
    AirflowSensorTimeout,
    TaskDeferred,
)

from airflow_provider_cex import progress
from airflow_provider_cex.exceptions import ContentExporterExportFailedError
from airflow_provider_cex.operators.content_exporter import (
    CONFLUENCE_PAGE_XCOM_KEY,
    ConfluencePageLink,
    ContentExporterDownloadExportOperator,
    ContentExporterStartExportOperator,
)
from airflow_provider_cex.operators.export import ContentExporterExportOperator
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor
from airflow_provider_cex.triggers.events import raise_for_event
from tests.conftest import CONN_ENV, connection_json

PAGE = "123456"
FAILING_PAGE = "666"
CONFLUENCE = "https://acme.atlassian.net/wiki"
PAGE_URL = f"{CONFLUENCE}/pages/viewpage.action?pageId={PAGE}"
#: The link's own XCom, which Airflow 3's UI reads (2.11 calls get_link, which reads confluence_page_url).
LINK_KEY = getattr(ConfluencePageLink(), "xcom_key", None)

#: A structlog console line (Airflow 3): ``<time> [info     ] <message>   [<logger>] loc=…``.
PRINTED = re.compile(r"^\S+ \[(?P<level>\w+)\s*\] (?P<message>.*?)\s+\[[\w.]+\](?: \S+=\S*)*\s*$")
PROGRESS = re.compile(
    r"^page \d+: (?P<percent>\d+) % after (?P<after>[\w ]+), (?P<outlook>.+) \(export (?P<hash>\w+)\)$"
)


# --------------------------------------------------------------------------- what the user sees


class Lines:
    """The messages logged during a test, in order, whichever way this Airflow logs them."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
        self.caplog, self.capsys, self.printed = caplog, capsys, ""

    def all(self) -> list[str]:
        out, err = self.capsys.readouterr()
        self.printed += out + err
        printed = [m["message"] for line in self.printed.splitlines() if (m := PRINTED.match(line))]
        unique = {id(record): record for record in self.caplog.records}  # seen once per handler it reached
        recorded = [record.getMessage() for record in unique.values()]
        return printed if len(printed) >= len(recorded) else recorded

    def about(self, export_hash: str) -> list[str]:
        return [line for line in self.all() if export_hash in line]

    def progress(self, export_hash: str) -> list[re.Match[str]]:
        return [m for line in self.about(export_hash) if (m := PROGRESS.match(line))]

    def clear(self) -> None:
        self.all()
        self.printed = ""
        self.caplog.clear()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[Lines]:
    # Airflow 2.11's task loggers do not propagate to the root logger, where caplog listens.
    task_logger = logging.getLogger("airflow.task")
    task_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        yield Lines(caplog, capsys)
    finally:
        task_logger.removeHandler(caplog.handler)


class FakeTI:
    """A task instance as operators use it: XComs pushed (in order) and pulled, the start of the wait."""

    def __init__(self, upstream: dict[tuple[str, str], Any] | None = None, first_poke: Any = None) -> None:
        self.pushed: dict[str, Any] = {}
        self.upstream = upstream or {}
        self.start_date = pendulum.now("UTC")
        self.first_poke = first_poke
        self.stats_tags: dict[str, str] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **kwargs: Any) -> Any:
        return self.upstream.get((task_ids, key))

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first_poke


class StateStore(dict):
    def set(self, key: str, value: Any) -> None:
        self[key] = value


@pytest.fixture
def emulator_with_link(emulator, monkeypatch: pytest.MonkeyPatch):
    """The emulator; the default connection points at it and names the Confluence site."""
    monkeypatch.setenv(CONN_ENV, connection_json(emulator.base_url, confluence_url=CONFLUENCE))
    emulator.export_seconds = 2.0
    emulator.fail_pages([FAILING_PAGE], message="page tree could not be rendered")
    return emulator


@pytest.fixture
def dag() -> DAG:
    return DAG("log_lines", schedule=None, start_date=datetime(2026, 1, 1))


def start(dag: DAG, page: str, lines: Lines) -> tuple[str, FakeTI]:
    """Run a start task; return the hash and its task instance (its XComs)."""
    task = dag.task_dict.get("start") or ContentExporterStartExportOperator(
        task_id="start", page_id=page, dag=dag
    )
    ti = FakeTI()
    export_hash = task.execute({"ti": ti})
    return export_hash, ti


def assert_progress_lines(lines: Lines, export_hash: str, *, polls: int) -> list[re.Match[str]]:
    """One line per poll, page first, percent rising to 100, elapsed time, an estimate once it moved."""
    found = lines.progress(export_hash)
    assert len(found) == polls, lines.about(export_hash)
    percents = [int(m["percent"]) for m in found]
    assert percents == sorted(percents) and percents[-1] == 100
    assert found[-1]["outlook"] == "complete"
    assert any(re.fullmatch(r"(about|less than) \d+ s left", m["outlook"]) for m in found[:-1]), found
    return found


# --------------------------------------------------------------------------- the start, once, with its link


def test_the_start_is_one_line_with_page_link_and_hash_and_the_link_is_pushed_before(
    emulator_with_link, dag, lines
):
    export_hash, ti = start(dag, PAGE, lines)
    ours = [line for line in lines.all() if "export started" in line]
    assert ours == [f"page {PAGE}: export started, {PAGE_URL} (export {export_hash})"]
    assert next(iter(ti.pushed)) == CONFLUENCE_PAGE_XCOM_KEY  # before the export started
    assert ti.pushed[CONFLUENCE_PAGE_XCOM_KEY] == PAGE_URL
    if LINK_KEY:  # Airflow 3: the UI reads this while the task runs (the runner writes it only at the end)
        assert ti.pushed[LINK_KEY] == PAGE_URL
    record = ti.pushed["export_page"]
    assert record["export_hash"] == export_hash and record["page_id"] == PAGE
    assert abs(progress.timestamp(record["started_at"]) - time.time()) < 30


def test_no_other_line_repeats_the_start(emulator_with_link, dag, lines):
    export_hash, _ti = start(dag, PAGE, lines)
    assert len(lines.about(export_hash)) == 1, lines.about(export_hash)


# --------------------------------------------------------------------------- the sensor


def poke_as_rescheduled(sensor: ContentExporterExportSensor, ti: FakeTI) -> bool:
    """One reschedule-mode poke: a new process, so nothing from an earlier poke is on the task object."""
    sensor._watch = None
    return sensor.poke({"ti": ti})


def test_sensor_in_reschedule_mode_logs_a_line_per_poke_page_first_with_estimate(
    emulator_with_link, dag, lines
):
    start_task = ContentExporterStartExportOperator(task_id="start", page_id=PAGE, dag=dag)
    sensor = ContentExporterExportSensor(task_id="wait", export_hash="{{ x }}", poke_interval=0.3, dag=dag)
    start_task >> sensor
    export_hash, start_ti = start(dag, PAGE, lines)
    sensor.export_hash = export_hash
    ti = FakeTI(upstream={("start", "export_page"): start_ti.pushed["export_page"]})
    polls = 1
    while not poke_as_rescheduled(sensor, ti):
        polls += 1
        time.sleep(0.3)
    found = assert_progress_lines(lines, export_hash, polls=polls)
    assert found[0]["hash"] == export_hash
    assert ti.pushed[CONFLUENCE_PAGE_XCOM_KEY] == PAGE_URL  # the sensor's own "Confluence page" link
    if LINK_KEY:
        assert ti.pushed[LINK_KEY] == PAGE_URL


def test_sensor_without_a_start_task_names_the_export_and_counts_from_the_first_poke(
    emulator_with_link, dag, lines
):
    export_hash, _ti = start(dag, PAGE, lines)
    sensor = ContentExporterExportSensor(task_id="wait", export_hash=export_hash, dag=dag)
    first_poke = pendulum.now("UTC").subtract(seconds=75)  # as Airflow keeps it across reschedules
    ti = FakeTI(first_poke=first_poke)
    ti.start_date = pendulum.now("UTC")  # this poke's start: not what counts
    while not poke_as_rescheduled(sensor, ti):
        time.sleep(0.3)
    last = [line for line in lines.all() if line.startswith(f"export {export_hash}: ")][-1]
    assert re.fullmatch(rf"export {export_hash}: 100 % after 1 min 1\d s, complete", last), last
    assert CONFLUENCE_PAGE_XCOM_KEY not in ti.pushed  # no page, no link


def test_sensor_without_a_start_task_gives_no_estimate_at_its_first_poke(emulator_with_link, dag, lines):
    export_hash, _ti = start(dag, PAGE, lines)
    time.sleep(0.5)  # the export has moved before the sensor's first poke: 0 % then would be a guess
    sensor = ContentExporterExportSensor(task_id="wait", export_hash=export_hash, dag=dag)
    sensor.poke({"ti": FakeTI()})  # the first poke: Airflow has no earlier one
    [line] = [line for line in lines.all() if line.startswith(f"export {export_hash}: ")]
    assert re.fullmatch(rf"export {export_hash}: \d+ % after 0 s, no estimate yet", line), line


def test_sensor_in_poke_mode_times_out_naming_page_progress_time_and_hash(emulator_with_link, dag, lines):
    emulator_with_link.export_seconds = 600
    start_task = ContentExporterStartExportOperator(task_id="start", page_id=PAGE, dag=dag)
    sensor = ContentExporterExportSensor(
        task_id="wait", export_hash="h", mode="poke", poke_interval=0.2, timeout=1, dag=dag
    )
    start_task >> sensor
    export_hash, start_ti = start(dag, PAGE, lines)
    sensor.export_hash = export_hash
    ti = FakeTI(upstream={("start", "export_page"): start_ti.pushed["export_page"]})
    with pytest.raises(AirflowSensorTimeout) as raised:
        sensor.execute({"ti": ti})
    assert re.fullmatch(
        rf"page {PAGE}: the wait timed out at 0 % after 1 s, past its timeout of 1 s "
        rf"\(export {export_hash}\)",
        str(raised.value),
    ), str(raised.value)
    assert all(m["outlook"] in ("no estimate yet",) for m in lines.progress(export_hash))


def test_sensor_fails_naming_page_progress_time_reason_and_hash(emulator_with_link, dag, lines):
    dag_task = ContentExporterStartExportOperator(task_id="start", page_id=FAILING_PAGE, dag=dag)
    sensor = ContentExporterExportSensor(task_id="wait", export_hash="h", dag=dag)
    dag_task >> sensor
    export_hash, start_ti = start(dag, FAILING_PAGE, lines)
    sensor.export_hash = export_hash
    ti = FakeTI(upstream={("start", "export_page"): start_ti.pushed["export_page"]})
    with pytest.raises(ContentExporterExportFailedError) as raised:
        while not poke_as_rescheduled(sensor, ti):
            time.sleep(0.3)
    assert re.fullmatch(
        rf"page {FAILING_PAGE}: the export failed at 50 % after \d s: page tree could not be rendered "
        rf"\(export {export_hash}\)",
        str(raised.value),
    ), str(raised.value)


# --------------------------------------------------------------------------- the trigger, then the task


def run_trigger(trigger: Any) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_deferred_sensor_logs_progress_in_the_triggerer_and_one_sentence_on_resume(
    emulator_with_link, dag, lines, monkeypatch
):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.5)  # a 2 s export: several lines, not one per poll
    start_task = ContentExporterStartExportOperator(task_id="start", page_id=PAGE, dag=dag)
    sensor = ContentExporterExportSensor(
        task_id="wait", export_hash="h", deferrable=True, poke_interval=0.1, dag=dag
    )
    start_task >> sensor
    export_hash, start_ti = start(dag, PAGE, lines)
    sensor.export_hash = export_hash
    ti = FakeTI(upstream={("start", "export_page"): start_ti.pushed["export_page"]})
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": ti})
    trigger = deferred.value.trigger
    assert (trigger.page_id, trigger.started_at) == (
        PAGE,
        progress.timestamp(start_ti.pushed["export_page"]["started_at"]),
    )
    events = run_trigger(trigger)
    polls = emulator_with_link.counts["export_progress"]
    in_triggerer = lines.progress(export_hash)[1:]  # the first line is the sensor's check before deferring
    assert 2 <= len(in_triggerer) < polls - 1, (len(in_triggerer), polls)  # not one a poll
    lines.clear()
    sensor._watch = None  # resumed on a worker: a new process
    sensor.execute_complete({"ti": ti}, event=events[0])
    resumed = lines.about(export_hash)
    assert len(resumed) == 1 and re.fullmatch(
        rf"page {PAGE}: 100 % after \d s, complete \(export {export_hash}\)", resumed[0]
    ), resumed


def test_a_failed_export_in_the_triggerer_fails_the_resumed_task_with_the_same_words(emulator_with_link, dag):
    export_hash, start_ti = start(dag, FAILING_PAGE, None)  # type: ignore[arg-type]
    from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

    started_at = progress.timestamp(start_ti.pushed["export_page"]["started_at"])
    trigger = ContentExporterExportTrigger(
        export_hash, end_time=time.time() + 30, poll_interval=0.1, page_id=FAILING_PAGE, started_at=started_at
    )
    [event] = run_trigger(trigger)
    with pytest.raises(ContentExporterExportFailedError) as raised:
        raise_for_event(event)
    assert re.fullmatch(
        rf"page {FAILING_PAGE}: the export failed at 50 % after \d s: page tree could not be rendered "
        rf"\(export {export_hash}\)",
        str(raised.value),
    ), str(raised.value)


# --------------------------------------------------------------------------- the one-task operator


def one_task(dag: DAG, tmp_path: Path, **kwargs: Any) -> ContentExporterExportOperator:
    return ContentExporterExportOperator(
        task_id="export_page_tree",
        page_id=kwargs.pop("page_id", PAGE),
        output_path=str(tmp_path / "out") + "/",
        poll_interval=0.3,
        dag=dag,
        **kwargs,
    )


def context(ti: FakeTI) -> dict[str, Any]:
    return {"ti": ti, "task_state_store": StateStore()}


def test_one_task_in_the_worker_logs_start_progress_and_finish_once_each(
    emulator_with_link, dag, lines, tmp_path
):
    ti = FakeTI()
    final = one_task(dag, tmp_path).execute(context(ti))
    export_hash = ti.pushed["export_hash"]
    ours = lines.about(export_hash)
    started = [line for line in ours if "export started" in line]
    assert started == [f"page {PAGE}: export started, {PAGE_URL} (export {export_hash})"]
    assert next(iter(ti.pushed)) == CONFLUENCE_PAGE_XCOM_KEY  # the link before the export started
    polls = emulator_with_link.counts["export_progress"]
    assert_progress_lines(lines, export_hash, polls=polls)
    saved = [line for line in ours if ": saved " in line]
    assert len(saved) == 1 and re.fullmatch(
        rf"page {PAGE}: saved {re.escape(final)}, [\d.]+ [kM]?B in [\d.]+ s at [\d.]+ [kMG]?B/s, "
        rf"sha256 [0-9a-f]{{64}} \(export {export_hash}\)",
        saved[0],
    ), saved
    assert ti.pushed["export_file"]["replaced"] is None


def test_no_other_line_repeats_the_finish(emulator_with_link, dag, lines, tmp_path):
    ti = FakeTI()
    final = one_task(dag, tmp_path).execute(context(ti))
    assert sum(final in line for line in lines.all()) == 1, lines.all()


def test_one_task_deferred_logs_in_the_triggerer_and_resumes_with_one_sentence(
    emulator_with_link, dag, lines, tmp_path, monkeypatch
):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.5)
    task = one_task(dag, tmp_path, deferrable=True)
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context(ti))
    export_hash = ti.pushed["export_hash"]
    events = run_trigger(deferred.value.trigger)
    assert lines.progress(export_hash), lines.about(export_hash)
    lines.clear()
    final = one_task(
        dag_again := DAG("again", schedule=None, start_date=datetime(2026, 1, 1)), tmp_path, deferrable=True
    )
    assert dag_again
    path = final.execute_complete(context(ti), event=events[0])
    resumed = lines.about(export_hash)
    assert re.fullmatch(rf"page {PAGE}: 100 % after \d s, complete \(export {export_hash}\)", resumed[0]), (
        resumed
    )
    assert sum(": saved " in line for line in resumed) == 1 and path in resumed[-1]


def test_one_task_failure_names_page_progress_time_reason_and_hash(emulator_with_link, dag, tmp_path):
    ti = FakeTI()
    with pytest.raises(ContentExporterExportFailedError) as raised:
        one_task(dag, tmp_path, page_id=FAILING_PAGE).execute(context(ti))
    export_hash = ti.pushed["export_hash"]
    assert re.fullmatch(
        rf"page {FAILING_PAGE}: the export failed at 50 % after \d s: page tree could not be rendered "
        rf"\(export {export_hash}\)",
        str(raised.value),
    ), str(raised.value)


# --------------------------------------------------------------------------- the download


def test_download_replacing_a_file_says_so_and_reports_the_old_size(emulator_with_link, dag, lines, tmp_path):
    start_task = ContentExporterStartExportOperator(task_id="start", page_id=PAGE, dag=dag)
    target = tmp_path / "page.pdf"
    download = ContentExporterDownloadExportOperator(
        task_id="download", export_hash="h", output_path=str(target), dag=dag
    )
    start_task >> download
    emulator_with_link.export_seconds = 0
    export_hash, start_ti = start(dag, PAGE, lines)
    download.export_hash = export_hash
    upstream = {("start", "export_page"): start_ti.pushed["export_page"]}

    first = FakeTI(upstream)
    download.execute({"ti": first})
    assert first.pushed["export_file"]["replaced"] is None
    assert first.pushed[CONFLUENCE_PAGE_XCOM_KEY] == PAGE_URL  # the download task's link too

    target.write_bytes(b"x" * 1234)  # an older file at the same path
    lines.clear()
    again = FakeTI(upstream)
    download.execute({"ti": again})
    assert again.pushed["export_file"]["replaced"] == {"size_bytes": 1234}
    saved = [line for line in lines.about(export_hash) if ": saved " in line]
    assert len(saved) == 1 and saved[0].startswith(
        f"page {PAGE}: saved {target} (it replaced a file of 1.2 kB), "
    ), saved


def test_download_into_a_folder_reports_the_file_it_replaced(emulator_with_link, dag, lines, tmp_path):
    emulator_with_link.export_seconds = 0
    export_hash, _ti = start(dag, PAGE, lines)
    folder = tmp_path / "exports"
    download = ContentExporterDownloadExportOperator(
        task_id="download", export_hash=export_hash, output_path=f"{folder}/", dag=dag
    )
    first = FakeTI()
    final = download.execute({"ti": first})
    Path(final).write_bytes(b"y" * 10)
    again = FakeTI()
    download.execute({"ti": again})
    assert again.pushed["export_file"]["replaced"] == {"size_bytes": 10}
    assert f"export {export_hash}: saved {final} (it replaced a file of 10 B), " in "\n".join(lines.all())

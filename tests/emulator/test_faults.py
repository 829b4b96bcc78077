"""One fault queue per endpoint, whatever the fault's kind, and ``reset()`` between runs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_cex.emulator import ChaosSchedule, ContentExporterEmulator, run_emulator
from airflow_provider_cex.emulator.chaos import WRONG_JSON, scheduled_chaos
from airflow_provider_cex.emulator.faults import (
    ARTIFACT,
    PROXY,
    REFUSE,
    Fault,
    FaultQueues,
    download_fault,
    status_fault,
)
from tests.emulator.test_emulator import API_KEY, _headers, download, new_export, progress, start_export

ZERO = {"start_export": 0, "export_progress": 0, "download_export": 0}


@pytest.fixture
def emu() -> Iterator[ContentExporterEmulator]:
    with run_emulator(api_key=API_KEY, export_seconds=0) as emulator:
        yield emulator


def broken_download(emu: ContentExporterEmulator, export_hash: str) -> bytes:
    """The bytes of a download whose body breaks off short of its Content-Length."""
    received = bytearray()
    with download(emu, export_hash, stream=True) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == emu.artifact_size
        with pytest.raises(Exception, match="IncompleteRead"):
            for chunk in response.raw.stream(1024, decode_content=False):
                received += chunk
    return bytes(received)


# ------------------------------------------------------------------ one queue per endpoint, over HTTP


def test_faults_queued_for_one_endpoint_fire_in_the_order_armed_whatever_their_kind(
    emu: ContentExporterEmulator,
) -> None:
    export_hash = new_export(emu, "4242")
    whole = emu.artifact_path.read_bytes()
    emu.download_fault("truncate", after_bytes=100)
    emu.inject("download_export", status=429, retry_after="0")
    emu.chaos("download_export", "hostile_filename", variant=1)
    emu.chaos("download_export", "status", status=502)
    emu.download_fault("chunked")

    assert broken_download(emu, export_hash) == whole[:100]
    limited = download(emu, export_hash)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "0")
    hostile = download(emu, export_hash)
    assert hostile.headers["Content-Disposition"] == 'attachment; filename="/etc/passwd"'
    assert hostile.content == whole
    bad_gateway = download(emu, export_hash)
    assert bad_gateway.status_code == 502 and bad_gateway.headers["Content-Type"].startswith("text/html")
    chunked = download(emu, export_hash)
    assert "Content-Length" not in chunked.headers and chunked.headers["Transfer-Encoding"] == "chunked"
    assert chunked.content == whole
    normal = download(emu, export_hash)
    assert normal.headers["Content-Disposition"] == 'attachment; filename="page-4242.pdf"'
    assert normal.content == whole and int(normal.headers["Content-Length"]) == len(whole)

    emu.chaos("export_progress", "wrong_json", variant=0)
    emu.inject("export_progress", status=500)
    emu.chaos("export_progress", "non_json", variant=1)
    answers = [progress(emu, export_hash) for _ in range(4)]
    assert answers[0].json() == {"progressValue": "fifty"}
    assert answers[1].status_code == 500
    assert (answers[2].status_code, answers[2].text) == (200, "OK")
    assert answers[3].json() == {"progressValue": 100, "status": "DONE"}


def test_a_running_outage_answers_before_queued_faults_which_fire_once_it_ends(
    emu: ContentExporterEmulator,
) -> None:
    export_hash = new_export(emu)
    emu.inject("export_progress", status=500)
    armed = time.monotonic()
    emu.outage("export_progress", seconds=2.0, status=503)
    assert progress(emu, export_hash).status_code == 503
    time.sleep(max(0.0, armed + 2.05 - time.monotonic()))
    assert [progress(emu, export_hash).status_code for _ in range(2)] == [500, 200]


def test_the_schedule_spoils_only_requests_that_find_the_queue_empty(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu)
    schedule = ChaosSchedule(seed=5, rate=1.0, kinds=("wrong_json",))
    emu.chaos_schedule(schedule)
    emu.inject("export_progress", status=429)
    assert progress(emu, export_hash).status_code == 429
    first = scheduled_chaos(schedule, "export_progress", 0)  # the queued 429 did not use up number 0
    assert first is not None
    values = WRONG_JSON["export_progress"]
    assert progress(emu, export_hash).json() == values[first.variant % len(values)]


def test_a_download_fault_waits_for_a_download_that_serves_the_artifact(emu: ContentExporterEmulator) -> None:
    emu.export_seconds = 3600
    export_hash = new_export(emu)
    emu.download_fault("truncate", after_bytes=50)
    assert download(emu, export_hash).status_code == 409  # not finished: the fault stays armed
    emu.export_seconds = 0
    assert download(emu, export_hash, headers={}).status_code == 401  # no key: still armed
    assert broken_download(emu, export_hash) == emu.artifact_path.read_bytes()[:50]
    assert download(emu, export_hash).content == emu.artifact_path.read_bytes()


# ------------------------------------------------------------------ reset()


def test_reset_disarms_every_fault_and_zeroes_the_counters_but_keeps_the_exports() -> None:
    with (
        run_emulator(api_key=API_KEY, export_seconds=0) as emu,
        run_emulator(api_key="another-key-for-the-other-host-012345678", export_seconds=0) as other,
    ):
        kept = new_export(emu, "4242")
        emu.fail_pages(["777"])
        failed = new_export(emu, "777")
        assert progress(emu, failed).json()["status"] == "FAILED"
        # One of every mechanism: queued status, chaos and download faults, an outage, a schedule,
        # failing pages, a redirect, a foreign artifact source and a refusal window.
        emu.inject("start_export", status=503, times=5)
        emu.outage("export_progress", seconds=60)
        emu.chaos("export_progress", "wrong_json", times=5)
        emu.chaos("download_export", "reset_before_headers", times=5)
        emu.download_fault("stall", after_bytes=10, seconds=5, times=5)
        emu.truncate_downloads(10, times=5)
        emu.chaos_schedule(ChaosSchedule(seed=1, rate=1.0))
        emu.fail_pages(["4343"])
        emu.redirect_downloads_to("http://127.0.0.1:9")
        emu.accept_foreign_downloads(other)
        emu.refuse_connections(0.3)

        emu.reset()

        assert emu.counts == ZERO and emu.requests == []
        assert set(emu.exports) == {kept, failed}
        assert emu.wait_listening(10)  # the refusal window ran to its end
        whole = emu.artifact_path.read_bytes()
        for _ in range(3):  # a schedule at rate 1 or a fault left for a later call would show here
            assert start_export(emu).status_code == 200
            assert progress(emu, kept).json() == {"progressValue": 100, "status": "DONE"}
            served = download(emu, kept, allow_redirects=False)
            assert served.status_code == 200 and served.content == whole
            assert served.headers["Content-Disposition"] == 'attachment; filename="page-4242.pdf"'
        assert progress(emu, failed).json()["status"] == "FAILED"  # a reported failure sticks
        assert progress(emu, new_export(emu, "777")).json()["status"] == "DONE"
        assert progress(emu, new_export(emu, "4343")).json()["status"] == "DONE"
        assert download(emu, "f" * 32).status_code == 404  # no foreign source serving any hash
        assert download(emu, kept, headers={}).status_code == 401  # ... nor skipping the key check
        assert emu.counts == {"start_export": 5, "export_progress": 6, "download_export": 5}
        assert len(emu.exports) == 7
        assert other.counts == ZERO


def test_reset_keeps_the_export_speed(emu: ContentExporterEmulator) -> None:
    emu.export_seconds = 3600
    emu.export_seconds_spread = 5
    emu.reset()
    assert (emu.export_seconds, emu.export_seconds_spread) == (3600, 5)
    assert progress(emu, new_export(emu)).json()["status"] == "RUNNING"
    assert requests.get(f"{emu.base_url}/_emulator/counts", headers=_headers(), timeout=5).json() == {
        **ZERO,
        "start_export": 1,
        "export_progress": 1,
    }


# ------------------------------------------------------------------ the queues, without HTTP


def test_take_uses_counted_faults_in_order_and_returns_single_uses() -> None:
    faults = FaultQueues()
    faults.add(status_fault("export_progress", 429, 1.0, times=2))
    faults.add(download_fault("truncate", after_bytes=5, times=1, seconds=0))  # another endpoint's queue
    faults.add(Fault("wrong_json", "export_progress", variant=3))
    taken = [faults.take("export_progress", 0.0) for _ in range(4)]
    assert [(f.kind, f.remaining) if f else None for f in taken] == [
        ("status", 1),
        ("status", 1),
        ("wrong_json", 1),
        None,
    ]
    assert taken[0] is not None and taken[0].retry_after == "1"
    truncate = faults.take("download_export", 0.0)
    assert truncate is not None
    assert (truncate.kind, truncate.after_bytes, truncate.stage) == ("truncate", 5, ARTIFACT)
    assert faults.take("download_export", 0.0) is None


def test_an_outage_goes_first_replaces_a_running_one_and_ends_on_time() -> None:
    faults = FaultQueues()
    faults.add(status_fault("start_export", 500, None))
    faults.add(status_fault("start_export", 503, None, until=10.0))
    faults.add(status_fault("start_export", 502, "5", until=20.0))  # replaces the 503 outage
    for now in (0.0, 5.0, 19.9):
        fault = faults.take("start_export", now)
        assert fault is not None and (fault.status, fault.retry_after, fault.stage) == (502, "5", PROXY)
    later = faults.take("start_export", 20.0)
    assert later is not None and later.status == 500
    assert faults.take("start_export", 20.0) is None


def test_a_refusal_window_comes_before_everything_and_survives_clear() -> None:
    faults = FaultQueues()
    faults.add(status_fault("download_export", 500, None))
    faults.set_schedule(ChaosSchedule(seed=1, rate=1.0))
    faults.refuse(until=10.0)
    faults.clear()
    refusal = faults.take("download_export", 9.0)
    assert refusal is not None and refusal.stage == REFUSE
    assert faults.take("download_export", 10.0) is None  # the 500 and the schedule were cleared


def test_a_fault_given_back_goes_first_behind_a_running_outage() -> None:
    faults = FaultQueues()
    faults.add(download_fault("stall", after_bytes=1, times=2, seconds=1))
    faults.add(status_fault("download_export", 429, None))
    stall = faults.take("download_export", 0.0)
    assert stall is not None and stall.remaining == 1
    faults.add(status_fault("download_export", 503, None, until=1.0))
    faults.give_back(stall)
    kinds = [f.kind for f in iter(lambda: faults.take("download_export", 2.0), None)]
    assert kinds == ["stall", "stall", "status"]  # the outage has ended by now
    outage = FaultQueues()
    outage.add(status_fault("download_export", 503, None, until=1.0))
    outage.give_back(stall)
    first = outage.take("download_export", 0.5)
    assert first is not None and first.status == 503  # the outage still answers first


def test_bad_fault_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("meteor", "start_export")
    with pytest.raises(ValueError, match="unknown endpoint"):
        status_fault("upload", 503, None)
    with pytest.raises(ValueError, match="4xx or 5xx"):
        status_fault("start_export", 302, None)
    with pytest.raises(ValueError, match="unknown download fault"):
        download_fault("meteor", after_bytes=0, times=1, seconds=0)

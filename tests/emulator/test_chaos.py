"""The emulator's chaos mode on the wire: each kind does what it says, and schedules replay exactly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_cex.emulator import (
    CHAOS_KINDS,
    Chaos,
    ChaosSchedule,
    ContentExporterEmulator,
    run_emulator,
)
from airflow_provider_cex.emulator.chaos import APPLIES_TO, HOSTILE_DISPOSITIONS, scheduled_chaos

API_KEY = "cex-test-key-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f"
HEADERS = {"CEX-API-KEY": API_KEY}
TIMEOUT = (2, 0.5)


@pytest.fixture
def emu() -> Iterator[ContentExporterEmulator]:
    with run_emulator(api_key=API_KEY, export_seconds=0) as emulator:
        yield emulator


def start(emu: ContentExporterEmulator, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(
        f"{emu.base_url}/api/remoteExport/123/init",
        json={"rootContentId": "123"},
        headers=HEADERS,
        timeout=TIMEOUT,
        allow_redirects=False,
    )


def get(emu: ContentExporterEmulator, export_hash: str, what: str = "progress") -> requests.Response:
    return requests.get(
        f"{emu.base_url}/api/remoteExport/{export_hash}/{what}",
        headers=HEADERS,
        timeout=TIMEOUT,
        allow_redirects=False,
    )


def test_reset_before_headers_on_start_resets_without_starting_an_export(emu):
    emu.chaos("start_export", "reset_before_headers")
    with pytest.raises(requests.ConnectionError, match="reset"):
        start(emu)
    assert emu.exports == {}
    assert start(emu).status_code == 200  # one fault, then normal service


@pytest.mark.parametrize("kind", ["truncated_body", "reset_mid_body"])
def test_a_broken_start_answer_comes_after_the_export_was_started(emu, kind):
    emu.chaos("start_export", kind, fraction=0.5)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        start(emu)
    assert len(emu.exports) == 1  # the worst case for a client: work done, hash lost


def test_stall_before_headers_makes_the_client_time_out(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("export_progress", "stall_before_headers", seconds=1.0)
    began = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(emu, export_hash)
    assert time.monotonic() - began < 1.0


def test_non_json_and_wrong_json_answers(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("export_progress", "non_json", variant=0)
    emu.chaos("export_progress", "wrong_json", variant=0)
    first, second = get(emu, export_hash), get(emu, export_hash)
    assert first.status_code == 200 and first.text.startswith("<html>")
    assert second.json() == {"progressValue": "fifty"}
    emu.chaos("start_export", "wrong_json", variant=1)
    assert start(emu).json() == {"hash": None}


def test_progress_goes_backwards_or_over_100_and_never_says_done(emu):
    export_hash = start(emu).json()["hash"]
    assert get(emu, export_hash).json()["progressValue"] == 100
    emu.chaos("export_progress", "progress_backwards")
    emu.chaos("export_progress", "progress_over_100", variant=0)
    assert get(emu, export_hash).json() == {"progressValue": 60, "status": "RUNNING"}
    assert get(emu, export_hash).json() == {"progressValue": 150, "status": "RUNNING"}


def test_redirect_loop_points_at_the_same_url_and_foreign_redirect_at_the_target(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("export_progress", "redirect_loop", status=307)
    emu.chaos("export_progress", "redirect_foreign", status=302, target="http://127.0.0.1:9")
    loop, foreign = get(emu, export_hash), get(emu, export_hash)
    path = f"/api/remoteExport/{export_hash}/progress"
    assert (loop.status_code, loop.headers["Location"]) == (307, path)
    assert (foreign.status_code, foreign.headers["Location"]) == (302, "http://127.0.0.1:9" + path)


def test_huge_error_body_is_as_large_as_asked(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("export_progress", "huge_error_body", status=502, size=3 * 1024 * 1024)
    resp = get(emu, export_hash)
    assert resp.status_code == 502 and len(resp.content) == 3 * 1024 * 1024


def test_hostile_file_names_reach_the_client_verbatim(emu):
    export_hash = start(emu).json()["hash"]
    for variant in (0, 5):
        emu.chaos("download_export", "hostile_filename", variant=variant)
        resp = get(emu, export_hash, "download")
        assert resp.headers["Content-Disposition"] == HOSTILE_DISPOSITIONS[variant]
        assert resp.content == emu.artifact_path.read_bytes()


def test_download_reset_mid_body_sends_part_of_the_file_then_resets(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("download_export", "reset_mid_body", fraction=0.5)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(emu, export_hash, "download")


def test_refused_connections_for_a_window_then_service_on_the_same_port(emu):
    export_hash = start(emu).json()["hash"]
    port = emu.port
    emu.refuse_connections(0.5)
    with pytest.raises(requests.ConnectionError):
        get(emu, export_hash)
    assert emu.wait_listening(5)
    assert emu.port == port and get(emu, export_hash).status_code == 200


def test_a_schedule_replays_the_same_faults_for_the_same_seed():
    schedule = ChaosSchedule(seed=7, rate=0.5, foreign_origin="http://127.0.0.1:9")
    first = [scheduled_chaos(schedule, "export_progress", n) for n in range(200)]
    again = [scheduled_chaos(schedule, "export_progress", n) for n in range(200)]
    other = [scheduled_chaos(ChaosSchedule(seed=8, rate=0.5), "export_progress", n) for n in range(200)]
    assert first == again and first != other
    spoiled = [c for c in first if c is not None]
    assert 70 < len(spoiled) < 130  # about half
    assert {c.kind for c in spoiled} == {k for k in CHAOS_KINDS if "export_progress" in APPLIES_TO[k]}


def test_a_schedule_on_the_server_spoils_requests_reproducibly(emu):
    export_hash = start(emu).json()["hash"]

    def statuses() -> list[str]:
        seen = []
        for _ in range(30):
            try:
                seen.append(str(get(emu, export_hash).status_code))
            except requests.RequestException as err:
                seen.append(type(err).__name__)
        return seen

    kinds = ("status", "wrong_json", "reset_before_headers", "progress_backwards")
    emu.chaos_schedule(ChaosSchedule(seed=3, rate=0.5, kinds=kinds))
    first = statuses()
    emu.chaos_schedule(ChaosSchedule(seed=3, rate=0.5, kinds=kinds))
    assert statuses() == first
    assert "200" in first and len(set(first)) > 2
    emu.chaos_schedule(None)
    assert json.loads(get(emu, export_hash).text)["progressValue"] == 100


def test_bad_chaos_arguments_are_refused_with_the_reason(emu):
    with pytest.raises(ValueError, match="unknown chaos kind"):
        emu.chaos("export_progress", "meteor")
    with pytest.raises(ValueError, match="does not apply"):
        emu.chaos("start_export", "hostile_filename")
    with pytest.raises(ValueError, match="target origin"):
        Chaos("redirect_foreign")
    with pytest.raises(ValueError, match="fraction"):
        Chaos("truncated_body", fraction=1.0)

"""The emulator's chaos mode on the wire: each kind does what it says, and schedules replay exactly."""

from __future__ import annotations

import json
import math
import random
import socket
import time
import zlib
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from airflow_provider_cex.emulator import (
    CHAOS_KINDS,
    Chaos,
    ChaosSchedule,
    ContentExporterEmulator,
    run_emulator,
)
from airflow_provider_cex.emulator.chaos import (
    APPLIES_TO,
    HOSTILE_DISPOSITIONS,
    HOSTILE_KINDS,
    SCHEDULED_KINDS,
    random_chaos,
    scheduled_chaos,
)
from airflow_provider_cex.emulator.hostile_bodies import (
    DEEP_JSON_DEPTH,
    DRIP_PAD,
    ECHO_VARIANTS,
    INFLATE_ENCODINGS,
    NON_FINITE_PROGRESS,
    inflating_body,
)
from airflow_provider_cex.emulator.serving import slow_answers_in_progress

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
    assert {c.kind for c in spoiled} == {k for k in SCHEDULED_KINDS if "export_progress" in APPLIES_TO[k]}
    assert set(SCHEDULED_KINDS) | set(HOSTILE_KINDS) == set(CHAOS_KINDS)


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


# --------------------------------------------------------------------------- the answers of a hostile service


def raw_get(emu: ContentExporterEmulator, path: str, extra: str = "", timeout: float = 2.0) -> socket.socket:
    """A GET sent on a raw socket (nothing decoded, nothing read): the caller reads what comes back."""
    sock = socket.create_connection((emu.host, emu.port), timeout=timeout)
    request = f"GET {path} HTTP/1.1\r\nHost: {emu.host}\r\nCEX-API-KEY: {API_KEY}\r\n{extra}\r\n"
    sock.sendall(request.encode("ascii"))
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line and headers, body bytes read with them)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed before the headers: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def wait_for_no_slow_answers(timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if slow_answers_in_progress() == 0:
            return True
        time.sleep(0.02)
    return False


def inflate(body: bytes, encoding: str) -> tuple[int, bytes, bytes]:
    """(inflated size, first 40 bytes, last 2 bytes), inflated 1 MiB at a time (never whole in memory)."""
    wbits = 47 if encoding == "gzip" else 15 if body[:1] == b"\x78" else -15  # zlib, or raw deflate
    inflater = zlib.decompressobj(wbits)
    size, first, last = 0, b"", b""
    data = body
    while data:
        out = inflater.decompress(data, 1 << 20)
        data = inflater.unconsumed_tail
        size, first, last = size + len(out), first or out[:40], (last + out)[-2:]
    out = inflater.flush()
    return size + len(out), first, (last + out)[-2:]


@pytest.mark.parametrize("variant", range(len(INFLATE_ENCODINGS)))
def test_inflating_body_is_small_on_the_wire_and_inflates_to_the_stated_size(emu, variant):
    export_hash = start(emu).json()["hash"]
    size = 8 * 1024 * 1024
    emu.chaos("export_progress", "inflating_body", variant=variant, size=size)
    sock = raw_get(emu, f"/api/remoteExport/{export_hash}/progress")
    with sock:
        head, body = read_head(sock)
        length = int(header(head, "Content-Length") or -1)
        while len(body) < length:
            body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200")
    encoding = INFLATE_ENCODINGS[variant][0]
    assert header(head, "Content-Encoding") == encoding
    assert len(body) == length < size // 500  # about 1000:1
    inflated, first, last = inflate(body, encoding)
    assert inflated == size
    assert first.startswith(b'{"progressValue": 5, "pad": "   ') and last == b'"}'
    cached = inflating_body(size, variant, "export_progress")
    assert inflating_body(size, variant, "export_progress") is cached  # compressed once


def test_inflating_body_on_the_download_is_an_error_status(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("download_export", "inflating_body", status=502, size=1024 * 1024)
    resp = get(emu, export_hash, "download")
    assert resp.status_code == 502 and resp.headers["Content-Encoding"] == "gzip"
    assert len(resp.content) == 1024 * 1024 and resp.content.startswith(b'{"error": "')


@pytest.mark.parametrize("variant", range(3))
def test_deep_json_is_nested_100000_levels_after_the_export_was_started(emu, variant):
    emu.chaos("start_export", "deep_json", variant=variant)
    resp = start(emu)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    opening = {0: b"[" * 10, 1: b'{"a":' * 10, 2: b'{"hash": ' + b"[" * 10}[variant]
    assert resp.content.startswith(opening)
    assert resp.content.count(b"[") + resp.content.count(b'{"a":') == DEEP_JSON_DEPTH
    with pytest.raises(RecursionError):
        json.loads(resp.content)
    assert len(emu.exports) == 1


def test_dripping_body_sends_headers_then_a_byte_at_a_time_and_stops_when_the_client_hangs_up(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("export_progress", "dripping_body", interval=0.1, seconds=30)
    sock = raw_get(emu, f"/api/remoteExport/{export_hash}/progress")
    with sock:
        head, body = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert int(header(head, "Content-Length") or 0) > DRIP_PAD  # spaces, then the real answer
        began = time.monotonic()
        while time.monotonic() - began < 0.6:
            body += sock.recv(100)
        assert 3 <= len(body) <= 9 and body.strip() == b""
        assert slow_answers_in_progress() == 1
    assert wait_for_no_slow_answers(), "the drip went on after the client hung up"


def test_dripping_download_resumes_from_the_range_and_ends_after_seconds(emu):
    export_hash = start(emu).json()["hash"]
    whole = emu.artifact_path.read_bytes()
    emu.chaos("download_export", "dripping_body", interval=0.05, seconds=0.5)
    began = time.monotonic()
    sock = raw_get(emu, f"/api/remoteExport/{export_hash}/download", "Range: bytes=10-\r\n")
    with sock:
        head, body = read_head(sock)
        while chunk := sock.recv(100):
            body += chunk
    assert head.startswith(b"HTTP/1.1 206")
    assert header(head, "Content-Range") == f"bytes 10-{len(whole) - 1}/{len(whole)}"
    assert int(header(head, "Content-Length") or 0) == len(whole) - 10
    assert 0.4 < time.monotonic() - began < 2.0  # bounded by seconds, then closed
    assert 5 <= len(body) <= 12 and body == whole[10 : 10 + len(body)]
    assert wait_for_no_slow_answers()


def test_silent_reads_the_request_then_sends_nothing_until_the_client_hangs_up(emu):
    emu.chaos("start_export", "silent", seconds=30)
    sock = socket.create_connection((emu.host, emu.port), timeout=0.5)
    with sock:
        body = b'{"rootContentId": "123"}'
        sock.sendall(
            b"POST /api/remoteExport/123/init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"CEX-API-KEY: {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert slow_answers_in_progress() == 1
    assert wait_for_no_slow_answers(), "the silence went on after the client hung up"
    assert emu.exports == {} and emu.counts["start_export"] == 1  # it never reached the service


def test_silent_ends_after_its_seconds_by_closing_the_connection(emu):
    export_hash = start(emu).json()["hash"]
    emu.chaos("export_progress", "silent", seconds=0.3)
    began = time.monotonic()
    with raw_get(emu, f"/api/remoteExport/{export_hash}/progress") as sock:
        assert sock.recv(1) == b""
    assert 0.25 < time.monotonic() - began < 1.5


def test_non_finite_progress_values_are_sent_as_raw_tokens(emu):
    export_hash = start(emu).json()["hash"]
    seen = []
    for variant in range(len(NON_FINITE_PROGRESS)):
        emu.chaos("export_progress", "non_finite_progress", variant=variant)
        resp = get(emu, export_hash)
        assert resp.status_code == 200
        seen.append(json.loads(resp.content)["progressValue"])
        assert json.loads(resp.content)["status"] == "RUNNING"
    assert resp.content.decode("utf-8") == '{"progressValue": "\u0661\u0660\u0660", "status": "RUNNING"}'
    numbers = [v for v in seen if isinstance(v, float)]
    assert len(numbers) == 4 and sum(math.isinf(v) for v in numbers) == 3 and math.isnan(numbers[2])
    assert [v for v in seen if isinstance(v, str)] == ["inf", "1e999", "1_0_0", "\u0661\u0660\u0660"]


def test_echoed_key_answers_hold_the_key_the_request_carried(emu):
    export_hash = start(emu).json()["hash"]
    quoted = quote(API_KEY, safe="")
    answers = {}
    for variant, name in enumerate(ECHO_VARIANTS["export_progress"]):
        status = 307 if name.startswith("redirect") else 500
        emu.chaos("export_progress", "echoed_key", variant=variant, status=status)
        answers[name] = get(emu, export_hash)
    path = f"/api/remoteExport/{export_hash}/progress"
    assert answers["redirect_query"].headers["Location"] == f"{emu.base_url}{path}?k={quoted}"
    assert answers["redirect_file"].headers["Location"] == f"file:///{quoted}"
    userinfo = answers["redirect_userinfo"].headers["Location"]
    assert userinfo == f"http://{quoted}@{emu.host}:{emu.port}{path}"
    assert all(answers[n].status_code == 307 for n in answers if n.startswith("redirect"))
    assert answers["error_body"].status_code == 500 and API_KEY in answers["error_body"].text
    assert answers["progress_message"].json() == {
        "progressValue": 10,
        "status": "RUNNING",
        "message": f"exporting for {API_KEY}",
    }
    assert answers["failed_message"].json()["status"] == "FAILED"
    assert API_KEY in answers["failed_message"].json()["errorMessage"]
    emu.chaos("download_export", "echoed_key", variant=ECHO_VARIANTS["download_export"].index("disposition"))
    download = get(emu, export_hash, "download")
    assert download.headers["Content-Disposition"] == f'attachment; filename="{API_KEY}.pdf"'
    assert download.content == emu.artifact_path.read_bytes()


def test_random_hostile_chaos_is_valid_for_every_endpoint_and_seeded():
    for kind in HOSTILE_KINDS:
        for endpoint in APPLIES_TO[kind]:
            drawn = [random_chaos(random.Random(f"{kind}/{seed}"), endpoint, kind) for seed in range(20)]
            again = [random_chaos(random.Random(f"{kind}/{seed}"), endpoint, kind) for seed in range(20)]
            assert drawn == again and all(c.kind == kind for c in drawn)
    echoes = [random_chaos(random.Random(s), "start_export", "echoed_key") for s in range(50)]
    assert {c.status for c in echoes} <= {302, 303, 400, 403, 500, 502}  # nothing that repeats a POST


def test_a_schedule_draws_hostile_kinds_only_when_asked():
    default = [scheduled_chaos(ChaosSchedule(seed=1, rate=1.0), "export_progress", n) for n in range(300)]
    assert not {c.kind for c in default if c is not None} & set(HOSTILE_KINDS)
    hostile = ChaosSchedule(seed=1, rate=1.0, kinds=HOSTILE_KINDS)
    drawn = {c.kind for n in range(100) if (c := scheduled_chaos(hostile, "export_progress", n)) is not None}
    assert drawn == {k for k in HOSTILE_KINDS if "export_progress" in APPLIES_TO[k]}

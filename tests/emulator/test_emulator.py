"""Tests of the Content Exporter emulator over real loopback HTTP, as the hook, benchmarks and demo use it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_cex.emulator import (
    DEFAULT_FAILURE_MESSAGE,
    ContentExporterEmulator,
    RequestRecord,
    build_sample_pdf,
    run_emulator,
)
from airflow_provider_cex.emulator.server import spread_fraction

API_KEY = "cex-test-key-5f1c0a9e7b2d4c6e8a0b1c2d3e4f5a6b"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu() -> Iterator[ContentExporterEmulator]:
    with run_emulator(api_key=API_KEY, export_seconds=0) as emulator:
        yield emulator


def _headers(key: str | None = API_KEY) -> dict[str, str]:
    return {"CEX-API-KEY": key} if key is not None else {}


def start_export(emu: ContentExporterEmulator, page_id: str = "123456", **kwargs: Any) -> requests.Response:
    body = kwargs.pop("body", {"rootContentId": page_id, "exportType": "PDF"})
    headers = kwargs.pop("headers", _headers())
    return requests.post(
        f"{emu.base_url}/api/remoteExport/{page_id}/init", json=body, headers=headers, timeout=5, **kwargs
    )


def new_export(emu: ContentExporterEmulator, page_id: str = "123456") -> str:
    response = start_export(emu, page_id)
    assert response.status_code == 200, response.text
    export_hash = response.json()["hash"]
    assert re.fullmatch(r"[0-9a-f]{32}", export_hash)
    return str(export_hash)


def progress(emu: ContentExporterEmulator, export_hash: str, key: str | None = API_KEY) -> requests.Response:
    url = f"{emu.base_url}/api/remoteExport/{export_hash}/progress"
    return requests.get(url, headers=_headers(key), timeout=5)


def download_url(emu: ContentExporterEmulator, export_hash: str) -> str:
    return f"{emu.base_url}/api/remoteExport/{export_hash}/download"


def download(emu: ContentExporterEmulator, export_hash: str, **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", _headers())
    return requests.get(download_url(emu, export_hash), headers=headers, timeout=10, **kwargs)


# ------------------------------------------------------------------ authentication and validation


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdefghijklmnopqrst"])
def test_every_endpoint_rejects_a_missing_or_wrong_api_key(
    emu: ContentExporterEmulator, key: str | None
) -> None:
    export_hash = new_export(emu)
    answers = [
        start_export(emu, headers=_headers(key)),
        progress(emu, export_hash, key=key),
        download(emu, export_hash, headers=_headers(key)),
        progress(emu, "0" * 32, key=key),  # the key is checked before the hash is looked up
    ]
    for response in answers:
        assert response.status_code == 401
        assert response.json() == {"error": "invalid API key"}
    assert [r.had_api_key for r in emu.requests[1:]] == [key is not None] * 4


@pytest.mark.parametrize(
    ("page_id", "body", "fragment"),
    [
        ("123", {"rootContentId": "124"}, "does not match"),
        ("123", {"rootContentId": 124}, "does not match"),
        ("123", {"exportType": "PDF"}, "rootContentId"),
        ("123", ["not", "an", "object"], "JSON object"),
        ("12a", {"rootContentId": "12a"}, "digits"),
    ],
)
def test_start_rejects_a_body_that_does_not_name_the_page(
    emu: ContentExporterEmulator, page_id: str, body: object, fragment: str
) -> None:
    response = start_export(emu, page_id, body=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert emu.exports == {}


def test_start_accepts_an_integer_root_content_id_and_records_the_body(emu: ContentExporterEmulator) -> None:
    response = start_export(emu, "98765", body={"rootContentId": 98765, "exportType": "WORD"})
    export_hash = response.json()["hash"]
    info = emu.exports[export_hash]
    assert (info.page_id, info.body) == ("98765", {"rootContentId": 98765, "exportType": "WORD"})


def test_unknown_hash_is_404_on_progress_and_download(emu: ContentExporterEmulator) -> None:
    for response in (progress(emu, "f" * 32), download(emu, "f" * 32)):
        assert response.status_code == 404
        assert response.json() == {"error": "unknown export hash"}


def test_emulator_refuses_to_listen_beyond_loopback() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            ContentExporterEmulator(API_KEY, host=host)


def test_repr_never_shows_the_api_key(emu: ContentExporterEmulator) -> None:
    assert API_KEY not in repr(emu)
    assert emu.base_url in repr(emu)


# ------------------------------------------------------------------ progress and download


def test_progress_climbs_to_100_and_download_waits_for_it() -> None:
    with run_emulator(api_key=API_KEY, export_seconds=0.3) as emu:
        export_hash = new_export(emu)
        first = progress(emu, export_hash).json()
        assert first["status"] == "RUNNING" and 0 <= first["progressValue"] < 100
        assert download(emu, export_hash).status_code == 409
        assert download(emu, export_hash).json() == {"error": "export not finished"}
        seen = [first["progressValue"]]
        deadline = time.monotonic() + 3
        while seen[-1] < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen.append(progress(emu, export_hash).json()["progressValue"])
        assert seen == sorted(seen) and seen[-1] == 100
        assert any(0 < value < 100 for value in seen)
        assert progress(emu, export_hash).json() == {"progressValue": 100, "status": "DONE"}
        assert download(emu, export_hash).status_code == 200


def test_export_speed_can_change_while_running() -> None:
    with run_emulator(api_key=API_KEY, export_seconds=3600) as emu:
        export_hash = new_export(emu)
        assert progress(emu, export_hash).json()["status"] == "RUNNING"
        emu.export_seconds = 0
        assert progress(emu, export_hash).json() == {"progressValue": 100, "status": "DONE"}


def test_download_serves_the_default_pdf_with_export_headers(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu, "4242")
    response = download(emu, export_hash)
    assert response.status_code == 200
    assert response.content.startswith(b"%PDF-") and response.content.endswith(b"%%EOF\n")
    assert hashlib.sha256(response.content).hexdigest() == emu.artifact_sha256
    assert len(response.content) == emu.artifact_size == int(response.headers["Content-Length"])
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == 'attachment; filename="page-4242.pdf"'
    assert emu.artifact_path.read_bytes() == response.content


def test_sample_pdf_cross_reference_table_points_at_its_objects() -> None:
    pdf = build_sample_pdf()
    startxref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n", 1)[0])
    assert pdf[startxref:].startswith(b"xref\n0 6\n")
    entries = pdf[startxref:].split(b"\n")[3:8]
    for number, entry in enumerate(entries, start=1):
        offset = int(entry[:10])
        assert pdf[offset:].startswith(f"{number} 0 obj".encode())


def test_range_request_returns_the_requested_slice(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu)
    whole = emu.artifact_path.read_bytes()
    response = download(emu, export_hash, headers={**_headers(), "Range": "bytes=100-"})
    assert response.status_code == 206
    assert response.content == whole[100:]
    assert response.headers["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    middle = download(emu, export_hash, headers={**_headers(), "Range": "bytes=10-19"})
    assert (middle.status_code, middle.content) == (206, whole[10:20])


def test_sized_artifact_is_identical_across_emulators() -> None:
    size = 3 * 1024 * 1024 + 7
    with (
        run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=size) as first,
        run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=size) as second,
    ):
        assert first.artifact_size == second.artifact_size == size
        assert first.artifact_sha256 == second.artifact_sha256
        assert first.artifact_path != second.artifact_path
        body = download(first, new_export(first)).content
        assert hashlib.sha256(body).hexdigest() == first.artifact_sha256
        # Distinct blocks: a resume that is off by a whole block would change the digest.
        assert body[: 1 << 20] != body[1 << 20 : 2 << 20]


def test_stopping_removes_the_artifact_directory() -> None:
    with run_emulator(api_key=API_KEY) as emu:
        artifact_dir = emu.artifact_path.parent
        assert artifact_dir.is_dir()
    assert not artifact_dir.exists()


def test_async_start_and_stop_inside_a_running_loop() -> None:
    async def scenario() -> tuple[int, Path]:
        emulator = ContentExporterEmulator(API_KEY, export_seconds=0)
        await emulator.start_async()
        try:
            response = await asyncio.to_thread(start_export, emulator)
            return response.status_code, emulator.artifact_path
        finally:
            await emulator.stop_async()

    status, artifact_path = asyncio.run(scenario())
    assert status == 200
    assert not artifact_path.exists()


def test_custom_endpoint_paths_are_served() -> None:
    endpoints = {"export_progress": "/v2/exports/{export_hash}/status"}
    with run_emulator(api_key=API_KEY, export_seconds=0, endpoints=endpoints) as emu:
        export_hash = new_export(emu)
        response = requests.get(
            f"{emu.base_url}/v2/exports/{export_hash}/status", headers=_headers(), timeout=5
        )
        assert response.json()["status"] == "DONE"
        assert emu.counts["export_progress"] == 1


# ------------------------------------------------------------------ failures and faults


def test_failing_page_reports_failed_with_its_message(emu: ContentExporterEmulator) -> None:
    emu.fail_pages(["777"], message="boom")
    export_hash = new_export(emu, "777")
    assert progress(emu, export_hash).json() == {
        "progressValue": 0,
        "status": "FAILED",
        "errorMessage": "boom",
    }
    assert download(emu, export_hash).status_code == 409
    assert download(emu, export_hash).json() == {"error": "export failed"}
    assert progress(emu, new_export(emu, "778")).json()["status"] == "DONE"


def test_failing_page_fails_halfway_through_a_timed_export() -> None:
    with run_emulator(api_key=API_KEY, export_seconds=1.0, fail_page_ids=[55]) as emu:
        export_hash = new_export(emu, "55")
        assert progress(emu, export_hash).json()["status"] == "RUNNING"
        time.sleep(0.6)
        assert progress(emu, export_hash).json() == {
            "progressValue": 50,
            "status": "FAILED",
            "errorMessage": DEFAULT_FAILURE_MESSAGE,
        }
        emu.clear_failing_pages()
        assert progress(emu, export_hash).json()["status"] == "FAILED"  # a failure sticks


def test_injected_429_with_retry_after_then_normal_answers(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu)
    emu.inject("export_progress", status=429, times=2, retry_after="1")
    limited = [progress(emu, export_hash), progress(emu, export_hash, key=None)]
    for response in limited:
        assert response.status_code == 429  # before the key check, like a proxy in front of the service
        assert response.headers["Retry-After"] == "1"
    normal = progress(emu, export_hash)
    assert normal.status_code == 200 and "Retry-After" not in normal.headers
    assert emu.counts["export_progress"] == 3


def test_injected_503_on_start_is_an_html_page_and_retry_after_passes_through(
    emu: ContentExporterEmulator,
) -> None:
    http_date = "Wed, 21 Oct 2015 07:28:00 GMT"
    emu.inject("start_export", status=503, times=1)
    emu.inject("start_export", status=503, times=1, retry_after=http_date)
    first, second = start_export(emu), start_export(emu)
    assert first.status_code == second.status_code == 503
    assert first.headers["Content-Type"].startswith("text/html") and "Retry-After" not in first.headers
    assert second.headers["Retry-After"] == http_date
    assert emu.exports == {}
    assert start_export(emu).status_code == 200


def test_outage_answers_every_call_until_it_ends(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu)
    emu.outage("export_progress", seconds=0.6, status=503)
    assert [progress(emu, export_hash).status_code for _ in range(3)] == [503] * 3
    assert start_export(emu).status_code == 200  # other endpoints are unaffected
    time.sleep(0.65)
    assert progress(emu, export_hash).status_code == 200


def test_counters_and_request_log_cover_rejected_requests(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu)
    progress(emu, export_hash, key=None)
    emu.inject("download_export", status=429)
    download(emu, export_hash)
    download(emu, export_hash)
    assert emu.counts == {"start_export": 1, "export_progress": 1, "download_export": 2}
    assert emu.requests == [
        RequestRecord("start_export", "POST", "/api/remoteExport/123456/init", True, 200),
        RequestRecord("export_progress", "GET", f"/api/remoteExport/{export_hash}/progress", False, 401),
        RequestRecord("download_export", "GET", f"/api/remoteExport/{export_hash}/download", True, 429),
        RequestRecord("download_export", "GET", f"/api/remoteExport/{export_hash}/download", True, 200),
    ]
    emu.reset_counters()
    assert emu.counts == {"start_export": 0, "export_progress": 0, "download_export": 0}
    assert emu.requests == []


def test_redirected_download_reaches_the_second_host_without_the_key(emu: ContentExporterEmulator) -> None:
    with run_emulator(api_key="another-key-for-the-file-host-0123456789") as file_host:
        file_host.accept_foreign_downloads(emu)
        emu.redirect_downloads_to(file_host.base_url)
        export_hash = new_export(emu, "31337")
        redirect = download(emu, export_hash, allow_redirects=False)
        assert redirect.status_code == 302
        location = redirect.headers["Location"]
        assert location == f"{file_host.base_url}/api/remoteExport/{export_hash}/download"
        followed = requests.get(location, timeout=5)
        assert followed.status_code == 200
        assert hashlib.sha256(followed.content).hexdigest() == emu.artifact_sha256
        assert followed.headers["Content-Disposition"] == 'attachment; filename="page-31337.pdf"'
        assert [r.had_api_key for r in file_host.requests] == [False]
        emu.redirect_downloads_to(None)
        assert download(emu, export_hash, allow_redirects=False).status_code == 200


def test_truncated_download_breaks_off_short_of_content_length(emu: ContentExporterEmulator) -> None:
    export_hash = new_export(emu)
    emu.truncate_downloads(100)
    with download(emu, export_hash, stream=True) as response:
        assert int(response.headers["Content-Length"]) == emu.artifact_size
        received = bytearray()
        with pytest.raises(Exception, match="IncompleteRead"):
            for chunk in response.raw.stream(1024, decode_content=False):
                received += chunk
    assert bytes(received) == emu.artifact_path.read_bytes()[:100]
    assert download(emu, export_hash).content == emu.artifact_path.read_bytes()


# ------------------------------------------------------------------ command line


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_cex.emulator", *args],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _first_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the emulator printed nothing in time"
    return proc.stdout.readline()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_serves_and_exits_cleanly_on_signal(signum: signal.Signals) -> None:
    proc = _cli("--port", "0", "--export-seconds", "0", env={"CEX_EMULATOR_API_KEY": API_KEY})
    try:
        line = _first_line(proc)
        match = re.fullmatch(r"Content Exporter emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        base_url = match.group(1)
        response = requests.post(
            f"{base_url}/api/remoteExport/1/init", json={"rootContentId": "1"}, headers=_headers(), timeout=5
        )
        assert response.status_code == 200
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout == ""
    assert "/api/remoteExport/1/init" in stderr  # the access log goes to stderr...
    assert API_KEY not in stderr  # ...and never shows the key


def test_cli_refuses_to_listen_on_all_interfaces() -> None:
    proc = _cli("--host", "0.0.0.0")
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "loopback" in stderr
    assert stdout == ""


# ------------------------------------------------------------------ spread completion times and admin routes


def _admin(emu: ContentExporterEmulator, what: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{emu.base_url}/_emulator/{what}", timeout=5, **kwargs)


def test_spread_fraction_is_deterministic_and_uniform() -> None:
    fractions = [spread_fraction(str(page_id)) for page_id in range(4000)]
    assert fractions == [spread_fraction(str(page_id)) for page_id in range(4000)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert 0.47 < sum(fractions) / len(fractions) < 0.53
    deciles = [sum(1 for f in fractions if k / 10 <= f < (k + 1) / 10) for k in range(10)]
    assert all(320 <= count <= 480 for count in deciles), deciles


def test_export_seconds_spread_sets_each_exports_duration_from_its_page_id() -> None:
    with run_emulator(api_key=API_KEY, export_seconds=1.5, export_seconds_spread=100) as emu:
        assert emu.export_seconds_spread == 100
        before = time.time()
        hashes = {new_export(emu, page_id): page_id for page_id in ("11", "12", "13")}
        timeline = _admin(emu, "exports").json()
        assert set(timeline) == set(hashes)
        for export_hash, page_id in hashes.items():
            entry = timeline[export_hash]
            assert entry["page_id"] == page_id
            assert before - 0.01 <= entry["started_at"] <= time.time()
            duration = 1.5 + spread_fraction(page_id) * 100
            assert entry["done_at"] - entry["started_at"] == pytest.approx(duration)
            assert progress(emu, export_hash).json()["status"] == "RUNNING"
        emu.export_seconds_spread = 0  # mutable, like export_seconds
        for entry in _admin(emu, "exports").json().values():
            assert entry["done_at"] - entry["started_at"] == pytest.approx(1.5)
        with pytest.raises(ValueError, match="export_seconds_spread"):
            emu.export_seconds_spread = -1
    with pytest.raises(ValueError, match="export_seconds_spread"):
        ContentExporterEmulator(API_KEY, export_seconds_spread=-0.5)


def test_default_spread_keeps_every_export_at_export_seconds(emu: ContentExporterEmulator) -> None:
    assert emu.export_seconds_spread == 0
    export_hash = new_export(emu, "99")
    entry = _admin(emu, "exports").json()[export_hash]
    assert entry["done_at"] == entry["started_at"]
    assert progress(emu, export_hash).json() == {"progressValue": 100, "status": "DONE"}


def test_a_spread_export_turns_done_at_its_done_at() -> None:
    page_id = next(str(p) for p in range(1000) if 0.5 <= spread_fraction(str(p)) <= 0.8)
    with run_emulator(api_key=API_KEY, export_seconds=0, export_seconds_spread=1.0) as emu:
        export_hash = new_export(emu, page_id)
        done_at = _admin(emu, "exports").json()[export_hash]["done_at"]
        deadline = time.monotonic() + 5
        seen_running = False
        while time.monotonic() < deadline:
            answer = progress(emu, export_hash).json()
            if answer["status"] == "DONE":
                break
            seen_running = True
            assert time.time() < done_at + 0.05
            time.sleep(0.02)
        assert seen_running
        assert done_at - 0.05 <= time.time() <= done_at + 0.5


def test_admin_routes_need_no_key_and_are_neither_counted_nor_logged(emu: ContentExporterEmulator) -> None:
    emu.fail_pages(["666"])
    ok_hash, failing_hash = new_export(emu, "1"), new_export(emu, "666")
    progress(emu, ok_hash)
    requests_before = emu.requests
    for headers in ({}, _headers(), _headers("wrong-key-0123456789abcdefghijklmnopqrst")):
        exports = _admin(emu, "exports", headers=headers)
        assert exports.status_code == 200
        timeline = exports.json()
        assert timeline[ok_hash]["page_id"] == "1" and isinstance(timeline[ok_hash]["done_at"], float)
        assert timeline[failing_hash]["page_id"] == "666" and timeline[failing_hash]["done_at"] is None
        counts = _admin(emu, "counts", headers=headers)
        assert counts.status_code == 200
        assert counts.json() == {"start_export": 2, "export_progress": 1, "download_export": 0}
    assert emu.counts == {"start_export": 2, "export_progress": 1, "download_export": 0}
    assert emu.requests == requests_before
    assert all(not r.path.startswith("/_emulator/") for r in emu.requests)


def test_admin_routes_refuse_a_peer_beyond_loopback() -> None:
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    app = ContentExporterEmulator(API_KEY).make_app()

    def peer(host: str) -> Any:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            (host, 40000) if name == "peername" else default
        )
        return transport

    async def answer(host: str) -> int:
        request = make_mocked_request("GET", "/_emulator/exports", transport=peer(host), app=app)
        route = await app.router.resolve(request)
        return (await route.handler(request)).status

    assert asyncio.run(answer("192.168.1.20")) == 403
    assert asyncio.run(answer("127.0.0.1")) == 200


def test_serves_1000_concurrent_keep_alive_clients() -> None:
    import resource

    import aiohttp

    clients = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * clients + 200  # client and server ends live in this one process
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    created = reused = 0

    async def on_create(*_: Any) -> None:
        nonlocal created
        created += 1

    async def on_reuse(*_: Any) -> None:
        nonlocal reused
        reused += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    trace.on_connection_reuseconn.append(on_reuse)

    async def scenario(emu: ContentExporterEmulator, export_hash: str) -> list[int]:
        url = f"{emu.base_url}/api/remoteExport/{export_hash}/progress"
        all_connected = asyncio.Barrier(clients)

        async def client() -> list[int]:
            async with aiohttp.ClientSession(
                trace_configs=[trace], timeout=aiohttp.ClientTimeout(total=60)
            ) as session:
                statuses = []
                for _ in range(2):
                    async with session.get(url, headers=_headers()) as response:
                        await response.read()
                        statuses.append(response.status)
                    if len(statuses) == 1:
                        await all_connected.wait()  # every client holds an open connection here
                return statuses

        results = await asyncio.gather(*(client() for _ in range(clients)))
        return [status for statuses in results for status in statuses]

    try:
        with run_emulator(api_key=API_KEY, export_seconds=0) as emu:
            export_hash = new_export(emu)
            statuses = asyncio.run(scenario(emu, export_hash))
            assert statuses == [200] * (2 * clients)
            assert emu.counts["export_progress"] == 2 * clients
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (created, reused) == (clients, clients)


def test_cli_spreads_export_times() -> None:
    proc = _cli(
        "--port", "0", "--export-seconds", "2", "--export-seconds-spread", "50", "--quiet",
        env={"CEX_EMULATOR_API_KEY": API_KEY},
    )  # fmt: skip
    try:
        match = re.fullmatch(
            r"Content Exporter emulator listening on (http://127\.0\.0\.1:\d+)\n", _first_line(proc)
        )
        assert match
        base_url = match.group(1)
        started = requests.post(
            f"{base_url}/api/remoteExport/7/init", json={"rootContentId": "7"}, headers=_headers(), timeout=5
        )
        export_hash = started.json()["hash"]
        entry = requests.get(f"{base_url}/_emulator/exports", timeout=5).json()[export_hash]
        assert entry["done_at"] - entry["started_at"] == pytest.approx(2 + spread_fraction("7") * 50)
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_cli_refuses_a_negative_spread() -> None:
    proc = _cli("--export-seconds-spread", "-1")
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "--export-seconds-spread must be >= 0" in stderr
    assert stdout == ""

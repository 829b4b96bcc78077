"""TLS for real on loopback: the emulator serves HTTPS from a throwaway CA; both transports trust it through
the ``verify`` extra, refuse it without, and never send the API key before a handshake succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_cex.exceptions import ContentExporterError, ContentExporterTransientError
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.policy import RetryPolicy
from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger
from tests.conftest import API_KEY, CONN_ENV, connection_json

#: Retries that would show (and cost little) if a certificate error were wrongly taken for a transient one.
COUNTED_RETRIES = RetryPolicy(max_retries=4, backoff_base=0.01, backoff_max=0.02)
OFF_WARNING = "TLS certificate verification is OFF"


@pytest.fixture
def tls_emulator() -> Iterator:
    """The emulator over HTTPS, its certificate (127.0.0.1, localhost) issued by a CA made for this test."""
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0.2, tls=True) as emu:
        yield emu


def use_connection(monkeypatch: pytest.MonkeyPatch, base_url: str, **extra: object) -> None:
    monkeypatch.setenv(CONN_ENV, connection_json(base_url, **extra))


def make_hook(retries: list | None = None) -> ContentExporterHook:
    on_retry = retries.append if retries is not None else None
    return ContentExporterHook(retry_policy=COUNTED_RETRIES, on_retry=on_retry)


def export_and_download(hook: ContentExporterHook, destination: Path):
    export_hash = hook.start_export("424242")
    deadline = time.monotonic() + 10
    while not hook.get_export_progress(export_hash).is_complete:
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.05)
    return hook.download_export(export_hash, destination)


def start_export() -> str:
    with ContentExporterHook() as hook:
        return hook.start_export("1")


def run_trigger(export_hash: str) -> list[dict]:
    trigger = ContentExporterExportTrigger(export_hash, end_time=time.time() + 30, poll_interval=0.05)

    async def collect() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def sync_error(monkeypatch: pytest.MonkeyPatch, base_url: str, **extra: object) -> tuple[Exception, list]:
    """What the sync hook raises starting an export with this connection, and the retries it made."""
    use_connection(monkeypatch, base_url, **extra)
    retries: list = []
    with make_hook(retries) as hook, pytest.raises(ContentExporterError) as err:
        hook.start_export("1")
    return err.value, retries


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What was logged: Airflow 2 hooks log through ``logging`` (caplog, and a console handler on stdout),
    Airflow 3's through structlog to stdout."""
    return caplog.text + capsys.readouterr().out


def off_warnings(caplog_text: str, stdout: str) -> list[str]:
    """The 'verification is OFF' warnings logged, each once (from caplog if it saw them, else stdout)."""
    captured = [line for line in caplog_text.splitlines() if OFF_WARNING in line]
    return captured or [line for line in stdout.splitlines() if OFF_WARNING in line]


def assert_no_key_anywhere(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


# --------------------------------------------------------------------------- the CA in the 'verify' extra


def test_sync_hook_exports_over_tls_with_the_emulators_ca_in_verify(tls_emulator, monkeypatch, tmp_path):
    emu = tls_emulator
    assert emu.base_url.startswith("https://127.0.0.1:") and Path(emu.ca_path).is_file()
    use_connection(monkeypatch, emu.base_url, verify=emu.ca_path)
    with make_hook() as hook:
        result = export_and_download(hook, tmp_path / "out" / "report.pdf")
    data = (tmp_path / "out" / "report.pdf").read_bytes()
    assert data == emu.artifact_path.read_bytes() and data.startswith(b"%PDF-")
    assert result.sha256 == hashlib.sha256(data).hexdigest() == emu.artifact_sha256
    assert result.size_bytes == emu.artifact_size


def test_large_download_over_tls_is_byte_identical(monkeypatch, tmp_path):
    from airflow_provider_cex.emulator import run_emulator

    # 3 MiB: aiohttp's FileResponse cannot use sendfile under TLS and falls back to chunked writes.
    with run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=3 * 1024 * 1024, tls=True) as emu:
        use_connection(monkeypatch, emu.base_url, verify=emu.ca_path)
        with make_hook() as hook:
            result = export_and_download(hook, tmp_path / "big.bin")
        assert result.sha256 == emu.artifact_sha256 and result.size_bytes == 3 * 1024 * 1024


def test_trigger_reaches_success_over_tls_with_the_emulators_ca_in_verify(tls_emulator, monkeypatch):
    use_connection(monkeypatch, tls_emulator.base_url, verify=tls_emulator.ca_path)
    export_hash = start_export()
    assert run_trigger(export_hash) == [{"status": "success", "export_hash": export_hash, "progress": 100.0}]
    assert tls_emulator.counts["export_progress"] >= 1


def test_both_transports_trust_the_same_default_bundle(tls_emulator, monkeypatch, tmp_path):
    """With verify left at true, hook and trigger trust what requests trusts (REQUESTS_CA_BUNDLE here):
    a CA that works for the tasks also works for the deferrable sensor, and the other way round."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_emulator.ca_path)
    use_connection(monkeypatch, tls_emulator.base_url)
    with make_hook() as hook:
        export_and_download(hook, tmp_path / "report.pdf")
    export_hash = start_export()
    assert run_trigger(export_hash) == [{"status": "success", "export_hash": export_hash, "progress": 100.0}]

    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # certifi's bundle: neither trusts the throwaway CA
    error, _ = sync_error(monkeypatch, tls_emulator.base_url)
    assert "not issued by a CA this worker trusts" in str(error)
    (event,) = run_trigger(export_hash)
    assert event["status"] == "error" and "not issued by a CA this worker trusts" in event["message"]


# --------------------------------------------------------------------------- an unknown CA


def test_unknown_ca_fails_at_once_naming_the_verify_extra_and_sends_nothing(
    tls_emulator, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    error, retries = sync_error(monkeypatch, tls_emulator.base_url)
    message = str(error)
    assert not isinstance(error, ContentExporterTransientError) and retries == []
    assert time.monotonic() - started < 2
    assert "certificate verification failed" in message and "not issued by a CA this worker trusts" in message
    assert "extra 'verify' of connection 'content_exporter_default'" in message
    assert_no_key_anywhere(message, repr(error), logged(caplog, capsys))
    assert tls_emulator.requests == [] and sum(tls_emulator.counts.values()) == 0


def test_trigger_with_an_unknown_ca_fires_error_at_once_and_sends_nothing(
    tls_emulator, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    use_connection(monkeypatch, tls_emulator.base_url, verify=tls_emulator.ca_path)
    export_hash = start_export()
    tls_emulator.reset_counters()
    use_connection(monkeypatch, tls_emulator.base_url)  # default verification: certifi's CAs
    started = time.monotonic()
    [event] = run_trigger(export_hash)
    assert time.monotonic() - started < 2
    assert event["status"] == "error"
    assert "not issued by a CA this worker trusts" in event["message"] and "'verify'" in event["message"]
    log = logged(caplog, capsys)
    assert "Retry" not in log and "will check again" not in log
    assert_no_key_anywhere(event["message"], log)
    assert tls_emulator.requests == []


def test_a_ca_bundle_without_the_issuer_says_the_bundle_is_wrong(tls_emulator, monkeypatch):
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, tls=True) as other:  # another throwaway CA
        error, retries = sync_error(monkeypatch, tls_emulator.base_url, verify=other.ca_path)
        assert f"the CA bundle {other.ca_path!r} (extra 'verify'" in str(error)
        assert "does not hold the CA that issued" in str(error) and retries == []
    assert tls_emulator.requests == []


# --------------------------------------------------------------------------- verify: false


def test_verify_false_works_and_warns_once_per_hook(
    tls_emulator, monkeypatch, tmp_path, caplog, capsys, recwarn
):
    caplog.set_level(logging.WARNING)
    use_connection(monkeypatch, tls_emulator.base_url, verify=False)
    for attempt in range(2):
        with make_hook() as hook:
            result = export_and_download(hook, tmp_path / f"report-{attempt}.pdf")
        assert result.sha256 == tls_emulator.artifact_sha256
    stdout = capsys.readouterr().out
    assert_no_key_anywhere(caplog.text, stdout)
    warnings_logged = off_warnings(caplog.text, stdout)
    assert len(warnings_logged) == 2, warnings_logged  # one per hook, though each made several requests
    assert "connection 'content_exporter_default'" in warnings_logged[0]
    assert tls_emulator.base_url in warnings_logged[0]
    assert not [w for w in recwarn if "Unverified HTTPS request" in str(w.message)]


def test_verify_false_trigger_succeeds_and_warns_at_each_run(tls_emulator, monkeypatch, caplog, capsys):
    caplog.set_level(logging.WARNING)
    use_connection(monkeypatch, tls_emulator.base_url, verify="false")
    for _ in range(2):
        export_hash = start_export()
        assert run_trigger(export_hash)[0]["status"] == "success"
    stdout = capsys.readouterr().out
    assert_no_key_anywhere(caplog.text, stdout)
    warnings_logged = off_warnings(caplog.text, stdout)
    # Two from the two start hooks, two from the two trigger runs (their polls log nothing more).
    assert len(warnings_logged) == 4, warnings_logged
    assert sum("ContentExporterAsyncHook" in line for line in warnings_logged) == 2


# --------------------------------------------------------------------------- a certificate for another name


@pytest.fixture
def misnamed_emulator() -> Iterator:
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0, tls=True, tls_names=("cex.example.invalid",)) as emu:
        yield emu


def test_a_certificate_for_another_name_fails_at_once_as_a_name_mismatch(misnamed_emulator, monkeypatch):
    emu = misnamed_emulator
    error, retries = sync_error(monkeypatch, emu.base_url, verify=emu.ca_path)
    message = str(error)
    assert "the server's certificate is not valid for '127.0.0.1'" in message
    assert "cannot fix a name mismatch" in message and "Application URL" in message
    assert retries == [] and emu.requests == []
    assert_no_key_anywhere(message)


def test_trigger_reports_a_name_mismatch(misnamed_emulator, monkeypatch):
    emu = misnamed_emulator
    use_connection(monkeypatch, emu.base_url, verify=emu.ca_path)
    [event] = run_trigger("0123456789abcdef")
    assert event["status"] == "error" and "not valid for '127.0.0.1'" in event["message"]
    assert emu.requests == []


def test_https_to_a_plain_http_port_fails_at_once_saying_so(emulator, monkeypatch):
    error, retries = sync_error(monkeypatch, emulator.base_url.replace("http://", "https://"))
    assert "TLS handshake with https://127.0.0.1:" in str(error) and "speaks HTTPS" in str(error)
    assert retries == [] and emulator.requests == []


def test_localhost_is_one_of_the_default_names(tls_emulator, monkeypatch):
    use_connection(monkeypatch, f"https://localhost:{tls_emulator.port}", verify=tls_emulator.ca_path)
    with make_hook() as hook:
        assert hook.start_export("5")


# --------------------------------------------------------------------------- an unusable 'verify' path


@pytest.mark.parametrize(
    ("make_bundle", "why"),
    [
        (lambda folder: folder / "missing-ca.pem", "does not exist on this worker"),
        (
            lambda folder: _write(folder / "not-a-ca.pem", "not a certificate\n"),
            "holds no usable PEM certificate",
        ),
    ],
    ids=["missing", "not-pem"],
)
def test_an_unusable_ca_bundle_fails_before_any_request(
    tls_emulator, monkeypatch, tmp_path, make_bundle, why
):
    bundle = str(make_bundle(tmp_path))
    use_connection(monkeypatch, tls_emulator.base_url, verify=bundle)
    with make_hook() as hook, pytest.raises(ContentExporterError) as err:
        hook.start_export("1")
    expected = f"The extra 'verify' of connection 'content_exporter_default' names the CA bundle {bundle!r}"
    assert str(err.value).startswith(expected) and why in str(err.value)
    [event] = run_trigger("0123456789abcdef")
    assert event["status"] == "error" and event["message"].startswith(expected)
    ok, message = ContentExporterHook().test_connection()
    assert not ok and message.startswith(expected)
    assert tls_emulator.requests == []


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- what goes over the wire


class RecordingRelay:
    """A TCP relay on loopback to ``target_port``: records every byte clients send through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            self._sockets += [client, upstream]
            for src, dst, record in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in (self._server, *self._sockets):  # shutdown, not just close: it wakes accept() and recv()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def relay(tls_emulator) -> Iterator[RecordingRelay]:
    relay = RecordingRelay(tls_emulator.port)
    try:
        yield relay
    finally:
        relay.close()


def test_the_key_never_crosses_the_wire_before_a_trusted_handshake(tls_emulator, relay, monkeypatch):
    base_url = f"https://127.0.0.1:{relay.port}"
    sync_error(monkeypatch, base_url)
    [event] = run_trigger("0123456789abcdef")
    assert event["status"] == "error" and "not issued by a CA this worker trusts" in event["message"]
    sent = bytes(relay.sent)
    assert sent[:1] == b"\x16"  # a TLS handshake record (ClientHello) went out, then the client gave up
    assert API_KEY.encode() not in sent and b"CEX-API-KEY" not in sent.upper()
    assert tls_emulator.requests == []


def test_with_a_trusted_handshake_the_key_is_only_sent_encrypted(tls_emulator, relay, monkeypatch):
    use_connection(monkeypatch, f"https://127.0.0.1:{relay.port}", verify=tls_emulator.ca_path)
    with make_hook() as hook:
        hook.start_export("1")
    assert [r.had_api_key for r in tls_emulator.requests] == [True]
    sent = bytes(relay.sent)
    assert len(sent) > 200 and API_KEY.encode() not in sent and b"cex-api-key" not in sent.lower()


# --------------------------------------------------------------------------- the emulator's TLS interface


def test_emulator_tls_files_are_private_and_removed_on_stop():
    from airflow_provider_cex.emulator import ContentExporterEmulator, run_emulator

    with run_emulator(api_key=API_KEY, tls=True) as emu:
        folder = Path(emu.ca_path).parent
        assert isinstance(emu.ca_path, str) and emu.tls
        assert (folder.stat().st_mode & 0o777) == 0o700
        assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]
        assert Path(emu.ca_path).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not folder.exists()
    plain = ContentExporterEmulator(API_KEY)
    assert plain.ca_path is None and not plain.tls
    with pytest.raises(ValueError, match="tls_names"):
        ContentExporterEmulator(API_KEY, tls=True, tls_names=())


def test_cli_serves_https_and_prints_the_ca_bundle(tmp_path):
    import requests

    env = {**os.environ, "CEX_EMULATOR_API_KEY": API_KEY}
    cmd = [sys.executable, "-m", "airflow_provider_cex.emulator", "--tls", "--quiet", "--export-seconds", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        match = re.fullmatch(r"Content Exporter emulator listening on (https://127\.0\.0\.1:\d+)\n", first)
        assert match, (first, second)
        ca = re.fullmatch(r"CA bundle: (/\S+/ca\.pem)\n", second)
        assert ca and Path(ca[1]).is_file()
        answer = requests.post(
            f"{match[1]}/api/remoteExport/7/init",
            json={"rootContentId": "7"},
            headers={"CEX-API-KEY": API_KEY},
            verify=ca[1],
            timeout=5,
        )
        assert answer.status_code == 200
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and API_KEY not in err
    assert not Path(ca[1]).exists()


def test_cryptography_is_imported_only_when_tls_is_asked_for():
    code = (
        "import sys\n"
        "from airflow_provider_cex.emulator import run_emulator\n"
        "with run_emulator(api_key='cexk_plain_http_only_0123'):\n"
        "    pass\n"
        "assert 'cryptography' not in sys.modules, 'cryptography imported without TLS'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_tls_emulator_answers_range_and_if_range_like_the_plain_one(monkeypatch):
    """Over TLS the artifact is streamed in 1 MiB writes (FileResponse's TLS fallback was the bottleneck):
    Range, If-Range and 416 must still behave as over plain HTTP, or resume tests would prove nothing."""
    import requests

    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=3 * 1024 * 1024 + 5, tls=True) as emu:
        use_connection(monkeypatch, emu.base_url, verify=emu.ca_path)
        export_hash = start_export()
        with make_hook() as hook:
            url = hook.settings.url("download_export", export_hash)
        data = emu.artifact_path.read_bytes()
        key = {"CEX-API-KEY": API_KEY}
        with requests.Session() as http:
            whole = http.get(url, headers=key, verify=emu.ca_path, timeout=30)
            assert whole.status_code == 200 and whole.content == data
            etag = whole.headers["ETag"]
            part = http.get(url, headers={**key, "Range": "bytes=1048570-"}, verify=emu.ca_path, timeout=30)
            assert part.status_code == 206 and part.content == data[1048570:]
            assert part.headers["Content-Range"] == f"bytes 1048570-{len(data) - 1}/{len(data)}"
            same = http.get(
                url, headers={**key, "Range": "bytes=10-19", "If-Range": etag}, verify=emu.ca_path, timeout=30
            )
            assert same.status_code == 206 and same.content == data[10:20]
            changed = http.get(
                url,
                headers={**key, "Range": "bytes=10-19", "If-Range": '"other"'},
                verify=emu.ca_path,
                timeout=30,
            )
            assert changed.status_code == 200 and changed.content == data
            beyond = http.get(
                url, headers={**key, "Range": f"bytes={len(data)}-"}, verify=emu.ca_path, timeout=30
            )
            assert beyond.status_code == 416

"""Downloads from a misbehaving server: each case ends byte-identical, or in a clear error and no file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from airflow_provider_cex.exceptions import ContentExporterTransientError
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.policy import RetryPolicy
from tests.conftest import API_KEY, CONN_ENV, connection_json

MIB = 1024 * 1024
FAST_RETRIES = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05, retry_after_cap=5)


@pytest.fixture
def big(monkeypatch):
    """An emulator serving a 5 MiB artifact, exports finished at once; read timeout 1 s."""
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=5 * MIB + 3) as emu:
        monkeypatch.setenv(CONN_ENV, connection_json(emu.base_url, timeout=[2, 1]))
        yield emu


def hook() -> ContentExporterHook:
    return ContentExporterHook(retry_policy=FAST_RETRIES)


def export(emu) -> str:
    with hook() as h:
        return h.start_export("5")


def download_statuses(emu) -> list[int]:
    return [r.status for r in emu.requests if r.endpoint == "download_export"]


def only_the_file(folder: Path, name: str) -> bool:
    return sorted(p.name for p in folder.iterdir()) == [name]


def test_a_body_cut_short_is_resumed_with_a_range_request(big, tmp_path):
    export_hash = export(big)
    big.download_fault("truncate", after_bytes=2 * MIB)
    result = hook().download_export(export_hash, tmp_path / "a.bin")
    assert result.sha256 == big.artifact_sha256 and result.size_bytes == big.artifact_size
    assert download_statuses(big) == [200, 206]  # resumed, not restarted
    assert only_the_file(tmp_path, "a.bin")


def test_a_server_that_ignores_range_means_a_restart_from_zero(big, tmp_path):
    export_hash = export(big)
    big.download_fault("truncate", after_bytes=MIB)
    big.download_fault("ignore_range")
    result = hook().download_export(export_hash, tmp_path / "a.bin")
    assert result.sha256 == big.artifact_sha256
    assert download_statuses(big) == [200, 200]
    assert only_the_file(tmp_path, "a.bin")


def test_a_wrong_content_range_is_not_appended(big, tmp_path):
    export_hash = export(big)
    big.download_fault("truncate", after_bytes=MIB)
    big.download_fault("wrong_range")
    result = hook().download_export(export_hash, tmp_path / "a.bin")
    assert result.sha256 == big.artifact_sha256  # the 7 misplaced bytes never reached the file
    assert download_statuses(big) == [200, 206, 200]


def test_a_stalled_body_times_out_and_resumes(big, tmp_path):
    export_hash = export(big)
    big.download_fault("stall", after_bytes=MIB, seconds=3)
    started = time.monotonic()
    result = hook().download_export(export_hash, tmp_path / "a.bin")
    assert result.sha256 == big.artifact_sha256
    assert time.monotonic() - started < 3  # the 1 s read timeout fired, not the 3 s stall
    assert download_statuses(big)[-1] == 206


def test_chunked_body_without_content_length_succeeds_on_a_clean_end(big, tmp_path):
    export_hash = export(big)
    big.download_fault("chunked")
    assert hook().download_export(export_hash, tmp_path / "a.bin").sha256 == big.artifact_sha256


def test_chunked_body_broken_mid_stream_is_retried_from_zero(big, tmp_path):
    export_hash = export(big)
    big.download_fault("chunked_truncate", after_bytes=MIB)
    result = hook().download_export(export_hash, tmp_path / "a.bin")
    assert result.sha256 == big.artifact_sha256
    assert download_statuses(big) == [200, 200]


@pytest.mark.parametrize("kind", ["truncate", "chunked_truncate", "stall"])
def test_a_download_that_never_completes_fails_clearly_and_leaves_nothing(big, tmp_path, kind):
    export_hash = export(big)
    big.download_fault(kind, after_bytes=MIB, times=20, seconds=2)
    with pytest.raises(ContentExporterTransientError, match="download broke 4 times") as err:
        hook().download_export(export_hash, tmp_path / "a.bin")
    assert API_KEY not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_downloads_to_one_path_leave_one_complete_file(big, tmp_path):
    export_hash = export(big)
    results, errors = [], []

    def run() -> None:
        try:
            results.append(hook().download_export(export_hash, tmp_path / "same.bin"))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(results) == 4
    assert only_the_file(tmp_path, "same.bin")
    import hashlib

    assert hashlib.sha256((tmp_path / "same.bin").read_bytes()).hexdigest() == big.artifact_sha256


def test_abort_removes_the_temp_file_of_a_download_in_progress(big, tmp_path):
    export_hash = export(big)
    big.download_fault("stall", after_bytes=MIB, seconds=1.5, times=20)
    h = hook()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            h.download_export(export_hash, tmp_path / "a.bin")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not any(p.suffix == ".part" for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(p.suffix == ".part" for p in tmp_path.iterdir())
    h.abort_downloads()  # what the operator's on_kill does
    assert list(tmp_path.iterdir()) == []
    thread.join(30)
    assert outcome and outcome[0] is not None  # the download did not "succeed" into a missing file
    assert list(tmp_path.iterdir()) == []


def test_fsynced_download_is_complete(big, tmp_path):
    export_hash = export(big)
    result = hook().download_export(export_hash, tmp_path / "d" / "a.bin", fsync=True)
    assert result.sha256 == big.artifact_sha256 and only_the_file(tmp_path / "d", "a.bin")


def test_durable_is_the_deprecated_name_of_fsync(big, tmp_path):
    export_hash = export(big)
    with pytest.warns(DeprecationWarning, match=r"durable=\.\.\.\) is deprecated: use fsync="):
        result = hook().download_export(export_hash, tmp_path / "a.bin", durable=True)
    assert result.sha256 == big.artifact_sha256

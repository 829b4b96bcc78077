"""Real downloads from the bundled emulator: no-clobber under contention, symlinks, a full disk."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from airflow_provider_cex import files
from airflow_provider_cex.exceptions import ContentExporterError, ContentExporterTransientError
from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from airflow_provider_cex.policy import RetryPolicy
from tests.conftest import API_KEY, CONN_ENV, connection_json

FAST_RETRIES = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05, retry_after_cap=5)


@pytest.fixture
def emu(monkeypatch):
    """An emulator serving a 1 MiB artifact, exports finished at once."""
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0, artifact_bytes=1024 * 1024 + 3) as emulator:
        monkeypatch.setenv(CONN_ENV, connection_json(emulator.base_url, timeout=[5, 5]))
        yield emulator


def hook() -> ContentExporterHook:
    return ContentExporterHook(retry_policy=FAST_RETRIES)


def export(emu) -> str:
    with hook() as h:
        return h.start_export("5")


def downloads(emu) -> int:
    return sum(1 for r in emu.requests if r.endpoint == "download_export")


def test_concurrent_no_clobber_downloads_to_one_path_have_exactly_one_winner(emu, tmp_path):
    export_hash = export(emu)
    results, exists, other = [], [], []

    def run() -> None:
        try:
            results.append(hook().download_export(export_hash, tmp_path / "same.bin", overwrite=False))
        except FileExistsError as exc:
            exists.append(exc)
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            other.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert other == [] and len(results) == 1 and len(exists) == 7
    assert all("already exists and overwrite=False" in str(e) for e in exists)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.bin"]
    assert hashlib.sha256((tmp_path / "same.bin").read_bytes()).hexdigest() == emu.artifact_sha256


def test_a_dangling_symlink_at_the_destination_is_refused_before_downloading(emu, tmp_path):
    export_hash = export(emu)
    link = tmp_path / "a.bin"
    link.symlink_to(tmp_path / "missing.bin")
    with pytest.raises(FileExistsError, match="already exists and overwrite=False"):
        hook().download_export(export_hash, link, overwrite=False)
    assert downloads(emu) == 0
    assert link.is_symlink() and not (tmp_path / "missing.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_full_disk_fails_the_download_clearly_and_leaves_nothing(emu, tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    real_create = files.create_temp_file

    def create(folder: str, final_name: str) -> tuple[int, str]:  # writes hit ENOSPC, as on a full disk
        fd, path = real_create(folder, final_name)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, path

    monkeypatch.setattr(files, "create_temp_file", create)
    export_hash = export(emu)
    final = tmp_path / "out" / "a.bin"
    with pytest.raises(ContentExporterError) as info:
        hook().download_export(export_hash, final)
    assert not isinstance(info.value, ContentExporterTransientError)
    message = str(info.value)
    assert str(final) in message and "the disk is full" in message and "Free space" in message
    assert API_KEY not in message
    assert list(Path(tmp_path / "out").iterdir()) == []

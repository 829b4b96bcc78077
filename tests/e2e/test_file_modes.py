"""Downloaded files get the mode a normally created file would have (``0666 & ~umask``), not the temp file's.

A file created with ``0600`` cannot be read by a downstream process running as another user or by a web
server publishing the exports; ``curl -o`` and ``open(path, "w")`` follow the umask, and so must we.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
from tests.e2e.conftest import run_dag
from tests.e2e.test_download_destinations import LOGICAL_DATE, download_dag, finished_export


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: os.PathLike[str] | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def mode_open_would_give(folder: os.PathLike[str] | str) -> int:
    """The mode ``open(path, "w")`` gives a new file in ``folder`` now: the reference we must match."""
    probe = os.path.join(folder, "probe-created-by-open")
    with open(probe, "w"):
        pass
    try:
        return mode_of(probe)
    finally:
        os.unlink(probe)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o007, 0o660)])
def test_hook_download_follows_the_umask(served_emulator, tmp_path, mask, expected):
    export_hash = finished_export("31")
    with umask(mask):
        assert mode_open_would_give(tmp_path) == expected
        with ContentExporterHook() as hook:
            named = hook.download_export(export_hash, str(tmp_path / "named.pdf"))
            into_folder = hook.download_export(export_hash, str(tmp_path / "folder") + os.sep)

    assert mode_of(named.path) == expected
    assert mode_of(into_folder.path) == expected
    assert into_folder.path == str(tmp_path / "folder" / "page-31.pdf")
    for path in (named.path, into_folder.path):
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == served_emulator.artifact_sha256


def test_overwriting_a_file_gives_the_new_file_the_umask_mode(served_emulator, tmp_path):
    """The old file's mode does not matter: the new file is created, as ``open(path, "w")`` after a delete."""
    target = tmp_path / "report.pdf"
    target.write_bytes(b"old")
    target.chmod(0o600)
    export_hash = finished_export("32")
    with umask(0o022), ContentExporterHook() as hook:
        hook.download_export(export_hash, str(target), overwrite=True)

    assert mode_of(target) == 0o644
    assert target.read_bytes() != b"old"


@pytest.mark.parametrize(("mask", "expected"), [(0o002, 0o664), (0o077, 0o600)])
def test_operator_file_url_destination_follows_the_umask(
    airflow_db, served_emulator, tmp_path, mask, expected
):
    export_hash = finished_export("33")
    dag = download_dag(
        f"cex_file_mode_{mask:03o}", export_hash, f"file://{tmp_path}/out/{{{{ ds }}}}/", fsync=True
    )
    with umask(mask):
        dag_run = run_dag(dag, logical_date=LOGICAL_DATE)

    assert dag_run.state == "success"
    landed = tmp_path / "out" / "2026-11-26" / "page-33.pdf"
    assert mode_of(landed) == expected
    assert sorted(p.name for p in landed.parent.iterdir()) == ["page-33.pdf"]  # no temp file left

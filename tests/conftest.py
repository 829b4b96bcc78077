"""Test setup: a throwaway AIRFLOW_HOME (set before Airflow is imported) and the emulator fixtures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

import testkit  # imports no Airflow: safe before AIRFLOW_HOME is set
from testkit import AIRFLOW_V3 as AIRFLOW_V3  # tests branch on it (the metadata DB, dag.test(), the form)

# Airflow reads its configuration at import time: point it at a throwaway home first.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="cex-test-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the throwaway home (its SQLite DB and logs) when the session ends: they piled up in /tmp."""
    import shutil

    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


#: A realistic 40-character key: Airflow does not mask secrets shorter than 5 characters.
API_KEY = "cexk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e"
CONN_ENV = "AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"


def connection_json(base_url: str, api_key: str = API_KEY, **extra: object) -> str:
    return testkit.connection_json(base_url, api_key, **extra)


@pytest.fixture
def emulator() -> Iterator:
    """A Content Exporter emulator on a free loopback port, exports finishing in 0.3 s."""
    from airflow_provider_cex.emulator import run_emulator

    with run_emulator(api_key=API_KEY, export_seconds=0.3) as emu:
        yield emu


@pytest.fixture
def served_emulator(emulator, monkeypatch: pytest.MonkeyPatch):
    """The emulator, with the default connection (supplied by env var) pointing at it."""
    monkeypatch.setenv(CONN_ENV, connection_json(emulator.base_url))
    return emulator


@pytest.fixture(autouse=True)
def _fresh_connection_settings_cache() -> Iterator[None]:
    """Triggers share connection settings for a minute; each test points the connection elsewhere."""
    from airflow_provider_cex.hooks.content_exporter_async import SETTINGS_CACHE

    SETTINGS_CACHE.clear()
    yield
    SETTINGS_CACHE.clear()

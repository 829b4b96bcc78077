"""ContentExporterExportTrigger against the emulator: events, deadlines, retries, no blocking."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from airflow_provider_cex.hooks.content_exporter import ContentExporterAsyncHook, ContentExporterHook
from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger
from tests.conftest import API_KEY


def start_export(page_id: str = "1") -> str:
    with ContentExporterHook() as hook:
        return hook.start_export(page_id)


async def collect(trigger: ContentExporterExportTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def run_trigger(trigger: ContentExporterExportTrigger, *, debug: bool = False) -> list[dict]:
    return asyncio.run(collect(trigger), debug=debug)


def test_serialize_round_trips():
    trigger = ContentExporterExportTrigger(
        "abc",
        end_time=1_900_000_000.5,
        content_exporter_conn_id="c",
        poll_interval=7,
        page_id=123456,
        started_at=1_899_999_000,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_cex.triggers.content_exporter.ContentExporterExportTrigger"
    again = ContentExporterExportTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs == {
        "export_hash": "abc",
        "end_time": 1_900_000_000.5,
        "content_exporter_conn_id": "c",
        "poll_interval": 7.0,
        "page_id": "123456",
        "started_at": 1_899_999_000.0,
    }


def test_a_trigger_serialized_by_an_older_version_still_loads():
    """Rows written before the page and the start were serialized: the trigger runs without them."""
    old = {
        "export_hash": "abc",
        "end_time": 1_900_000_000.5,
        "content_exporter_conn_id": "c",
        "poll_interval": 7.0,
    }
    trigger = ContentExporterExportTrigger(**old)
    assert (trigger.page_id, trigger.started_at) == (None, None)


def test_fires_success_once_when_the_export_completes(served_emulator):
    export_hash = start_export()
    events = run_trigger(
        ContentExporterExportTrigger(export_hash, end_time=time.time() + 30, poll_interval=0.1)
    )
    assert events == [{"status": "success", "export_hash": export_hash, "progress": 100.0}]


def test_fires_failed_with_the_servers_message(served_emulator):
    served_emulator.fail_pages(["9"], message="Macro rendering failed")
    export_hash = start_export("9")
    events = run_trigger(
        ContentExporterExportTrigger(export_hash, end_time=time.time() + 30, poll_interval=0.1)
    )
    assert len(events) == 1 and events[0]["status"] == "failed"
    assert events[0]["message"] == "Macro rendering failed"


def test_fires_timeout_at_the_deadline(served_emulator):
    served_emulator.export_seconds = 3600
    export_hash = start_export()
    started = time.monotonic()
    events = run_trigger(
        ContentExporterExportTrigger(export_hash, end_time=time.time() + 1.0, poll_interval=0.3)
    )
    assert [e["status"] for e in events] == ["timeout"]
    assert 0.9 <= time.monotonic() - started < 3


def test_deadline_survives_a_triggerer_restart(served_emulator):
    served_emulator.export_seconds = 3600
    export_hash = start_export()
    first = ContentExporterExportTrigger(export_hash, end_time=time.time() + 1.5, poll_interval=0.2)
    _classpath, kwargs = first.serialize()
    time.sleep(1.0)  # the triggerer is down for a second, then re-creates the trigger from the DB row
    started = time.monotonic()
    events = run_trigger(ContentExporterExportTrigger(**kwargs))
    assert [e["status"] for e in events] == ["timeout"]
    assert time.monotonic() - started < 1.2  # the remaining 0.5 s, not a fresh 1.5 s


def test_rate_limits_and_503_are_retried_inside_run(served_emulator):
    export_hash = start_export()
    served_emulator.inject("export_progress", status=429, times=1, retry_after="0")
    served_emulator.inject("export_progress", status=503, times=1, retry_after="0")
    events = run_trigger(
        ContentExporterExportTrigger(export_hash, end_time=time.time() + 30, poll_interval=0.1)
    )
    assert [e["status"] for e in events] == ["success"]
    assert served_emulator.counts["export_progress"] >= 3


def test_outage_past_the_deadline_fires_error(served_emulator):
    export_hash = start_export()
    served_emulator.outage("export_progress", seconds=60, status=503, retry_after="0")
    events = run_trigger(
        ContentExporterExportTrigger(export_hash, end_time=time.time() + 0.5, poll_interval=0.1)
    )
    assert [e["status"] for e in events] == ["error"]
    assert "HTTP 503" in events[0]["message"] and API_KEY not in events[0]["message"]


def test_unknown_hash_fires_error_at_once(served_emulator):
    events = run_trigger(
        ContentExporterExportTrigger("nosuchhash", end_time=time.time() + 30, poll_interval=0.1)
    )
    assert [e["status"] for e in events] == ["error"] and "404" in events[0]["message"]
    # One attempt with the key (no retries), then one without it that tells an unknown hash from a wrong path.
    asked = [(r.had_api_key, r.status) for r in served_emulator.requests if r.endpoint == "export_progress"]
    assert asked == [(True, 404), (False, 401)]


def test_run_never_blocks_the_event_loop(served_emulator, caplog, monkeypatch):
    served_emulator.export_seconds = 0.5
    export_hash = start_export()
    import threading

    import requests

    loop_threads: set[int] = set()
    blocking: list[str] = []

    def guard(name, original):
        def wrapper(*args, **kwargs):
            if threading.get_ident() in loop_threads:
                blocking.append(name)
            return original(*args, **kwargs)

        return wrapper

    # Sync HTTP and sleeping on the loop's thread are the blocking calls a trigger could slip into.
    monkeypatch.setattr(requests.Session, "send", guard("requests", requests.Session.send))
    monkeypatch.setattr(time, "sleep", guard("time.sleep", time.sleep))

    async def main() -> list[dict]:
        loop_threads.add(threading.get_ident())
        # A threshold well above scheduling noise on a busy 2-core machine, well below a blocking call
        # waiting on the network or a database.
        asyncio.get_running_loop().slow_callback_duration = 0.2
        return await collect(
            ContentExporterExportTrigger(export_hash, end_time=time.time() + 30, poll_interval=0.1)
        )

    caplog.set_level(logging.WARNING, logger="asyncio")
    events = asyncio.run(main(), debug=True)
    assert [e["status"] for e in events] == ["success"]
    assert blocking == []
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert slow == []


def test_cancellation_exits_promptly_and_closes_the_session(served_emulator, monkeypatch):
    served_emulator.export_seconds = 3600
    export_hash = start_export()
    closed: list[bool] = []
    original_close = ContentExporterAsyncHook.close

    async def recording_close(self):
        await original_close(self)
        closed.append(True)

    monkeypatch.setattr(ContentExporterAsyncHook, "close", recording_close)

    async def main() -> float:
        task = asyncio.create_task(
            collect(ContentExporterExportTrigger(export_hash, end_time=time.time() + 600, poll_interval=5))
        )
        await asyncio.sleep(0.5)  # polled once, now sleeping
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.5
    assert closed == [True]
    assert served_emulator.counts["export_progress"] == 1


def test_concurrent_triggers_share_one_connection_lookup(served_emulator, monkeypatch):
    """1,000 triggers of one triggerer must not read the same connection (a secrets backend) 1,000 times."""
    from airflow_provider_cex.hooks.content_exporter_async import SETTINGS_CACHE

    served_emulator.export_seconds = 0
    hashes = [start_export(str(page)) for page in range(1, 21)]
    lookups: list[str] = []
    real_lookup = SETTINGS_CACHE.lookup

    async def counting_lookup(conn_id: str):
        lookups.append(conn_id)
        await asyncio.sleep(0.05)  # a slow secrets backend: every trigger arrives while it is in flight
        return await real_lookup(conn_id)

    monkeypatch.setattr(SETTINGS_CACHE, "lookup", counting_lookup)

    async def main() -> list[list[dict]]:
        triggers = [
            ContentExporterExportTrigger(h, end_time=time.time() + 30, poll_interval=0.1) for h in hashes
        ]
        return await asyncio.gather(*(collect(t) for t in triggers))

    results = asyncio.run(main())
    assert [[e["status"] for e in events] for events in results] == [["success"]] * 20
    assert lookups == ["content_exporter_default"]
    assert asyncio.run(main()) and lookups == ["content_exporter_default"]  # still fresh: no new lookup


def test_a_changed_connection_reaches_triggers_started_after_the_cache_expired(served_emulator, monkeypatch):
    from airflow_provider_cex.emulator import run_emulator
    from airflow_provider_cex.hooks.content_exporter_async import SETTINGS_CACHE
    from tests.conftest import CONN_ENV, connection_json

    served_emulator.export_seconds = 0
    monkeypatch.setattr(SETTINGS_CACHE, "ttl", 0.2)
    with run_emulator(api_key=API_KEY, export_seconds=0) as moved:
        with ContentExporterHook() as hook:
            first = hook.start_export("1")
        assert [e["status"] for e in run_trigger(ContentExporterExportTrigger(first, time.time() + 10))] == [
            "success"
        ]
        monkeypatch.setenv(CONN_ENV, connection_json(moved.base_url))  # the service moved; key unchanged
        with ContentExporterHook() as hook:
            second = hook.start_export("2")
        time.sleep(0.3)
        events = run_trigger(ContentExporterExportTrigger(second, time.time() + 10, poll_interval=0.1))
        assert [e["status"] for e in events] == ["success"]
        assert moved.counts["export_progress"] >= 1


def test_a_failed_connection_lookup_is_not_cached(served_emulator, monkeypatch):
    from airflow_provider_cex.hooks.content_exporter_async import SETTINGS_CACHE

    calls: list[int] = []
    real_lookup = SETTINGS_CACHE.lookup

    async def flaky_lookup(conn_id: str):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("secrets backend unavailable")
        return await real_lookup(conn_id)

    monkeypatch.setattr(SETTINGS_CACHE, "lookup", flaky_lookup)
    export_hash = start_export()

    async def enter() -> None:
        async with ContentExporterAsyncHook():
            pass

    with pytest.raises(RuntimeError, match="secrets backend unavailable"):
        asyncio.run(enter())
    asyncio.run(enter())
    assert len(calls) == 2 and export_hash

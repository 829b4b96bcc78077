"""soft_fail skips only a failed export or a timeout: every other error fails the sensor, in every mode.

Airflow's own ``BaseSensorOperator.resume_execution`` skips on any ``AirflowException`` when
``soft_fail`` is set (2.11 and 3.x alike); these tests call the sensor the way the task runner does
on resume, so they would catch the blanket skip coming back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    DAG,
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
)

from airflow_provider_cex.exceptions import (
    ContentExporterAuthError,
    ContentExporterError,
    ContentExporterExportFailedError,
    ContentExporterNotFoundError,
    ContentExporterProtocolError,
)
from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor
from airflow_provider_cex.triggers.events import (
    ERROR,
    FAILED,
    SUCCESS,
    TIMEOUT,
    may_skip,
    raise_for_event,
    skip_or_raise,
)
from tests.conftest import AIRFLOW_V3

HASH = "exp-0123abcd"
#: next_kwargs["error"] of a deferral past its timeout, as this Airflow version's scheduler writes it.
DEFERRAL_TIMEOUT = "Trigger timeout" if AIRFLOW_V3 else "Trigger/execution timeout"

SUCCESS_EVENT = {"status": SUCCESS, "export_hash": HASH, "progress": 100}
FAILED_EVENT = {"status": FAILED, "export_hash": HASH, "message": "Page tree too large", "progress": 60}
TIMEOUT_EVENT = {
    "status": TIMEOUT,
    "export_hash": HASH,
    "message": f"export {HASH}: the wait timed out at 40 % after 2 h 0 min",
    "progress": 40,
}
#: What the trigger sends for a rejected key, an unknown hash, an unreadable answer, a long outage.
ERROR_EVENTS = {
    "rejected key": {"status": ERROR, "export_hash": HASH, "message": "HTTP 401: API key rejected"},
    "unknown hash": {"status": ERROR, "export_hash": HASH, "message": f"HTTP 404: unknown export {HASH}"},
    "unreadable answer": {"status": ERROR, "export_hash": HASH, "message": "progress answer is not JSON"},
    "outage past the deadline": {"status": ERROR, "export_hash": HASH, "message": "HTTP 503 after 5 tries"},
}
UNEXPECTED_EVENTS = {"none": None, "unknown status": {"status": "paused"}, "not a dict": "success"}


@pytest.fixture
def dag():
    return DAG("t", schedule=None, start_date=datetime(2026, 1, 1))


def sensor(dag: Any, **kwargs: Any) -> ContentExporterExportSensor:
    return ContentExporterExportSensor(task_id="wait", export_hash=HASH, dag=dag, **kwargs)


def resume(task: ContentExporterExportSensor, event: Any) -> Any:
    """What the task runner (Airflow 3) and TaskInstance (2.11) call when the trigger has fired."""
    return task.resume_execution(next_method="execute_complete", next_kwargs={"event": event}, context={})


#: Both ways into execute_complete: directly, and through resume_execution as Airflow really does.
ENTRY_POINTS = {
    "execute_complete": lambda task, event: task.execute_complete({}, event=event),
    "resume_execution": resume,
}


@pytest.fixture(params=sorted(ENTRY_POINTS))
def complete(request):
    return ENTRY_POINTS[request.param]


# --------------------------------------------------------------------------- the two outcomes that may skip


@pytest.mark.parametrize("soft_fail", [False, True])
def test_a_complete_export_succeeds(dag, complete, soft_fail):
    assert complete(sensor(dag, soft_fail=soft_fail), SUCCESS_EVENT) is None


def test_a_failed_export_fails_once_without_retries(dag, complete):
    with pytest.raises(ContentExporterExportFailedError, match="Page tree too large") as raised:
        complete(sensor(dag), FAILED_EVENT)
    assert isinstance(raised.value, AirflowFailException)  # Airflow does not retry it
    assert raised.value.export_hash == HASH and raised.value.server_message == "Page tree too large"


def test_a_failed_export_with_soft_fail_skips(dag, complete):
    with pytest.raises(AirflowSkipException, match="Page tree too large") as raised:
        complete(sensor(dag, soft_fail=True), FAILED_EVENT)
    assert isinstance(raised.value.__cause__, ContentExporterExportFailedError)


def test_a_timeout_fails_with_a_sensor_timeout(dag, complete):
    with pytest.raises(AirflowSensorTimeout, match="timed out at 40 %"):
        complete(sensor(dag), TIMEOUT_EVENT)


def test_a_timeout_with_soft_fail_skips(dag, complete):
    with pytest.raises(AirflowSkipException, match="timed out at 40 %") as raised:
        complete(sensor(dag, soft_fail=True), TIMEOUT_EVENT)
    assert isinstance(raised.value.__cause__, AirflowSensorTimeout)


# --------------------------------------------------------------------------- errors fail, soft_fail or not


@pytest.mark.parametrize("soft_fail", [False, True])
@pytest.mark.parametrize("kind", sorted(ERROR_EVENTS))
def test_an_error_event_fails_even_with_soft_fail(dag, complete, kind, soft_fail):
    event = ERROR_EVENTS[kind]
    with pytest.raises(ContentExporterError, match=event["message"]) as raised:
        complete(sensor(dag, soft_fail=soft_fail), event)
    # a plain provider error: retryable (an outage may be over by the next try), and no skip
    assert not isinstance(raised.value, (AirflowSkipException, AirflowFailException))


@pytest.mark.parametrize("soft_fail", [False, True])
@pytest.mark.parametrize("kind", sorted(UNEXPECTED_EVENTS))
def test_an_unexpected_event_fails_even_with_soft_fail(dag, complete, kind, soft_fail):
    with pytest.raises(AirflowException, match="unexpected event") as raised:
        complete(sensor(dag, soft_fail=soft_fail), UNEXPECTED_EVENTS[kind])
    assert not isinstance(raised.value, AirflowSkipException)


def test_airflows_own_resume_would_have_skipped_a_rejected_key(dag):
    """Why the sensor overrides resume_execution: the base class skips any AirflowException."""
    task = sensor(dag, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        BaseSensorOperator.resume_execution(
            task,
            next_method="execute_complete",
            next_kwargs={"event": ERROR_EVENTS["rejected key"]},
            context={},
        )


def test_never_fail_still_skips_an_error_event(dag):
    with pytest.raises(AirflowSkipException, match="never_fail"):
        resume(sensor(dag, never_fail=True), ERROR_EVENTS["rejected key"])


# --------------------------------------------------------------------------- a trigger crashed or timed out


@pytest.mark.parametrize("soft_fail", [False, True])
def test_a_crashed_trigger_fails_even_with_soft_fail(dag, soft_fail):
    task = sensor(dag, soft_fail=soft_fail)
    with pytest.raises(AirflowException, match="Trigger failure") as raised:
        task.resume_execution(
            next_method="__fail__",
            next_kwargs={"error": "Trigger failure", "traceback": ["Traceback ...", "KeyError: 'x'"]},
            context={},
        )
    assert type(raised.value).__name__ == "TaskDeferralError"


def test_a_deferral_past_its_timeout_with_soft_fail_skips(dag):
    task = sensor(dag, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        task.resume_execution(next_method="__fail__", next_kwargs={"error": DEFERRAL_TIMEOUT}, context={})


def test_a_deferral_past_its_timeout_fails_as_airflow_fails_it(dag):
    task = sensor(dag)
    expected = AirflowSensorTimeout if AIRFLOW_V3 else AirflowException  # 2.11: a TaskDeferralError
    with pytest.raises(expected) as raised:
        task.resume_execution(next_method="__fail__", next_kwargs={"error": DEFERRAL_TIMEOUT}, context={})
    assert not isinstance(raised.value, AirflowSkipException)


# --------------------------------------------------------------------------- poke mode, the first poke


def raising(error: Exception):
    def poke(context: Any) -> bool:
        raise error

    return poke


HARD_POKE_ERRORS = {
    "rejected key": ContentExporterAuthError("HTTP 401: API key rejected"),
    "unknown hash": ContentExporterNotFoundError(f"HTTP 404: unknown export {HASH}"),
    "unreadable answer": ContentExporterProtocolError("progress answer is not JSON"),
}


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke mode", "first poke before deferring"])
@pytest.mark.parametrize("kind", sorted(HARD_POKE_ERRORS))
def test_a_poke_error_fails_even_with_soft_fail(dag, monkeypatch, kind, deferrable):
    task = sensor(dag, soft_fail=True, mode="poke", deferrable=deferrable)
    monkeypatch.setattr(task, "poke", raising(HARD_POKE_ERRORS[kind]))
    with pytest.raises(type(HARD_POKE_ERRORS[kind])):
        task.execute({})


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke mode", "first poke before deferring"])
def test_a_failed_export_at_a_poke_with_soft_fail_skips(dag, monkeypatch, deferrable):
    task = sensor(dag, soft_fail=True, mode="poke", deferrable=deferrable)
    monkeypatch.setattr(task, "poke", raising(ContentExporterExportFailedError("export failed: boom")))
    with pytest.raises(AirflowSkipException):
        task.execute({})


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke mode", "first poke before deferring"])
def test_a_failed_export_at_a_poke_fails_once_without_soft_fail(dag, monkeypatch, deferrable):
    task = sensor(dag, mode="poke", deferrable=deferrable)
    monkeypatch.setattr(task, "poke", raising(ContentExporterExportFailedError("export failed: boom")))
    with pytest.raises(ContentExporterExportFailedError):
        task.execute({})


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_malformed_hash_fails_even_with_soft_fail(dag, mode, deferrable):
    task = ContentExporterExportSensor(
        task_id="wait",
        export_hash="a hash/with spaces",
        soft_fail=True,
        mode=mode,
        deferrable=deferrable,
        dag=dag,
    )
    with pytest.raises(AirflowFailException, match="not a valid export hash") as raised:
        task.execute({})  # fails before anything needs the context or the service
    assert not isinstance(raised.value, AirflowSkipException)


def test_a_poke_timeout_with_soft_fail_still_skips(dag, monkeypatch):
    task = sensor(dag, soft_fail=True, mode="poke", timeout=0, poke_interval=0)
    monkeypatch.setattr(task, "poke", lambda context: False)
    with pytest.raises(AirflowSkipException, match="timed out"):
        task.execute({})


# --------------------------------------------------------------------------- the shared mapping


def test_may_skip_only_a_failed_export_or_a_timeout():
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    assert may_skip(ContentExporterExportFailedError("x"))
    assert may_skip(AirflowSensorTimeout("x")) and may_skip(AirflowTaskTimeout("x"))
    for error in (
        *HARD_POKE_ERRORS.values(),
        AirflowFailException("x"),
        AirflowException("x"),
        ValueError("x"),
    ):
        assert not may_skip(error), error


def test_skip_or_raise_passes_a_skip_through_unchanged():
    skip = AirflowSkipException("already skipped")
    with pytest.raises(AirflowSkipException) as raised:
        skip_or_raise(skip, soft_fail=True)
    assert raised.value is skip


def test_raise_for_event_returns_the_success_event():
    assert raise_for_event(SUCCESS_EVENT, soft_fail=True) is SUCCESS_EVENT


def test_raise_for_event_names_the_export_when_the_event_does_not():
    with pytest.raises(ContentExporterExportFailedError, match="export fallback-hash: the export failed"):
        raise_for_event({"status": FAILED, "message": "m"}, export_hash="fallback-hash")


# --------------------------------------------------------------------------- templated connection id


def test_the_connection_id_is_templated(dag):
    assert ContentExporterExportSensor.template_fields == ("export_hash", "content_exporter_conn_id")
    task = ContentExporterExportSensor(
        task_id="w", export_hash="{{ params.h }}", content_exporter_conn_id="cex_{{ params.region }}", dag=dag
    )
    task.render_template_fields({"params": {"h": HASH, "region": "eu"}})
    assert (task.export_hash, task.content_exporter_conn_id) == (HASH, "cex_eu")

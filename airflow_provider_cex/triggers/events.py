"""What a ContentExporterExportTrigger event can say, and what each means for the task that deferred.

The sensor's ``execute_complete`` runs on a worker and needs only this module; importing the
trigger module would load aiohttp there for nothing. Nothing here imports a transport.

``soft_fail`` means what it says: it skips the task for the two outcomes a user may expect to
happen (the export failed at the vendor, the wait timed out) and for nothing else. A rejected key,
an unknown hash, an unreadable answer or an outage past the deadline are errors in the setup or the
service: they fail the task even with ``soft_fail=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from airflow_provider_cex.exceptions import ContentExporterExportFailedError
    from airflow_provider_cex.progress import ExportWatch

#: Event statuses, each mapped by :func:`raise_for_event` to one outcome.
SUCCESS, FAILED, TIMEOUT, ERROR = "success", "failed", "timeout", "error"
EVENT_STATUSES = frozenset({SUCCESS, FAILED, TIMEOUT, ERROR})


def raise_for_event(
    event: object, *, soft_fail: bool = False, export_hash: str | None = None
) -> dict[str, Any]:
    """Return the event of a complete export; raise what any other event means for the task.

    The contract, for every task that defers to ``ContentExporterExportTrigger``, by event ``status``:

    - ``success``: returns the event (a dict with ``export_hash`` and ``progress``).
    - ``failed`` (the export failed at the vendor): ``ContentExporterExportFailedError``, an
      ``AirflowFailException`` (no task retries: they cannot fix it). **May skip.**
    - ``timeout`` (the trigger's deadline passed): ``AirflowSensorTimeout`` (no task retries).
      **May skip.**
    - ``error`` (a rejected key, an unknown hash, an unreadable answer, an outage past the deadline):
      ``ContentExporterError``; task retries apply (one helps after an outage). Never a skip.
    - anything else (not a dict, an unknown status): ``AirflowException``. Never a skip.

    With ``soft_fail=True`` the two outcomes that may skip raise ``AirflowSkipException`` instead,
    chained (``__cause__``) to the error it stands for; the others raise as without it. ``export_hash``
    names the export in messages when the event does not (the trigger always sends it).
    """
    try:
        return _outcome(event, export_hash)
    except Exception as err:
        skip_or_raise(err, soft_fail=soft_fail)


def may_skip(error: BaseException) -> bool:
    """Whether ``soft_fail`` may turn ``error`` into a skip: a failed export or a timeout, nothing else.

    A timeout is the sensor's own (``AirflowSensorTimeout``) or the task's ``execution_timeout``
    (``AirflowTaskTimeout``), as Airflow's sensors treat them.
    """
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowTaskTimeout

    from airflow_provider_cex.exceptions import ContentExporterExportFailedError

    return isinstance(error, (ContentExporterExportFailedError, AirflowSensorTimeout, AirflowTaskTimeout))


def skip_or_raise(error: BaseException, *, soft_fail: bool) -> NoReturn:
    """Raise ``AirflowSkipException`` from ``error`` if ``soft_fail`` and :func:`may_skip`; else ``error``.

    A skip passes through unchanged, so applying this twice to the same error is harmless.
    """
    from airflow.providers.common.compat.sdk import AirflowSkipException

    if soft_fail and may_skip(error) and not isinstance(error, AirflowSkipException):
        raise AirflowSkipException(f"Skipping (soft_fail): {error}") from error
    raise error


def export_failed(watch: ExportWatch, message: str | None) -> ContentExporterExportFailedError:
    """The error for an export that failed at the vendor (an ``AirflowFailException``: no task retries).

    Its message names the page (when known), the progress reached, the time it took, the server's reason
    and the hash: ``page 123456: the export failed at 40 % after 1 min 5 s: … (export cd58…)``.
    """
    from airflow_provider_cex.exceptions import ContentExporterExportFailedError

    return ContentExporterExportFailedError(
        watch.failed_message(message),
        export_hash=watch.export_hash,
        server_message=message,
    )


def watch_of(event: dict[str, Any], export_hash: str | None) -> ExportWatch:
    """The export an event describes, with the progress it reached and when (for the task's one sentence)."""
    from airflow_provider_cex.progress import ExportWatch

    return ExportWatch.from_facts(str(event.get("export_hash") or export_hash), event)


def _outcome(event: object, export_hash: str | None) -> dict[str, Any]:
    from airflow.providers.common.compat.sdk import AirflowException, AirflowSensorTimeout

    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise AirflowException(
            f"The Content Exporter trigger sent an unexpected event {event!r}; expected a status among "
            + ", ".join(sorted(EVENT_STATUSES))
            + "."
        )
    status, message = event["status"], event.get("message")
    export_hash = event.get("export_hash", export_hash)
    if status == SUCCESS:
        return event
    if status == FAILED:
        raise export_failed(watch_of(event, export_hash), message)
    if status == TIMEOUT:  # the trigger said it in full (progress.ExportWatch.timed_out_message)
        raise AirflowSensorTimeout(message or watch_of(event, export_hash).timed_out_message())
    raise wait_error(export_hash, message)


def wait_error(export_hash: str | None, message: object) -> Exception:
    """The error that ends a wait in every mode when the cause is not the export's: a rejected key, an unknown
    hash, an unreadable answer, or an outage that lasted until the deadline. Task retries apply, and
    ``soft_fail`` does not skip it: a skip would hide a broken connection."""
    from airflow_provider_cex.exceptions import ContentExporterError

    return ContentExporterError(f"Content Exporter export {export_hash}: {message}")

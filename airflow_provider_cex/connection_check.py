"""What Airflow's Test Connection can honestly say, from the answers to three harmless probes.

The Remote API has no "who am I" call, so the hook asks for the progress of a made-up export hash
(with the key, then without it) and posts nothing to the start path without the key, which cannot
start an export. A 404 for a made-up hash proves only that something answered; the same request
without the key tells a guarded endpoint (401/403) from a path where nothing lives (404).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS, START_EXPORT
from airflow_provider_cex.failures import DESCRIPTOR_COMMAND, path_origin
from airflow_provider_cex.settings import ConnectionSettings

#: The export hash Test Connection asks about; no real export has it.
PROBE_HASH = "airflow-connection-test"
#: The page id of the keyless start probe (never sent with a key, so it cannot start an export).
PROBE_PAGE_ID = "0"

_GUARDED = (401, 403)
_FIX_PATHS = {False: "That path is probably wrong:", True: "Those paths are probably wrong:"}


def tested_under_a_made_up_id(conn_id: str) -> bool:
    """Whether Airflow is testing an unsaved connection under an id it made up (the UI's and REST's Test
    Connection: ``AIRFLOW_CONN_<8 random characters>`` set for the test), not the user's own id."""
    return bool(re.fullmatch(r"[A-Za-z0-9]{8}", conn_id)) and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ


def for_test_connection(message: str, conn_id: str) -> str:
    """A message written for tasks, said as Test Connection must say it.

    The UI's and REST's test runs on the API server (the webserver on Airflow 2.11), not on a worker, and
    under a made-up connection id: the message says "this connection" and names the server. The CLI
    (``airflow connections test <id>``) runs where it is typed, under the real id: "this machine".
    """
    if tested_under_a_made_up_id(conn_id):
        message = message.replace(f"Connection {conn_id!r}", "This connection")
        message = message.replace(f"connection {conn_id!r}", "this connection")
        where = "the Airflow API server (the webserver on Airflow 2.11), where Test Connection runs"
    else:
        where = "this machine"
    return message.replace("this worker", where)


@dataclass(frozen=True)
class ProbeAnswers:
    """HTTP statuses of the probes (None: not sent, or no answer)."""

    progress_with_key: int
    progress_without_key: int | None = None
    start_without_key: int | None = None


def _path_problem(name: str, endpoint: str, status: int | None, settings: ConnectionSettings) -> str | None:
    """Why the path of ``endpoint`` is probably wrong, judged from its keyless answer; None if no sign."""
    if status == 404:
        return (
            f"nothing answers at the {name} path {path_origin(settings, endpoint)}: HTTP 404 even without "
            "the API key, where an endpoint would answer 401/403"
        )
    if status == 405:
        return (
            f"the {name} path {path_origin(settings, endpoint)} answers HTTP 405 (it exists, but not for the "
            "method this call uses)"
        )
    return None


def _path_evidence(name: str, endpoint: str, status: int | None, settings: ConnectionSettings) -> str:
    where = path_origin(settings, endpoint)
    if status in _GUARDED:
        return f"The {name} path {where} exists (HTTP {status} without the key)"
    shown = "no answer" if status is None else f"HTTP {status}"
    return f"The {name} path {where} could not be confirmed ({shown} without the key)"


def verdict(settings: ConnectionSettings, answers: ProbeAnswers) -> tuple[bool, str]:
    """``(ok, message)`` for Airflow's Test Connection button, claiming no more than the answers prove."""
    base = settings.base_url
    status = answers.progress_with_key
    if status in _GUARDED:
        return False, (
            f"{base} is reachable but rejected the API key (HTTP {status}): generate a new key on the "
            "Content Exporter admin page (Remote API section) and store it as the connection password."
        )
    if status == 429 or status >= 500:
        return False, (
            f"{base} answered HTTP {status}: the service is down or rate-limiting; try again later."
        )
    problems = [
        problem
        for problem in (
            _path_problem("progress", EXPORT_PROGRESS, answers.progress_without_key, settings)
            if status in (404, 405)
            else None,
            _path_problem("start-export", START_EXPORT, answers.start_without_key, settings),
        )
        if problem
    ]
    if problems:
        return False, (
            f"{base} is reachable, but " + "; and ".join(problems) + f". {_FIX_PATHS[len(problems) > 1]} "
            f"set the 'endpoints' extra of connection {settings.conn_id!r}, or derive it from the vendor's "
            f"OpenAPI descriptor with: {DESCRIPTOR_COMMAND}. If the Application URL is your Confluence "
            "site, use the Content Exporter application URL (or leave it empty and set 'region')."
        )
    if status == 404 and answers.progress_without_key in _GUARDED:
        key = (
            "the API key was accepted (a made-up export hash gets HTTP 404 with the key and "
            f"{answers.progress_without_key} without it)"
        )
    else:
        key = f"the API key was not rejected (a made-up export hash got HTTP {status} with the key)"
    evidence = [
        _path_evidence("start-export", START_EXPORT, answers.start_without_key, settings),
        _path_evidence("progress", EXPORT_PROGRESS, answers.progress_without_key, settings),
        f"The download path {path_origin(settings, DOWNLOAD_EXPORT)} cannot be checked without a "
        "finished export",
    ]
    return True, f"Connected to {base}: {key}. " + ". ".join(evidence) + "."

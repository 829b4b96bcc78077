"""The fault matrix: seeded start -> poll -> download runs through the hook against a hostile emulator.

In ``testkit/`` (neither tests nor benchmarks, not shipped), shared by ``tests/faults/test_fault_matrix.py``
(a fast subset, in CI) and ``benchmarks/fault_matrix.py`` (the full matrix and its table). Each run arms one
fault kind on one endpoint (or a seeded chaos schedule on all of them), then does what the operators and the
sensor do: start once, poll until complete or failed (a transient progress error is "not done yet", as in the
sensor), download into a folder. It ends as:

- ``success``: the file in the folder is byte-identical (sha256) and has a safe name inside the folder;
- ``clean``: a provider error (``ContentExporterError``) with a clear, bounded, key-free message, and
  nothing at the destination;
- ``bad``: anything else: a partial or misplaced file, a leftover temp file, a second export started, a run
  past its time bound, an unexpected exception type, a message that is empty, huge, a traceback or holds the
  key (also percent-encoded: :data:`KEY_FORMS`), the key in any captured log line, trigger event or file
  name, or sent to another origin, a failure where the fault must be survived (see :data:`MUST_SUCCEED`),
  a success where the run must fail cleanly (:data:`MUST_FAIL_CLEAN`), a start repeated where it may have
  been processed (:data:`ONE_START_REQUEST`), a trigger event later than its deadline plus
  :data:`TRIGGER_MARGIN_S`, or the process's peak RSS growing by more than :data:`RSS_GROWTH_LIMIT_MIB`.

Loopback only; every run is bounded by the connection's timeouts and :data:`RUN_LIMIT_S`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import logging
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from testkit import connection_json

#: A realistic 40-character key (Airflow masks only secrets of 5+ characters).
KEY = "cexk_9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e"
KEY_FORMS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            KEY,
            quote(KEY, safe=""),
            "".join(f"%{byte:02X}" for byte in KEY.encode()),
            "".join(f"%{byte:02x}" for byte in KEY.encode()),
        )
    )
)
"""The key as found in a text: verbatim, percent-encoded as a URL would carry it, or every byte encoded."""
RUN_LIMIT_S = 25.0
"""Bound on one run's polling; the run as a whole may take at most this plus :data:`GRACE_S`."""
GRACE_S = 15.0
PAGE_ID = "4242"
EXPORT_SECONDS = 0.3
ARTIFACT_BYTES = 3 * 1024 * 1024 + 11
CONN_TIMEOUT = (2.0, 0.5)
"""Connect and read timeouts (the connection extra ``timeout``): stalls end in half a second."""
LOW_SPEED = (65536, 1)
"""The connection extra ``low_speed``: a download attempt under 64 KiB/s for 1 s ends (and is resumed)."""
RSS_GROWTH_LIMIT_MIB = 512
"""A run that raises the process's peak RSS by more than this (e.g. an inflated body held whole) is bad."""

START, PROGRESS, DOWNLOAD = "start_export", "export_progress", "download_export"
ENDPOINT_ORDER = (START, PROGRESS, DOWNLOAD)
TRIGGER = "progress/trigger"
"""Rows run through the deferrable sensor's trigger (aiohttp) instead of the hook's progress call."""

#: Faults the provider must survive: anything but a byte-identical file is a bad outcome.
MUST_SUCCEED: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            (row, endpoint)
            for row in ("429 Retry-After seconds", "429 Retry-After HTTP date", "429 no Retry-After")
            for endpoint in (START, PROGRESS, DOWNLOAD, TRIGGER)
        ),
        ("connection refused", PROGRESS),
        ("connection refused", TRIGGER),
        ("progress_backwards", PROGRESS),
        ("hostile_filename", DOWNLOAD),
        ("redirect_foreign", DOWNLOAD),
        ("reset_mid_body", DOWNLOAD),
        ("truncated_body", DOWNLOAD),
        ("reset_before_headers", DOWNLOAD),
        ("stall_before_headers", DOWNLOAD),
        ("reset_before_headers", PROGRESS),
        ("stall_before_headers", PROGRESS),
        ("progress_backwards", TRIGGER),
        ("reset_before_headers", TRIGGER),
        ("stall_before_headers", TRIGGER),
        ("truncated_body", TRIGGER),
        ("reset_mid_body", TRIGGER),
        ("body: stall", DOWNLOAD),
        ("body: ignore_range", DOWNLOAD),
        ("body: wrong_range", DOWNLOAD),
        ("body: chunked", DOWNLOAD),
        ("body: chunked_truncate", DOWNLOAD),
        # A drip or silence must end each attempt by its deadline (timeout, low_speed), then retry/resume.
        *(
            (kind, endpoint)
            for kind in ("dripping_body", "silent")
            for endpoint in (PROGRESS, DOWNLOAD, TRIGGER)
        ),
    }
)

#: Faults the provider must turn into a clean failure: a success is a bad outcome.
MUST_FAIL_CLEAN: frozenset[tuple[str, str]] = frozenset(
    {
        # A progress the server never reported as a finite number must never count as complete.
        ("non_finite_progress", PROGRESS),
        ("non_finite_progress", TRIGGER),
        # The start was (or may have been) processed but its hash cannot be read: StartUncertain.
        ("deep_json", START),
        ("dripping_body", START),
        ("silent", START),
    }
)

#: Start faults after which the emulator must have received exactly one start request (never repeated).
ONE_START_REQUEST: frozenset[tuple[str, str]] = frozenset(
    {("deep_json", START), ("dripping_body", START), ("silent", START)}
)


@dataclass
class Outcome:
    kind: str  # success | clean | bad
    detail: str = ""
    retries: int = 0
    requests: int = 0
    seconds: float = 0.0
    rss_growth_mib: float = 0.0


@dataclass
class Row:
    runs: int = 0
    success: int = 0
    clean: int = 0
    bad: int = 0
    retries: int = 0
    requests: int = 0
    seconds: float = 0.0
    rss_growth_mib: float = 0.0  # the largest of its runs
    details: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.runs += 1
        setattr(self, outcome.kind, getattr(self, outcome.kind) + 1)
        self.retries += outcome.retries
        self.requests += outcome.requests
        self.seconds += outcome.seconds
        self.rss_growth_mib = max(self.rss_growth_mib, outcome.rss_growth_mib)
        if outcome.kind == "bad":
            self.details.append(outcome.detail)
        elif outcome.kind == "clean" and outcome.detail not in self.failures:
            self.failures.append(outcome.detail)


Arm = Callable[[Any, Any, random.Random], None]
"""Arms a fault: (emulator, foreign emulator, seeded rng) -> None."""


def _chaos_arm(endpoint: str, kind: str) -> Arm:
    def arm(emu: Any, foreign: Any, rng: random.Random) -> None:
        from airflow_provider_cex.emulator.chaos import random_chaos

        spec = random_chaos(rng, endpoint, kind, foreign_origin=foreign.base_url)
        if kind in ("hostile_filename", "redirect_foreign"):
            times = 1
        elif kind == "redirect_loop":  # loop longer than the hook follows redirects
            times = 12
        else:
            times = rng.randint(1, 3)
        emu.chaos(endpoint, spec, times=times)

    return arm


STATUS_ROWS = ("429 Retry-After seconds", "429 Retry-After HTTP date", "429 no Retry-After", "5xx HTML page")


def _status_arm(endpoint: str, row: str) -> Arm:
    def arm(emu: Any, foreign: Any, rng: random.Random) -> None:
        from email.utils import formatdate

        status, retry_after = rng.choice((500, 502, 503, 504)), None
        if row == "429 Retry-After seconds":
            status, retry_after = 429, rng.choice(("0", "1"))
        elif row == "429 Retry-After HTTP date":
            status, retry_after = 429, formatdate(time.time() + rng.uniform(0.2, 1.5), usegmt=True)
        elif row == "429 no Retry-After":
            status = 429
        emu.inject(endpoint, status=status, retry_after=retry_after, times=rng.randint(1, 3))

    return arm


def _body_arm(kind: str) -> Arm:
    def arm(emu: Any, foreign: Any, rng: random.Random) -> None:
        if kind in ("ignore_range", "wrong_range"):  # these only matter once a resume asks for a range
            emu.download_fault("truncate", after_bytes=rng.randint(1, 2) * 1024 * 1024)
        emu.download_fault(
            kind, after_bytes=rng.randint(0, 2) * 1024 * 1024, times=rng.randint(1, 3), seconds=1.0
        )

    return arm


def _refuse_arm(emu: Any, foreign: Any, rng: random.Random) -> None:
    emu.refuse_connections(rng.uniform(0.2, 1.5))


def fault_kinds() -> dict[tuple[str, str], Arm]:
    """(fault name, endpoint) -> arming function, in table order."""
    from airflow_provider_cex.emulator.chaos import APPLIES_TO

    def rows(label: str, endpoint: str) -> dict[tuple[str, str], Arm]:
        """Every chaos kind that applies to ``endpoint``, plus refused connections, as rows ``label``."""
        cells: dict[tuple[str, str], Arm] = {}
        for kind, endpoints in APPLIES_TO.items():
            if kind == "status":
                cells.update({(name, label): _status_arm(endpoint, name) for name in STATUS_ROWS})
            elif endpoint in endpoints:
                cells[(kind, label)] = _chaos_arm(endpoint, kind)
        cells[("connection refused", label)] = _refuse_arm
        return cells

    def fail_page(emu: Any, foreign: Any, rng: random.Random) -> None:
        emu.fail_pages([PAGE_ID])

    kinds: dict[tuple[str, str], Arm] = {}
    for endpoint in ENDPOINT_ORDER:
        kinds.update(rows(endpoint, endpoint))
    for body in ("stall", "ignore_range", "wrong_range", "chunked", "chunked_truncate"):
        kinds[(f"body: {body}", DOWNLOAD)] = _body_arm(body)
    kinds[("export failed", PROGRESS)] = fail_page
    kinds.update(rows(TRIGGER, PROGRESS))
    kinds[("export failed", TRIGGER)] = fail_page
    kinds[("chaos schedule, all kinds", "all")] = _schedule_arm
    return kinds


def _schedule_arm(emu: Any, foreign: Any, rng: random.Random) -> None:
    from airflow_provider_cex.emulator.chaos import ChaosSchedule

    emu.chaos_schedule(ChaosSchedule(seed=rng.randrange(2**32), rate=0.3, foreign_origin=foreign.base_url))


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a malformed record is itself worth seeing
            self.lines.append(repr(record.msg))


@contextlib.contextmanager
def captured_output() -> Iterator[tuple[_Capture, io.StringIO]]:
    """Every log record (DEBUG and up, any logger) and everything printed, for the key check."""
    handler = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield handler, buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def has_key(text: str) -> bool:
    """Whether ``text`` holds the key in one of its :data:`KEY_FORMS`."""
    return any(form in text for form in KEY_FORMS)


def _message_problem(text: str) -> str | None:
    if not text.strip():
        return "empty error message"
    if len(text) > 2500:
        return f"error message of {len(text)} characters"
    if "Traceback (most recent call last)" in text:
        return "traceback in the error message"
    if has_key(text):
        return "key in the error message"
    if any(not ch.isprintable() and ch not in "\n" for ch in text):
        return f"unprintable character in the error message: {text[:80]!r}"
    return None


def _name_problem(folder: Path, path: Path) -> str | None:
    from airflow_provider_cex.files import MAX_FILENAME_BYTES

    name = path.name
    if has_key(name):
        return "key in the file name"
    if path.parent.resolve() != folder.resolve():
        return f"file landed outside the folder: {str(path)[:120]!r}"
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name:
        return f"unsafe file name {name[:80]!r}"
    if any(not ch.isprintable() for ch in name) or len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        return f"invalid file name {name[:80]!r}"
    if name.split(".")[0].upper() in {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {
        f"LPT{i}" for i in range(1, 10)
    }:
        return f"Windows reserved file name {name[:80]!r}"
    return None


def one_run(emu: Any, foreign: Any, name: str, endpoint: str, arm: Arm, seed: int) -> Outcome:
    """Arm one fault, run start -> poll -> download through the hook, classify the outcome."""
    if endpoint == TRIGGER:
        return one_trigger_run(emu, foreign, name, arm, seed)
    from airflow_provider_cex.exceptions import ContentExporterError, ContentExporterTransientError
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.policy import RetryPolicy

    rng = random.Random(f"{name}/{endpoint}/{seed}")
    retries: list[Any] = []  # RetryEvents: retried calls and resumed downloads
    exports_before = _reset(emu, foreign)
    folder = Path(tempfile.mkdtemp(prefix="cex-matrix-"))
    started = time.monotonic()
    outcome = Outcome("bad", "did not finish")
    arm_at = endpoint if endpoint in ENDPOINT_ORDER else START
    result = None
    with captured_output() as (logs, printed):
        try:
            hook = ContentExporterHook(
                retry_policy=RetryPolicy(max_retries=4, backoff_base=0.2, backoff_max=2.0, retry_after_cap=5),
                on_retry=retries.append,
            )
            with hook:
                if arm_at == START:
                    arm(emu, foreign, rng)
                export_hash = hook.start_export(
                    PAGE_ID, {"pageSettings": {"size": "A4", "orientation": "PORTRAIT"}}
                )
                if arm_at == PROGRESS:
                    arm(emu, foreign, rng)
                progress = None
                while time.monotonic() - started < RUN_LIMIT_S:
                    try:
                        progress = hook.get_export_progress(export_hash)
                    except ContentExporterTransientError:  # the sensor's "not done yet"
                        progress = None
                    if progress is not None and (progress.is_complete or progress.is_failed):
                        break
                    time.sleep(0.1)
                if progress is not None and progress.is_failed:
                    outcome = Outcome("clean", "export failed: " + (progress.message or "")[:60])
                elif progress is None or not progress.is_complete:
                    outcome = Outcome("bad", "progress never reached 100 within the run's limit")
                else:
                    if arm_at == DOWNLOAD:
                        arm(emu, foreign, rng)
                    result = hook.download_export(export_hash, str(folder) + os.sep)
                    outcome = Outcome("success")
        except ContentExporterError as err:
            text = str(err)
            outcome = Outcome("clean", f"{type(err).__name__}: {_first_line(text)}")
            problem = _message_problem(text)
            if problem:
                outcome = Outcome("bad", problem)
        except Exception as err:  # anything else is a defect
            outcome = Outcome("bad", f"unexpected {type(err).__name__}: {str(err)[:100]}")
    elapsed = time.monotonic() - started
    files = sorted(folder.iterdir())
    if outcome.kind == "success" and result is not None:
        path = Path(result.path)
        problem = _name_problem(folder, path)
        if problem:
            outcome = Outcome("bad", problem)
        elif (
            not path.is_file() or _sha256(path) != emu.artifact_sha256 or result.sha256 != emu.artifact_sha256
        ):
            outcome = Outcome("bad", "the file differs from the artifact")
        elif files != [path]:
            outcome = Outcome("bad", f"extra files in the folder: {[p.name for p in files if p != path]}")
    elif files:
        outcome = Outcome("bad", f"files left after a failure: {[p.name[:60] for p in files]}")
    shutil.rmtree(folder, ignore_errors=True)
    if elapsed > RUN_LIMIT_S + GRACE_S:
        outcome = Outcome("bad", f"took {elapsed:.0f} s")
    text = "\n".join(logs.lines) + printed.getvalue()
    return _finish(emu, foreign, (name, endpoint), outcome, exports_before, text, elapsed, len(retries))


def _reset(emu: Any, foreign: Any) -> int:
    """Disarm both emulators and zero their counters for a run; returns the number of exports started so far.

    ``reset()`` keeps the exports (so a run's new ones can be counted) but drops the foreign source too, so
    the second origin is pointed at ``emu``'s artifact again.
    """
    emu.reset()
    foreign.reset()
    foreign.accept_foreign_downloads(emu)
    return len(emu.exports)


def _finish(
    emu: Any,
    foreign: Any,
    cell: tuple[str, str],
    outcome: Outcome,
    exports_before: int,
    text: str,
    elapsed: float,
    retries: int,
) -> Outcome:
    """Disarm the emulator and apply the checks every run shares; ``text`` is all the run logged.

    ``retries`` is the number of RetryEvents the hooks reported through ``on_retry`` (a trigger's
    next poll after an outage is a poll, not a retry).
    """
    emu.clear_faults()  # not reset(): the counts below are this run's
    emu.wait_listening()
    started_exports = len(emu.exports) - exports_before
    if cell in MUST_FAIL_CLEAN and outcome.kind == "success":
        outcome = Outcome("bad", "must fail cleanly, ended in success")
    if cell[0] == "non_finite_progress" and any(r.endpoint == DOWNLOAD for r in emu.requests):
        outcome = Outcome("bad", "a download was attempted after a non-finite progress")
    if cell in ONE_START_REQUEST and emu.counts.get(START, 0) != 1:
        outcome = Outcome("bad", f"{emu.counts.get(START, 0)} start requests: the start was repeated")
    if started_exports > 1:
        outcome = Outcome("bad", f"{started_exports} exports started for one run")
    if has_key(text):
        outcome = Outcome("bad", "key in a log line, printed output or trigger event")
    if any(r.had_api_key for r in foreign.requests):
        outcome = Outcome("bad", "the key was sent to another origin")
    if outcome.kind != "success" and cell in MUST_SUCCEED:
        outcome = Outcome("bad", f"must succeed, ended {outcome.kind}: {outcome.detail}")
    outcome.retries = retries
    outcome.requests = sum(emu.counts.values())
    outcome.seconds = elapsed
    return outcome


TRIGGER_LIMIT_S = 20.0
"""The trigger's deadline: room for three spoiled polls of ``connect + read`` (2.5 s) each, with backoff."""
TRIGGER_MARGIN_S = 1.5
"""The trigger's one event must come by its ``end_time`` plus this (it promises about 1 s)."""


def one_trigger_run(emu: Any, foreign: Any, name: str, arm: Arm, seed: int) -> Outcome:
    """Start an export, arm a progress fault, run the trigger to its one event; classify the event.

    success/failed events count as success/clean (a failed export is the documented outcome); an error
    event is clean when its message is clear; a timeout, more than one event, an exception escaping
    ``run()`` or a hang past the deadline are bad.
    """
    import asyncio

    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.hooks.content_exporter_async import ContentExporterAsyncHook
    from airflow_provider_cex.triggers.content_exporter import ContentExporterExportTrigger

    retries: list[Any] = []

    class CountingTrigger(ContentExporterExportTrigger):
        def make_hook(self) -> ContentExporterAsyncHook:
            return ContentExporterAsyncHook(self.content_exporter_conn_id, on_retry=retries.append)

    rng = random.Random(f"{name}/{TRIGGER}/{seed}")
    exports_before = _reset(emu, foreign)
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    outcome = Outcome("bad", "did not finish")

    fired_at: list[float] = []

    async def collect(trigger: CountingTrigger) -> None:
        async for event in trigger.run():
            events.append(event.payload)
            fired_at.append(time.time())

    with captured_output() as (logs, printed):
        try:
            with ContentExporterHook() as hook:
                export_hash = hook.start_export(
                    PAGE_ID, {"pageSettings": {"size": "A4", "orientation": "PORTRAIT"}}
                )
            arm(emu, foreign, rng)
            end_time = time.time() + TRIGGER_LIMIT_S
            trigger = CountingTrigger(export_hash=export_hash, end_time=end_time, poll_interval=0.1)
            asyncio.run(asyncio.wait_for(collect(trigger), TRIGGER_LIMIT_S + GRACE_S))
            statuses = [e.get("status") for e in events]
            message = str(events[0].get("message") or "") if events else ""
            if len(events) != 1:
                outcome = Outcome("bad", f"{len(events)} events: {statuses}")
            elif fired_at[0] > end_time + TRIGGER_MARGIN_S:
                late = fired_at[0] - end_time
                outcome = Outcome("bad", f"{statuses[0]} event {late:.1f} s after the trigger's deadline")
            elif has_key(message):
                outcome = Outcome("bad", "key in the trigger event's message")
            elif statuses[0] == "success":
                outcome = Outcome("success")
            elif statuses[0] == "failed":
                outcome = Outcome("clean", "export failed: " + message[:60])
            elif statuses[0] == "error":
                outcome = Outcome("clean", "error event: " + _first_line(message))
                problem = _message_problem(message)
                if problem:
                    outcome = Outcome("bad", problem)
            else:
                outcome = Outcome("bad", f"{statuses[0]} event: {_first_line(message)}")
        except TimeoutError:
            outcome = Outcome("bad", "the trigger hung past its deadline")
        except Exception as err:
            outcome = Outcome("bad", f"unexpected {type(err).__name__} from the trigger: {str(err)[:100]}")
    elapsed = time.monotonic() - started
    text = "\n".join(logs.lines) + printed.getvalue() + repr(events)
    return _finish(emu, foreign, (name, TRIGGER), outcome, exports_before, text, elapsed, len(retries))


def _first_line(text: str) -> str:
    return text.splitlines()[0][:90] if text else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def matrix_emulators() -> Iterator[tuple[Any, Any]]:
    """The emulator under test and a second origin (a 'pre-signed URL host') that must never see the key."""
    from airflow_provider_cex.emulator import run_emulator

    with (
        run_emulator(api_key=KEY, export_seconds=EXPORT_SECONDS, artifact_bytes=ARTIFACT_BYTES) as emu,
        run_emulator(api_key="not-the-key-" + "x" * 28, export_seconds=0) as foreign,
    ):
        foreign.accept_foreign_downloads(emu)
        old = os.environ.get("AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT")
        os.environ["AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"] = connection_json(
            emu.base_url, api_key=KEY, timeout=list(CONN_TIMEOUT), low_speed=list(LOW_SPEED)
        )
        try:
            yield emu, foreign
        finally:
            if old is None:
                os.environ.pop("AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT", None)
            else:
                os.environ["AIRFLOW_CONN_CONTENT_EXPORTER_DEFAULT"] = old


def _peak_rss_mib() -> float:
    """The process's peak resident set size so far, in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_matrix(
    seeds: int,
    only: Callable[[str, str], bool] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    kinds: Collection[str] | None = None,
) -> dict[tuple[str, str], Row]:
    """Run ``seeds`` seeded runs of every (fault, endpoint) cell; returns the rows in table order.

    :param only: run only the cells it accepts, given (fault name, endpoint).
    :param kinds: run only the cells of these fault names (e.g. ``["silent", "deep_json"]``).
    """
    # Imported before the first run, so that its peak RSS growth is the run's, not Airflow's import.
    for module in (
        "airflow_provider_cex.hooks.content_exporter",
        "airflow_provider_cex.triggers.content_exporter",
    ):
        importlib.import_module(module)

    rows: dict[tuple[str, str], Row] = {}
    with matrix_emulators() as (emu, foreign):
        for (name, endpoint), arm in fault_kinds().items():
            if only is not None and not only(name, endpoint):
                continue
            if kinds is not None and name not in kinds:
                continue
            row = rows.setdefault((name, endpoint), Row())
            for seed in range(seeds):
                peak = _peak_rss_mib()
                outcome = one_run(emu, foreign, name, endpoint, arm, seed)
                outcome.rss_growth_mib = _peak_rss_mib() - peak
                if outcome.rss_growth_mib > RSS_GROWTH_LIMIT_MIB:
                    outcome = dataclasses.replace(
                        outcome, kind="bad", detail=f"peak RSS grew by {outcome.rss_growth_mib:.0f} MiB"
                    )
                row.add(outcome)
                if progress is not None and outcome.kind == "bad":
                    progress(f"BAD {name} / {endpoint} / seed {seed}: {outcome.detail}")
    return rows


def format_table(rows: dict[tuple[str, str], Row], elapsed: float) -> str:
    total = Row()
    for row in rows.values():
        for attr in ("runs", "success", "clean", "bad", "retries", "requests"):
            setattr(total, attr, getattr(total, attr) + getattr(row, attr))
    lines = [
        f"fault matrix: {total.runs} seeded runs in {elapsed:.0f} s (loopback emulator)",
        "",
        f"{'fault':28} {'endpoint':16} {'runs':>4} {'success':>7} {'clean':>5} {'bad':>3} {'retries':>7}"
        f" {'requests':>8} {'seconds':>7} {'rss+MiB':>7}",
    ]
    for (name, endpoint), r in rows.items():
        lines.append(
            f"{name:28} {endpoint:16} {r.runs:4} {r.success:7} {r.clean:5} {r.bad:3} {r.retries:7}"
            f" {r.requests:8} {r.seconds:7.1f} {r.rss_growth_mib:7.0f}"
        )
        for detail in r.details[:3]:
            lines.append(f"{'':46}bad: {detail}")
    lines += [
        "",
        f"total: {total.runs} runs, {total.success} successes, {total.clean} clean failures, {total.bad} bad,"
        f" {total.retries} retries, {total.requests} requests",
        "retries = RetryEvents the hooks reported (on_retry): retried calls, resumed or restarted downloads; "
        "requests = requests the emulator received; seconds = time of the row's runs; rss+MiB = the largest "
        "growth of the process's peak RSS during one run",
        "key check: every log record (DEBUG and up), printed output, exception texts, the second origin",
    ]
    return "\n".join(lines)

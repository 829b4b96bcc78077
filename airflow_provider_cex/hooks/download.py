"""The byte-moving part of a download: stream, hash in the same pass, and resume or restart a broken body.

The hook opens the response and :mod:`airflow_provider_cex.files` owns the temp file and the rename;
this loop only copies bytes and decides, per break, whether to resume with ``Range`` or start over.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import requests
import urllib3

from airflow_provider_cex.core import Call, Retries, RetryableFailure
from airflow_provider_cex.exceptions import ContentExporterTransientError

if TYPE_CHECKING:
    from requests import Response

#: Download read size: large enough that per-chunk Python overhead vanishes next to the copy, small
#: enough that a break loses little (a partly read chunk is read again on resume).
CHUNK_SIZE = 1024 * 1024
#: Each chunk is written in slices of this size: the page-cache cost of write() here (kernel 6.18, ext4, a
#: VM with free page reporting) depends on its size and on how the memory it reuses was freed. 1 GiB after
#: deleting a file written in 16 KiB pieces (as curl writes): 1 MiB writes 2.0-3.0 s, 128 KiB 0.29-0.65 s,
#: 64 KiB 0.33-0.48 s; after one written in 1 MiB pieces: 0.25-1.1 s, 0.29-0.44 s, 0.33-0.37 s (issue 15).
WRITE_SLICE = 64 * 1024


def copy_with_resume(
    resp: Response,
    out: BinaryIO,
    call: Call,
    reopen: Callable[..., Response],
    breaks: Retries,
    sleep: Callable[[float], None],
    log: Any,
) -> tuple[int, str]:
    """Copy the body to ``out`` and return ``(size, sha256)``; resume or restart when it stops short.

    :param reopen: ``reopen(range_from=0, validator=None)`` GETs the file again (from a byte offset).
    :param breaks: the retry budget for breaks; each one waits ``sleep`` as the policy says.
    """
    export_hash = call.subject
    # sha256 inline, on this thread. A worker thread hashing each chunk saved wall time only while a core
    # was idle; on a busy 2-core machine it cost up to 7x the loop's user CPU and 30x its page faults.
    digest = hashlib.sha256()
    written = 0
    total, can_resume, validator = _body_facts(resp)
    progress = _ProgressLog(log, export_hash, total)
    while True:
        try:
            try:
                read = resp.raw.read
                while chunk := read(CHUNK_SIZE, decode_content=False):  # as sent: the file is saved as-is
                    digest.update(chunk)
                    view = memoryview(chunk)
                    for start in range(0, len(view), WRITE_SLICE):
                        out.write(view[start : start + WRITE_SLICE])
                    written += len(chunk)
                    progress.update(written)
            finally:
                resp.close()
            if total is None or written == total:
                return written, digest.hexdigest()
            reason = f"the body ended after {written} of {total} bytes"
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            reason = f"{_describe_read_error(err)} after {written} bytes"
        try:
            wait = breaks.wait_after(RetryableFailure(reason)).wait
        except ContentExporterTransientError:
            raise ContentExporterTransientError(
                f"Could not {call}: the download broke {breaks.retries} times (last: {reason}); nothing "
                "was saved. The task can be retried."
            ) from None
        resume = can_resume and total is not None and 0 < written < total
        log.warning(
            "Download of export %s broke (%s); %s in %.1f s.",
            export_hash,
            reason,
            f"resuming from byte {written}" if resume else "restarting",
            wait,
        )
        sleep(wait)
        resp = reopen(range_from=written if resume else 0, validator=validator)
        if resp.status_code == 206:
            if _content_range_matches(resp.headers.get("Content-Range"), written, total):
                continue  # append the rest: bytes already written were hashed already
            log.warning("The server answered the Range request with a wrong Content-Range; restarting.")
            resp.close()
            resp = reopen()
        # A plain 200 (the server ignored Range, or no resume was possible): start over.
        out.seek(0)
        out.truncate()
        digest = hashlib.sha256()
        written = 0
        total, can_resume, validator = _body_facts(resp)
        progress = _ProgressLog(log, export_hash, total)


class _ProgressLog:
    """Logs a long download's progress at most every ``interval`` seconds, not once per chunk."""

    def __init__(self, log: Any, export_hash: str, total: int | None, interval: float = 10.0) -> None:
        self.log, self.export_hash, self.total, self.interval = log, export_hash, total, interval
        self.started = self.last = time.monotonic()

    def update(self, written: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = written / 1e6 / max(now - self.started, 1e-6)
        if self.total:
            self.log.info(
                "Downloading export %s: %.1f of %.1f MB (%.0f%%) at %.1f MB/s",
                self.export_hash,
                written / 1e6,
                self.total / 1e6,
                100.0 * written / self.total,
                rate,
            )
        else:
            self.log.info(
                "Downloading export %s: %.1f MB at %.1f MB/s", self.export_hash, written / 1e6, rate
            )


def _body_facts(resp: Response) -> tuple[int | None, bool, str | None]:
    """What an answer says about its body: size, whether it can be resumed, and the validator for If-Range."""
    total = _content_length(resp.headers.get("Content-Length"))
    can_resume = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
    return total, can_resume, resp.headers.get("ETag") or resp.headers.get("Last-Modified")


def _content_range_matches(header: str | None, start: int, total: int | None) -> bool:
    """True when ``Content-Range: bytes start-(total-1)/total`` continues exactly where we stopped."""
    if not header or total is None:
        return False
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+)\s*", header)
    if not match:
        return False
    return (int(match[1]), int(match[2]), int(match[3])) == (start, total - 1, total)


def _describe_read_error(err: Exception) -> str:
    if isinstance(err, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return "the server stopped sending (read timeout)"
    return "the connection broke"


def _content_length(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return int(value.strip())
    return None

"""The byte-moving part of a download: stream, hash in the same pass, and resume or restart a broken body.

The hook opens the response and :mod:`airflow_provider_cex.files` owns the temp file and the rename;
this loop only copies bytes and decides, per break, whether to resume with ``Range`` or start over.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import requests
import urllib3

from airflow_provider_cex.answers import BodyDecoder
from airflow_provider_cex.exceptions import ContentExporterProtocolError, ContentExporterTransientError
from airflow_provider_cex.hooks.requests_io import raw_reader
from airflow_provider_cex.policy import Call, Retries, RetryableFailure

if TYPE_CHECKING:
    from requests import Response

#: Download read size: large enough that per-chunk Python overhead vanishes next to the copy, small
#: enough that a break loses little (a partly read chunk is read again on resume).
CHUNK_SIZE = 1024 * 1024
#: Where a body is read with ``read1`` (chunked, or not over http.client), at most this much per read: one
#: allocation per read, kept under glibc's mmap threshold (1 MiB reads cost a page fault per 4 KiB over TLS).
READ1_SIZE = 64 * 1024
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
    low_speed: tuple[float, float] = (0.0, 0.0),
) -> tuple[int, str]:
    """Copy the body to ``out`` and return ``(size, sha256)`` of the saved bytes; resume or restart when it
    stops short or slows below ``low_speed``.

    :param reopen: ``reopen(range_from=0, validator=None)`` GETs the file again (from a byte offset).
    :param breaks: the retry budget for breaks; each one waits ``sleep`` as the policy says.
    :param low_speed: ``(bytes_per_second, seconds)``: an attempt that receives less than that on average
        over ``seconds`` is ended and counts as a break (curl's ``--speed-limit``/``--speed-time``).
    """
    export_hash = call.subject
    # sha256 inline, on this thread. A worker thread hashing each chunk saved wall time only while a core
    # was idle; on a busy 2-core machine it cost up to 7x the loop's user CPU and 30x its page faults.
    state = _Saved(out)
    total, can_resume, validator = _body_facts(resp)
    decoder = _decoder_for(resp, state.write)
    progress = _ProgressLog(log, export_hash, total)
    while True:
        received = state.received
        try:
            try:
                left = None if total is None else total - received
                for chunk in _chunks(resp, _SpeedCheck(*low_speed, received), received, left):
                    received += len(chunk)
                    if decoder is None:
                        state.write(chunk)
                    elif not decoder.feed(chunk):
                        raise ContentExporterProtocolError(
                            f"Could not {call}: the file is sent with Content-Encoding "
                            f"{resp.headers.get('Content-Encoding')!r} and "
                            + (
                                decoder.problem
                                if decoder.problem
                                else f"inflates to more than {MAX_INFLATED_DOWNLOAD // 2**20} MiB"
                            )
                            + "; nothing was saved. Ask the service for the file without compression."
                        )
                    state.received = received
                    progress.update(state.written)
            finally:
                resp.close()
            if total is None or received == total:
                return state.written, state.digest.hexdigest()
            reason = f"the body ended after {received} of {total} bytes"
        except _Broken as broken:
            reason = broken.reason
        try:
            wait = breaks.wait_after(RetryableFailure(reason)).wait
        except ContentExporterTransientError:
            raise ContentExporterTransientError(
                f"Could not {call}: the download broke {breaks.retries} times (last: {reason}); nothing "
                "was saved. The task can be retried."
            ) from None
        resume = can_resume and decoder is None and total is not None and 0 < received < total
        log.warning(
            "Download of export %s broke (%s); %s in %.1f s.",
            export_hash,
            reason,
            f"resuming from byte {received}" if resume else "restarting",
            wait,
        )
        sleep(wait)
        resp = reopen(range_from=received if resume else 0, validator=validator)
        if resp.status_code == 206:
            if _content_range_matches(resp.headers.get("Content-Range"), received, total):
                state.received = received
                continue  # append the rest: bytes already written were hashed already
            log.warning("The server answered the Range request with a wrong Content-Range; restarting.")
            resp.close()
            resp = reopen()
        # A plain 200 (the server ignored Range, or no resume was possible): start over.
        state.restart()
        total, can_resume, validator = _body_facts(resp)
        decoder = _decoder_for(resp, state.write)
        progress = _ProgressLog(log, export_hash, total)


#: What a network read of the body raises: requests' and urllib3's errors, or http.client's and the socket's
#: (``read1`` is http.client's own). Writes to the file are not in the same ``try``: a full disk is no break.
_READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)

#: A download sent with a Content-Encoding is decoded (as a browser saves it) up to this size.
MAX_INFLATED_DOWNLOAD = 4 * 1024**3
#: Content types of files that are themselves compressed: with a matching Content-Encoding, saved as sent.
_COMPRESSED_TYPES = {"application/gzip", "application/x-gzip", "application/x-compress", "application/zlib"}


class _Broken(Exception):
    """One attempt at the body ended early (a network error, or too slow): resume or restart."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Saved:
    """The bytes saved so far: the file, their sha256 and count, and the raw bytes received for them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.written = 0
        self.received = 0

    def write(self, chunk: bytes | memoryview) -> None:
        self.digest.update(chunk)
        view = memoryview(chunk)
        for start in range(0, len(view), WRITE_SLICE):
            self.out.write(view[start : start + WRITE_SLICE])
        self.written += len(chunk)

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.digest = hashlib.sha256()
        self.written = self.received = 0


class _SpeedCheck:
    """Tells when an attempt receives less than ``limit`` bytes per second on average over ``seconds``."""

    def __init__(self, limit: float, seconds: float, received: int) -> None:
        self.limit, self.seconds = limit, seconds
        self.since, self.at = time.monotonic(), received

    def too_slow(self, received: int) -> str | None:
        """Why the attempt must end (it is too slow), or None."""
        if self.limit <= 0:
            return None
        now = time.monotonic()
        elapsed = now - self.since
        if elapsed < self.seconds:
            return None
        rate = (received - self.at) / elapsed
        if rate < self.limit:
            return (
                f"the download slowed to {rate:.0f} bytes/s over {elapsed:.0f} s, under the connection's "
                f"low_speed limit of {self.limit:g} bytes/s, after {received} bytes"
            )
        self.since, self.at = now, received
        return None


def _chunks(
    resp: Response, speed: _SpeedCheck, received: int, left: int | None
) -> Iterator[bytes | memoryview]:
    """The body as sent, in pieces of up to :data:`CHUNK_SIZE`, timed between network reads.

    What arrived is always yielded before an attempt ends (:class:`_Broken`: a network error, or
    ``speed`` says too slow), so a resume starts right after the last saved byte. A body with a length
    (not chunked) is read straight from http.client's buffered socket file with ``readinto1`` into one
    reused buffer: one network read per call, no allocation, and never past ``left`` bytes. Otherwise
    http.client's ``read1`` (chunked framing) or urllib3's ``read``, :data:`READ1_SIZE` at a time.
    """
    fp = getattr(resp.raw, "_fp", None)
    socket_file = getattr(fp, "fp", None)
    if (
        not isinstance(fp, http.client.HTTPResponse)
        or fp.chunked
        or not isinstance(socket_file, io.BufferedReader)
    ):
        read = raw_reader(resp)
        while True:
            try:
                chunk = read(READ1_SIZE)
            except _READ_ERRORS as err:
                raise _Broken(f"{_describe_read_error(err)} after {received} bytes") from None
            if not chunk:
                return
            received += len(chunk)
            yield chunk
            if reason := speed.too_slow(received):
                raise _Broken(reason)
    fill = socket_file.readinto1
    view = memoryview(bytearray(CHUNK_SIZE))
    while True:
        want = CHUNK_SIZE if left is None else min(CHUNK_SIZE, left)
        if want <= 0:
            return
        filled, ended, broken = 0, False, None
        while filled < want:
            try:
                count = fill(view[filled:want])
            except _READ_ERRORS as err:
                broken = f"{_describe_read_error(err)} after {received + filled} bytes"
                break
            if not count:
                ended = True
                break
            filled += count
            if broken := speed.too_slow(received + filled):
                break
        if filled:
            received += filled
            if left is not None:
                left -= filled
            yield view[:filled]
        if broken:
            raise _Broken(broken)
        if ended:
            return


def _decoder_for(resp: Response, write: Callable[[bytes | memoryview], None]) -> BodyDecoder | None:
    """A decoder when the file comes with a Content-Encoding to undo (as a browser saves it), else None."""
    encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return None
    mime = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if mime in _COMPRESSED_TYPES and encoding in ("gzip", "x-gzip", "deflate"):
        return None  # the file itself is compressed (a .gz): keep it as sent
    return BodyDecoder(encoding, MAX_INFLATED_DOWNLOAD, strict=False, sink=write)


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
    if isinstance(err, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "the server stopped sending (read timeout)"
    return "the connection broke"


def _content_length(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return int(value.strip())
    return None

"""Reading the service's answers: a start's export hash, an export's progress, and bodies as they arrive.

:func:`parse_export_hash` and :func:`parse_progress` interpret what the service sends (a JSON object, a JSON
string or plain text) and raise ``ContentExporterProtocolError`` for what they cannot trust;
:class:`BodyDecoder` decodes a gzip or deflate body as it arrives, never past a size limit
(:data:`MAX_SMALL_BODY`, :data:`MAX_ERROR_BODY`). :class:`ExportProgress` and :class:`DownloadedExport` are
what the hooks return. Shared by both transports; no I/O.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_cex.exceptions import ContentExporterProtocolError
from airflow_provider_cex.inputs import validate_export_hash
from airflow_provider_cex.redaction import snippet

#: Bodies of JSON answers and errors are read up to this size: a hostile server cannot make us buffer more.
MAX_SMALL_BODY = 1024 * 1024
#: Error bodies are read up to this size (decompressed), to quote their start in the message.
MAX_ERROR_BODY = 64 * 1024
#: The codings :class:`BodyDecoder` decodes; sent on every request, so a server has no reason to use others.
ACCEPT_ENCODING = "gzip, deflate"

_FAILED_STATES = {"FAILED", "FAILURE", "ERROR", "CANCELLED", "CANCELED", "ABORTED"}
_DONE_STATES = {"DONE", "COMPLETED", "COMPLETE", "FINISHED", "SUCCESS", "SUCCEEDED"}
_HASH_KEYS = ("hash", "exportHash", "export_hash", "id")
_ERROR_FIELDS = ("error", "errorMessage", "error_message")
_MESSAGE_FIELDS = ("errorMessage", "error_message", "error", "message")


def parse_export_hash(body: bytes, content_type: str | None, secret: str | None = None) -> str:
    """Read the hash from a start response: a JSON object, a JSON string, or plain text."""
    text = body.decode("utf-8", "replace").strip()
    candidate: Any = None
    try:
        decoded = json.loads(text) if text else None
    except (ValueError, RecursionError):
        decoded = None
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime in ("", "text/plain"):
            candidate = text  # text/plain: the body is the hash
    else:
        if isinstance(decoded, dict):
            candidate = next((decoded[k] for k in _HASH_KEYS if decoded.get(k) not in (None, "")), None)
        elif isinstance(decoded, str):
            candidate = decoded
        elif isinstance(decoded, int) and not isinstance(decoded, bool):
            candidate = str(decoded)
    if isinstance(candidate, int) and not isinstance(candidate, bool):
        candidate = str(candidate)
    if isinstance(candidate, str):
        try:
            return validate_export_hash(candidate)
        except ValueError:
            pass
    raise ContentExporterProtocolError(
        "The start-export response holds no export hash (expected a JSON object with 'hash', "
        "'exportHash', 'export_hash' or 'id', a JSON string, or a plain-text hash); got: "
        f"{snippet(body, secret)!r}. If the vendor changed the API, check the 'endpoints' extra."
    )


@dataclass(frozen=True)
class ExportProgress:
    """One reading of an export's progress."""

    export_hash: str
    progress: float
    is_complete: bool
    is_failed: bool
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DownloadedExport:
    """A file that was downloaded completely and moved into place."""

    path: str
    size_bytes: int
    sha256: str
    content_type: str | None
    filename: str


#: A progress value given as text: a plain decimal number, optionally with a percent sign.
_PROGRESS_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%?\s*", re.ASCII)


def _as_progress(value: Any) -> float | None:
    """The progress in 0-100 from a number or a plain decimal text; None when it is not a finite number.

    ``Infinity``, ``NaN``, ``1e999``, ``"inf"``, ``"1_0_0"`` or digits of other scripts are not progress:
    ``float()`` would read most of them, and a value read as 100 % would download an unfinished export.
    Finite values outside 0-100 are clamped (the service has sent 100.0000001).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if len(value) > 40 or not _PROGRESS_TEXT.fullmatch(value):
            return None
        value = value.strip().rstrip("%")
    elif not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an integer too large for a float
        return None
    if not math.isfinite(number):
        return None
    return min(100.0, max(0.0, number))


def _first_text(payload: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, dict):  # e.g. {"error": {"message": "..."}}
            inner = value.get("message")
            if isinstance(inner, str) and inner.strip():
                return inner.strip()
    return None


def parse_progress(export_hash: str, payload: Any, secret: str | None = None) -> ExportProgress:
    """Interpret a progress response; failure is detected from status/state and error fields."""
    if not isinstance(payload, dict):
        raise ContentExporterProtocolError(
            f"The progress response for export {export_hash} is not a JSON object: "
            f"{snippet(repr(payload), secret)!r}."
        )
    state = payload.get("status", payload.get("state"))
    state_text = state.strip().upper() if isinstance(state, str) else ""
    failed = state_text in _FAILED_STATES or any(
        (isinstance(payload.get(k), str) and payload[k].strip()) or isinstance(payload.get(k), dict)
        for k in _ERROR_FIELDS
    )
    value = payload.get("progressValue")
    progress = _as_progress(value)
    if progress is None and value is not None and not failed:
        raise ContentExporterProtocolError(
            f"The progress response for export {export_hash} has a 'progressValue' that is not a finite "
            f"number ({snippet(_json_preview(value), secret, limit=40)!r}): a progress is a number from 0 to "
            "100. The answer was not trusted as progress; the export's state is unknown."
        )
    if progress is None:
        if failed:
            progress = 0.0
        elif state_text in _DONE_STATES:
            progress = 100.0
        else:
            raise ContentExporterProtocolError(
                f"The progress response for export {export_hash} has no numeric 'progressValue': "
                f"{snippet(_json_preview(payload), secret)!r}."
            )
    message = _first_text(payload, _MESSAGE_FIELDS)
    if message:  # printable, bounded, without the key; may come out empty (e.g. only control characters)
        message = snippet(message, secret, limit=1000)
    if failed and not message:
        message = f"the export ended in state {state_text or 'FAILED'} without a message"
    return ExportProgress(
        export_hash=export_hash,
        progress=progress,
        is_complete=progress >= 100.0 and not failed,
        is_failed=failed,
        message=message,
        raw=payload,
    )


def _json_preview(payload: Any) -> str:
    try:
        return json.dumps(payload)[:400]
    except (TypeError, ValueError, RecursionError):
        return f"a {type(payload).__name__}"


def decode_progress(export_hash: str, raw: bytes, secret: str | None) -> ExportProgress:
    """The progress answer's body, decoded and interpreted.

    JSON nested too deeply to read raises :class:`UnreadableBody`, as a body over its limit does: the
    transport words it for its call (:func:`~airflow_provider_cex.failures.unreadable_answer`).
    """
    try:
        payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except RecursionError:
        raise UnreadableBody("its JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ContentExporterProtocolError(
            f"The progress response for export {export_hash} is not JSON: {snippet(raw, secret)!r}."
        ) from None
    return parse_progress(export_hash, payload, secret)


class UnreadableBody(Exception):
    """A body that cannot be read within the rules: ``reason`` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Content codings a body may arrive in (we ask for these only: :data:`ACCEPT_ENCODING`).
_DECODABLE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


#: Inflated in steps of at most this many bytes: memory per step stays small whatever the limit.
_INFLATE_STEP = 1024 * 1024


class BodyDecoder:
    """Decodes a body as it arrives (``Content-Encoding`` gzip or deflate), never past ``limit`` bytes.

    Both transports read raw bytes and feed them here, so a small compressed answer that would inflate to
    gigabytes costs at most ``limit`` bytes of memory and the CPU to inflate that much, whatever the headers
    say. :meth:`feed` returns False once ``limit`` is reached: the transport stops reading. ``strict``: a
    body over the limit, with an unknown coding or corrupt, raises :class:`UnreadableBody` (for answers that
    must be read whole); otherwise the bytes decoded so far are kept (for quoting an error body).
    """

    def __init__(
        self,
        content_encoding: str | None,
        limit: int,
        *,
        strict: bool = True,
        sink: Callable[[bytes | memoryview], None] | None = None,
    ) -> None:
        self.limit, self.strict, self.sink = limit, strict, sink
        self.size = 0
        self.truncated = False
        self.problem: str | None = None
        self._out = bytearray()
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._wbits = 0
        self._inflater: Any = None
        if len(codings) > 1 or (codings and codings[0] not in _DECODABLE):
            self.problem = f"it is sent with Content-Encoding {snippet(content_encoding, limit=40)!r}, which "
            self.problem += "this client did not ask for and does not decode"
        elif codings:
            self._wbits = _DECODABLE[codings[0]]
            self._inflater = zlib.decompressobj(self._wbits)
        self._raw_deflate_tried = False
        self._head = b""
        self._fed = 0

    @property
    def full(self) -> bool:
        return self.truncated or self.problem is not None

    def feed(self, chunk: bytes | memoryview) -> bool:
        """Take the next raw bytes; False when no more are wanted (limit reached, or decoding failed)."""
        if self.full:
            return False
        if self._inflater is None:
            self._keep(chunk)
            return not self.full
        self._fed += len(chunk)
        if self._fed > self.limit + _INFLATE_STEP:  # more compressed bytes than the answer may have, inflated
            self.truncated = True
            return False
        if (
            self._wbits == zlib.MAX_WBITS
            and not self._raw_deflate_tried
            and not self.size
            and len(self._head) < 65536
        ):
            self._head += chunk  # until 'deflate' proves zlib-wrapped, keep what came, to replay it as raw
        data = chunk
        try:
            while not self.full:
                step = min(self.limit - self.size + 1, _INFLATE_STEP)  # one byte more tells "over the limit"
                out = self._inflater.decompress(data, step)
                data = self._inflater.unconsumed_tail
                if self._inflater.eof and self._inflater.unused_data:  # a next gzip member follows
                    data = self._inflater.unused_data + data
                    self._inflater = zlib.decompressobj(self._wbits)
                self._keep(out)
                if not data and len(out) < step:  # input used up and no output held back: wait for more
                    break
        except zlib.error:
            if (
                self._wbits == zlib.MAX_WBITS
                and not self._raw_deflate_tried
                and not self.size
                and len(self._head) == self._fed
            ):
                self._raw_deflate_tried = True  # 'deflate' sent without its zlib header, as some servers do
                self._wbits = -zlib.MAX_WBITS
                self._inflater = zlib.decompressobj(self._wbits)
                head, self._head = self._head, b""
                self._fed -= len(head)  # fed again below
                return self.feed(head)
            self.problem = "its compressed body is corrupt"
        return not self.full

    def _keep(self, data: bytes | memoryview) -> None:
        room = self.limit - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        self.size += len(data)
        if self.sink is not None:
            if data:
                self.sink(data)
        else:
            self._out += data

    def result(self) -> bytes:
        """The decoded body; strict: raises :class:`UnreadableBody` if it is not whole."""
        if self.strict:
            if self.problem:
                raise UnreadableBody(self.problem)
            if self.truncated:
                raise UnreadableBody(f"it is larger than {self.limit // 1024} KiB (decompressed)")
        return bytes(self._out)

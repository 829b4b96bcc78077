"""What the emulator puts on the wire: error answers and spoiled (chaos) answers.

The answers of a hostile service (:data:`~.chaos.HOSTILE_KINDS`) are :func:`hostile_answer` and, for
``silent``, :func:`answer_in_front`; ``dripping_body`` and ``silent`` end when the client hangs up
(:func:`slow_answers_in_progress` counts those still running). Their bodies come from :mod:`.hostile_bodies`.

The artifact itself (whole, or broken by an artifact-stage fault) is served by :mod:`.downloads`, with the
Range helpers at the end of this module (:func:`requested_range`, :func:`read_range`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, KEY_HEADER

from . import chaos as _chaos
from . import hostile_bodies as _hostile
from .faults import Fault


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def fault_response(status: int, retry_after: str | None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status >= 500:
        # What a load balancer in front of the real service answers: an HTML page, not JSON.
        html = (
            f"<html><head><title>{status} {phrase}</title></head>"
            f"<body><h1>{status} {phrase}</h1><p>The server is temporarily unable to service your request."
            f"</p></body></html>\n"
        )
        return web.Response(status=status, text=html, content_type="text/html", headers=headers)
    return json_error(status, phrase.lower(), headers)


def reset_connection(
    request: web.BaseRequest, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Reset (RST) the request's connection; returns a response for aiohttp that will never be sent."""
    transport = request.transport
    if transport is not None:
        _chaos.reset_socket(transport.get_extra_info("socket"))
        transport.close()
    return response if response is not None else web.Response(status=499)


# ------------------------------------------------------------------------------------ chaos answers


async def answer_in_front(request: web.Request, fault: Fault) -> web.StreamResponse:
    """A proxy-stage fault, answered in front of the service: statuses, resets, stalls and redirects."""
    if fault.kind == "status":
        return fault_response(fault.status, fault.retry_after)
    if fault.kind == "reset_before_headers":
        await request.read()  # the whole request arrived: the client cannot know whether it was acted on
        return reset_connection(request)
    if fault.kind == "stall_before_headers":
        await request.read()
        await asyncio.sleep(fault.seconds)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)
    if fault.kind == "silent":
        await request.read()
        with _slow_answer():
            await _wait(request, fault.seconds, time.monotonic() + fault.seconds)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)
    if fault.kind == "redirect_loop":
        return web.Response(status=fault.status, headers={"Location": str(request.rel_url)})
    # redirect_foreign
    target = (fault.target or "").rstrip("/")
    return web.Response(status=fault.status, headers={"Location": target + str(request.rel_url)})


async def huge_error(request: web.Request, fault: Fault) -> web.StreamResponse:
    """An error status with a body of ``fault.size`` bytes, streamed (a client should stop reading early)."""
    response = web.StreamResponse(status=fault.status, headers={"Content-Type": "text/html"})
    response.content_length = fault.size
    await response.prepare(request)
    block = (b"<p>" + b"x" * 1020 + b"</p>") * 1024  # 1 MiB
    remaining = fault.size
    try:
        while remaining > 0:
            piece = block[: min(len(block), remaining)]
            await response.write(piece)
            remaining -= len(piece)
        await response.write_eof()
    except (ConnectionError, RuntimeError):  # the client hung up, as it should
        pass
    return response


async def spoil_answer(
    request: web.Request, endpoint: str, response: web.StreamResponse, fault: Fault
) -> web.StreamResponse:
    """An answer-stage fault applied to the service's own answer (the export was started, progress read)."""
    if fault.kind in _chaos.HOSTILE_KINDS:
        return await hostile_answer(request, endpoint, response, fault)
    if fault.kind == "hostile_filename":
        dispositions = _chaos.HOSTILE_DISPOSITIONS
        response.headers["Content-Disposition"] = dispositions[fault.variant % len(dispositions)]
        return response
    body = response.body if isinstance(response, web.Response) else None
    raw = body if isinstance(body, bytes) else b""
    if fault.kind in ("truncated_body", "reset_mid_body"):
        cut = web.StreamResponse(status=response.status, headers={"Content-Type": "application/json"})
        cut.content_length = len(raw)
        await cut.prepare(request)
        await cut.write(raw[: int(len(raw) * fault.fraction)])
        if fault.kind == "reset_mid_body":
            return reset_connection(request, cut)
        if request.transport is not None:
            request.transport.close()
        return cut
    if fault.kind == "non_json":
        content_type, garbage = _chaos.NON_JSON_BODIES[fault.variant % len(_chaos.NON_JSON_BODIES)]
        return web.Response(status=200, body=garbage, headers={"Content-Type": content_type})
    if fault.kind == "wrong_json":
        body_bytes = _chaos.wrong_json_body(endpoint, fault.variant)
        return web.Response(status=200, body=body_bytes, content_type="application/json")
    # progress_backwards / progress_over_100
    try:
        payload = json.loads(raw)
    except ValueError:
        return response
    return web.json_response(
        _chaos.spoil_progress(payload, fault.kind, fault.variant), status=response.status
    )


# ------------------------------------------------------------------------------------ a hostile service

_slow_answers = 0


def slow_answers_in_progress() -> int:
    """How many ``dripping_body`` and ``silent`` answers are being sent right now, in every emulator."""
    return _slow_answers


@contextlib.contextmanager
def _slow_answer() -> Iterator[None]:
    global _slow_answers
    _slow_answers += 1  # only ever changed on the emulator's event loop
    try:
        yield
    finally:
        _slow_answers -= 1


def _hung_up(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _wait(request: web.BaseRequest, seconds: float, deadline: float) -> bool:
    """Sleep ``seconds`` (not past ``deadline``) in short steps; False: the client hung up or time is up."""
    until = min(time.monotonic() + seconds, deadline)
    while True:
        if _hung_up(request):
            return False
        left = until - time.monotonic()
        if left <= 0:
            return time.monotonic() < deadline
        await asyncio.sleep(min(0.05, left))


async def hostile_answer(
    request: web.Request, endpoint: str, response: web.StreamResponse, fault: Fault
) -> web.StreamResponse:
    """The answer of one of :data:`~.chaos.HOSTILE_KINDS` (but ``silent``), given the service's own."""
    if fault.kind == "inflating_body":
        body = await asyncio.to_thread(_hostile.inflating_body, fault.size, fault.variant, endpoint)
        status = 200
        if endpoint == DOWNLOAD_EXPORT:
            status = fault.status if 400 <= fault.status <= 599 else 503
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": _hostile.inflating_encoding(fault.variant),
        }
        return web.Response(status=status, body=body, headers=headers)
    if fault.kind == "deep_json":
        body = await asyncio.to_thread(_hostile.deep_json_body, endpoint, fault.variant)
        return web.Response(status=200, body=body, content_type="application/json")
    if fault.kind == "non_finite_progress":
        body = _hostile.non_finite_progress_body(fault.variant)
        return web.Response(status=200, body=body, content_type="application/json")
    if fault.kind == "echoed_key":
        return _echo_key(request, endpoint, response, fault)
    return await _drip(request, response, fault)


def _echo_key(
    request: web.Request, endpoint: str, response: web.StreamResponse, fault: Fault
) -> web.StreamResponse:
    key = request.headers.get(KEY_HEADER, "")
    quoted = quote(key, safe="")
    variant = _hostile.echo_variant(endpoint, fault.variant)
    path = request.rel_url.path
    if variant.startswith("redirect"):
        status = fault.status if 300 <= fault.status <= 399 else 302
        location = {
            "redirect_query": f"{request.scheme}://{request.host}{path}?k={quoted}",
            "redirect_file": f"file:///{quoted}",
            "redirect_userinfo": f"{request.scheme}://{quoted}@{request.host}{path}",
        }[variant]
        return web.Response(status=status, headers={"Location": location})
    if variant == "error_body":
        status = fault.status if 400 <= fault.status <= 599 else 500
        echo = {"headers": {KEY_HEADER: key}, "url": f"{path}?k={quoted}"}
        return web.json_response({"error": f"request refused for key {key}", "request": echo}, status=status)
    if variant == "disposition":
        response.headers["Content-Disposition"] = f'attachment; filename="{key}.pdf"'
        return response
    if variant == "progress_message":
        return web.json_response(
            {"progressValue": 10, "status": "RUNNING", "message": f"exporting for {key}"}
        )
    return web.json_response(  # failed_message
        {"progressValue": 10, "status": "FAILED", "errorMessage": f"no licence for API key {key}"}
    )


async def _drip(request: web.Request, response: web.StreamResponse, fault: Fault) -> web.StreamResponse:
    """``dripping_body``: the service's answer (padded) or the artifact, one byte every ``fault.interval``."""
    headers = {"Content-Type": response.headers.get("Content-Type", "application/json")}
    status = response.status
    chunks: Iterable[bytes]
    if isinstance(response, web.FileResponse):  # a finished download: drip the artifact, from its Range
        path: Path = response._path  # the file the service was about to send (aiohttp keeps it there)
        stat = path.stat()
        size = stat.st_size
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'  # the validator FileResponse gives the same file
        headers.update({"Accept-Ranges": "bytes", "ETag": etag})
        if "Content-Disposition" in response.headers:
            headers["Content-Disposition"] = response.headers["Content-Disposition"]
        served = serve_range(request, size, etag, headers)
        if isinstance(served, web.Response):
            return served
        start, stop, status = served
        length = stop - start
        chunks = read_range(path, start, length, chunk_size=4096)
    else:
        body = response.body if isinstance(response, web.Response) else None
        raw = b" " * _hostile.DRIP_PAD + (body if isinstance(body, bytes) else b"")
        length, chunks = len(raw), (raw,)
    dripping = web.StreamResponse(status=status, headers=headers)
    dripping.content_length = length
    with _slow_answer():
        deadline = time.monotonic() + fault.seconds
        try:
            await dripping.prepare(request)
            for chunk in chunks:
                for i in range(len(chunk)):
                    await dripping.write(chunk[i : i + 1])
                    if not await _wait(request, fault.interval, deadline):
                        raise ConnectionResetError  # the client hung up (as it should), or time is up
            await dripping.write_eof()
            return dripping
        except (ConnectionError, RuntimeError):
            pass
    if request.transport is not None:
        request.transport.close()
    return dripping


# ------------------------------------------------------------------------------------ byte ranges


def serve_range(
    request: web.Request, size: int, etag: str, headers: dict[str, str]
) -> tuple[int, int, int] | web.Response:
    """``(start, stop, status)`` of what to send of ``size`` bytes: all (200), or the ``Range`` asked for
    (206, its ``Content-Range`` added to ``headers``) unless ``If-Range`` names another version; or the 416
    answer for a range that cannot be served."""
    if "Range" not in request.headers or request.headers.get("If-Range", etag) != etag:
        return 0, size, 200
    wanted = requested_range(request, size)
    if wanted is None:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    start, stop = wanted
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return start, stop, 206


def requested_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of the request's ``Range`` within ``size`` bytes; ``None``: it cannot be served."""
    try:
        rng = request.http_range
    except ValueError:
        return None
    start = rng.start if rng.start is not None else 0
    if start < 0:
        start = max(0, size + start)
    stop = min(size, rng.stop) if rng.stop is not None else size
    return (start, stop) if start < min(size, stop) else None


def read_range(path: Path, start: int, length: int, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
    """Up to ``length`` bytes of the file at ``path`` from ``start``, in chunks of at most ``chunk_size``."""
    with path.open("rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            chunk = fh.read(min(chunk_size, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

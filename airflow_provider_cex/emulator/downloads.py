"""Serving the artifact as an export download: whole, over TLS in large writes, or broken by a fault.

:func:`serve_artifact` answers a finished download with the artifact (with Range support), or broken by an
artifact-stage :class:`~.faults.Fault`: cut short, stalled, Range ignored or misplaced, chunked, reset.
The other answers the emulator puts on the wire are in :mod:`.serving`.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .artifacts import Artifact
from .faults import Fault
from .serving import read_range, requested_range, reset_connection, serve_range


async def serve_artifact(
    request: web.Request, artifact: Artifact, filename: str, fault: Fault | None
) -> web.StreamResponse:
    """The artifact as an export download, spoiled by ``fault`` (an artifact-stage one) if given."""
    headers = {
        "Content-Type": "application/pdf",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if fault is None:
        if _is_tls(request):
            return await _serve_over_tls(request, artifact, headers)
        return web.FileResponse(artifact.path, headers=headers)
    return await _serve_faulty(request, artifact, headers, fault)


def _is_tls(request: web.Request) -> bool:
    return request.transport is not None and request.transport.get_extra_info("sslcontext") is not None


async def _serve_over_tls(
    request: web.Request, artifact: Artifact, headers: dict[str, str]
) -> web.StreamResponse:
    """The artifact over TLS, in 1 MiB writes, with Range and If-Range as ``FileResponse`` answers them.

    ``FileResponse`` cannot use sendfile under TLS, and its fallback was the bottleneck of HTTPS downloads:
    1 GiB took 12.6-14.4 s to curl, against 2.0-2.5 s with 1 MiB writes (benchmarks/download_throughput.py).
    """
    size = artifact.size
    etag = f'"{artifact.sha256[:32]}"'
    headers.update({"Accept-Ranges": "bytes", "ETag": etag})
    served = serve_range(request, size, etag, headers)
    if isinstance(served, web.Response):
        return served
    start, stop, status = served
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = stop - start
    await response.prepare(request)
    try:
        for chunk in read_range(artifact.path, start, stop - start, chunk_size=1024 * 1024):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:  # the client went away
        pass
    return response


async def _serve_faulty(
    request: web.Request, artifact: Artifact, headers: dict[str, str], fault: Fault
) -> web.StreamResponse:
    size = artifact.size
    start, stop, status = 0, size, 200
    headers["Accept-Ranges"] = "bytes"
    chunked = fault.kind in ("chunked", "chunked_truncate")
    if "Range" in request.headers and fault.kind != "ignore_range" and not chunked:
        wanted = requested_range(request, size)
        if wanted is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        (start, stop), status = wanted, 206
        if fault.kind == "wrong_range":
            start = min(start + 7, stop - 1)
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = stop - start
    await response.prepare(request)
    complete = fault.kind in ("ignore_range", "wrong_range", "chunked")
    after = fault.after_bytes
    if fault.kind in ("truncated_body", "reset_mid_body"):  # chaos cuts a share of the file, not a byte count
        after = int(size * fault.fraction)
    to_send = stop - start if complete else min(after, stop - start)
    try:
        for chunk in read_range(artifact.path, start, to_send):
            await response.write(chunk)
        if complete:
            await response.write_eof()
            return response
    except ConnectionError:  # the client gave up first (e.g. its read timeout during a stall)
        return response
    if fault.kind == "stall":
        await asyncio.sleep(fault.seconds)
    if fault.kind == "reset_mid_body":
        return reset_connection(request, response)
    # Drop the connection with the body short of what was promised, as a broken network would.
    if request.transport is not None:
        request.transport.close()
    return response

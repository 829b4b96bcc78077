"""The emulator's aiohttp application: the three API routes, the admin routes, and the fault middleware.

Emulator-only admin routes (not part of the Content Exporter API; they need no ``CEX-API-KEY``, answer
loopback peers only, and are neither counted nor logged), for benchmarks and demos watching an emulator in
another process:

- ``GET /_emulator/exports``: ``{hash: {"page_id": ..., "started_at": epoch, "done_at": epoch | null}}`` in
  wall-clock ``time.time()`` seconds; ``done_at`` is when progress reaches 100, null for a failing export.
- ``GET /_emulator/counts``: the per-endpoint request counts.
- ``GET /openapi.json``: an OpenAPI 3.0 descriptor of the three paths this emulator serves (which may be
  non-default), with vendor-style parameter names; see :mod:`.descriptor`.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from airflow_provider_cex.endpoints import (
    DOWNLOAD_EXPORT,
    ENDPOINT_NAMES,
    EXPORT_PROGRESS,
    KEY_HEADER,
    START_EXPORT,
)

from .artifacts import Artifact
from .descriptor import OPENAPI_PATH, describe
from .downloads import serve_artifact
from .faults import ARTIFACT, PROXY, REFUSE, Fault, FaultQueues
from .model import UNKNOWN_ENDPOINT, ExportInfo, ExportModel, RequestRecord
from .serving import answer_in_front, huge_error, json_error, reset_connection, spoil_answer

ADMIN_EXPORTS = "emulator_exports"
ADMIN_COUNTS = "emulator_counts"
ADMIN_OPENAPI = "emulator_openapi"
ADMIN_PATHS: dict[str, str] = {
    ADMIN_EXPORTS: "/_emulator/exports",
    ADMIN_COUNTS: "/_emulator/counts",
    ADMIN_OPENAPI: OPENAPI_PATH,
}
"""Emulator-only admin routes (see the module docstring): no key, loopback peers only, never counted."""

_HandlerType = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_host(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _route_name(request: web.BaseRequest) -> str | None:
    return request.match_info.route.name if isinstance(request, web.Request) else None


def endpoint_of(request: web.BaseRequest) -> str:
    name = _route_name(request)
    return name if name is not None and name in ENDPOINT_NAMES else UNKNOWN_ENDPOINT


def _from_loopback(request: web.BaseRequest) -> bool:
    remote = request.remote
    return remote is not None and is_loopback_host(remote)


class ArtifactSource(Protocol):
    """What serving another emulator's artifact needs of it (a ``ContentExporterEmulator`` has it)."""

    @property
    def artifact_path(self) -> Path: ...
    @property
    def artifact_sha256(self) -> str: ...
    @property
    def artifact_size(self) -> int: ...
    @property
    def exports(self) -> dict[str, ExportInfo]: ...


@dataclass(frozen=True)
class DownloadRoute:
    """Where a finished download goes: the artifact here, a redirect, or (``foreign``) another's artifact.

    With ``foreign`` set the download route serves that source's artifact for *any* hash without a key
    check, as a pre-signed URL host would.
    """

    redirect_origin: str | None = None
    redirect_status: int = 302
    foreign: ArtifactSource | None = None


class Service:
    """The emulator's request handling over its model and faults; :meth:`make_app` builds an app from it.

    :param artifact: returns the artifact being served (raises while the emulator is not running).
    """

    def __init__(
        self,
        *,
        api_key: str,
        paths: Mapping[str, str],
        model: ExportModel,
        faults: FaultQueues,
        artifact: Callable[[], Artifact],
    ) -> None:
        self._api_key = api_key.encode("utf-8")
        self._paths = dict(paths)
        self._model = model
        self._faults = faults
        self._artifact = artifact
        self._route_lock = threading.Lock()
        self.route = DownloadRoute()
        """Replaced whole (never mutated), so a request reads one consistent route without a lock."""

    def set_route(self, **changes: Any) -> None:
        """Change some fields of :attr:`route` (see :class:`DownloadRoute`)."""
        with self._route_lock:
            self.route = dataclasses.replace(self.route, **changes)

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(self._paths[START_EXPORT], self._handle_start, name=START_EXPORT)
        app.router.add_get(self._paths[EXPORT_PROGRESS], self._handle_progress, name=EXPORT_PROGRESS)
        app.router.add_get(self._paths[DOWNLOAD_EXPORT], self._handle_download, name=DOWNLOAD_EXPORT)
        app.router.add_get(ADMIN_PATHS[ADMIN_EXPORTS], self._handle_admin_exports, name=ADMIN_EXPORTS)
        app.router.add_get(ADMIN_PATHS[ADMIN_COUNTS], self._handle_admin_counts, name=ADMIN_COUNTS)
        app.router.add_get(ADMIN_PATHS[ADMIN_OPENAPI], self._handle_openapi, name=ADMIN_OPENAPI)
        app.on_response_prepare.append(self._record_response)
        return app

    # ---------------------------------------------------------------- request plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _HandlerType) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        if endpoint == UNKNOWN_ENDPOINT:
            return await handler(request)
        self._model.count(endpoint)
        fault = self._faults.take(endpoint, time.monotonic())
        stage = fault.stage if fault is not None else None
        if stage == REFUSE:  # a kept-alive connection during a refusal window: reset it
            return reset_connection(request)
        # Faults come first, like a rate-limiting proxy in front of the service.
        if fault is not None and stage == PROXY:
            return await answer_in_front(request, fault)
        foreign = endpoint == DOWNLOAD_EXPORT and self.route.foreign is not None
        if not foreign and not hmac.compare_digest(
            request.headers.get(KEY_HEADER, "").encode("utf-8"), self._api_key
        ):
            if fault is not None and stage == ARTIFACT:
                self._faults.give_back(fault)
            return json_error(401, "invalid API key")
        if fault is None:
            return await handler(request)
        if stage == ARTIFACT:
            return await self._download(request, fault)
        if fault.kind == "huge_error_body":
            return await huge_error(request, fault)
        response = await handler(request)
        return await spoil_answer(request, endpoint, response, fault)

    async def _record_response(self, request: web.Request, response: web.StreamResponse) -> None:
        if _route_name(request) in ADMIN_PATHS:
            return
        record = RequestRecord(
            endpoint=endpoint_of(request),
            method=request.method,
            path=request.path,
            had_api_key=KEY_HEADER in request.headers,
            status=response.status,
        )
        self._model.record(record)

    # ---------------------------------------------------------------- handlers

    async def _handle_start(self, request: web.Request) -> web.StreamResponse:
        page_id = request.match_info.get("page_id", "")
        if not page_id.isdigit() or not page_id.isascii():
            return json_error(400, f"page id must be digits, got {page_id[:40]!r}")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return json_error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return json_error(400, "request body must be a JSON object holding rootContentId")
        root = body.get("rootContentId")
        if root is None:
            return json_error(400, "rootContentId is missing from the request body")
        if isinstance(root, bool) or not isinstance(root, str | int):
            return json_error(400, "rootContentId must be a string or an integer")
        if str(root) != page_id:
            return json_error(
                400, f"rootContentId {str(root)[:40]!r} does not match page id {page_id!r} in the URL"
            )
        return web.json_response({"hash": self._model.start(page_id, body).export_hash})

    async def _handle_progress(self, request: web.Request) -> web.StreamResponse:
        progress = self._model.evaluate(request.match_info.get("export_hash", ""), time.monotonic())
        if progress is None:
            return json_error(404, "unknown export hash")
        if progress.failure is not None:
            return web.json_response(
                {"progressValue": progress.value, "status": "FAILED", "errorMessage": progress.failure}
            )
        status = "DONE" if progress.value >= 100 else "RUNNING"
        return web.json_response({"progressValue": progress.value, "status": status})

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        return await self._download(request, None)

    async def _download(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        """Answer a download; an artifact ``fault`` not used here (no artifact served) goes back in line."""
        export_hash = request.match_info.get("export_hash", "")
        route = self.route
        if route.foreign is not None:
            source = route.foreign
            page = source.exports.get(export_hash)
            filename = f"page-{page.page_id}.pdf" if page else f"export-{export_hash[:64]}.pdf"
            artifact = Artifact(source.artifact_path, source.artifact_sha256, source.artifact_size)
            return await serve_artifact(request, artifact, filename, fault)
        progress = self._model.evaluate(export_hash, time.monotonic())
        answer: web.StreamResponse
        if progress is None:
            answer = json_error(404, "unknown export hash")
        elif progress.failure is not None:
            answer = json_error(409, "export failed")
        elif progress.value < 100:
            answer = json_error(409, "export not finished")
        elif route.redirect_origin is not None:
            location = route.redirect_origin + request.rel_url.path
            answer = web.Response(status=route.redirect_status, headers={"Location": location})
        else:
            return await serve_artifact(request, self._artifact(), f"page-{progress.page_id}.pdf", fault)
        if fault is not None:
            self._faults.give_back(fault)
        return answer

    async def _handle_admin_exports(self, request: web.Request) -> web.StreamResponse:
        if not _from_loopback(request):
            return json_error(403, "the emulator admin routes answer loopback clients only")
        return web.json_response(self._model.timeline())

    async def _handle_openapi(self, request: web.Request) -> web.StreamResponse:
        """The OpenAPI descriptor of the paths this emulator serves (no key, like the vendor's download)."""
        return web.json_response(describe(self._paths))

    async def _handle_admin_counts(self, request: web.Request) -> web.StreamResponse:
        if not _from_loopback(request):
            return json_error(403, "the emulator admin routes answer loopback clients only")
        return web.json_response(self._model.counts())

"""The OpenAPI 3.0 descriptor the emulator serves at ``GET /openapi.json``, built from the paths it serves.

Like the vendor's downloadable descriptor, it names path parameters its own way (``pageId``,
``exportHash``), so a client must map them onto its own templates; it lists the servers' path prefix
(none) and no host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_cex.endpoints import (
    DOWNLOAD_EXPORT,
    EXPORT_PROGRESS,
    KEY_HEADER,
    PLACEHOLDER,
    START_EXPORT,
)

OPENAPI_PATH = "/openapi.json"

#: Our placeholder -> the vendor-style path parameter name.
_PARAM_NAMES = {PLACEHOLDER[START_EXPORT]: "pageId", PLACEHOLDER[EXPORT_PROGRESS]: "exportHash"}

_ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _vendor_style(template: str) -> str:
    for ours, theirs in _PARAM_NAMES.items():
        template = template.replace("{" + ours + "}", "{" + theirs + "}")
    return template


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def describe(paths: Mapping[str, str]) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document for the three calls at ``paths`` (endpoint name -> path template)."""
    key_security: list[dict[str, list[str]]] = [{"apiKey": []}]
    start = {
        "post": {
            "operationId": "initRemoteExport",
            "summary": "Start an export of a page tree",
            "tags": ["Remote export"],
            "security": key_security,
            "parameters": [_path_parameter("pageId", "The (parent) page id; also rootContentId in the body")],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportSettings"}}},
            },
            "responses": {
                "200": {
                    "description": "The export was started",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ExportStarted"}}
                    },
                },
                "400": _ERROR,
                "401": _ERROR,
            },
        }
    }
    progress = {
        "get": {
            "operationId": "getRemoteExportProgress",
            "summary": "Progress of an export",
            "tags": ["Remote export"],
            "security": key_security,
            "parameters": [{"$ref": "#/components/parameters/ExportHash"}],
            "responses": {
                "200": {
                    "description": "Progress from 0 to 100",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Progress"}}},
                },
                "401": _ERROR,
                "404": _ERROR,
            },
        }
    }
    download = {
        "get": {
            "operationId": "downloadRemoteExport",
            "summary": "The exported file",
            "tags": ["Remote export"],
            "security": key_security,
            "parameters": [{"$ref": "#/components/parameters/ExportHash"}],
            "responses": {
                "200": {
                    "description": "The file, as exported",
                    "content": {
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "401": _ERROR,
                "404": _ERROR,
                "409": _ERROR,
            },
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Content Exporter Remote API (local emulator)", "version": "1"},
        "servers": [{"url": "/"}],
        "paths": {
            _vendor_style(paths[START_EXPORT]): start,
            _vendor_style(paths[EXPORT_PROGRESS]): progress,
            _vendor_style(paths[DOWNLOAD_EXPORT]): download,
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER}},
            "parameters": {"ExportHash": _path_parameter("exportHash", "The hash the start call returned")},
            "schemas": {
                "ExportSettings": {
                    "type": "object",
                    "required": ["rootContentId"],
                    "properties": {
                        "rootContentId": {"type": "string"},
                        "pageSettings": {"type": "object"},
                        "margins": {"type": "array", "items": {"type": "object"}},
                        "unit": {"type": "string"},
                    },
                    "additionalProperties": True,
                },
                "ExportStarted": {"type": "object", "properties": {"hash": {"type": "string"}}},
                "Progress": {
                    "type": "object",
                    "properties": {
                        "progressValue": {"type": "integer", "minimum": 0, "maximum": 100},
                        "status": {"type": "string"},
                        "errorMessage": {"type": "string"},
                    },
                },
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            },
        },
    }

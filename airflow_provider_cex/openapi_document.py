"""Read an OpenAPI (3.0/3.1) or Swagger 2.0 descriptor and list its operations, for :mod:`.openapi`.

:func:`load_document` reads the descriptor (JSON, else YAML); :func:`collect_operations` reduces each of its
operations to an :class:`Operation`: method, path, texts, tags, parameters, base paths (from ``servers`` or
``basePath``) and what its success responses say (a binary body, a JSON schema with ``progressValue``),
every local ``$ref`` followed. Matching the operations to the three calls is :mod:`.openapi`'s work.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

#: The operations an OpenAPI path item may hold, lower-case as its keys are (not :data:`.endpoints.METHOD`).
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
#: A path placeholder such as ``{id}``; its group is the parameter's name.
PLACEHOLDER_RE = re.compile(r"{([^{}]*)}")

_FILE_TYPES = ("image", "audio", "video", "font")
_URL_HEAD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*")  # scheme and host: never used


class OpenAPIError(ValueError):
    """The descriptor is unreadable, not OpenAPI, or does not name the three calls unambiguously."""

    def __init__(self, message: str, operations: Sequence[Operation] = ()) -> None:
        super().__init__(message)
        self.operations: list[Operation] = list(operations)


@dataclass(frozen=True)
class Operation:
    """One operation of the descriptor, reduced to what matching needs."""

    method: str
    path: str
    operation_id: str = ""
    summary: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()  # (in, name), path-level merged with operation-level
    prefixes: tuple[str, ...] = ("",)  # base paths the servers/basePath give; more than one = they disagree
    binary: bool = False  # a success response is a file
    progress_schema: bool = False  # a success JSON response has ``progressValue``

    @property
    def path_params(self) -> list[str]:
        return PLACEHOLDER_RE.findall(self.path)

    @property
    def head(self) -> str:
        prefix = self.prefixes[0] if len(self.prefixes) == 1 else ""
        return f"{self.method} {clip(prefix + self.path, 120)}"

    def describe(self) -> str:
        op_id = f"  operationId={clip(self.operation_id, 60)}" if self.operation_id else ""
        return self.head + op_id + (f"  summary={clip(self.summary, 80)!r}" if self.summary else "")


# --------------------------------------------------------------------------- reading the document


def load_document(path_or_text: str | bytes | os.PathLike[str]) -> dict[str, Any]:
    """Read a descriptor (JSON, else YAML) from a path, or from text when given bytes or a string
    that starts with ``{`` or spans several lines."""
    if isinstance(path_or_text, bytes):
        raw = path_or_text
    elif isinstance(path_or_text, str) and (path_or_text.lstrip().startswith("{") or "\n" in path_or_text):
        raw = path_or_text.encode()
    else:
        path = Path(path_or_text)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            why = (
                "does not exist" if isinstance(exc, FileNotFoundError) else f"is unreadable ({exc.strerror})"
            )
            raise OpenAPIError(f"OpenAPI descriptor {clip(str(path), 200)!r} {why}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OpenAPIError("The descriptor is not UTF-8 text (expected JSON or YAML).") from None
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError) as json_error:
        import yaml  # only when needed: most descriptors are JSON

        try:
            document = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, TypeError, RecursionError) as yaml_error:
            raise OpenAPIError(
                f"The descriptor is neither JSON ({clip(str(json_error), 120)}) nor YAML "
                f"({clip(' '.join(str(yaml_error).split()), 160)})."
            ) from None
    if not isinstance(document, dict):
        raise OpenAPIError(f"The descriptor must be a JSON/YAML object, got {type(document).__name__}.")
    return document


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow local ``$ref``s; ``None`` for a remote, dangling or cyclic reference."""
    seen: set[str] = set()
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#") or ref in seen:
            return None
        seen.add(ref)
        node = _pointer(document, ref[1:])
    return node


def _pointer(document: Mapping[str, Any], pointer: str) -> Any:
    """The node a JSON pointer (``/a/b~1c``, percent-encoded as in a URI fragment) names, or ``None``."""
    if pointer and not pointer.startswith("/"):
        return None
    node: Any = document
    for token in pointer.split("/")[1:]:
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            node = node.get(token) if isinstance(node, Mapping) else None
    return node


def _has_property(document: Mapping[str, Any], schema: Any, name: str, depth: int = 4) -> bool:
    schema = _resolve(document, schema)
    if depth < 0 or not isinstance(schema, Mapping):
        return False
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    parts = [sub for key in ("allOf", "anyOf", "oneOf") for sub in _list(schema.get(key))]
    subs = [*properties.values(), *parts]
    return name in properties or any(_has_property(document, sub, name, depth - 1) for sub in subs)


# --------------------------------------------------------------------------- collecting operations


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_binary_media(media_type: str) -> bool:
    """Files: ``*/*``, image/audio/video/font, and every ``application/*`` except JSON, XML and forms."""
    main, _, sub = media_type.partition("/")
    textual = "json" in sub or sub == "xml" or sub.endswith("+xml") or sub == "x-www-form-urlencoded"
    return media_type == "*/*" or main in _FILE_TYPES or (main == "application" and not textual)


def _response_evidence(document: Mapping[str, Any], operation: Mapping[str, Any]) -> tuple[bool, bool]:
    """(binary, progressValue) of the operation's success (2xx/default) responses."""
    binary = progress = False
    responses = operation.get("responses")
    produces = operation.get("produces", document.get("produces"))
    if "swagger" in document and isinstance(produces, list):
        binary = any(_is_binary_media(_media(t)) for t in produces)
    for status, response in responses.items() if isinstance(responses, Mapping) else ():
        if not (str(status).startswith("2") or str(status) == "default"):
            continue
        response = _resolve(document, response)
        if not isinstance(response, Mapping):
            continue
        schemas: list[tuple[str, Any]] = [("application/json", response.get("schema"))]
        content = response.get("content")
        if isinstance(content, Mapping):
            schemas = [
                (_media(mt), m.get("schema") if isinstance(m, Mapping) else None) for mt, m in content.items()
            ]
            # */* (springdoc writes it for every answer) is a file only without a schema or with a binary one
            binary = binary or any(_is_binary_media(mt) and (mt != "*/*" or s is None) for mt, s in schemas)
        for media_type, schema in schemas:
            resolved = _resolve(document, schema)
            binary = binary or (isinstance(resolved, Mapping) and resolved.get("format") == "binary")
            binary = binary or (isinstance(resolved, Mapping) and resolved.get("type") == "file")
            json_like = "json" in media_type or media_type == "*/*"
            progress = progress or (json_like and _has_property(document, schema, "progressValue"))
    return binary, progress


def _media(media_type: Any) -> str:
    return str(media_type).split(";")[0].strip().lower()


def _server_prefixes(servers: Any) -> tuple[str, ...] | None:
    """Distinct base paths of an OpenAPI 3 ``servers`` list (host ignored), ``None`` when absent/empty."""
    if not isinstance(servers, list):
        return None
    prefixes: list[str] = []
    for server in servers:
        if not isinstance(server, Mapping) or not isinstance(server.get("url"), str):
            continue
        url, variables = server["url"], server.get("variables")
        for name, spec in variables.items() if isinstance(variables, Mapping) else ():
            if isinstance(spec, Mapping) and "default" in spec:
                url = url.replace("{" + str(name) + "}", str(spec["default"]))
        prefix = _normalise_prefix(_URL_HEAD_RE.sub("", url).split("?")[0].split("#")[0])
        if prefix not in prefixes:
            prefixes.append(prefix)
    return tuple(prefixes) or None


def _normalise_prefix(path: str) -> str:
    """``/base/v1/`` -> ``/base/v1``; relative paths are taken from the root; ``/`` -> no prefix."""
    prefix = posixpath.normpath("/" + path.lstrip("/")).rstrip("/")
    return "" if prefix in ("", ".") else prefix


def _parameters(document: Mapping[str, Any], *lists: Any) -> tuple[tuple[str, str], ...]:
    merged: dict[tuple[str, str], None] = {}
    for item in (item for items in lists for item in _list(items)):
        param = _resolve(document, item)
        if isinstance(param, Mapping) and isinstance(param.get("name"), str):
            key = (str(param.get("in", "")), param["name"])
            merged.pop(key, None)  # the operation's definition wins (and comes last)
            merged[key] = None
    return tuple(merged)


def collect_operations(document: Mapping[str, Any]) -> list[Operation]:
    """Every operation of the descriptor; :class:`OpenAPIError` when it is not OpenAPI 3 / Swagger 2."""
    version = document.get("openapi", document.get("swagger"))
    if version is None:
        raise OpenAPIError("Not an OpenAPI descriptor: it has neither an 'openapi' nor a 'swagger' key.")
    if not str(version).startswith("3" if "openapi" in document else "2"):
        raise OpenAPIError(f"Unsupported OpenAPI version {clip(str(version), 20)!r}: need 3.x or 2.0.")
    paths = document.get("paths")
    if not isinstance(paths, Mapping):
        raise OpenAPIError("The OpenAPI descriptor has no 'paths': it describes no operation.")
    if "openapi" in document:
        document_prefixes = _server_prefixes(document.get("servers")) or ("",)
    else:
        base_path = document.get("basePath")
        document_prefixes = (_normalise_prefix(base_path if isinstance(base_path, str) else ""),)
    operations: list[Operation] = []
    for path, item in paths.items():
        item = _resolve(document, item)
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(item, Mapping):
            continue
        path_prefixes = _server_prefixes(item.get("servers")) or document_prefixes
        for method in HTTP_METHODS:
            operation = _resolve(document, item.get(method))
            if not isinstance(operation, Mapping):
                continue
            texts = (
                _text(operation, "operationId"),
                _text(operation, "summary"),
                _text(operation, "description"),
            )
            tags = tuple(" ".join(str(t).split()) for t in _list(operation.get("tags")) if isinstance(t, str))
            params = _parameters(document, item.get("parameters"), operation.get("parameters"))
            prefixes = _server_prefixes(operation.get("servers")) or path_prefixes
            evidence = _response_evidence(document, operation)
            operations.append(Operation(method.upper(), path, *texts, tags, params, prefixes, *evidence))
    return operations


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key)
    return " ".join(value.split()) if isinstance(value, str) else ""


def clip(text: str, limit: int) -> str:
    """``text`` with unprintable characters as spaces, cut to ``limit`` characters (``…`` marks a cut)."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"

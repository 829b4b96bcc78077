"""Derive the connection extra ``endpoints`` from the vendor's OpenAPI (3.0/3.1) or Swagger 2.0 descriptor.

Run ``python -m airflow_provider_cex.openapi remote-api.json`` to print the extra and a ready-to-paste
``airflow connections add`` command; nothing is ever guessed silently: an unmatched or ambiguous call is an
error listing every operation seen.

Precedence. Only operations with exactly one path parameter qualify. The words of an operation come from
sources ranked strongest first: (0) the literal path segments, (1) the success response (binary body means
download, a JSON schema with ``progressValue`` means progress), (2) the operationId, (3) the tags,
(4) the summary, (5) the description. The name of the path parameter itself is never a word. A body is
binary for ``application/*`` other than JSON, XML and forms (so PDF, zip, msword, vnd.openxmlformats...),
``image|audio|video|font/*``, ``*/*`` without a schema, a schema ``format: binary`` or Swagger ``type: file``.

* A GET goes to the call named by its strongest source that speaks at all, so it is never given to both.
  When one source speaks of both calls, the path's last keyword decides (``/download/{h}/status`` is
  progress), in any other source the first keyword does ("Download the file once the status is done" is
  download); a response that is both binary and carries ``progressValue`` says nothing.
* ``start_export`` is the POST with one path parameter; when several qualify, those speaking of
  init/start/create/export are kept, then those whose strongest such source ranks best, then those
  where that source holds a verb (init, start, create...) rather than only "export".
* When several GETs go to the same call, the ones decided by the best-ranked source are kept.
  Whatever is still not exactly one operation is an :class:`OpenAPIError`.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from airflow_provider_cex import CONN_TYPE, DEFAULT_CONN_ID, EU_APPLICATION_URL, US_APPLICATION_URL
from airflow_provider_cex.endpoints import (
    DEFAULT_PATHS,
    DOWNLOAD_EXPORT,
    ENDPOINT_NAMES,
    EXPORT_PROGRESS,
    KEY_HEADER,
    PLACEHOLDER,
    START_EXPORT,
)

#: The operations an OpenAPI path item may hold, lower-case as its keys are (not :data:`.endpoints.METHOD`).
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
#: What the printed connection command puts where the API key goes.
PASSWORD_PLACEHOLDER = f"<YOUR-{KEY_HEADER}>"
MAX_LISTED = 200

_START_VERBS = frozenset({"init", "initiate", "initialize", "initialise", "start", "create", "launch"})
_START_NOUNS = frozenset({"export", "exports"})
_KEYWORDS = {
    EXPORT_PROGRESS: frozenset({"progress", "status", "statuses", "poll", "polling", "state", "states"}),
    DOWNLOAD_EXPORT: frozenset({"download", "downloads", "result", "results", "file", "files", "artifact"}),
}
_FILE_TYPES = ("image", "audio", "video", "font")
_PLACEHOLDER_RE = re.compile(r"{([^{}]*)}")
_URL_HEAD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*")  # scheme and host: never used
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


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
        return _PLACEHOLDER_RE.findall(self.path)

    @property
    def head(self) -> str:
        prefix = self.prefixes[0] if len(self.prefixes) == 1 else ""
        return f"{self.method} {_clip(prefix + self.path, 120)}"

    def describe(self) -> str:
        op_id = f"  operationId={_clip(self.operation_id, 60)}" if self.operation_id else ""
        return self.head + op_id + (f"  summary={_clip(self.summary, 80)!r}" if self.summary else "")


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
            raise OpenAPIError(f"OpenAPI descriptor {_clip(str(path), 200)!r} {why}.") from None
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
                f"The descriptor is neither JSON ({_clip(str(json_error), 120)}) nor YAML "
                f"({_clip(' '.join(str(yaml_error).split()), 160)})."
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
        raise OpenAPIError(f"Unsupported OpenAPI version {_clip(str(version), 20)!r}: need 3.x or 2.0.")
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


# --------------------------------------------------------------------------- matching


def words(text: str) -> list[str]:
    """Lower-case words of camelCase, snake_case, kebab-case or path text."""
    return [w.lower() for w in _WORD_RE.findall(text)]


def _without(sequence: list[str], part: list[str]) -> list[str]:
    """``sequence`` with every occurrence of the consecutive words ``part`` removed."""
    result, i = [], 0
    while i < len(sequence):
        found = bool(part) and sequence[i : i + len(part)] == part
        result += [] if found else [sequence[i]]
        i += len(part) if found else 1
    return result


def _sources(operation: Operation) -> list[list[str]]:
    """Word lists by rank (see the module docstring); rank 1 (the response) is left empty here."""
    param = words(operation.path_params[0]) if operation.path_params else []
    literal = words(_PLACEHOLDER_RE.sub("/", operation.path))
    texts = [operation.operation_id, " ".join(operation.tags), operation.summary, operation.description]
    return [literal, [], *(_without(words(text), param) for text in texts)]


def _get_verdict(operation: Operation) -> tuple[str, int] | None:
    """(call, rank of the deciding source) for a GET with one path parameter, or ``None``."""
    for rank, source in enumerate(_sources(operation)):
        if rank == 1:
            if operation.binary != operation.progress_schema:
                return (DOWNLOAD_EXPORT if operation.binary else EXPORT_PROGRESS), rank
            continue
        hits = [call for word in source for call, keys in _KEYWORDS.items() if word in keys]
        if hits:
            return (hits[-1] if rank == 0 else hits[0]), rank
    return None


def _start_key(operation: Operation) -> tuple[int, int] | None:
    """(rank, 0 for a verb / 1 for only "export") of the strongest source speaking of starting."""
    for rank, source in enumerate(_sources(operation)):
        if _START_VERBS.intersection(source):
            return rank, 0
        if _START_NOUNS.intersection(source):
            return rank, 1
    return None


def _narrow(keyed: list[tuple[Any, Operation]]) -> list[Operation]:
    """The operations of the smallest key; a ``None`` key drops its operation."""
    kept = [(k, op) for k, op in keyed if k is not None]
    return [op for k, op in kept if k == min(k for k, _ in kept)]


def _match(operations: list[Operation]) -> tuple[dict[str, Operation], list[str]]:
    single = [op for op in operations if len(op.path_params) == 1]
    posts = [op for op in single if op.method == "POST"]
    gets = [op for op in single if op.method == "GET"]
    chosen: dict[str, Operation] = {}
    problems: list[str] = []
    found = {START_EXPORT: posts if len(posts) <= 1 else _narrow([(_start_key(op), op) for op in posts])}
    verdicts = [(verdict, op) for op in gets if (verdict := _get_verdict(op))]
    for call in (EXPORT_PROGRESS, DOWNLOAD_EXPORT):
        found[call] = _narrow([(rank, op) for (name, rank), op in verdicts if name == call])
    for call, candidates in found.items():
        if len(candidates) == 1:
            chosen[call] = candidates[0]
        elif not candidates:
            problems.append(f"'{call}': no operation matches ({_NEEDS[call]}).")
        else:
            listed = "; ".join(op.head for op in candidates[:10])
            problems.append(f"'{call}' is ambiguous, {len(candidates)} operations match equally: {listed}.")
    for call, op in chosen.items():
        if len(op.prefixes) > 1:
            problems.append(
                f"'{call}': the servers of {op.head} disagree on the base path "
                f"({', '.join(repr(p or '/') for p in op.prefixes[:5])})."
            )
    return chosen, problems


_NEEDS = {
    START_EXPORT: "expected one POST whose path has exactly one parameter, the page id, or among several "
    "one speaking of init/start/create/export",
    EXPORT_PROGRESS: "expected a GET with one path parameter speaking of progress/status/poll/state, "
    "or answering JSON with 'progressValue'",
    DOWNLOAD_EXPORT: "expected a GET with one path parameter speaking of download/result/file/artifact, "
    "or answering a binary body",
}


def endpoints_from_openapi(document: Mapping[str, Any]) -> dict[str, str]:
    """The ``endpoints`` extra (``start_export``, ``export_progress``, ``download_export``) of a document."""
    if not isinstance(document, Mapping):
        raise OpenAPIError("The descriptor must be a JSON/YAML object (an OpenAPI document).")
    operations = collect_operations(document)
    chosen, problems = _match(operations)
    result: dict[str, str] = {}
    for call, op in chosen.items():
        template = op.path.replace("{" + op.path_params[0] + "}", "{" + PLACEHOLDER[call] + "}")
        result[call] = op.prefixes[0] + template
    if not problems:
        from airflow_provider_cex.settings import parse_endpoints  # imports Airflow: only when needed

        try:
            return parse_endpoints(result)
        except ValueError as exc:
            problems.append(str(exc))
    raise OpenAPIError(_report(problems, operations), operations)


def _report(problems: list[str], operations: list[Operation]) -> str:
    lines = ["Cannot derive the endpoints from the OpenAPI descriptor:"]
    lines += [f"  - {p}" for p in problems]
    lines.append(f"Operations seen ({len(operations)}):" if operations else "Operations seen: none.")
    lines += [f"  {op.describe()}" for op in operations[:MAX_LISTED]]
    if len(operations) > MAX_LISTED:
        lines.append(f"  ... and {len(operations) - MAX_LISTED} more")
    lines += [
        "Set the connection extra 'endpoints' by hand instead, for example:",
        f"  {json.dumps(DEFAULT_PATHS)}",
    ]
    return "\n".join(_clip(line, 600) for line in lines)


def _clip(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- command line


def connection_command(endpoints: Mapping[str, str], conn_id: str, host: str) -> str:
    """A ready-to-paste ``airflow connections add`` command (the API key left as a placeholder)."""
    extra = json.dumps({"endpoints": dict(endpoints)})
    return (
        f"# EU data residency: use --conn-host {EU_APPLICATION_URL}\n"
        f"airflow connections add {shlex.quote(conn_id)} --conn-type {CONN_TYPE} \\\n"
        f"  --conn-host {shlex.quote(host)} --conn-password {shlex.quote(PASSWORD_PLACEHOLDER)} \\\n"
        f"  --conn-extra {shlex.quote(extra)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: print the extra and the connection command; 2 on any error, on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cex.openapi", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("file", help="the descriptor, JSON or YAML; '-' reads standard input")
    parser.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="connection id (default: %(default)s)")
    parser.add_argument("--host", default=US_APPLICATION_URL, help="Application URL (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        source: bytes | Path = Path(args.file)
        if args.file == "-":
            stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
            source = stdin.read() if stdin is not None else sys.stdin.read().encode()
        endpoints = endpoints_from_openapi(load_document(source))
        from airflow_provider_cex.settings import resolve_base_url

        host = resolve_base_url(args.host)
    except (OpenAPIError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({call: endpoints[call] for call in ENDPOINT_NAMES}))
    print(connection_command(endpoints, args.conn_id, host))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
  Whatever is still not exactly one operation is an :class:`~.openapi_document.OpenAPIError`.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
from airflow_provider_cex.openapi_document import (
    PLACEHOLDER_RE,
    OpenAPIError,
    Operation,
    clip,
    collect_operations,
    load_document,
)

#: What the printed connection command puts where the API key goes.
PASSWORD_PLACEHOLDER = f"<YOUR-{KEY_HEADER}>"
MAX_LISTED = 200

_START_VERBS = frozenset({"init", "initiate", "initialize", "initialise", "start", "create", "launch"})
_START_NOUNS = frozenset({"export", "exports"})
_KEYWORDS = {
    EXPORT_PROGRESS: frozenset({"progress", "status", "statuses", "poll", "polling", "state", "states"}),
    DOWNLOAD_EXPORT: frozenset({"download", "downloads", "result", "results", "file", "files", "artifact"}),
}
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


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
    literal = words(PLACEHOLDER_RE.sub("/", operation.path))
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
    return "\n".join(clip(line, 600) for line in lines)


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

"""Turn a browser HAR recording of an export started in the Content Exporter UI into an ``export_body`` file.

Usage: ``python -m airflow_provider_cex.profile --from-har export.har [--page-id 123456] > profile.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_cex.endpoints import is_page_id

#: A payload key whose name matches this is dropped: it would hold a credential.
CREDENTIAL_KEY = re.compile(r"token|jwt|authorization|cookie|session|api[-_]?key|secret|password", re.I)
#: Headers describing the request, not the user: their values are not scrubbed from the payload.
PUBLIC_HEADERS = (":", "accept", "content-", "sec-", "host", "origin", "referer", "user-agent", "cache-")
#: Shorter header or cookie values (``1``, ``en``, ``true``) are too common to be told apart from settings.
MIN_SECRET_LENGTH = 8
HOW_TO_RECORD = (
    "Open the browser's developer tools (F12) on the Network tab, start the export from the Content "
    'Exporter UI, then right-click the list of requests and choose "Save all as HAR".'
)


class HarProfileError(ValueError):
    """The HAR cannot be turned into an export body; the message says why and what to do."""


@dataclass(frozen=True)
class InitCall:
    """One ``POST …/init`` request of the HAR: its URL path (no query), payload text and mime type."""

    path: str
    text: str | None
    mime: str

    @property
    def segments(self) -> list[str]:
        return [unquote(part) for part in self.path.split("/")]


def entries(har: Any) -> list[Mapping[str, Any]]:
    log = har.get("log") if isinstance(har, Mapping) else None
    found = log.get("entries") if isinstance(log, Mapping) else None
    if not isinstance(found, list):
        raise HarProfileError(f"The file is not a HAR file (it has no log.entries list). {HOW_TO_RECORD}")
    return [entry for entry in found if isinstance(entry, Mapping)]


def _part(mapping: Any, key: str) -> Mapping[str, Any]:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _pairs(mapping: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    """The ``name``/``value`` items of a HAR list (headers, cookies), as strings."""
    items = mapping.get(key)
    if not isinstance(items, list):
        return []
    return [(str(i.get("name", "")), str(i.get("value", ""))) for i in items if isinstance(i, Mapping)]


def init_calls(har: Mapping[str, Any]) -> list[InitCall]:
    """Every POST request whose URL path (query and fragment ignored) ends in ``/init``, in HAR order."""
    calls = []
    for entry in entries(har):
        request = _part(entry, "request")
        url = request.get("url")
        if str(request.get("method", "")).upper() != "POST" or not isinstance(url, str):
            continue
        try:
            path = urlsplit(url).path.rstrip("/")
        except ValueError:
            continue
        if path.endswith("/init"):
            post = _part(request, "postData")
            text = post.get("text") if isinstance(post.get("text"), str) else None
            calls.append(InitCall(path, text, str(post.get("mimeType") or "")))
    return calls


def secret_values(har: Mapping[str, Any]) -> set[str]:
    """Values of the HAR's request headers and cookies that may be credentials (never printed)."""
    found: set[str] = set()
    for entry in entries(har):
        request, response = _part(entry, "request"), _part(entry, "response")
        for name, value in _pairs(request, "headers"):
            lowered = name.lower()
            if lowered.startswith(PUBLIC_HEADERS):
                continue
            found.add(value.strip())
            if lowered.endswith("authorization"):  # "Bearer <token>": the token alone may be echoed too
                found.add(value.strip().partition(" ")[2].strip())
            if lowered == "cookie":
                found.update(part.partition("=")[2].strip() for part in value.split(";"))
        found.update(value.strip() for _, value in _pairs(request, "cookies") + _pairs(response, "cookies"))
    return {value for value in found if len(value) >= MIN_SECRET_LENGTH}


def parse_payload(call: InitCall) -> dict[str, Any]:
    """The JSON object sent by an init call (its text is never put into an error message)."""
    mime = call.mime or "not given"
    if not call.text or not call.text.strip():
        raise HarProfileError(
            f"The init call {call.path} has no payload in the HAR (postData.text is empty, mimeType {mime}). "
            f"Record the export again and save the whole Network tab. {HOW_TO_RECORD}"
        )
    try:
        payload = json.loads(call.text)
    except (ValueError, RecursionError):
        raise HarProfileError(
            f"The init call's payload is not JSON (mimeType {mime}), so it is not an export profile: "
            f"check that {call.path} is the Content Exporter's init call."
        ) from None
    if not isinstance(payload, dict):
        raise HarProfileError(
            f"The init call's payload is a JSON {type(payload).__name__}, not a JSON object of export "
            f"settings (mimeType {mime}): check that {call.path} is the Content Exporter's init call."
        )
    return payload


def page_ids(call: InitCall) -> list[str]:
    """Page ids an init call names: digit segments of its URL path, then its payload's rootContentId."""
    ids = [segment for segment in call.segments[:-1] if is_page_id(segment)]
    try:
        root = parse_payload(call).get("rootContentId")
    except HarProfileError:
        root = None
    if isinstance(root, (str, int)) and not isinstance(root, bool) and str(root).strip() not in ids:
        ids.append(str(root).strip())
    return [pid for pid in ids if pid]


def choose_call(calls: list[InitCall], page_id: str | None) -> int:
    """Index of the init call to use: the last one, or the last one naming ``page_id``."""
    if not calls:
        raise HarProfileError(
            "No POST …/init call was found in the HAR, so it does not record an export being started. "
            f"{HOW_TO_RECORD} Keep the Network tab recording until the export has started."
        )
    if page_id is None:
        return len(calls) - 1
    for index in range(len(calls) - 1, -1, -1):
        if page_id in page_ids(calls[index]):
            return index
    seen = ", ".join(dict.fromkeys(pid for call in calls for pid in page_ids(call)))
    raise HarProfileError(
        f"None of the {len(calls)} POST …/init calls in the HAR is for page {page_id}; page ids seen: "
        f"{seen or 'none'}. Pass one of them as --page-id, or record the export of that page again."
    )


def scrub(value: Any, path: str, secrets: set[str], keys: list[str], values: list[str]) -> Any:
    """A copy of ``value`` without credential-looking keys and header/cookie values; paths go to the lists."""
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if CREDENTIAL_KEY.search(str(key)):
                keys.append(where)
            elif isinstance(item, str) and item.strip() in secrets:
                values.append(where)
            else:
                kept[key] = scrub(item, where, secrets, keys, values)
        return kept
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item.strip() in secrets:
                values.append(f"{path}[{index}]")
            else:
                items.append(scrub(item, f"{path}[{index}]", secrets, keys, values))
        return items
    return value


def extract_profile(har: Mapping[str, Any], page_id: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The export body of the chosen init call, and notes for the user (never secret values)."""
    if page_id is not None and not is_page_id(page_id):
        raise HarProfileError(
            f"--page-id must be digits only (the number in the page's URL), got {page_id!r}."
        )
    calls = init_calls(har)
    index = choose_call(calls, page_id)
    payload = parse_payload(calls[index])
    notes = [
        f"Used the payload of POST {calls[index].path} (init call {index + 1} of {len(calls)} in the HAR)."
    ]
    if len(calls) > 1 and page_id is None:
        seen = ", ".join(dict.fromkeys(pid for call in calls for pid in page_ids(call))) or "unknown"
        notes.append(f"The HAR has {len(calls)} init calls (page ids: {seen}); --page-id picks another one.")
    removed = (
        "Removed rootContentId" if payload.pop("rootContentId", None) is not None else "No rootContentId"
    )
    notes.append(f"{removed}: the operator sets it from its page_id.")
    keys: list[str] = []
    values: list[str] = []
    body = scrub(payload, "", secret_values(har), keys, values)
    if keys:
        notes.append(f"Dropped credential-looking keys (names only, values not shown): {', '.join(keys)}.")
    if values:
        notes.append(f"Dropped values equal to a header or cookie of the HAR at: {', '.join(values)}.")
    return body, notes


def body_from_har(har: Mapping[str, Any], page_id: str | None = None) -> dict[str, Any]:
    """The ``export_body`` recorded in a HAR: the init call's payload minus rootContentId and credentials."""
    return extract_profile(har, page_id)[0]


def _page_id_arg(text: str) -> str:
    if not is_page_id(text):
        raise argparse.ArgumentTypeError(f"must be digits only (the number in the page's URL), got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cex.profile",
        description="Print the settings of an export recorded in a browser HAR file as export_body JSON.",
    )
    parser.add_argument("--from-har", required=True, metavar="FILE", help="HAR file saved from the browser")
    parser.add_argument("--page-id", type=_page_id_arg, help="use the init call of this page")
    args = parser.parse_args(argv)
    try:
        try:
            with open(args.from_har, "rb") as handle:
                har = json.loads(handle.read().decode("utf-8-sig"))
        except FileNotFoundError:
            raise HarProfileError(f"No such file: {args.from_har}. {HOW_TO_RECORD}") from None
        except OSError as exc:
            raise HarProfileError(f"Cannot read {args.from_har}: {exc.strerror or exc}.") from None
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
            raise HarProfileError(f"The file is not a HAR file (it is not JSON). {HOW_TO_RECORD}") from None
        body, notes = extract_profile(har, args.page_id)
    except HarProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    try:
        sys.stdout.write(output)
    except UnicodeEncodeError:  # a console or redirect in a legacy encoding: write UTF-8 anyway
        sys.stdout.buffer.write(output.encode("utf-8"))
    sys.stdout.flush()
    for note in notes:
        print(note, file=sys.stderr)
    warning = "holds the session cookies and tokens of the logged-in user: delete it now."
    print(f"WARNING: {args.from_har} {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a task passes in, checked before any request: the page id, the export hash and the export body.

Each check raises ``ValueError`` saying what is wrong and what to pass instead; the operators, the sensor and
both hooks call them, so an input is refused in the same words wherever it is given. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_cex.endpoints import is_page_id

MAX_HASH_LENGTH = 256
_HASH_RE = re.compile(r"^[A-Za-z0-9._~:@!$&'()*+,;=-]+$")


def validate_page_id(page_id: Any) -> str:
    """Return the page id as a string of digits, or raise ``ValueError`` saying what is wrong."""
    if isinstance(page_id, bool) or page_id is None:
        raise ValueError(f"page_id must be a Confluence page id made of digits, got {page_id!r}.")
    text = str(page_id).strip()
    if not text:
        raise ValueError("page_id is empty: pass the numeric id of the Confluence page to export.")
    if not is_page_id(text):
        raise ValueError(
            f"page_id must contain digits only (the number in the page's URL, e.g. "
            f".../pages/123456/...), got {clip(text, 40)!r}."
        )
    return text


def validate_export_hash(export_hash: Any) -> str:
    """Return a non-empty export hash, or raise ``ValueError``."""
    if not isinstance(export_hash, str) or not export_hash.strip():
        raise ValueError(
            f"export_hash must be the non-empty hash returned when the export was started, got "
            f"{clip(repr(export_hash), 60)}."
        )
    text = export_hash.strip()
    if len(text) > MAX_HASH_LENGTH or not _HASH_RE.match(text) or set(text) == {"."}:
        raise ValueError(
            f"export_hash {clip(text, 60)!r} is not a valid export hash (expected up to "
            f"{MAX_HASH_LENGTH} URL-safe characters, no '/', '?', '#', '%' or spaces)."
        )
    return text


def validate_export_body(body: Any) -> dict[str, Any]:
    """Return a copy of the export configuration, which must be a JSON object (a dict)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError(
            f"export_body must be a JSON object (a dict, e.g. the Export Profile JSON), got "
            f"{type(body).__name__}."
        )
    return dict(body)


def build_start_body(page_id: Any, body: Any = None) -> tuple[str, dict[str, Any]]:
    """Validate inputs of a start call and return ``(page_id, body with rootContentId set)``."""
    page = validate_page_id(page_id)
    payload = validate_export_body(body)
    declared = payload.get("rootContentId")
    if declared not in (None, "") and str(declared).strip() != page:
        raise ValueError(
            f"export_body has rootContentId={clip(str(declared), 40)!r} but page_id is {page!r}: "
            "remove rootContentId from the body (the provider sets it) or make them equal."
        )
    payload["rootContentId"] = page
    return page, payload


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at most (the last then ``…``), to quote a value in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"

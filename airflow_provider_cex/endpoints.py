"""The Content Exporter Remote API's facts, each defined once: its three calls and the key header.

One table per fact, keyed by the endpoint names: :data:`METHOD`, :data:`PLACEHOLDER`, :data:`DEFAULT_PATHS`,
:data:`DOCUMENTED`; plus :data:`ENDPOINT_NAMES` (the names in call order) and :data:`KEY_HEADER`.
Shared by the provider, the OpenAPI reader and the emulator; imports nothing (not even ``__future__``), so
the emulator stays free of Airflow. The start path is the one the vendor documents; the progress and
download paths are *assumed* (same family) and can be overridden with the connection extra ``endpoints``.
"""

START_EXPORT = "start_export"
EXPORT_PROGRESS = "export_progress"
DOWNLOAD_EXPORT = "download_export"

#: The three endpoint names, in call order (the keys of every table below, and of the ``endpoints`` extra).
ENDPOINT_NAMES: tuple[str, ...] = (START_EXPORT, EXPORT_PROGRESS, DOWNLOAD_EXPORT)

#: Endpoint name -> HTTP method.
METHOD: dict[str, str] = {START_EXPORT: "POST", EXPORT_PROGRESS: "GET", DOWNLOAD_EXPORT: "GET"}

#: Endpoint name -> the one placeholder its path template takes.
PLACEHOLDER: dict[str, str] = {
    START_EXPORT: "page_id",
    EXPORT_PROGRESS: "export_hash",
    DOWNLOAD_EXPORT: "export_hash",
}

#: Endpoint name -> default path template.
DEFAULT_PATHS: dict[str, str] = {
    START_EXPORT: "/api/remoteExport/{page_id}/init",
    EXPORT_PROGRESS: "/api/remoteExport/{export_hash}/progress",
    DOWNLOAD_EXPORT: "/api/remoteExport/{export_hash}/download",
}

#: Default paths the vendor documents; the others are assumed until a descriptor or a real call confirms them.
DOCUMENTED: frozenset[str] = frozenset({START_EXPORT})

#: The request header carrying the API key (the connection's password); sent to the application origin only.
KEY_HEADER = "CEX-API-KEY"


def is_page_id(text: str) -> bool:
    """What the ``{page_id}`` placeholder takes: a Confluence page id, 1 to 20 ASCII digits (the number in
    the page's URL)."""
    return text.isascii() and text.isdigit() and len(text) <= 20

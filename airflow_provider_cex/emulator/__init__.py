"""A local emulator of the Content Exporter Remote API, for tests, the demo and benchmarks (never at runtime).

Only aiohttp, the standard library and :mod:`airflow_provider_cex.endpoints` (which imports nothing) are
imported, never Airflow or the rest of this package; ``cryptography`` too, but only when serving HTTPS.
"""

from .artifacts import Artifact, build_sample_pdf, deterministic_blocks
from .chaos import CHAOS_KINDS, Chaos, ChaosSchedule
from .server import (
    DEFAULT_FAILURE_MESSAGE,
    DEFAULT_PATHS,
    DEMO_API_KEY,
    DOWNLOAD_EXPORT,
    DOWNLOAD_FAULTS,
    ENDPOINT_NAMES,
    EXPORT_PROGRESS,
    KEY_HEADER,
    START_EXPORT,
    ContentExporterEmulator,
    ExportInfo,
    RequestRecord,
    is_loopback_host,
    run_emulator,
)

__all__ = [
    "CHAOS_KINDS",
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_PATHS",
    "DEMO_API_KEY",
    "DOWNLOAD_EXPORT",
    "DOWNLOAD_FAULTS",
    "ENDPOINT_NAMES",
    "EXPORT_PROGRESS",
    "KEY_HEADER",
    "START_EXPORT",
    "Artifact",
    "Chaos",
    "ChaosSchedule",
    "ContentExporterEmulator",
    "ExportInfo",
    "RequestRecord",
    "build_sample_pdf",
    "deterministic_blocks",
    "is_loopback_host",
    "run_emulator",
]

"""What a ContentExporterExportTrigger event can say, readable without importing a transport.

The sensor's ``execute_complete`` runs on a worker and needs only these names; importing the
trigger module would load aiohttp there for nothing.
"""

from __future__ import annotations

#: Event statuses, each mapped by the sensor's ``execute_complete`` to one outcome.
SUCCESS, FAILED, TIMEOUT, ERROR = "success", "failed", "timeout", "error"
EVENT_STATUSES = frozenset({SUCCESS, FAILED, TIMEOUT, ERROR})

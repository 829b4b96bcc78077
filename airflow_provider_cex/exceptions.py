"""Errors raised by the Content Exporter provider, one class per thing a caller can act on.

All derive from :class:`ContentExporterError` (an ``AirflowException``), so a task fails
with a readable message; none of them ever carries the API key.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class ContentExporterError(AirflowException):
    """Base class of every error raised by this provider."""


class ContentExporterAuthError(ContentExporterError):
    """The service rejected the API key (HTTP 401/403). Retrying will not help."""


class ContentExporterNotFoundError(ContentExporterError):
    """HTTP 404: an unknown page, an unknown or expired export hash, or a wrong path (the message says)."""


class ContentExporterExportFailedError(ContentExporterError, AirflowFailException):
    """The remote export itself failed; the message is the server's.

    An ``AirflowFailException`` too: the task fails at once, since retrying cannot fix the export.
    """

    def __init__(self, message: str, *, export_hash: str | None = None, server_message: str | None = None):
        super().__init__(message)
        self.export_hash = export_hash
        self.server_message = server_message


class ContentExporterTransientError(ContentExporterError):
    """Rate limiting, server errors or network failures outlasted the retry budget.

    A later attempt (task retry, next sensor poke) may succeed.
    """


class ContentExporterProtocolError(ContentExporterError):
    """The service answered something this provider cannot interpret, or a request it rejects (4xx)."""


class ContentExporterStartUncertainError(ContentExporterError):
    """A start request may have reached the service, but its answer was lost or unreadable.

    The export may be running, and its hash is unknown. Neither the hook nor the start operator repeats the
    request (the operator fails without Airflow task retries): a second attempt could start a second
    export of the same tree. Clear the task to start a new export on purpose.
    """

"""What the Airflow UI asks of the hook: the connection form's extra fields on Airflow 2.11, and the probes
behind Test Connection (three requests, no retries, no export started).

Imported only when the UI (or ``airflow connections test``) asks: the 2.11 form needs flask_appbuilder, which
Airflow 3 does not have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_cex import (
    CONFLUENCE_URL_PATTERN,
    HIDDEN_FIELDS,
    PLACEHOLDERS,
    REGIONS,
    RELABELING,
    TIMEOUT_TEXT_MAX_LENGTH,
    TIMEOUT_TEXT_PATTERN,
    conn_fields,
)
from airflow_provider_cex.calls import Broken, Head, failure_of
from airflow_provider_cex.endpoints import EXPORT_PROGRESS, START_EXPORT
from airflow_provider_cex.exceptions import ContentExporterError
from airflow_provider_cex.failures import proxy_failure, proxy_in_use
from airflow_provider_cex.policy import Call
from airflow_provider_cex.tls import tls_problem

if TYPE_CHECKING:
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook


def form_widgets() -> dict[str, Any]:
    """Extra fields of the connection form in the Airflow 2 UI (Airflow 3 reads provider info).

    Built from :func:`~airflow_provider_cex.conn_fields` and refusing, on save, what its schemas refuse.
    Airflow 2.11 takes text, password, integer and check-box fields only: all three are text boxes
    (an empty one is not saved), checked with the schemas' ``enum`` or ``pattern``; Airflow 2.11 saves
    the text as it is, and the parser reads text.
    """
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import StringField
    from wtforms.validators import AnyOf, Length, Optional, Regexp

    fields = conn_fields()
    validators = {
        "region": [AnyOf(REGIONS, message="Expected us or eu (lower case), or nothing.")],
        "confluence_url": [
            Regexp(CONFLUENCE_URL_PATTERN, message="Expected e.g. https://acme.atlassian.net/wiki.")
        ],
        "timeout": [
            Length(max=TIMEOUT_TEXT_MAX_LENGTH),
            Regexp(TIMEOUT_TEXT_PATTERN, message="Expected seconds such as 60, or 5, 60 (connect, read)."),
        ],
    }
    return {
        name: StringField(
            lazy_gettext(field["label"]),
            widget=BS3TextFieldWidget(),
            description=field["description"],
            validators=[Optional(), *validators[name]],
        )
        for name, field in fields.items()
    }


def field_behaviour() -> dict[str, Any]:
    """Relabel and hide standard connection fields in the Airflow 2 UI."""
    return {"hidden_fields": HIDDEN_FIELDS, "relabeling": RELABELING, "placeholders": PLACEHOLDERS}


def probe(hook: ContentExporterHook) -> tuple[bool, str]:
    """Test Connection's three requests through ``hook``, and what they show (the hook words the message's
    subject: :meth:`~airflow_provider_cex.hooks.content_exporter.ContentExporterHook.test_connection`)."""
    from airflow_provider_cex.connection_check import PROBE_HASH, PROBE_PAGE_ID, ProbeAnswers, verdict

    call = Call(EXPORT_PROGRESS, PROBE_HASH)
    try:
        settings = hook.settings
        progress_url = settings.url(EXPORT_PROGRESS, PROBE_HASH)
        transport = hook.transport
        answer = transport.run(hook.driver.once(call, progress_url))
        if isinstance(answer, Head) and answer.status == 407:  # the proxy's login, not the key
            raise proxy_failure(call, settings, proxy_in_use(settings, progress_url), status=407)
    except ContentExporterError as err:
        return False, str(err)
    if isinstance(answer, Broken):
        if answer.tls is not None:
            return False, tls_problem(settings, answer.tls)
        if answer.at_proxy:
            failure = failure_of(answer, call, settings, progress_url)
            advice = getattr(failure, "advice", None)
            return False, f"Cannot reach {settings.base_url}: {failure}. {advice}" if advice else str(failure)
        return False, (
            f"Cannot reach {settings.base_url} ({answer.reason}): check the Application URL or region, and "
            "that this worker can reach it."
        )
    answers = ProbeAnswers(
        progress_with_key=answer.status,
        progress_without_key=transport.keyless_status("GET", progress_url),
        start_without_key=transport.keyless_status("POST", settings.url(START_EXPORT, PROBE_PAGE_ID)),
    )
    return verdict(settings, answers)

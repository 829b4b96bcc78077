"""The connection form accepts exactly what the connection parser accepts, field by field.

The form's extra fields are JSON schemas (provider info ``conn-fields``: the Airflow 3 UI; the Airflow 2.11
widgets are built from them). Each table row says whether a stored extra value is usable; the test checks
both sides against it, so changing the schema or the parser alone fails here:
schema accepts <=> ``settings_from_connection`` accepts.
"""

from __future__ import annotations

import math
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_cex import EU_APPLICATION_URL, US_APPLICATION_URL, get_provider_info
from airflow_provider_cex.exceptions import ContentExporterError
from airflow_provider_cex.settings import settings_from_connection

KEY = "cexk_form_schema_test_key_0123456789"
HOST = "https://cex.example.test"
REJECT = object()  # the expected outcome of a value both sides must refuse


def schema_of(field: str) -> dict[str, Any]:
    return get_provider_info()["connection-types"][0]["conn-fields"][field]["schema"]


def schema_accepts(field: str, value: Any) -> bool:
    schema = schema_of(field)
    validator = jsonschema.Draft202012Validator(schema)
    return validator.is_valid(value)


def parse(field: str, value: Any, host: str | None = HOST) -> Any:
    """What the connection parser makes of ``{field: value}`` (REJECT when it refuses it)."""
    try:
        result = settings_from_connection("cex_form", host, KEY, None, {field: value})
    except ContentExporterError:
        return REJECT
    if field == "region":
        return result.base_url
    if field == "timeout":
        return (result.connect_timeout, result.read_timeout)
    return result.confluence_url


def check(field: str, value: Any, expected: Any, host: str | None = HOST) -> None:
    parsed = parse(field, value, host)
    accepted = schema_accepts(field, value)
    assert accepted == (expected is not REJECT), f"schema {'accepts' if accepted else 'rejects'} {value!r}"
    assert parsed == expected, f"parser gives {parsed!r} for {value!r}"


@pytest.mark.parametrize("field", ["region", "timeout", "confluence_url"])
def test_the_schemas_are_valid_json_schemas(field):
    jsonschema.Draft202012Validator.check_schema(schema_of(field))


# --------------------------------------------------------------------------- region

REGION_TABLE = [
    (None, US_APPLICATION_URL),  # the Airflow 3 dropdown, cleared or "not set (us)", stores null
    ("us", US_APPLICATION_URL),
    ("eu", EU_APPLICATION_URL),
    ("", REJECT),  # the Airflow 3 form stores null, the Airflow 2.11 form saves nothing
    ("apac", REJECT),
    ("EU", REJECT),
    ("Us", REJECT),
    (" eu", REJECT),
    (0, REJECT),
    (True, REJECT),
    (False, REJECT),
    (["eu"], REJECT),
    ({"region": "eu"}, REJECT),
]


@pytest.mark.parametrize(("value", "expected"), REGION_TABLE)
def test_region_without_host(value, expected):
    check("region", value, expected, host=None)


@pytest.mark.parametrize(("value", "expected"), REGION_TABLE)
def test_region_is_checked_even_when_the_host_makes_it_unused(value, expected):
    check("region", value, REJECT if expected is REJECT else HOST, host=HOST)


def test_region_is_a_dropdown_with_a_labelled_not_set_choice_in_airflow_3():
    schema = schema_of("region")
    assert schema["enum"] == ["us", "eu", None]
    assert set(schema["values_display"]) == {"us", "eu", "null"}  # the UI falls back to a wrong label


# --------------------------------------------------------------------------- timeout

TIMEOUT_TABLE = [
    # unset: the defaults (connect 10 s, read 60 s)
    (None, (10.0, 60.0)),
    ("", (10.0, 60.0)),
    ("  ", (10.0, 60.0)),
    # one number: the read timeout (connect: the smaller of it and 10 s)
    (60, (10.0, 60.0)),
    (120.0, (10.0, 120.0)),
    (5, (5.0, 5.0)),
    (0.5, (0.5, 0.5)),
    ("60", (10.0, 60.0)),
    (" 60 ", (10.0, 60.0)),
    ("0.5", (0.5, 0.5)),
    (".5", (0.5, 0.5)),
    ("2.", (2.0, 2.0)),
    # [connect, read]: JSON, or its text as URIs and text inputs store it
    ([5, 60], (5.0, 60.0)),
    ([0.5, 2.5], (0.5, 2.5)),
    ([5.0, 60], (5.0, 60.0)),
    ("[5, 60]", (5.0, 60.0)),
    ("[5,60]", (5.0, 60.0)),
    ("5, 60", (5.0, 60.0)),
    ("5,60", (5.0, 60.0)),
    ("0.5, 2.5\n", (0.5, 2.5)),
    # zero, negative, not finite
    (0, REJECT),
    (0.0, REJECT),
    (-1, REJECT),
    (-0.5, REJECT),
    ("0", REJECT),
    ("0.0", REJECT),
    ("-5", REJECT),
    ([0, 60], REJECT),
    ([5, 0], REJECT),
    ([-1, 60], REJECT),
    ("5, 0", REJECT),
    (math.inf, REJECT),  # not JSON, but Python's json module reads Infinity (NaN: see below)
    ([5, math.inf], REJECT),
    (10**400, REJECT),  # an integer too large for a float
    ("nan", REJECT),
    ("inf", REJECT),
    ("Infinity", REJECT),
    # text that is no number, other shapes
    ("soon", REJECT),
    ("60s", REJECT),
    ("1e3", REJECT),
    ("+5", REJECT),
    ("1_000", REJECT),  # float() would take it
    ("[5, 60", REJECT),
    ("5 60", REJECT),
    ("[60]", REJECT),
    ("5, 60, 90", REJECT),
    ("9" * 41, REJECT),  # longer than any realistic number of seconds (and float() says inf at 309)
    ([5], REJECT),
    ([5, 60, 90], REJECT),
    ([], REJECT),
    (["5", "60"], REJECT),
    ([True, 60], REJECT),
    ([5, None], REJECT),
    ({"connect": 5, "read": 60}, REJECT),
    (True, REJECT),
    (False, REJECT),
]


@pytest.mark.parametrize(("value", "expected"), TIMEOUT_TABLE)
def test_timeout(value, expected):
    check("timeout", value, expected)


def test_timeout_renders_as_one_multi_type_text_box_in_airflow_3():
    # Airflow 3.3's flexible form: a "type" list with more than one non-null type and no enum/examples is one
    # text box that stores JSON it can parse as JSON (60 -> number, [5, 60] -> list), other text as text.
    schema = schema_of("timeout")
    assert len([kind for kind in schema["type"] if kind != "null"]) > 1
    assert "string" in schema["type"] and "enum" not in schema and "examples" not in schema


# --------------------------------------------------------------------------- confluence_url

CONFLUENCE_TABLE = [
    (None, None),
    ("", None),
    (" ", None),
    ("https://acme.atlassian.net/wiki", "https://acme.atlassian.net/wiki"),
    ("https://acme.atlassian.net/wiki/", "https://acme.atlassian.net/wiki"),
    (" https://acme.atlassian.net/wiki ", "https://acme.atlassian.net/wiki"),
    ("http://confluence.internal:8090", "http://confluence.internal:8090"),
    ("https://confluence.example.com/confluence/", "https://confluence.example.com/confluence"),
    ("https://[::1]:8443/wiki", "https://[::1]:8443/wiki"),
    ("acme.atlassian.net/wiki", REJECT),
    ("ftp://acme.example.com", REJECT),
    ("HTTPS://acme.atlassian.net/wiki", REJECT),
    ("https://", REJECT),
    ("https:///wiki", REJECT),
    ("https://user:pw@acme.atlassian.net/wiki", REJECT),
    ("https://acme.atlassian.net/wiki?x=1", REJECT),
    ("https://acme.atlassian.net/wiki#top", REJECT),
    ("https://acme.atlassian.net/my wiki", REJECT),
    (5, REJECT),
    (True, REJECT),
    (["https://acme.atlassian.net/wiki"], REJECT),
]


@pytest.mark.parametrize(("value", "expected"), CONFLUENCE_TABLE)
def test_confluence_url(value, expected):
    check("confluence_url", value, expected)


# --------------------------------------------------------------------------- beyond the tables

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=True)  # NaN is no JSON value: no schema can name it
    | st.text(alphabet="0123456789.,[] -eE\tusUS", max_size=12),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)


@pytest.mark.parametrize("field", ["region", "timeout", "confluence_url"])
@given(value=JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_schema_and_parser_agree_on_any_value(field, value):
    assert schema_accepts(field, value) == (parse(field, value) is not REJECT), value


@given(url=st.text(alphabet="htps:/[]@?#.ab1 ", max_size=20).map(lambda rest: "https://" + rest))
@settings(max_examples=300, deadline=None)
def test_schema_and_parser_agree_on_url_like_text(url):
    assert schema_accepts("confluence_url", url) == (parse("confluence_url", url) is not REJECT), url


def test_nan_is_refused_by_the_parser():
    # NaN is no JSON value (RFC 8259), so JSON Schema cannot refuse it (jsonschema compares and lets it
    # through); Python's json module still reads NaN, and the parser refuses it.
    assert parse("timeout", math.nan) is REJECT and parse("timeout", [5, math.nan]) is REJECT


# --------------------------------------------------------------------------- the Airflow 2.11 form

TEXT_ROWS = [
    ("timeout", value, expected)
    for value, expected in TIMEOUT_TABLE
    if isinstance(value, str) and value.strip()
] + [
    ("confluence_url", value, expected)
    for value, expected in CONFLUENCE_TABLE
    if isinstance(value, str) and value.strip()
]


@pytest.mark.parametrize(("field", "text", "expected"), TEXT_ROWS)
def test_airflow_2_widgets_refuse_what_the_parser_refuses(field, text, expected):
    pytest.importorskip("flask_appbuilder", reason="Airflow 2.11 only: Airflow 3 builds the form itself")
    form = _airflow_2_form({field: text})
    assert form.validate() == (expected is not REJECT), form.errors
    assert parse(field, form.data[field]) == expected  # Airflow 2.11 saves the text as it is


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(value, expected) for value, expected in REGION_TABLE if isinstance(value, str)],
)
def test_airflow_2_region_text(choice, expected):
    pytest.importorskip("flask_appbuilder", reason="Airflow 2.11 only: Airflow 3 builds the form itself")
    form = _airflow_2_form({"region": choice})
    if choice == "":  # an empty text box: valid, and Airflow 2.11 does not save it (the extra is absent)
        assert form.validate()
        expected = US_APPLICATION_URL
    assert form.validate() == (expected is not REJECT), form.errors
    if expected is not REJECT:
        saved = {} if form.data["region"] == "" else {"region": form.data["region"]}
        result = settings_from_connection("cex_form", None, KEY, None, saved)
        assert result.base_url == expected


def _airflow_2_form(data: dict[str, str]) -> Any:
    from flask import Flask
    from werkzeug.datastructures import MultiDict
    from wtforms import Form

    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

    app = Flask(__name__)
    with app.test_request_context():
        form_class = type("ConnectionForm", (Form,), ContentExporterHook.get_connection_form_widgets())
        form = form_class(MultiDict(data))
        form.validate()
    return form

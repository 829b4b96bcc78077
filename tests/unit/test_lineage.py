"""Dataset names by OpenLineage's conventions, and the URIs that asset events and lineage share."""

from __future__ import annotations

import os

import pytest

from airflow_provider_cex.lineage import dataset_name, output_uri, page_namespace


@pytest.mark.parametrize(
    ("final", "uri", "namespace", "name"),
    [
        ("/data/exports/page-1.pdf", "file:///data/exports/page-1.pdf", "file", "/data/exports/page-1.pdf"),
        ("file:///data/x.pdf", "file:///data/x.pdf", "file", "/data/x.pdf"),
        (
            "/data/Jahresbericht Ü.pdf",
            "file:///data/Jahresbericht%20%C3%9C.pdf",
            "file",
            "/data/Jahresbericht Ü.pdf",
        ),
        (
            "s3://cex-exports/exports/2026-11-26/page-1.pdf",
            None,
            "s3://cex-exports",
            "exports/2026-11-26/page-1.pdf",
        ),
        ("gs://bucket/a/b.docx", None, "gs://bucket", "a/b.docx"),
    ],
)
def test_output_names_follow_openlineage_conventions(final, uri, namespace, name):
    got = output_uri(final)
    assert got == (uri or final) and got.isascii()  # Airflow's Asset URIs must be ASCII
    assert dataset_name(got) == (namespace, name)


def test_a_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_uri("exports/page-1.pdf") == f"file://{os.path.join(tmp_path, 'exports', 'page-1.pdf')}"


class Settings:
    def __init__(self, confluence_url, base_url="https://content-exporter-new.addon.meta-inf.hu"):
        self.confluence_url, self.base_url = confluence_url, base_url


def test_the_page_namespace_is_the_confluence_site_else_the_application_url():
    assert page_namespace(Settings("https://acme.atlassian.net/wiki/")) == "https://acme.atlassian.net/wiki"
    assert page_namespace(Settings(None)) == "https://content-exporter-new.addon.meta-inf.hu"

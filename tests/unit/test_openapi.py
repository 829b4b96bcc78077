"""Stories of users deriving the ``endpoints`` extra from the vendor's OpenAPI descriptor."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_cex import EU_APPLICATION_URL, US_APPLICATION_URL
from airflow_provider_cex.endpoints import DEFAULT_PATHS
from airflow_provider_cex.openapi import (
    OpenAPIError,
    collect_operations,
    endpoints_from_openapi,
    load_document,
    main,
    words,
)
from airflow_provider_cex.settings import parse_endpoints

JSON_OK = {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}


def endpoints(start: str, progress: str, download: str) -> dict[str, str]:
    return {"start_export": start, "export_progress": progress, "download_export": download}


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


# --------------------------------------------------------------------------- the descriptors

#: 1. What the vendor probably ships: OpenAPI 3.0, JSON, a full server URL without a path.
VENDOR = {
    "openapi": "3.0.3",
    "info": {"title": "Content Exporter Remote API", "version": "1"},
    "servers": [{"url": "https://content-exporter-new.addon.meta-inf.hu/"}],
    "paths": {
        "/api/remoteExport/{pageId}/init": {
            "post": {
                "operationId": "initExport",
                "summary": "Start an export of a page tree",
                "parameters": [path_param("pageId")],
                "responses": JSON_OK,
            }
        },
        "/api/remoteExport/{hash}/progress": {
            "get": {
                "operationId": "getExportProgress",
                "parameters": [path_param("hash")],
                "responses": {
                    "200": {
                        "description": "progress",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Progress"}}
                        },
                    }
                },
            }
        },
        "/api/remoteExport/{hash}/download": {
            "get": {
                "operationId": "downloadExport",
                "parameters": [path_param("hash")],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                        },
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {"Progress": {"type": "object", "properties": {"progressValue": {"type": "integer"}}}}
    },
}

#: 2. OpenAPI 3.1 in YAML, other parameter names, a base path in a full server URL.
CONTENT_ID_YAML = """
openapi: 3.1.0
info: {title: CEX, version: "2"}
servers:
  - url: https://api.example.com/cex/v2
paths:
  /pages/{contentId}/exports:
    post:
      summary: Create an export
      responses: {"201": {description: created}}
  /exports/{exportId}/status:
    get:
      responses: {"200": {description: the state}}
  /exports/{exportId}/result:
    get:
      responses: {"200": {description: the document}}
"""

#: 3. Swagger 2.0 with a basePath and parameters shared through #/parameters.
SWAGGER = {
    "swagger": "2.0",
    "info": {"title": "CEX", "version": "1"},
    "host": "legacy.example.com",
    "basePath": "/rest/",
    "produces": ["application/json"],
    "parameters": {
        "PageId": {"name": "id", "in": "path", "required": True, "type": "string"},
        "Hash": {"name": "hash", "in": "path", "required": True, "type": "string"},
    },
    "paths": {
        "/export/{id}": {
            "post": {
                "operationId": "startExport",
                "parameters": [{"$ref": "#/parameters/PageId"}],
                "responses": {},
            }
        },
        "/export/{hash}/poll": {"get": {"parameters": [{"$ref": "#/parameters/Hash"}], "responses": {}}},
        "/export/{hash}/file": {
            "get": {
                "parameters": [{"$ref": "#/parameters/Hash"}],
                "produces": ["application/zip"],
                "responses": {"200": {"description": "zip", "schema": {"type": "file"}}},
            }
        },
    },
}

#: 4. Progress only recognisable by its tag, the download only by its PDF answer.
TAG_AND_BINARY = {
    "openapi": "3.0.0",
    "paths": {
        "/pages/{rootContentId}/jobs": {"post": {"responses": JSON_OK}},
        "/exports/{exportId}": {"get": {"tags": ["Progress"], "responses": JSON_OK}},
        "/exports/{exportId}/content": {
            "get": {
                "tags": ["Exports"],
                "responses": {"200": {"description": "", "content": {"application/pdf": {}}}},
            }
        },
    },
}

#: 5. Progress only recognisable by its summary; the base path from server variables.
SUMMARY_AND_VARIABLES = {
    "openapi": "3.0.1",
    "servers": [
        {
            "url": "{scheme}://cex.example.com/{basePath}",
            "variables": {"scheme": {"default": "https"}, "basePath": {"default": "api/v3"}},
        }
    ],
    "paths": {
        "/remote/{pageId}": {"post": {"operationId": "begin", "responses": JSON_OK}},
        "/jobs/{jobId}": {"get": {"summary": "Poll the state of an export", "responses": JSON_OK}},
        "/jobs/{jobId}/output": {
            "get": {"description": "Returns the exported file once the export is done.", "responses": {}}
        },
    },
}

#: 6. The vendor's calls among unrelated operations that must not be taken for any call.
CROWDED = json.loads(json.dumps(VENDOR))
CROWDED["paths"]["/api/remoteExport/{hash}"] = {
    "delete": {"operationId": "cancelExport", "responses": {}},
    "get": {"operationId": "getExportDetails", "summary": "Export details", "responses": JSON_OK},
}
CROWDED["paths"]["/api/profiles"] = {"get": {"operationId": "listProfiles", "responses": JSON_OK}}
CROWDED["paths"]["/health"] = {"get": {"summary": "Health check", "responses": JSON_OK}}
CROWDED["paths"]["/api/profiles/{profileId}"] = {
    "get": {"operationId": "getProfile", "summary": "One export profile", "responses": JSON_OK}
}
CROWDED["paths"]["/api/profiles/{profileId}/copy"] = {
    "post": {"operationId": "copyProfile", "summary": "Duplicate a profile", "responses": JSON_OK}
}
CROWDED["paths"]["/api/reports/{reportId}/progressive"] = {"get": {"responses": JSON_OK}}

#: 7. $refs everywhere: path-level parameters and shared responses.
REFS = {
    "openapi": "3.0.3",
    "servers": [{"url": "/v1"}],
    "paths": {
        "/export/{page}": {
            "parameters": [{"$ref": "#/components/parameters/Page"}],
            "post": {
                "operationId": "exportPage",
                "parameters": [{"name": "page", "in": "path", "description": "wins"}, {"$ref": "#/nowhere"}],
                "responses": JSON_OK,
            },
        },
        "/exports/{hash}": {
            "parameters": [{"$ref": "#/components/parameters/Hash"}, {"$ref": "other.yaml#/Hash"}],
            "get": {
                "operationId": "getExportState",
                "responses": {"200": {"$ref": "#/components/responses/Json"}},
            },
        },
        "/exports/{hash}/pdf": {
            "parameters": [{"$ref": "#/components/parameters/Hash"}],
            "get": {"responses": {"default": {"$ref": "#/components/responses/Pdf"}}},
        },
    },
    "components": {
        "parameters": {"Page": path_param("page"), "Hash": path_param("hash")},
        "responses": {
            "Pdf": {
                "description": "pdf",
                "content": {"application/pdf": {"schema": {"$ref": "#/components/schemas/Bin"}}},
            },
            "Json": {"$ref": "#/components/responses/Json~1Alias"},
            "Json/Alias": {
                "description": "loops",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Loop"}}},
            },
        },
        "schemas": {
            "Bin": {"type": "string", "format": "binary"},
            "Loop": {"$ref": "#/components/schemas/Loop"},
        },
    },
}

#: 8. springdoc style: every answer is */*; an object schema with progressValue is not a file.
SPRINGDOC = {
    "openapi": "3.0.1",
    "servers": [{"url": "http://localhost:8080", "description": "Generated server url"}],
    "paths": {
        "/api/remoteExport/{pageId}/init": {"post": {"tags": ["remote-export-controller"], "responses": {}}},
        "/api/remoteExport/{hash}/check": {
            "get": {
                "responses": {
                    "200": {
                        "content": {"*/*": {"schema": {"$ref": "#/components/schemas/ExportProgressDto"}}}
                    }
                }
            }
        },
        "/api/remoteExport/{hash}/get": {
            "get": {
                "responses": {"200": {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}}
            }
        },
    },
    "components": {
        "schemas": {
            "ExportProgressDto": {
                "allOf": [{"$ref": "#/components/schemas/Base"}, {"properties": {"progressValue": {}}}]
            },
            "Base": {"type": "object", "properties": {"self": {"$ref": "#/components/schemas/Base"}}},
        }
    },
}

#: 9. One GET speaking of both calls, and path-level servers overriding the document's.
BOTH_WORDS = {
    "openapi": "3.0.3",
    "servers": [{"url": "https://a.example.com/api"}, {"url": "https://b.example.com/api/"}],
    "paths": {
        "/tasks/{pageId}": {"post": {"summary": "Begin", "responses": {}}},
        "/tasks/{taskId}": {
            "get": {"summary": "Task status; use the download call when done", "responses": {}}
        },
        "/tasks/{taskId}/latest": {
            "servers": [{"url": "https://files.example.com/files"}],
            "get": {"summary": "Download the file once the status is done", "responses": {}},
        },
    },
}

STORIES = [
    ("vendor", VENDOR, DEFAULT_PATHS),
    (
        "content-id-yaml",
        CONTENT_ID_YAML,
        endpoints(
            "/cex/v2/pages/{page_id}/exports",
            "/cex/v2/exports/{export_hash}/status",
            "/cex/v2/exports/{export_hash}/result",
        ),
    ),
    (
        "swagger",
        SWAGGER,
        endpoints(
            "/rest/export/{page_id}", "/rest/export/{export_hash}/poll", "/rest/export/{export_hash}/file"
        ),
    ),
    (
        "tag-and-binary",
        TAG_AND_BINARY,
        endpoints("/pages/{page_id}/jobs", "/exports/{export_hash}", "/exports/{export_hash}/content"),
    ),
    (
        "summary",
        SUMMARY_AND_VARIABLES,
        endpoints(
            "/api/v3/remote/{page_id}", "/api/v3/jobs/{export_hash}", "/api/v3/jobs/{export_hash}/output"
        ),
    ),
    ("crowded", CROWDED, DEFAULT_PATHS),
    (
        "refs",
        REFS,
        endpoints("/v1/export/{page_id}", "/v1/exports/{export_hash}", "/v1/exports/{export_hash}/pdf"),
    ),
    (
        "springdoc",
        SPRINGDOC,
        endpoints(
            "/api/remoteExport/{page_id}/init",
            "/api/remoteExport/{export_hash}/check",
            "/api/remoteExport/{export_hash}/get",
        ),
    ),
    (
        "both-words",
        BOTH_WORDS,
        endpoints("/api/tasks/{page_id}", "/api/tasks/{export_hash}", "/files/tasks/{export_hash}/latest"),
    ),
]


def derive(descriptor: dict[str, Any] | str) -> dict[str, str]:
    document = load_document(descriptor) if isinstance(descriptor, str) else descriptor
    return endpoints_from_openapi(document)


# --------------------------------------------------------------------------- deriving endpoints


@pytest.mark.parametrize(("descriptor", "expected"), [s[1:] for s in STORIES], ids=[s[0] for s in STORIES])
def test_every_sample_descriptor_gives_exactly_the_expected_endpoints(descriptor, expected):
    result = derive(descriptor)
    assert result == expected
    assert parse_endpoints(result) == result


def test_vendor_descriptor_gives_the_documented_paths():
    assert derive(VENDOR) == DEFAULT_PATHS


def test_yaml_descriptor_with_a_full_server_url_keeps_only_its_path():
    result = derive(CONTENT_ID_YAML)
    assert all(t.startswith("/cex/v2/") and "example.com" not in t for t in result.values())


def test_descriptor_with_base_path_keeps_the_prefix():
    assert derive(SWAGGER)["start_export"] == "/rest/export/{page_id}"


def test_swagger_parameters_are_resolved_from_the_shared_section():
    ops = {(op.method, op.path): op for op in collect_operations(SWAGGER)}
    assert ops[("POST", "/export/{id}")].parameters == (("path", "id"),)


def test_progress_found_only_by_tag_and_download_only_by_its_pdf_answer():
    result = derive(TAG_AND_BINARY)
    assert result["export_progress"] == "/exports/{export_hash}"
    assert result["download_export"] == "/exports/{export_hash}/content"


def test_progress_found_only_by_summary_with_server_variables_filled_in():
    assert derive(SUMMARY_AND_VARIABLES)["export_progress"] == "/api/v3/jobs/{export_hash}"


def test_unrelated_operations_around_the_calls_are_left_alone():
    assert derive(CROWDED) == DEFAULT_PATHS
    seen = {(op.method, op.path) for op in collect_operations(CROWDED)}
    assert ("DELETE", "/api/remoteExport/{hash}") in seen and ("GET", "/health") in seen


def test_refs_in_responses_and_path_level_parameters_are_followed_without_looping():
    ops = {(op.method, op.path): op for op in collect_operations(REFS)}
    assert ops[("POST", "/export/{page}")].parameters == (("path", "page"),)
    assert ops[("GET", "/exports/{hash}/pdf")].binary
    assert not ops[("GET", "/exports/{hash}")].binary  # the cyclic/remote refs are simply unresolvable


def test_a_json_pointer_with_escapes_reaches_its_target():
    doc = json.loads(json.dumps(VENDOR))
    get = doc["paths"]["/api/remoteExport/{hash}/download"]["get"]
    get["responses"]["200"] = {"$ref": "#/x~1y/a~0b"}
    doc["x/y"] = {"a~b": {"content": {"application/zip": {}}}}
    ops = {(op.method, op.path): op for op in collect_operations(doc)}
    assert ops[("GET", "/api/remoteExport/{hash}/download")].binary


def test_a_get_speaking_of_download_and_status_goes_by_its_first_word_only():
    result = derive(BOTH_WORDS)
    assert result["export_progress"] != result["download_export"]
    assert result["download_export"] == "/files/tasks/{export_hash}/latest"


def test_the_path_outranks_the_summary_when_they_disagree():
    doc = json.loads(json.dumps(VENDOR))
    doc["paths"]["/api/remoteExport/{hash}/progress"]["get"]["summary"] = "Download the result when it is 100"
    assert derive(doc) == DEFAULT_PATHS


def test_the_last_word_of_the_path_names_the_resource_and_a_word_document_is_a_file():
    doc = {
        "openapi": "3.0.0",
        "paths": {
            "/start/{pageId}": {"post": {}},
            "/download/{h}/status": {"get": {"summary": "Download status"}},
            "/jobs/{h}": {
                "get": {
                    "responses": {
                        "2XX": {
                            "content": {
                                "application/vnd.openxmlformats-officedocument.wordprocessingml.document": {}
                            }
                        }
                    }
                }
            },
        },
    }
    assert derive(doc) == endpoints(
        "/start/{page_id}", "/download/{export_hash}/status", "/jobs/{export_hash}"
    )


def test_a_server_variable_without_default_is_reported_not_guessed():
    doc = json.loads(json.dumps(VENDOR))
    doc["servers"] = [{"url": "https://h.example.com/{base}"}]
    with pytest.raises(OpenAPIError, match=r"(?s)exactly once.*Operations seen \(3\)") as err:
        derive(doc)
    assert "'endpoints' by hand" in str(err.value)


def test_a_parameter_named_file_id_does_not_make_an_operation_a_download():
    doc = {
        "openapi": "3.0.0",
        "paths": {
            "/pages/{pageId}/init": {"post": {}},
            "/exports/{hash}/progress": {"get": {}},
            "/exports/{fileId}": {"get": {"operationId": "getByFileId", "summary": "Metadata of {fileId}"}},
        },
    }
    with pytest.raises(OpenAPIError, match="'download_export': no operation matches") as err:
        derive(doc)
    assert len(err.value.operations) == 3


def test_words_split_camel_snake_kebab_and_paths_without_matching_inside_words():
    assert words("getExportProgress") == ["get", "export", "progress"]
    assert words("/api/remote_export/PDFFile-v2") == ["api", "remote", "export", "pdf", "file", "v", "2"]
    assert "progress" not in words("progressive inprogress")


def test_servers_disagreeing_on_the_base_path_ask_for_the_endpoints_extra():
    doc = json.loads(json.dumps(VENDOR))
    doc["servers"] = [{"url": "https://us.example.com/v1"}, {"url": "https://eu.example.com/v2"}]
    with pytest.raises(OpenAPIError, match="disagree on the base path") as err:
        derive(doc)
    assert "'endpoints'" in str(err.value)


def test_an_operation_level_server_settles_the_base_path():
    doc = json.loads(json.dumps(VENDOR))
    doc["servers"] = [{"url": "/"}]
    doc["paths"]["/api/remoteExport/{pageId}/init"]["post"]["servers"] = [{"url": "https://x.example.com/s/"}]
    assert derive(doc)["start_export"] == "/s/api/remoteExport/{page_id}/init"


def test_two_posts_starting_exports_equally_are_ambiguous():
    doc = json.loads(json.dumps(VENDOR))
    doc["paths"]["/api/remoteExport/{pageId}/start"] = {"post": {"summary": "Also starts"}}
    with pytest.raises(OpenAPIError, match="'start_export' is ambiguous"):
        derive(doc)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"hello": 1}, "neither an 'openapi' nor a 'swagger'"),
        ({"openapi": "3.0.0"}, "no 'paths'"),
        ({"swagger": "1.2", "paths": {}}, "Unsupported OpenAPI version"),
        ({"openapi": "3.0.0", "paths": {}}, "Operations seen: none"),
    ],
)
def test_documents_that_are_not_usable_openapi_say_why(document, message):
    with pytest.raises(OpenAPIError, match=message):
        endpoints_from_openapi(document)


def test_load_document_reads_json_and_yaml_from_files_text_and_bytes(tmp_path):
    (tmp_path / "a.yaml").write_text(CONTENT_ID_YAML)
    assert load_document(tmp_path / "a.yaml")["openapi"] == "3.1.0"
    assert load_document(str(tmp_path / "a.yaml"))["info"]["version"] == "2"
    assert load_document(json.dumps(VENDOR)) == VENDOR
    assert load_document(b"swagger: '2.0'\npaths: {}\n") == {"swagger": "2.0", "paths": {}}


# --------------------------------------------------------------------------- the command line


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_user_runs_the_module_and_pastes_the_printed_connection_command(tmp_path):
    path = tmp_path / "remote-api.json"
    path.write_text(json.dumps(CROWDED))
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_cex.openapi", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert json.loads(lines[0]) == DEFAULT_PATHS
    assert list(json.loads(lines[0])) == ["start_export", "export_progress", "download_export"]
    command = shlex.split(" ".join(line.rstrip("\\") for line in lines[1:] if not line.startswith("#")))
    assert command[:4] == ["airflow", "connections", "add", "content_exporter_default"]
    assert command[command.index("--conn-host") + 1] == US_APPLICATION_URL
    assert command[command.index("--conn-password") + 1] == "<YOUR-CEX-API-KEY>"
    assert json.loads(command[command.index("--conn-extra") + 1]) == {"endpoints": DEFAULT_PATHS}
    assert any(line.startswith("#") and EU_APPLICATION_URL in line for line in lines)


def test_cli_takes_yaml_from_stdin_with_another_conn_id_and_host(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CONTENT_ID_YAML.encode())))
    status, out, _ = run_cli(capsys, "-", "--conn-id", "cex eu", "--host", EU_APPLICATION_URL)
    assert status == 0
    assert json.loads(out.splitlines()[0])["start_export"] == "/cex/v2/pages/{page_id}/exports"
    assert "add 'cex eu' --conn-type content_exporter" in out
    assert f"--conn-host {EU_APPLICATION_URL}" in out


def test_cli_with_two_progress_operations_lists_them_and_exits_2(capsys, tmp_path):
    doc = json.loads(json.dumps(VENDOR))
    doc["paths"]["/api/remoteExport/{hash}/status"] = {"get": {"operationId": "exportStatus"}}
    (tmp_path / "api.json").write_text(json.dumps(doc))
    status, out, err = run_cli(capsys, str(tmp_path / "api.json"))
    assert (status, out) == (2, "")
    assert "'export_progress' is ambiguous, 2 operations match" in err
    assert "GET /api/remoteExport/{hash}/status  operationId=exportStatus" in err
    assert "Traceback" not in err


def test_cli_without_a_download_operation_lists_what_it_saw_and_names_the_extra(capsys, tmp_path):
    doc = json.loads(json.dumps(CROWDED))
    del doc["paths"]["/api/remoteExport/{hash}/download"]
    (tmp_path / "api.yaml").write_text(json.dumps(doc))
    status, _, err = run_cli(capsys, str(tmp_path / "api.yaml"))
    assert status == 2
    assert "'download_export': no operation matches" in err
    assert "Operations seen (9):" in err and "GET /health  summary='Health check'" in err
    assert "DELETE /api/remoteExport/{hash}" in err
    assert "connection extra 'endpoints'" in err and json.dumps(DEFAULT_PATHS) in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"hello": 1}', "neither an 'openapi' nor a 'swagger'"),
        ('{"openapi": "3.0.0", "paths": [', "neither JSON"),
        ("openapi: [3\n  paths: {", "nor YAML"),
        ("just some words", "must be a JSON/YAML object"),
        ("", "must be a JSON/YAML object"),
    ],
)
def test_cli_rejects_what_is_not_an_openapi_document_without_a_traceback(capsys, tmp_path, content, message):
    (tmp_path / "bad").write_text(content)
    status, out, err = run_cli(capsys, str(tmp_path / "bad"))
    assert (status, out) == (2, "")
    assert message in err and "Traceback" not in err


def test_cli_with_a_missing_file_says_so(capsys, tmp_path):
    status, _, err = run_cli(capsys, str(tmp_path / "nope.json"))
    assert status == 2 and "does not exist" in err


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2


# --------------------------------------------------------------------------- properties

segment = st.text("abcdwxyz", min_size=1, max_size=6)
name = st.from_regex(r"[a-z][A-Za-z0-9_]{0,10}", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.lists(segment, max_size=3),
    base=st.lists(segment, max_size=3),
    params=st.tuples(name, name, name),
    swagger=st.booleans(),
)
def test_derived_templates_always_pass_the_connection_validation(prefix, base, params, swagger):
    root = "".join(f"/{s}" for s in base)
    paths = {
        f"{root}/{{{params[0]}}}/init": {"post": {}},
        f"{root}/{{{params[1]}}}/progress": {"get": {}},
        f"{root}/{{{params[2]}}}/download": {"get": {}},
    }
    base_path = "/" + "/".join(prefix)
    doc: dict[str, Any] = {"swagger": "2.0", "basePath": base_path} if swagger else {"openapi": "3.0.0"}
    if not swagger:
        doc["servers"] = [{"url": "https://h.example.com" + base_path}]
    doc["paths"] = paths
    lead = base_path.rstrip("/") + root
    result = endpoints_from_openapi(doc)
    assert result == endpoints(
        f"{lead}/{{page_id}}/init", f"{lead}/{{export_hash}}/progress", f"{lead}/{{export_hash}}/download"
    )
    assert parse_endpoints(result) == result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)
methods = st.sampled_from(["get", "post", "put", "delete", "x-other"])
operations = st.dictionaries(
    methods, st.dictionaries(st.sampled_from(["responses", "summary", "tags"]), json_values)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from([{"openapi": "3.0.0"}, {"swagger": "2.0"}, {}]),
    paths=st.dictionaries(
        st.sampled_from(["/a/{x}", "/a/{x}/progress", "/b/{y}/file", "/c", "bad"]), operations
    ),
    extra=st.dictionaries(st.sampled_from(["servers", "basePath", "produces"]), json_values),
)
def test_any_odd_document_gives_valid_endpoints_or_an_openapi_error(version, paths, extra):
    try:
        result = endpoints_from_openapi({**version, **extra, "paths": paths})
    except OpenAPIError as exc:
        assert all(line.isprintable() for line in str(exc).splitlines())
    else:
        assert parse_endpoints(result) == result


def test_sample_files_round_trip_through_the_cli(capsys, tmp_path: Path):
    for story, descriptor, expected in STORIES:
        path = tmp_path / f"{story}.txt"
        path.write_text(descriptor if isinstance(descriptor, str) else json.dumps(descriptor))
        status, out, err = run_cli(capsys, str(path))
        assert status == 0, err
        assert json.loads(out.splitlines()[0]) == expected

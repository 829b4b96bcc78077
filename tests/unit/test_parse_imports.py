"""What a DAG file pays at every parse: no HTTP client, no lineage, no cloud SDK is imported.

Parsed in a fresh interpreter, as the DAG processor does, with the OpenLineage and amazon providers installed:
they load only when a task runs (and the OpenLineage listener calls the facets method).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

#: Modules whose import at parse would cost every DAG file (see benchmarks/import_cost.py for figures).
NOT_AT_PARSE = (
    "requests",
    "aiohttp",
    "openlineage.client",
    "airflow.providers.openlineage.extractors",
    "airflow_provider_cex.lineage",
    "airflow_provider_cex.openlineage_facets",
    "airflow_provider_cex.hooks.content_exporter",
    "s3fs",
    "boto3",
)


def test_parsing_the_example_dags_imports_no_http_lineage_or_cloud_module():
    script = (
        "import json, runpy, sys\n"
        # What Airflow itself loads for any DAG file (on 2.11 that includes requests) is not ours to count.
        "from airflow.providers.common.compat.sdk import DAG, BaseOperator, BaseSensorOperator, Param\n"
        "before = set(sys.modules)\n"
        f"for path in {sorted(str(p) for p in EXAMPLE_DAGS.glob('example_*.py'))!r}:\n"
        "    runpy.run_path(path)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded_by_parsing = set(json.loads(done.stdout.splitlines()[-1]))
    assert "airflow_provider_cex.operators.content_exporter" in loaded_by_parsing  # really parsed
    assert sorted(m for m in NOT_AT_PARSE if m in loaded_by_parsing) == []

"""Test tooling shared by ``tests/`` and ``benchmarks/``: loopback servers, moto's S3, the fault matrix.

Neither a test suite nor a benchmark, and not shipped (the wheel holds ``airflow_provider_cex`` only, and
the sdist only what it lists): ``tests/`` and ``benchmarks/`` both import from here, and benchmarks never
import ``tests``. Nothing here imports ``tests`` either.

- :mod:`testkit.loopback`: an asyncio TCP server on 127.0.0.1 with its own thread, the base of the test proxy
  and the S3 relay;
- :mod:`testkit.s3`: moto's S3 server on loopback, dummy AWS credentials, a relay that cuts uploads
  (``python -m testkit.s3`` serves moto in a process of its own);
- :mod:`testkit.fault_matrix`: the seeded fault matrix run by ``tests/faults/test_fault_matrix.py`` and
  ``benchmarks/fault_matrix.py``.
"""

from __future__ import annotations

import json
from importlib.metadata import version

#: Airflow 2.11 and 3.x differ in the metadata DB, dag.test() and the connection form: tests branch on this
#: (read from the distribution, so that importing it does not import Airflow).
AIRFLOW_V3 = int(version("apache-airflow").split(".")[0]) >= 3


def connection_json(base_url: str, api_key: str, **extra: object) -> str:
    """A ``content_exporter`` connection as an ``AIRFLOW_CONN_*`` value."""
    conn: dict[str, object] = {"conn_type": "content_exporter", "host": base_url, "password": api_key}
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)

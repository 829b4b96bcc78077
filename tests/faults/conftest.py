"""The e2e fixtures (migrated metadata DB, captured task logs) for the fault-injection DAG tests."""

from __future__ import annotations

from tests.e2e.conftest import airflow_db, task_log  # noqa: F401

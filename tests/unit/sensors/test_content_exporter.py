"""The sensor's defaults and input checks, without the service."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from airflow.providers.common.compat.sdk import DAG, AirflowFailException

from airflow_provider_cex.sensors.content_exporter import ContentExporterExportSensor


@pytest.fixture
def dag():
    return DAG("t", schedule=None, start_date=datetime(2026, 1, 1))


def test_sensor_defaults_suit_exports_that_take_minutes(dag):
    sensor = ContentExporterExportSensor(task_id="w", export_hash="abc", dag=dag)
    assert sensor.mode == "reschedule"
    assert sensor.poke_interval == 30 and sensor.timeout == timedelta(hours=2).total_seconds()
    assert ContentExporterExportSensor.template_fields == ("export_hash", "content_exporter_conn_id")


def test_sensor_rejects_an_empty_hash_without_calling_the_service(dag):
    sensor = ContentExporterExportSensor(task_id="w", export_hash="", dag=dag)
    with pytest.raises(AirflowFailException, match="export_hash"):
        sensor.poke({})

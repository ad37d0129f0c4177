"""Test DAGs for job ownership: one job per try, whatever answer the create got."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.operators.dli import DLISubmitBatchOperator

JOB: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "poll_interval": 0.2}

with DAG("dli_test_lost_answer_job_succeeds", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", retries=1, retry_delay=timedelta(seconds=0), **JOB)

with DAG("dli_test_lost_answer_job_succeeds_deferred", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, retries=1, retry_delay=timedelta(seconds=0), **JOB)

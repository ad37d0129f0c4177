"""Test DAGs for the orphan sweeper: runs that leave orphans behind, healthy jobs, and the sweeper itself."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from airflow_provider_dli.sweeper import orphan_sweeper_dag

JOB: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "poll_interval": 0.2}

# Orphans while DLI refuses every DELETE: the failure callback and on_kill both try, and both fail.
with DAG("dli_test_sweep_unreachable_cancel", schedule=None, catchup=False):
    mapped = DLISubmitBatchOperator.partial(task_id="submit_mapped", wait_for_completion=False, **JOB).expand(
        args=[["--part", "1"], ["--part", "2"]]
    )

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit_mapped"))
    def check() -> None:
        raise ValueError("bad input")

    mapped >> check()
    DLISubmitBatchOperator(task_id="submit_timeout", execution_timeout=timedelta(seconds=8), **JOB)

# An orphan of a DAG without any notifier: the run fails and nothing cancels its fire-and-forget job.
with DAG("dli_test_sweep_no_notifier", schedule=None, catchup=False):

    @task
    def fail() -> None:
        raise ValueError("bad input")

    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB) >> fail()

# Healthy: fire-and-forget in a successful run, a task waiting in the worker, a deferred task.
with DAG("dli_test_sweep_fire_and_forget", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB)

with DAG("dli_test_sweep_waiting", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with DAG("dli_test_sweep_deferred", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, **JOB)

# Its run is deleted afterwards: an owner that no longer exists.
with DAG("dli_test_sweep_deleted_run", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB)

sweeper = orphan_sweeper_dag("dli_test_sweeper", schedule=None, grace_period=0)

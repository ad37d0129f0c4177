"""Test DAGs for job ownership: one job per try, whatever answer the create got; two deployments, one DAG."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLICancelBatchOperator, DLISubmitBatchOperator

JOB: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "poll_interval": 0.2}

with DAG("dli_test_lost_answer_job_succeeds", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", retries=1, retry_delay=timedelta(seconds=0), **JOB)

with DAG("dli_test_lost_answer_job_succeeds_deferred", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, retries=1, retry_delay=timedelta(seconds=0), **JOB)

# Two deployments that share a DLI project run this DAG with the same run id (prod's check passes, staging's
# fails): staging's retry, kill switch, run-wide notifier and sweeper must leave prod's job alone.
with DAG(
    "dli_test_two_deployments",
    schedule=None,
    catchup=False,
    on_failure_callback=DLICancelBatchNotifier(this_dag_run=True),
) as two_deployments:  # named: tests/dag_test_at.py finds it among the module's globals

    @task
    def check(dag_run: Any = None) -> None:
        if (dag_run.conf or {}).get("fail"):
            raise ValueError("the check fails (conf fail=true)")

    submit = DLISubmitBatchOperator(
        task_id="submit", wait_for_completion=False, retries=1, retry_delay=timedelta(seconds=0), **JOB
    )
    kill_switch = DLICancelBatchOperator(
        task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
    )
    submit >> check() >> kill_switch

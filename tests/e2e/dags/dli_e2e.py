"""DAGs for the end-to-end abort matrix.

Every submit task has the task-level notifier (the heartbeat-timeout path). ``dli_e2e_recommended`` is
written the way the README recommends: it also has the DAG-level notifier for the whole run, the backstop
for a task process killed on its own, after which Airflow runs no task callback. The other DAGs leave it
out, so that each row shows the one mechanism that covers it. Jobs come from the emulator, where they run
for ten minutes: only a cancel or the test ends them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator

JOB: dict[str, Any] = {
    "file": "obs://bucket/app.jar",
    "class_name": "com.example.App",
    "poll_interval": 0.5,
    "on_failure_callback": DLICancelBatchNotifier(),
}
# Long enough for a loaded machine to get from the task's start to the submit: the timeout must end the wait.
TIMEOUT = timedelta(seconds=20)


def plain_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, catchup=False, max_active_runs=16)


with DAG(
    "dli_e2e_recommended",
    schedule=None,
    catchup=False,
    max_active_runs=16,
    on_failure_callback=DLICancelBatchNotifier(this_dag_run=True),
):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with plain_dag("dli_e2e_sync"):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with plain_dag("dli_e2e_deferred"):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, **JOB)

with plain_dag("dli_e2e_timeout_sync"):
    DLISubmitBatchOperator(task_id="submit", execution_timeout=TIMEOUT, **JOB)

with plain_dag("dli_e2e_timeout_deferred"):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, execution_timeout=TIMEOUT, **JOB)

with plain_dag("dli_e2e_retry"):
    DLISubmitBatchOperator(task_id="submit", retries=1, retry_delay=timedelta(seconds=0), **JOB)

with plain_dag("dli_e2e_check_fails"):
    from airflow.sdk import task

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit"))
    def check() -> None:
        raise ValueError("the input did not pass the check")

    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB) >> check()

with plain_dag("dli_e2e_kill_switch"):
    from airflow_provider_dli.operators.dli import DLICancelBatchOperator

    DLISubmitBatchOperator(task_id="submit", **JOB) >> DLICancelBatchOperator(
        task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed"
    )

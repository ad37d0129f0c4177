"""DAGs for the SQL job rows of the end-to-end abort matrix (tests/e2e/test_sql_abort_matrix.py).

Each SQL task has the task-level notifier, as the README recommends. Jobs come from the emulator, where they
run for ten minutes: only a cancel or the test ends them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISqlJobOperator

JOB: dict[str, Any] = {
    "sql": "INSERT INTO sales_daily SELECT * FROM sales",
    "queue_name": "etl",
    "poll_interval": 0.5,
    "on_failure_callback": DLICancelBatchNotifier(),
}
# Long enough for a loaded machine to get from the task's start to the submit: the timeout must end the wait.
TIMEOUT = timedelta(seconds=20)

with DAG("dli_e2e_sql_sync", schedule=None, catchup=False, max_active_runs=16):
    DLISqlJobOperator(task_id="insert", **JOB)

with DAG("dli_e2e_sql_deferred", schedule=None, catchup=False, max_active_runs=16):
    DLISqlJobOperator(task_id="insert", deferrable=True, **JOB)

with DAG("dli_e2e_sql_timeout_deferred", schedule=None, catchup=False, max_active_runs=16):
    DLISqlJobOperator(task_id="insert", deferrable=True, execution_timeout=TIMEOUT, **JOB)

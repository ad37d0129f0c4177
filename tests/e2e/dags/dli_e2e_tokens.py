"""A DAG for the token store's count on a running deployment: mapped cancels with IAM user/password auth, each
in a task process of its own, half of them on each worker machine of the Celery topology (the LocalExecutor
ignores queues: all of them on its one machine). The job ids come with the run's conf."""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task

from airflow_provider_dli.operators.dli import DLICancelBatchOperator
from tests.e2e.machines import MACHINES

PASSWORD_CONN_ID = "dli_e2e_password"

with DAG("dli_e2e_tokens", schedule=None, catchup=False, max_active_runs=4):

    @task
    def batch_ids(machine: int) -> list[str]:
        """This machine's share of the run's job ids."""
        ids = [str(batch_id) for batch_id in (get_current_context()["dag_run"].conf or {})["batch_ids"]]
        return ids[machine :: len(MACHINES)]

    for index, machine in enumerate(MACHINES):
        DLICancelBatchOperator.partial(
            task_id=f"cancel_on_{machine}", dli_conn_id=PASSWORD_CONN_ID, queue=machine
        ).expand(batch_id=batch_ids.override(task_id=f"batch_ids_{machine}")(index))

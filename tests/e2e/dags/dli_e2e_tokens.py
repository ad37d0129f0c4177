"""A DAG for the token store's count on a running deployment: mapped cancels with IAM user/password auth, each
in a task process of its own (LocalExecutor). The job ids come with the run's conf."""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task

from airflow_provider_dli.operators.dli import DLICancelBatchOperator

PASSWORD_CONN_ID = "dli_e2e_password"

with DAG("dli_e2e_tokens", schedule=None, catchup=False, max_active_runs=4):

    @task
    def batch_ids() -> list[str]:
        dag_run = get_current_context()["dag_run"]
        return [str(batch_id) for batch_id in (dag_run.conf or {})["batch_ids"]]

    DLICancelBatchOperator.partial(task_id="cancel", dli_conn_id=PASSWORD_CONN_ID).expand(batch_id=batch_ids())

"""Test DAG: submit a job, then cancel it with the batch id templated from the submit task's XCom."""

from __future__ import annotations

from airflow.sdk import DAG, task

from airflow_provider_dli.operators.dli import DLICancelBatchOperator

with DAG("dli_test_cancel_from_xcom", schedule=None, catchup=False, tags=["test"]):

    @task
    def submit() -> str:
        from airflow_provider_dli.hooks.dli import DLIHook

        body = {"file": "obs://bucket/app.jar", "className": "com.example.App", "name": "cancel-from-xcom"}
        return str(DLIHook().create_batch(body)["id"])

    cancel = DLICancelBatchOperator(
        task_id="cancel",
        batch_id="{{ ti.xcom_pull(task_ids='submit') }}",
        wait_for_termination=True,
        poll_interval=0.2,
        termination_timeout=30,
    )
    submit() >> cancel

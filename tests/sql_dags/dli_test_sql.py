"""Test DAGs for DLISqlJobOperator: its results, and each failure path that must cancel its job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISqlJobOperator

JOB: dict[str, Any] = {"sql": "INSERT INTO sales SELECT * FROM staging", "queue_name": "etl", "poll_interval": 0.2}
QUICK = {"dli.emulator.launching_seconds": 0.2, "dli.emulator.running_seconds": 0.5}
# Long enough for a loaded machine to get from the task's start to the submit: the timeout must end the wait.
TIMEOUT = timedelta(seconds=8)

with DAG("dli_test_sql_query", schedule=None, catchup=False):
    DLISqlJobOperator(
        task_id="query",
        sql="SELECT * FROM sales",
        database="shop",
        conf={**QUICK, "dli.emulator.result_rows": 5, "spark.sql.shuffle.partitions": 4},
        tags={"team": "sales"},
        result_preview_rows=2,
        poll_interval=0.2,
    )

with DAG("dli_test_sql_file", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", sql="sql/daily_sales.sql", conf=QUICK, poll_interval=0.2)

with DAG("dli_test_sql_ddl", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="ddl", sql="SHOW TABLES", conf={"dli.emulator.result_rows": 3}, result_preview_rows=10)

with DAG("dli_test_sql_fails", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", conf={**QUICK, "dli.emulator.final_state": "FAILED"}, **JOB)

with DAG("dli_test_sql_execution_timeout", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", execution_timeout=TIMEOUT, **JOB)

with DAG("dli_test_sql_sigterm", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", **JOB)

with DAG("dli_test_sql_deferral_timeout", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", deferrable=True, execution_timeout=TIMEOUT, **JOB)

with DAG("dli_test_sql_deferred", schedule=None, catchup=False):
    DLISqlJobOperator(
        task_id="query", sql="SELECT 1", conf={**QUICK, "dli.emulator.result_rows": 1}, result_preview_rows=1,
        deferrable=True, poll_interval=0.2,
    )  # fmt: skip

with DAG("dli_test_sql_killed_worker", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", on_failure_callback=DLICancelBatchNotifier(), **JOB)

with DAG("dli_test_sql_retry", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", retries=1, retry_delay=timedelta(seconds=0), **JOB)

with DAG("dli_test_sql_lost_answer", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", **JOB)

with DAG("dli_test_sql_kill_switch", schedule=None, catchup=False):
    from airflow.sdk import task

    from airflow_provider_dli.operators.dli import DLICancelBatchOperator, DLISubmitBatchOperator

    started = [
        DLISqlJobOperator(task_id="insert", wait_for_completion=False, **JOB),
        DLISqlJobOperator(task_id="insert_again", wait_for_completion=False, **JOB),
        DLISubmitBatchOperator(
            task_id="spark", file="obs://bucket/app.jar", class_name="com.example.App", wait_for_completion=False
        ),
    ]

    @task
    def validate() -> None:
        raise ValueError("bad input")

    kill_switch = DLICancelBatchOperator(
        task_id="cancel_this_runs_jobs", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
    )
    started >> validate() >> kill_switch

with DAG(
    "dli_test_sql_dag_level_callback",
    schedule=None,
    catchup=False,
    on_failure_callback=DLICancelBatchNotifier(this_dag_run=True),
):
    from airflow.sdk import task

    @task
    def fail() -> None:
        raise ValueError("the run fails")

    DLISqlJobOperator(task_id="insert", wait_for_completion=False, **JOB) >> fail()

# The orphan sweeper: a run that leaves a SQL job and a batch job behind, without any notifier, and a healthy
# fire-and-forget SQL job of a run that succeeded.
with DAG("dli_test_sql_orphans", schedule=None, catchup=False):
    from airflow.sdk import task

    from airflow_provider_dli.operators.dli import DLISubmitBatchOperator

    @task
    def break_the_run() -> None:
        raise ValueError("bad input")

    [
        DLISqlJobOperator(task_id="insert", wait_for_completion=False, **JOB),
        DLISubmitBatchOperator(
            task_id="spark", file="obs://bucket/app.jar", class_name="com.example.App", wait_for_completion=False
        ),
    ] >> break_the_run()

with DAG("dli_test_sql_healthy", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", wait_for_completion=False, **JOB)

from airflow_provider_dli.sweeper import orphan_sweeper_dag  # noqa: E402

sql_sweeper = orphan_sweeper_dag("dli_test_sql_sweeper", schedule=None, grace_period=0)

# Metrics: the first submit's answer is lost (adopted), the second is answered (submitted)

with DAG("dli_test_sql_metrics", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="lost", conf=QUICK, **JOB) >> DLISqlJobOperator(task_id="answered", conf=QUICK, **JOB)

# One job per try: a lost answer whose job finished before the retry (the retry succeeds with it)

with DAG("dli_test_sql_lost_answer_job_finishes", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", retries=1, retry_delay=timedelta(seconds=0), **JOB)

with DAG("dli_test_sql_lost_answer_job_finishes_deferred", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", deferrable=True, retries=1, retry_delay=timedelta(seconds=0), **JOB)

# Who cancelled a waited-for SQL job: the task's failure names the kill switch (run beside it by ``airflow tasks
# test`` while the SQL task waits), or says it was cancelled outside (a plain cancel at DLI).
for waits, deferrable in (("worker", False), ("deferred", True)):
    with DAG(f"dli_test_sql_cancelled_while_waiting_{waits}", schedule=None, catchup=False):
        from airflow_provider_dli.operators.dli import DLICancelBatchOperator

        DLISqlJobOperator(task_id="insert", deferrable=deferrable, retries=1, **JOB) >> DLICancelBatchOperator(
            task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
        )

with DAG("dli_test_sql_cancelled_while_waiting_notifier", schedule=None, catchup=False):
    from airflow.sdk import task

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="insert"))
    def check() -> None:  # fails while insert waits (run beside it by ``airflow tasks test``)
        raise ValueError("bad input")

    DLISqlJobOperator(task_id="insert", retries=1, **JOB) >> check()

with DAG("dli_test_sql_cancelled_outside", schedule=None, catchup=False):
    DLISqlJobOperator(task_id="insert", **JOB)

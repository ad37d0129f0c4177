"""Load a day of sales with a DLI SQL job, then count what arrived: the SQL job is cancelled on every failure path.

The load waits in the triggerer (``deferrable=True``) and its own ``execution_timeout`` cancels it there. Its
``on_failure_callback`` cancels it after a lost worker, finding the job's id in XCom (``dli_sql_job_id``); the
DAG's ``on_failure_callback`` cancels every live job of a failed run, SQL and Spark alike, found by the run's
tag. The count returns its result's first row (``result_preview_rows``).

Run it against the local emulator: ``dli-emulator`` prints the connection to export, then ``airflow dags test
example_dli_sql_job``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISqlJobOperator

with DAG(
    dag_id="example_dli_sql_job",
    schedule=None,
    catchup=False,
    on_failure_callback=DLICancelBatchNotifier(this_dag_run=True),
    tags=["example", "dli"],
):
    load = DLISqlJobOperator(
        task_id="load_daily_sales",
        sql="INSERT INTO sales_daily SELECT * FROM sales WHERE day = '{{ ds }}'",  # or a path ending in .sql
        database="shop",
        queue_name="etl",  # the DLI queue ('queue' stays Airflow's executor queue)
        conf={"spark.sql.shuffle.partitions": 64},
        tags={"team": "sales"},
        deferrable=True,
        execution_timeout=timedelta(hours=1),
        on_failure_callback=DLICancelBatchNotifier(),
    )
    count = DLISqlJobOperator(
        task_id="count_daily_sales",
        sql="SELECT COUNT(*) FROM sales_daily WHERE day = '{{ ds }}'",
        database="shop",
        queue_name="etl",
        result_preview_rows=1,  # the return value holds the result's first row
    )
    load >> count

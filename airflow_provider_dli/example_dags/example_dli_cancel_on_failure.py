"""Submit a Spark job early, validate its input meanwhile, and cancel the job if the validation fails.

Starting a DLI job takes a while, so the job is submitted first and the input is checked while it starts.
When the check fails, its ``on_failure_callback`` cancels the job: it must not run (and bill) on bad data.
The notifier finds the job's id in the submit task's XCom (``dli_batch_id``), in the worker or, if the
worker died, in the DAG processor.

Run it against the local emulator with ``make demo``; the check fails unless ``input_ready`` is true.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator

with DAG(
    dag_id="example_dli_cancel_on_failure",
    schedule=None,
    catchup=False,
    params={"input_ready": Param(False, type="boolean", description="Whether today's input has landed")},
    tags=["example", "dli"],
):
    submit_spark_job = DLISubmitBatchOperator(
        task_id="submit_spark_job",
        file="obs://my-bucket/jobs/daily-aggregation.jar",
        class_name="com.example.DailyAggregation",
        queue_name="etl",
        args=["--date", "{{ ds }}"],
        conf={"spark.sql.shuffle.partitions": "64"},
        executor_memory="4G",
        num_executors=4,
        wait_for_completion=False,  # the check below runs while the job starts
    )

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit_spark_job"))
    def check_source_data(params: dict[str, bool] | None = None) -> None:
        if not (params or {}).get("input_ready"):
            raise ValueError("today's input has not landed: the Spark job must not run on yesterday's data")

    submit_spark_job >> check_source_data()

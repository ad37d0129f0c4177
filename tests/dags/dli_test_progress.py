"""Test DAGs for what a wait logs while a job runs, and for the provider's metrics."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from airflow_provider_dli.sweeper import orphan_sweeper_dag

# Three seconds starting, three running: with a heartbeat every second, each state gets a line when it begins
# and a few heartbeats, while the task polls five times a second.
JOB: dict[str, Any] = {
    "file": "obs://bucket/app.jar",
    "class_name": "com.example.App",
    "poll_interval": 0.2,
    "conf": {"dli.emulator.starting_seconds": 3, "dli.emulator.running_seconds": 3},
}

with DAG("dli_test_progress", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with DAG("dli_test_progress_deferred", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, **JOB)

# A failure callback cancels both jobs of a mapped submit: one summary, then the table on lines of its own.
with DAG("dli_test_cancel_summary", schedule=None, catchup=False):
    from airflow.sdk import task

    from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier

    FIRE_AND_FORGET: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App"}
    submitted = DLISubmitBatchOperator.partial(task_id="submit", wait_for_completion=False, **FIRE_AND_FORGET).expand(
        args=[["--part", "1"], ["--part", "2"]]
    )

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit"))
    def check() -> None:
        raise ValueError("bad input")

    submitted >> check()

# Every counter once or more: a submit whose answer is lost (adopted), a wait through a failed poll, two more
# submits, and the kill switch; then an orphan that the sweeper cancels.
with DAG("dli_test_metrics", schedule=None, catchup=False):
    from airflow_provider_dli.operators.dli import DLICancelBatchOperator

    short_job = {
        **FIRE_AND_FORGET,
        "poll_interval": 0.2,
        "conf": {"dli.emulator.starting_seconds": 0.2, "dli.emulator.running_seconds": 0.5},
    }
    adopt = DLISubmitBatchOperator(task_id="adopt", wait_for_completion=False, **FIRE_AND_FORGET)
    wait = DLISubmitBatchOperator(task_id="wait", **short_job)
    fire = [DLISubmitBatchOperator(task_id=f"fire_{n}", wait_for_completion=False, **FIRE_AND_FORGET) for n in (1, 2)]

    @task
    def fail() -> None:
        raise ValueError("bad input")

    kill_switch = DLICancelBatchOperator(task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed")
    adopt >> wait >> fire >> fail() >> kill_switch

with DAG("dli_test_metrics_orphan", schedule=None, catchup=False):

    @task
    def fail_too() -> None:
        raise ValueError("bad input")

    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **FIRE_AND_FORGET) >> fail_too()

metrics_sweeper = orphan_sweeper_dag("dli_test_metrics_sweeper", schedule=None, grace_period=0)

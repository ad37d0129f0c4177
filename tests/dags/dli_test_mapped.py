"""Test DAGs for mapped submit tasks: each map index owns its own job, and only a run-wide tool touches them all.

``airflow dags test`` runs task instances one at a time, in no fixed order. Map indexes 0 and 1 submit without
waiting, so their jobs stay live; map index 2 waits for its job. Where map index 2 fails, its retry fails
again, so its last failure (and its failure callback) comes after its siblings have submitted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLICancelBatchOperator, DLISubmitBatchOperator

JOB: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "poll_interval": 0.2}
# Map indexes 0 and 1 return once submitted; map index 2 waits for its job.
THREE_JOBS = [{"wait_for_completion": False}, {"wait_for_completion": False}, {"wait_for_completion": True}]
# A job that is dead from the start: the task that waits for it fails at its first poll, with no race.
DEAD_AT_ONCE = {
    "dli.emulator.final_state": "dead",
    "dli.emulator.starting_seconds": 0,
    "dli.emulator.running_seconds": 0,
}

with DAG("dli_test_mapped_job_fails", schedule=None, catchup=False):
    DLISubmitBatchOperator.partial(
        task_id="submit",
        on_failure_callback=DLICancelBatchNotifier(),
        retries=1,
        retry_delay=timedelta(seconds=0),
        **JOB,
    ).expand_kwargs([*THREE_JOBS[:2], {"conf": DEAD_AT_ONCE}])

with DAG("dli_test_mapped_timeout", schedule=None, catchup=False):
    DLISubmitBatchOperator.partial(
        task_id="submit",
        execution_timeout=timedelta(seconds=8),
        on_failure_callback=DLICancelBatchNotifier(),
        **JOB,
    ).expand_kwargs(THREE_JOBS)

with DAG("dli_test_mapped_source_map_index", schedule=None, catchup=False):
    submitted = DLISubmitBatchOperator.partial(task_id="submit", wait_for_completion=False, **JOB).expand(
        args=[["--part", "0"], ["--part", "1"], ["--part", "2"]]
    )

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit", source_map_index="{{ ti.map_index }}"))
    def check(part: int) -> None:
        if part == 1:
            raise ValueError("part 1 is bad")

    submitted >> check.expand(part=[0, 1, 2])

with DAG(
    "dli_test_mapped_dag_level_callback",
    schedule=None,
    catchup=False,
    on_failure_callback=DLICancelBatchNotifier(source_task_id="submit"),
):

    @task
    def fail() -> None:
        raise ValueError("bad input")

    (
        DLISubmitBatchOperator.partial(task_id="submit", wait_for_completion=False, **JOB).expand(
            args=[["--part", "0"], ["--part", "1"]]
        )
        >> fail()
    )

with DAG("dli_test_mapped_kill_switch", schedule=None, catchup=False):
    jobs = DLISubmitBatchOperator.partial(task_id="submit", wait_for_completion=False, **JOB).expand(
        args=[["--part", "0"], ["--part", "1"], ["--part", "2"]]
    )

    @task
    def validate() -> None:
        raise ValueError("bad input")

    kill_switch = DLICancelBatchOperator(
        task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
    )
    jobs >> validate() >> kill_switch

"""Test DAGs for the failure-path matrix: each ends a waiting submit task a different way."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.operators.dli import DLISubmitBatchOperator

JOB: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "poll_interval": 0.2}
# Long enough for a loaded machine to get from the task's start to the submit: the timeout must end the wait,
# not the submit.
TIMEOUT = timedelta(seconds=8)

with DAG("dli_test_execution_timeout", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", execution_timeout=TIMEOUT, **JOB)

with DAG("dli_test_deferral_timeout", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, execution_timeout=TIMEOUT, **JOB)

with DAG("dli_test_sigterm", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with DAG("dli_test_retry_reconnect", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", retries=1, retry_delay=timedelta(seconds=0), **JOB)

with DAG("dli_test_deferred_success", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, **JOB)

with DAG("dli_test_worker_wait", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with DAG("dli_test_job_fails", schedule=None, catchup=False):
    DLISubmitBatchOperator(
        task_id="submit",
        conf={
            "dli.emulator.final_state": "dead",
            "dli.emulator.starting_seconds": 0.2,
            "dli.emulator.running_seconds": 0.5,
        },
        **JOB,
    )

with DAG("dli_test_deferrable_sensor", schedule=None, catchup=False):
    from airflow_provider_dli.sensors.dli import DLIBatchSensor

    submit = DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB)
    watch = DLIBatchSensor(
        task_id="watch", batch_id="{{ ti.xcom_pull(task_ids='submit') }}", deferrable=True, poke_interval=0.2
    )
    submit >> watch

with DAG("dli_test_killed_worker", schedule=None, catchup=False):
    from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier

    DLISubmitBatchOperator(task_id="submit", on_failure_callback=DLICancelBatchNotifier(), **JOB)

with DAG("dli_test_kill_switch", schedule=None, catchup=False):
    from airflow.sdk import task

    from airflow_provider_dli.operators.dli import DLICancelBatchOperator

    jobs = [DLISubmitBatchOperator(task_id=f"submit_{n}", wait_for_completion=False, **JOB) for n in range(3)]

    @task
    def validate() -> None:
        raise ValueError("bad input")

    kill_switch = DLICancelBatchOperator(
        task_id="cancel_this_runs_jobs", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
    )
    jobs >> validate() >> kill_switch

with DAG(
    "dli_test_dag_level_callback",
    schedule=None,
    catchup=False,
    on_failure_callback=DLICancelBatchNotifier(source_task_id="submit"),
):
    from airflow.sdk import task

    @task
    def fail() -> None:
        raise ValueError("bad input")

    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB) >> fail()

with DAG("dli_test_notifier_return_value", schedule=None, catchup=False):
    from airflow.sdk import task

    @task
    def submit_with_hook() -> str:  # pushes only return_value, not dli_batch_id
        from airflow_provider_dli.hooks.dli import DLIHook

        return str(DLIHook().create_batch({"file": "obs://bucket/app.jar", "className": "A"})["id"])

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit_with_hook"))
    def check() -> None:
        raise ValueError("bad input")

    submit_with_hook() >> check()

with DAG("dli_test_notifier_no_id", schedule=None, catchup=False):
    from airflow.sdk import task

    @task(on_failure_callback=DLICancelBatchNotifier())
    def fails_before_submitting() -> None:
        raise ValueError("no job was submitted")

    fails_before_submitting()

with DAG(
    "dli_test_dag_run_wide_callback",
    schedule=None,
    catchup=False,
    on_failure_callback=DLICancelBatchNotifier(this_dag_run=True),
):
    from airflow.sdk import task

    @task
    def fail() -> None:
        raise ValueError("bad input")

    [DLISubmitBatchOperator(task_id=f"submit_{n}", wait_for_completion=False, **JOB) for n in range(2)] >> fail()

with DAG("dli_test_notifier_many_ids", schedule=None, catchup=False):
    from airflow.sdk import task

    @task
    def submit_three() -> list[str]:  # a list of ids in XCom
        from airflow_provider_dli.hooks.dli import DLIHook

        hook = DLIHook()
        return [str(hook.create_batch({"file": "obs://bucket/app.jar", "className": "A"})["id"]) for _ in range(3)]

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit_three"))
    def check_many() -> None:
        raise ValueError("bad input")

    submit_three() >> check_many()

with DAG("dli_test_recovered_job_log", schedule=None, catchup=False):
    # DLI restarted the driver once (auto_recovery); the job has succeeded by the first poll.
    DLISubmitBatchOperator(
        task_id="submit",
        extra_body={"auto_recovery": True, "max_retry_times": 5},
        conf={"dli.emulator.driver_attempts": 2, "dli.emulator.starting_seconds": 0, "dli.emulator.running_seconds": 0},
        **JOB,
    )

with DAG("dli_test_lost_submit_answer", schedule=None, catchup=False):
    DLISubmitBatchOperator(task_id="submit", retries=1, retry_delay=timedelta(seconds=0), **JOB)

for mode in ("poke", "reschedule"):  # a sensor that is not deferrable, in each of its modes
    with DAG(f"dli_test_sensor_outage_{mode}", schedule=None, catchup=False):
        from airflow_provider_dli.sensors.dli import DLIBatchSensor

        DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB) >> DLIBatchSensor(
            task_id="watch", batch_id="{{ ti.xcom_pull(task_ids='submit') }}", mode=mode, poke_interval=0.2
        )

# Who cancelled a waited-for job: the task's failure names the kill switch (run beside it by ``airflow tasks
# test`` while the submit task waits, as a scheduler would run it beside a failing sibling), or the CLI (which also
# cancels another job of the same task instance).
for waits, deferrable in (("worker", False), ("deferred", True), ("worker_cli", False), ("worker_cli_two_jobs", False)):
    with DAG(f"dli_test_cancelled_while_waiting_{waits}", schedule=None, catchup=False):
        from airflow_provider_dli.operators.dli import DLICancelBatchOperator

        DLISubmitBatchOperator(task_id="submit", deferrable=deferrable, retries=1, **JOB) >> (
            DLICancelBatchOperator(
                task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
            )
        )

with DAG("dli_test_cancelled_while_waiting_notifier", schedule=None, catchup=False):
    from airflow.sdk import task

    from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit"))
    def check() -> None:  # fails while submit waits (run beside it by ``airflow tasks test``)
        raise ValueError("bad input")

    DLISubmitBatchOperator(task_id="submit", retries=1, **JOB) >> check()

# A retry that took its earlier try's job over (the first try failed on a refused poll, the job still running),
# and then finds it cancelled: by the kill switch, run beside it, or late by the first try's own callback.
for cancelled_by in ("kill_switch", "own_callback"):
    with DAG(f"dli_test_taken_over_then_cancelled_by_{cancelled_by}", schedule=None, catchup=False):
        from airflow_provider_dli.operators.dli import DLICancelBatchOperator

        DLISubmitBatchOperator(task_id="submit", retries=2, retry_delay=timedelta(seconds=0), **JOB) >> (
            DLICancelBatchOperator(
                task_id="kill_switch", this_dag_run=True, trigger_rule="one_failed", fail_after_cancel=True
            )
        )

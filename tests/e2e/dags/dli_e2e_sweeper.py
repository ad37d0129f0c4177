"""DAGs for the orphan sweeper's chaos measurement on a running deployment: runs that leave orphans behind
every known way, runs whose jobs are healthy, and the sweeper itself (one sweep, on demand). On the Celery
topology the runs' tasks run on one worker machine and the sweeper on the other (queues; the LocalExecutor
ignores them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Context, task

from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from airflow_provider_dli.sweeper import orphan_sweeper_dag
from tests.e2e.machines import MACHINE_A, MACHINE_B

JOB: dict[str, Any] = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "poll_interval": 0.5}


def chaos_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, catchup=False, max_active_runs=4, default_args={"queue": MACHINE_A})


# A check fails and its callback's DELETE cannot reach DLI.
with chaos_dag("dli_e2e_sweep_unreachable_callback"):

    @task(on_failure_callback=DLICancelBatchNotifier(source_task_id="submit"))
    def check() -> None:
        raise ValueError("bad input")

    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB) >> check()

# The task process is SIGKILLed (the OOM killer) while its supervisor lives: no callback runs anywhere.
with chaos_dag("dli_e2e_sweep_oom"):
    DLISubmitBatchOperator(task_id="submit", on_failure_callback=DLICancelBatchNotifier(), **JOB)

# A DAG without any notifier: its run fails and nothing cancels its fire-and-forget job.
with chaos_dag("dli_e2e_sweep_no_notifier"):

    @task
    def fail() -> None:
        raise ValueError("bad input")

    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB) >> fail()

# Healthy: waiting in the worker, deferred in the triggerer, fire-and-forget of a successful run.
with chaos_dag("dli_e2e_sweep_waiting"):
    DLISubmitBatchOperator(task_id="submit", **JOB)

with chaos_dag("dli_e2e_sweep_deferred"):
    DLISubmitBatchOperator(task_id="submit", deferrable=True, **JOB)

with chaos_dag("dli_e2e_sweep_fire_and_forget"):
    DLISubmitBatchOperator(task_id="submit", wait_for_completion=False, **JOB)


# A person's clear of a running task (its job runs again) and a DAG run deleted and triggered again with the
# same run id: the sweeper tells the live try's job from the one left behind by asking Airflow
# (tests/e2e/test_whose_job.py).
with chaos_dag("dli_e2e_sweep_cleared"):
    DLISubmitBatchOperator(task_id="submit", retries=2, **JOB)


class SubmitFromTry(DLISubmitBatchOperator):
    """Its tries before the DAG run's ``conf["submit_from_try"]`` fail before they submit: a real try 3 with
    the first job of its task instance."""

    def execute(self, context: Context) -> Any:
        submit_from = int((context["dag_run"].conf or {}).get("submit_from_try", 1))
        if context["ti"].try_number < submit_from:
            raise RuntimeError(f"try {context['ti'].try_number} fails before it submits (submit_from_try)")
        return super().execute(context)


with chaos_dag("dli_e2e_sweep_reused_run"):
    SubmitFromTry(task_id="submit", retries=2, retry_delay=timedelta(0), **JOB)

# A retry that takes its earlier try's live job over by its owner record (durable=False, as on Airflow 3.1 and
# 3.2): the sweeper keeps the job while the task is up for retry.
with chaos_dag("dli_e2e_sweep_retried"):
    DLISubmitBatchOperator(task_id="submit", retries=1, retry_delay=timedelta(0), durable=False, **JOB)

sweeper = orphan_sweeper_dag("dli_e2e_sweeper", schedule=None, grace_period=0, queue=MACHINE_B)

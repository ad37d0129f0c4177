"""The SQL job rows of the abort matrix on a running Airflow (the suite's ``Deployment``): a person marks a
running SQL task failed through the REST API, a person marks a deferred SQL task failed or success (the
trigger's ``on_kill``, Airflow 3.3+), and a deferred SQL task reaches its ``execution_timeout`` in the
triggerer. Every way the SQL job must end ``CANCELLED``; the time from the action to the DELETE that DLI
received is printed at the end of the session.
"""

from __future__ import annotations

import time

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.owner_tags import owner_from_tags
from tests.e2e.conftest import Measurement
from tests.e2e.deployment import Deployment, cancels_of, wait_for

TASK = "insert"
TIMEOUT_SECONDS = 20.0  # dags/dli_e2e_sql.py: TIMEOUT
SQL_DAG_IDS = ("dli_e2e_sql_sync", "dli_e2e_sql_deferred", "dli_e2e_sql_timeout_deferred")


def sql_job_of(dli: DLIEmulator, dag_id: str, run_id: str) -> str | None:
    """The id of the SQL job that this run's task submitted, read from the job's owner tags."""
    for job in list(dli.sql_jobs.values()):
        owner = owner_from_tags(job.body.get("tags"))
        if owner is not None and (owner.dag_id, owner.run_id) == (dag_id, run_id):
            return job.id
    return None


def status_reads_of(dli: DLIEmulator, job_id: str) -> int:
    return sum(r.path.endswith(f"/jobs/{job_id}/status") and r.status == 200 for r in list(dli.request_log))


def start_waiting(airflow: Deployment, dli: DLIEmulator, dag_id: str, *, deferred: bool = False) -> tuple[str, str]:
    """Trigger a run; return its run id and job id once its task waits on the job (the first status poll)."""
    airflow.wait_for_dags(*SQL_DAG_IDS)
    run_id = airflow.trigger(dag_id)
    job_id = wait_for(lambda: sql_job_of(dli, dag_id, run_id), f"the SQL job of {dag_id}/{run_id}")
    if deferred:
        airflow.wait_for_task_state(dag_id, run_id, TASK, "deferred")
    wait_for(lambda: status_reads_of(dli, job_id) > 0, f"the first status poll of SQL job {job_id}")
    return run_id, job_id


def first_cancel(dli: DLIEmulator, job_id: str) -> float:
    return wait_for(lambda: min(cancels_of(dli, job_id), default=None), f"a DELETE of SQL job {job_id}")


def caller_of_cancel(dli: DLIEmulator, job_id: str) -> str:
    [event] = [event for event in dli.cancel_events if event.batch_id == job_id]
    return event.user_agent.partition("(")[2].rstrip(")")


def test_mark_running_sql_task_failed(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    dag_id = "dli_e2e_sql_sync"
    run_id, job_id = start_waiting(airflow_deployment, e2e_emulator, dag_id)
    acted = time.time()
    airflow_deployment.set_task_state(dag_id, run_id, TASK, "failed")
    cancelled = first_cancel(e2e_emulator, job_id)
    assert caller_of_cancel(e2e_emulator, job_id) == f"{dag_id}.{TASK}"  # on_kill, after the supervisor's SIGTERM
    wait_for(lambda: e2e_emulator.state_of(job_id) == "CANCELLED", "the SQL job to be cancelled")
    measure.append(
        Measurement("a person marks a running SQL task failed", "test_mark_running_sql_task_failed", cancelled - acted)
    )


@pytest.mark.parametrize("new_state", ["failed", "success"])
def test_mark_deferred_sql_task(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement], new_state: str
) -> None:
    """No task process runs while the task is deferred: only the trigger's ``on_kill`` can cancel the job (a
    task marked success runs no failure callback at all)."""
    dag_id = "dli_e2e_sql_deferred"
    run_id, job_id = start_waiting(airflow_deployment, e2e_emulator, dag_id, deferred=True)
    acted = time.time()
    airflow_deployment.set_task_state(dag_id, run_id, TASK, new_state)
    cancelled = first_cancel(e2e_emulator, job_id)
    assert caller_of_cancel(e2e_emulator, job_id) == f"{dag_id}.{TASK}"
    assert airflow_deployment.task_state(dag_id, run_id, TASK) == new_state
    wait_for(lambda: e2e_emulator.state_of(job_id) == "CANCELLED", "the SQL job to be cancelled")
    measure.append(
        Measurement(
            f"a person marks a deferred SQL task {new_state}",
            f"test_sql_abort_matrix.py::test_mark_deferred_sql_task[{new_state}]",
            cancelled - acted,
        )
    )


def test_execution_timeout_while_deferred(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    dag_id = "dli_e2e_sql_timeout_deferred"
    run_id, job_id = start_waiting(airflow_deployment, e2e_emulator, dag_id, deferred=True)
    submitted = e2e_emulator.sql_jobs[job_id].created
    cancelled = first_cancel(e2e_emulator, job_id)
    assert caller_of_cancel(e2e_emulator, job_id) == f"{dag_id}.{TASK}"  # the trigger, at its own deadline
    airflow_deployment.wait_for_task_state(dag_id, run_id, TASK, "failed")
    assert e2e_emulator.state_of(job_id) == "CANCELLED"
    measure.append(
        Measurement(
            "execution_timeout while a SQL task is deferred",
            "test_sql_abort_matrix.py::test_execution_timeout_while_deferred",
            cancelled - (submitted + TIMEOUT_SECONDS),
            "(from the submit + execution_timeout)",
        )
    )

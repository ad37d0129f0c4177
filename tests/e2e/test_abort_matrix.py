"""The abort matrix on a running Airflow: each failure path happens the way it happens in production (a
person's action through the REST API, a signal to a process, a timeout, a triggerer that restarts or
stalls), and the job at DLI must end, or, where the wait only moved, must survive.

Each test records the time from its action to the DELETE that DLI received (printed at the end of the
session, never asserted) and which caller sent it (the hook names its caller in the User-Agent):
``{dag}.submit`` is the operator's on_kill or the trigger, ``{dag}.submit callback`` the task's notifier,
``{dag} callback`` the DAG-level notifier.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.identity import dag_run_job_prefix
from tests.e2e.conftest import Measurement
from tests.e2e.deployment import (
    HEARTBEAT_TIMEOUT,
    Deployment,
    cancels_of,
    is_alive,
    jobs_named,
    parent_pid,
    signal_tree,
    state_reads_of,
    wait_for,
)

TASK = "submit"
TIMEOUT_SECONDS = 20.0  # dags/dli_e2e.py: TIMEOUT


@dataclass
class Waiting:
    """A DAG run whose submit task is waiting on its running job."""

    dag_id: str
    run_id: str
    batch_id: str


def start_waiting(airflow: Deployment, dli: DLIEmulator, dag_id: str, *, deferred: bool = False) -> Waiting:
    """Trigger a run and return once its task waits on its job: the job was polled (by the task, or by the
    trigger once the task is deferred and Airflow processed the deferral, so that ending the job cannot meet
    Airflow's stale-report race: see ``Deployment.wait_for_deferral_processed``)."""
    run_id = airflow.trigger(dag_id)
    prefix = dag_run_job_prefix(dag_id, run_id) + "."
    [batch_id] = wait_for(lambda: jobs_named(dli, prefix), f"the job of {dag_id}/{run_id}")
    if deferred:
        airflow.wait_for_task_state(dag_id, run_id, TASK, "deferred")
        airflow.wait_for_deferral_processed(dag_id, run_id, TASK)
    wait_for(lambda: state_reads_of(dli, batch_id) > 0, f"the first state poll of job {batch_id}")
    return Waiting(dag_id, run_id, batch_id)


def first_cancel(dli: DLIEmulator, batch_id: str) -> float:
    """When DLI received the job's (first accepted) DELETE; waits for it."""
    return wait_for(lambda: min(cancels_of(dli, batch_id), default=None), f"a DELETE of job {batch_id}")


def caller_of_cancel(dli: DLIEmulator, batch_id: str) -> str:
    [event] = [event for event in dli.cancel_events if event.batch_id == batch_id]
    return event.user_agent.partition("(")[2].rstrip(")")


def end_run(airflow: Deployment, run: Waiting) -> None:
    """Leave nothing running for the next scenario (a run that already ended is left as it is)."""
    if airflow.run_state(run.dag_id, run.run_id) not in ("success", "failed"):
        airflow.set_run_state(run.dag_id, run.run_id, "failed")


def trigger_logs(airflow: Deployment, run: Waiting) -> list[Path]:
    """The trigger's log files of this run (one per triggerer that ran it), oldest first."""
    folder = airflow.home / "logs" / f"dag_id={run.dag_id}" / f"run_id={run.run_id}" / f"task_id={TASK}"
    return sorted(folder.glob("*.trigger.*.log"), key=lambda path: path.stat().st_mtime)


def iso_epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# A task fails


def test_exception_in_a_downstream_task(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """The submit task returned at once (``wait_for_completion=False``); the next task fails and its notifier
    cancels the job that the submit task left running."""
    dag_id = "dli_e2e_check_fails"
    run_id = airflow_deployment.trigger(dag_id)
    prefix = dag_run_job_prefix(dag_id, run_id) + "."
    [batch_id] = wait_for(lambda: jobs_named(e2e_emulator, prefix), f"the job of {dag_id}/{run_id}")
    cancelled = first_cancel(e2e_emulator, batch_id)
    assert caller_of_cancel(e2e_emulator, batch_id) == f"{dag_id}.check callback"  # the check's notifier
    airflow_deployment.wait_for_task_state(dag_id, run_id, "check", "failed")
    started = iso_epoch(airflow_deployment.task_instance(dag_id, run_id, "check")["start_date"])
    measure.append(
        Measurement(
            "an exception in a downstream task",
            "test_exception_in_a_downstream_task",
            cancelled - started,
            "(from the failing task's start)",
        )
    )


# A person's action through the REST API


@pytest.mark.topologies("local", "celery")
def test_mark_running_task_failed(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_sync")
    acted = time.time()
    airflow_deployment.set_task_state(run.dag_id, run.run_id, TASK, "failed")
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_sync.submit"  # on_kill, after SIGTERM
    measure.append(
        Measurement("a person marks a running task failed", "test_mark_running_task_failed", cancelled - acted)
    )
    wait_for(lambda: e2e_emulator.state_of(run.batch_id) == "dead", "the job to be dead")


@pytest.mark.topologies("local", "celery")
@pytest.mark.parametrize("new_state", ["failed", "success"])
def test_mark_deferred_task(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement], new_state: str
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_deferred", deferred=True)
    acted = time.time()
    airflow_deployment.set_task_state(run.dag_id, run.run_id, TASK, new_state)
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_deferred.submit"  # the trigger's on_kill
    assert airflow_deployment.task_state(run.dag_id, run.run_id, TASK) == new_state
    measure.append(
        Measurement(
            f"a person marks a deferred task {new_state}", f"test_mark_deferred_task[{new_state}]", cancelled - acted
        )
    )


def test_clear_deferred_task(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_deferred", deferred=True)
    acted = time.time()
    airflow_deployment.clear_task(run.dag_id, run.run_id, TASK)
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_deferred.submit"
    measure.append(Measurement("a person clears a deferred task", "test_clear_deferred_task", cancelled - acted))
    end_run(airflow_deployment, run)  # the cleared task runs again; end that try too


def test_mark_dag_run_failed(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_sync")
    acted = time.time()
    airflow_deployment.set_run_state(run.dag_id, run.run_id, "failed")
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_sync.submit"
    measure.append(Measurement("a person marks the DAG run failed", "test_mark_dag_run_failed", cancelled - acted))


# Processes killed


@pytest.mark.topologies("local", "celery")
def test_sigkill_of_the_task_process_alone(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """D1, the OOM killer's way: the supervisor survives, marks the task failed and Airflow runs no task
    callback anywhere (apache/airflow#60858). The README's DAG-level notifier cancels the run's jobs."""
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_recommended")
    task = airflow_deployment.task_pid(run.dag_id, run.run_id, TASK)
    supervisor = parent_pid(task)
    acted = time.time()
    airflow_deployment.kill(task)
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_recommended callback"  # the DAG-level notifier
    assert is_alive(supervisor) or airflow_deployment.task_state(run.dag_id, run.run_id, TASK) == "failed"
    airflow_deployment.wait_for_task_state(run.dag_id, run.run_id, TASK, "failed")
    measure.append(
        Measurement(
            "SIGKILL of the task process alone (OOM)", "test_sigkill_of_the_task_process_alone", cancelled - acted
        )
    )


def test_sigkill_of_the_task_process_alone_with_a_kill_switch_task(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """The other mechanism that runs after an OOM kill: a kill-switch task with ``trigger_rule="one_failed"``."""
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_kill_switch")
    acted = time.time()
    airflow_deployment.kill(airflow_deployment.task_pid(run.dag_id, run.run_id, TASK))
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_kill_switch.kill_switch"
    airflow_deployment.wait_for_task_state(run.dag_id, run.run_id, "kill_switch", "success")
    measure.append(
        Measurement(
            "SIGKILL of the task process alone, with a kill-switch task",
            "test_sigkill_of_the_task_process_alone_with_a_kill_switch_task",
            cancelled - acted,
        )
    )


@pytest.mark.topologies("local", "celery")
def test_sigkill_of_the_supervisor_alone(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """LocalExecutor: no more heartbeats; after the heartbeat timeout the scheduler fails the task and the DAG
    processor runs its notifier. The orphaned task process keeps waiting until then. Celery: the supervisor is
    the worker's pool process; Celery reports WorkerLostError, the executor fails the task at once, and the DAG
    processor runs the notifier."""
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_sync")
    supervisor = parent_pid(airflow_deployment.task_pid(run.dag_id, run.run_id, TASK))
    acted = time.time()
    airflow_deployment.kill(supervisor)
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_sync.submit callback"  # in the DAG processor
    failed = iso_epoch(airflow_deployment.task_instance(run.dag_id, run.run_id, TASK)["end_date"])
    how = "WorkerLostError" if airflow_deployment.machines else f"heartbeat timeout {HEARTBEAT_TIMEOUT} s"
    how += f", task failed after {failed - acted:.1f} s"
    measure.append(
        Measurement("SIGKILL of the supervisor alone", "test_sigkill_of_the_supervisor_alone", cancelled - acted, how)
    )


@pytest.mark.topologies("local", "celery")
def test_sigkill_of_the_task_process_and_its_supervisor(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """A lost worker (SIGKILL: a machine gone): the task process and its supervisor on the local topology, the
    whole Celery worker and its children on the Celery one. Nothing reports the end: the heartbeat timeout."""
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_sync")
    task = airflow_deployment.task_pid(run.dag_id, run.run_id, TASK)
    acted = time.time()
    airflow_deployment.lose_worker_of(task)
    try:
        cancelled = first_cancel(e2e_emulator, run.batch_id)
        assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_sync.submit callback"
    finally:
        airflow_deployment.restore_workers()
    measure.append(
        Measurement(
            "SIGKILL of the task process and its supervisor, or of the whole Celery worker (lost worker)",
            "test_sigkill_of_the_task_process_and_its_supervisor",
            cancelled - acted,
            f"heartbeat timeout {HEARTBEAT_TIMEOUT} s",
        )
    )


@pytest.mark.topologies("celery")
def test_celery_worker_warm_shutdown_lets_the_task_finish(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """SIGTERM to a Celery worker (a rolling restart, a pod being evicted): Celery's warm shutdown stops taking
    tasks and waits for the running ones, so the waiting task keeps its job until the job ends, then the worker
    exits. (A worker that does not exit in time is killed: the lost-worker row.)"""
    airflow = airflow_deployment
    run = start_waiting(airflow, e2e_emulator, "dli_e2e_sync")
    machine = airflow.machine_running(airflow.task_pid(run.dag_id, run.run_id, TASK))
    assert machine is not None
    worker = airflow.component(machine.component)
    try:
        airflow.kill(worker.pid, sig=signal.SIGTERM)
        wait_for(lambda: worker.log_contains("Warm shutdown"), "the worker's warm shutdown")
        polled = time.time()
        wait_for(lambda: state_reads_of(e2e_emulator, run.batch_id, since=polled) > 0, "the task to poll on")
        e2e_emulator.finish(run.batch_id)
        airflow.wait_for_task_state(run.dag_id, run.run_id, TASK, "success")
        wait_for(lambda: worker.process.poll() is not None, "the worker to exit")
        assert cancels_of(e2e_emulator, run.batch_id) == []
    finally:
        airflow.restore_workers()
    measure.append(
        Measurement(
            "SIGTERM to the Celery worker (warm shutdown): the task finishes, the job survives",
            "test_celery_worker_warm_shutdown_lets_the_task_finish",
            None,
        )
    )


# Timeouts


@pytest.mark.topologies("local", "celery")
def test_execution_timeout_while_waiting(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_timeout_sync")
    started = iso_epoch(airflow_deployment.task_instance(run.dag_id, run.run_id, TASK)["start_date"])
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_timeout_sync.submit"  # on_kill
    airflow_deployment.wait_for_task_state(run.dag_id, run.run_id, TASK, "failed")
    measure.append(
        Measurement(
            "execution_timeout while waiting in the worker",
            "test_execution_timeout_while_waiting",
            cancelled - (started + TIMEOUT_SECONDS),
            "(from the task's start + execution_timeout)",
        )
    )


def test_execution_timeout_while_deferred(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_timeout_deferred", deferred=True)
    submitted = e2e_emulator.jobs[run.batch_id].created
    cancelled = first_cancel(e2e_emulator, run.batch_id)
    assert caller_of_cancel(e2e_emulator, run.batch_id) == "dli_e2e_timeout_deferred.submit"  # the trigger
    airflow_deployment.wait_for_task_state(run.dag_id, run.run_id, TASK, "failed")
    measure.append(
        Measurement(
            "execution_timeout while deferred",
            "test_execution_timeout_while_deferred",
            cancelled - (submitted + TIMEOUT_SECONDS),
            "(from the submit + execution_timeout)",
        )
    )


# Paths where the wait only moves: the job must survive


def test_triggerer_restart_keeps_the_job(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_deferred", deferred=True)
    airflow_deployment.stop_component("triggerer")  # SIGTERM: a rolling restart
    restarted = time.time()
    airflow_deployment.start_component("triggerer", "triggerer", "--skip-serve-logs")
    wait_for(lambda: state_reads_of(e2e_emulator, run.batch_id, since=restarted) > 0, "the new triggerer's poll")
    e2e_emulator.finish(run.batch_id)
    airflow_deployment.wait_for_task_state(run.dag_id, run.run_id, TASK, "success")
    assert cancels_of(e2e_emulator, run.batch_id) == []
    measure.append(Measurement("triggerer restart: the job survives", "test_triggerer_restart_keeps_the_job", None))


@pytest.mark.topologies("local", "celery")
def test_retry_after_a_lost_worker_reconnects(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """The worker is lost (see the lost-worker row); the retry reconnects to the running job. On the Celery
    topology the lost machine is gone, so the other machine runs the retry."""
    airflow = airflow_deployment
    run = start_waiting(airflow, e2e_emulator, "dli_e2e_retry")
    first_host = airflow.task_instance(run.dag_id, run.run_id, TASK)["hostname"]
    airflow.lose_worker_of(airflow.task_pid(run.dag_id, run.run_id, TASK))
    try:

        def second_try_running() -> bool:
            ti = airflow.task_instance(run.dag_id, run.run_id, TASK)
            return bool(ti["try_number"] >= 2 and ti["state"] == "running")

        wait_for(second_try_running, "the retry to run")
        retried = time.time()
        wait_for(lambda: state_reads_of(e2e_emulator, run.batch_id, since=retried) > 0, "the retry to poll the job")
        if airflow.machines:
            assert airflow.task_instance(run.dag_id, run.run_id, TASK)["hostname"] != first_host
        e2e_emulator.finish(run.batch_id)
        airflow.wait_for_task_state(run.dag_id, run.run_id, TASK, "success")
    finally:
        airflow.restore_workers()
    assert jobs_named(e2e_emulator, dag_run_job_prefix(run.dag_id, run.run_id) + ".") == [run.batch_id]
    assert cancels_of(e2e_emulator, run.batch_id) == []
    note = "the other machine ran the retry" if airflow.machines else ""
    measure.append(
        Measurement("retry after a lost worker: one job", "test_retry_after_a_lost_worker_reconnects", None, note)
    )


def test_stalled_triggerer_keeps_the_job(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    """D2: two triggerers; the holder stalls (SIGSTOP) until the other takes the trigger over, then resumes
    (SIGCONT) and Airflow 3.3 calls on_kill on it as if a person had acted (apache/airflow#73454)."""
    holder = airflow_deployment.component("triggerer")
    run = start_waiting(airflow_deployment, e2e_emulator, "dli_e2e_deferred", deferred=True)
    airflow_deployment.start_component("triggerer-2", "triggerer", "--skip-serve-logs")
    try:
        [holder_log] = trigger_logs(airflow_deployment, run)
        stalled = time.time()
        signal_tree(holder.pid, signal.SIGSTOP)
        wait_for(
            lambda: state_reads_of(e2e_emulator, run.batch_id, since=stalled + 1.0) > 0,
            "the second triggerer to take the trigger over",
        )
        signal_tree(holder.pid, signal.SIGCONT)
        # The resumed holder lets go of the trigger (on 3.3.2 through on_kill); its log ends with that.
        wait_for(lambda: "trigger completed" in holder_log.read_text(errors="replace"), "the holder to let go")
        text = holder_log.read_text(errors="replace")
        if "invoking on_kill" in text:
            assert "not cancelling it" in text
        assert cancels_of(e2e_emulator, run.batch_id) == []
        e2e_emulator.finish(run.batch_id)
        airflow_deployment.wait_for_task_state(run.dag_id, run.run_id, TASK, "success")
        assert cancels_of(e2e_emulator, run.batch_id) == []
        measure.append(
            Measurement(
                "a stalled triggerer's trigger taken over: the job survives",
                "test_stalled_triggerer_keeps_the_job",
                None,
                "(on_kill ran on the old holder)" if "invoking on_kill" in text else "",
            )
        )
    finally:
        signal_tree(holder.pid, signal.SIGCONT)
        airflow_deployment.stop_component("triggerer-2")

"""Whose job is it, on a running deployment: a person's clear of a running task, and a DAG run deleted and
triggered again with the same run id. Airflow does what it does for real (the REST API's clear, mark and
delete; the scheduler's new try; the Task SDK's answers to the sweeper), and at the end exactly one job of the
task instance is alive: the one its live try waits on.

- A clear runs the job again: the cleared try's ``on_kill`` cancels its job, and the new try submits its own
  (never adopting the earlier one, as a retry would). When that cancel cannot reach DLI, the sweeper cancels
  the cleared try's job, because Airflow says the task's live try holds a newer one.
- Run-id reuse: a run whose try-3 job was left running (the cancel on marking it failed could not reach DLI)
  is deleted and triggered again; the sweep cancels the orphan and keeps the new run's try-1 job, whatever the
  try numbers say.
- A retry that takes its earlier try's live job over by the owner record (``durable=False``, the path of
  Airflow 3.1 and 3.2): while the task is up for retry the sweep keeps the job, and the retry then adopts it,
  one job in all.
- Run ids that Airflow accepts and that sanitize alike (``+`` and ``_``), or one a prefix of another at a dot:
  distinct job names, and one run's kill switch cancels its own run's job only.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from functools import partial

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.emulator.faults import Fault
from airflow_provider_dli.identity import JobOwner, owner_of
from tests.e2e.conftest import Measurement
from tests.e2e.deployment import AIRFLOW, Deployment, cancels_of, state_reads_of, wait_for
from tests.e2e.test_sweeper_chaos import SWEEPER, sweep_result

CLEARED = "dli_e2e_sweep_cleared"
REUSED = "dli_e2e_sweep_reused_run"
RETRIED = "dli_e2e_sweep_retried"
KILL_SWITCH = "dli_e2e_kill_switch"
TASK = "submit"
LIVE = ("starting", "running", "recovering")


def owned_jobs(dli: DLIEmulator, dag_id: str, run_id: str) -> dict[str, JobOwner]:
    """The jobs whose owner record names this DAG run's task, by id, oldest first."""
    jobs = sorted(list(dli.jobs.values()), key=lambda job: job.created)
    owners = {job.id: owner_of({"req_body": json.dumps(job.body)}) for job in jobs}
    return {
        batch_id: o for batch_id, o in owners.items() if o and (o.dag_id, o.run_id, o.task_id) == (dag_id, run_id, TASK)
    }


def job_of_try(dli: DLIEmulator, dag_id: str, run_id: str, try_number: int) -> str:
    """The job that this try submitted, once DLI has it and the try polls it (it waits on it)."""

    def found() -> str | None:
        tries = [b for b, o in owned_jobs(dli, dag_id, run_id).items() if o.try_number == try_number]
        return tries[0] if tries else None

    batch_id = wait_for(found, f"the job of try {try_number} of {dag_id}/{run_id}")
    wait_for(lambda: state_reads_of(dli, batch_id) > 0, f"try {try_number} to poll job {batch_id}")
    return batch_id


def live_jobs(dli: DLIEmulator, dag_id: str, run_id: str) -> list[str]:
    return [batch_id for batch_id in owned_jobs(dli, dag_id, run_id) if dli.state_of(batch_id) in LIVE]


def unreachable_cancel(dli: DLIEmulator, batch_id: str) -> Fault:
    """Every DELETE of this job fails, as when DLI cannot be reached while a cancel runs."""
    return dli.add_fault(rf"/v2\.0/.*/batches/{batch_id}", method="DELETE", status=503, times=None)


def sweep(airflow: Deployment) -> dict[str, dict[str, object]]:
    """One real sweep (a task asking Airflow through the Task SDK); its orphans by batch id."""
    run_id = airflow.trigger(SWEEPER)
    airflow.wait_for_run_state(SWEEPER, run_id, "success", "failed")
    return {str(orphan["batch_id"]): orphan for orphan in sweep_result(airflow, run_id)["orphans"]}


def test_a_clear_runs_the_job_again_and_leaves_one_job_alive(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    airflow, dli = airflow_deployment, e2e_emulator
    airflow.wait_for_dags(CLEARED, SWEEPER)
    run_id = airflow.trigger(CLEARED)
    first = job_of_try(dli, CLEARED, run_id, 1)

    # A person clears the running task: Airflow terminates the try (on_kill cancels its job) and starts another,
    # which runs the job again rather than taking the cancelled one over as a retry would.
    acted = time.time()
    airflow.clear_task(CLEARED, run_id, TASK)
    cancelled = wait_for(lambda: min(cancels_of(dli, first), default=None), f"the cleared try's DELETE of {first}")
    measure.append(
        Measurement(
            "a person clears a running task",
            "test_a_clear_runs_the_job_again_and_leaves_one_job_alive",
            cancelled - acted,
        )
    )
    second = job_of_try(dli, CLEARED, run_id, 2)
    owners = owned_jobs(dli, CLEARED, run_id)
    assert owners[second].first_try == 2, owners[second]  # Airflow's own max_tries says: a clear, not a retry
    assert live_jobs(dli, CLEARED, run_id) == [second]

    # Cleared again while DLI cannot be reached for the cancel: the cleared try's job lives on beside the new
    # try's, which still runs the job again (a retry would have adopted the live job).
    unreachable = unreachable_cancel(dli, second)
    airflow.clear_task(CLEARED, run_id, TASK)
    wait_for(lambda: unreachable.hits > 0, f"the cleared try's failed DELETE of job {second}")
    third = job_of_try(dli, CLEARED, run_id, 3)
    dli.clear_faults()
    assert live_jobs(dli, CLEARED, run_id) == [second, third]
    assert airflow.task_instance(CLEARED, run_id, TASK)["try_number"] == 3

    # The sweeper asks Airflow: the task's live try (running) holds the newer job, so the cleared try's job goes.
    orphans = sweep(airflow)
    assert orphans.get(second, {}).get("reason") == "the task's live try has a newer job", orphans.get(second)
    assert (orphans[second]["task_state"], orphans[second]["outcome"]) == ("running", "cancelled")
    assert third not in orphans
    assert live_jobs(dli, CLEARED, run_id) == [third]

    dli.finish(third)
    airflow.wait_for_run_state(CLEARED, run_id, "success")


def test_a_reused_run_id_keeps_the_live_tasks_job_and_sweeps_the_orphan(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator
) -> None:
    airflow, dli = airflow_deployment, e2e_emulator
    airflow.wait_for_dags(REUSED, SWEEPER)
    run_id = airflow.trigger(REUSED, conf={"submit_from_try": 3})
    orphan = job_of_try(dli, REUSED, run_id, 3)  # tries 1 and 2 failed before they submitted

    # The run is marked failed while DLI cannot be reached for the cancel, then deleted (Airflow deletes only
    # a run that ended), then triggered again with the same run id: its try 1 submits a job of its own.
    unreachable = unreachable_cancel(dli, orphan)
    airflow.set_run_state(REUSED, run_id, "failed")
    wait_for(lambda: unreachable.hits > 0, f"on_kill's failed DELETE of job {orphan}")
    airflow.wait_for_task_state(REUSED, run_id, TASK, "failed")
    airflow.delete_run(REUSED, run_id)
    dli.clear_faults()
    airflow.trigger(REUSED, run_id)
    live = job_of_try(dli, REUSED, run_id, 1)
    assert live != orphan
    assert live_jobs(dli, REUSED, run_id) == [orphan, live]

    # The sweeper asks Airflow about the run id's task: running, on the newer job; the try-3 job is the orphan.
    orphans = sweep(airflow)
    assert orphans.get(orphan, {}).get("reason") == "the task's live try has a newer job", orphans.get(orphan)
    assert (orphans[orphan]["try_number"], orphans[orphan]["outcome"]) == (3, "cancelled")
    assert live not in orphans
    assert live_jobs(dli, REUSED, run_id) == [live]

    dli.finish(live)
    airflow.wait_for_run_state(REUSED, run_id, "success")


def test_a_job_the_retry_takes_over_is_kept_by_the_sweep(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator
) -> None:
    airflow, dli = airflow_deployment, e2e_emulator
    airflow.wait_for_dags(RETRIED)
    run_id = airflow.trigger(RETRIED)
    batch_id = job_of_try(dli, RETRIED, run_id, 1)

    # The DAG is paused, so that the scheduler queues no retry while the sweep asks about the task (a running
    # task of a paused DAG goes on). Not the scheduler stopped: on SQLite, a scheduler stopped inside a write
    # holds the database's lock, and the task's own up_for_retry write then fails ("database is locked"). DLI
    # refuses the task's next state poll (a 403 ends a wait at once): the task fails with its job live, and the
    # task runner, with a retry left, makes it up for retry. One sweep, from the command line, asks Airflow's
    # database.
    airflow.api("PATCH", f"/dags/{RETRIED}", {"is_paused": True})
    try:
        dli.add_fault(rf"/v2\.0/.*/batches/{batch_id}/state", method="GET", status=403, times=None)
        airflow.wait_for_task_state(RETRIED, run_id, TASK, "up_for_retry")
        dli.clear_faults()
        swept = subprocess.run(
            [AIRFLOW, "dli", "sweep", "--grace-period", "0"],
            env=airflow.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        dli.clear_faults()
        airflow.api("PATCH", f"/dags/{RETRIED}", {"is_paused": False})
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    [line] = [line for line in swept.stdout.splitlines() if line.startswith(batch_id)]
    assert "kept" in line, line
    assert line.endswith("the retry takes this job over (task: up_for_retry)"), line
    assert dli.state_of(batch_id) in LIVE

    # The retry takes the same job over (it polls it), and submits none of its own.
    polled = state_reads_of(dli, batch_id)
    airflow.wait_for_task_state(RETRIED, run_id, TASK, "running")
    wait_for(lambda: state_reads_of(dli, batch_id) > polled, f"the retry to poll job {batch_id}")
    assert airflow.task_instance(RETRIED, run_id, TASK)["try_number"] == 2
    assert list(owned_jobs(dli, RETRIED, run_id)) == [batch_id]

    dli.finish(batch_id)
    airflow.wait_for_run_state(RETRIED, run_id, "success")


def test_run_ids_that_sanitize_alike_are_different_runs(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator
) -> None:
    airflow, dli = airflow_deployment, e2e_emulator
    token = secrets.token_hex(3)
    for run_id, other_run_id in ((f"alike+{token}", f"alike_{token}"), (f"r{token}", f"r{token}.retry")):
        jobs: dict[str, str] = {}
        for each in (other_run_id, run_id):
            airflow.trigger(KILL_SWITCH, each)
            jobs[each] = job_of_try(dli, KILL_SWITCH, each, 1)
        names = {dli.jobs[batch_id].body["name"] for batch_id in jobs.values()}
        assert len(names) == 2, names

        # The OOM killer ends one run's task: its kill switch cancels that run's job, never the other run's.
        airflow.kill(airflow.task_pid(KILL_SWITCH, run_id, TASK))
        airflow.wait_for_task_state(KILL_SWITCH, run_id, "kill_switch", "success")
        assert cancels_of(dli, jobs[run_id])
        assert not cancels_of(dli, jobs[other_run_id])
        assert dli.state_of(jobs[other_run_id]) in LIVE

        airflow.set_run_state(KILL_SWITCH, other_run_id, "failed")  # its task's on_kill cancels its job
        wait_for(partial(cancels_of, dli, jobs[other_run_id]), f"the cancel of {other_run_id}'s job")

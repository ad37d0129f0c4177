"""A task whose job was cancelled says who cancelled it: a canceller of this provider (by name, from the record it
left on the task), or someone outside (DLI's own word, the driver log), never like a failure of Spark.

Real ``airflow dags test`` runs against the emulator. ``dags test`` runs one task at a time, so the kill switch
runs beside the waiting task as a scheduler would run it: ``airflow tasks test`` in the same DAG run, started once
the task waits on its job.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_dli.cancel_records import OWNER_BY_ID, ended_cancelled, ended_dead
from airflow_provider_dli.cli import CLI_CANCELLER
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.identity import OWNER_CONF_KEY, JobOwner, owner_of
from airflow_provider_dli.owner_tags import owner_tags
from tests.airflow_cli import AIRFLOW, AirflowHome
from tests.conftest import SUBMIT_BODY, state_polls, wait_until
from tests.test_cli import CLI
from tests.test_failure_paths import TEST_DAGS, long_jobs
from tests.test_sql_jobs import INSERT, only_sql_job, status_polls
from tests.test_sql_jobs import TEST_DAGS as SQL_DAGS

__all__ = ["long_jobs"]  # the fixture


def run_id_of(home: AirflowHome, dag_id: str) -> str:
    with sqlite3.connect(home.path / "airflow.db") as db:
        [(run_id,)] = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchall()
    return str(run_id)


def run_while_waiting(
    home: AirflowHome,
    dag_id: str,
    emulator: DLIEmulator,
    meanwhile: Callable[[], None],
    dags: Path = TEST_DAGS,
    polls: Callable[[DLIEmulator], int] = state_polls,
) -> tuple[int, str]:
    """``airflow dags test`` until its task waits on its job (``polls``: a state poll was answered), then
    ``meanwhile()``; the run's exit code and output (in a file: nobody reads a pipe while the test waits)."""
    with tempfile.TemporaryFile(mode="w+") as log:
        with subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id], env=home.env(dags, emulator), stdout=log, stderr=subprocess.STDOUT
        ) as process:
            try:
                wait_until(lambda: polls(emulator) > 0 or process.poll() is not None, "the task to wait")
                assert process.poll() is None, "the DAG run ended before its task waited on its job"
                meanwhile()
                process.wait(timeout=300)
            finally:
                process.kill()
        log.seek(0)
        return process.returncode, log.read()


@pytest.mark.parametrize("waits", ["worker", "deferred"])
def test_the_kill_switch_is_named_in_the_failure_of_the_task_whose_job_it_cancelled(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, waits: str
) -> None:
    dag_id = f"dli_test_cancelled_while_waiting_{waits}"

    def kill_switch() -> None:  # fails after cancelling (fail_after_cancel), so that the DAG run fails
        run_id = run_id_of(airflow_home, dag_id)
        airflow_home.run("tasks", "test", dag_id, "kill_switch", run_id, dags_folder=TEST_DAGS, emulator=long_jobs)

    returncode, output = run_while_waiting(airflow_home, dag_id, long_jobs, kill_switch)
    assert returncode != 0, output[-3000:]
    [batch_id] = long_jobs.jobs  # not retried: the retry would run the job the kill switch cancelled
    [cancel] = long_jobs.cancel_events
    assert cancel.batch_id == batch_id
    assert (
        f"DLI batch job {batch_id} ended dead because it was cancelled by the kill switch (DLICancelBatchOperator "
        f"with this_dag_run=True) in task kill_switch of DAG {dag_id}, run {run_id_of(airflow_home, dag_id)} at "
    ) in output
    assert "not a failure of the Spark application" in output


def test_a_notifier_in_a_siblings_callback_is_named_in_the_failure_of_the_task_whose_job_it_cancelled(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    dag_id = "dli_test_cancelled_while_waiting_notifier"

    def fail_the_sibling() -> None:  # its failure callback, DLICancelBatchNotifier(source_task_id="submit")
        run_id = run_id_of(airflow_home, dag_id)
        airflow_home.run("tasks", "test", dag_id, "check", run_id, dags_folder=TEST_DAGS, emulator=long_jobs)

    returncode, output = run_while_waiting(airflow_home, dag_id, long_jobs, fail_the_sibling)
    assert returncode != 0, output[-3000:]
    [batch_id] = long_jobs.jobs
    assert (
        f"DLI batch job {batch_id} ended dead because it was cancelled by the DLICancelBatchNotifier callback in "
        f"task check of DAG {dag_id}, run {run_id_of(airflow_home, dag_id)} at "
    ) in output


def test_airflow_dli_cancel_is_named_in_the_failure_of_the_task_whose_job_it_cancelled(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    dag_id = "dli_test_cancelled_while_waiting_worker_cli"

    def cancel_from_a_terminal() -> None:
        command = [*CLI, "cancel", dag_id, run_id_of(airflow_home, dag_id)]
        env = airflow_home.env(TEST_DAGS, long_jobs)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    returncode, output = run_while_waiting(airflow_home, dag_id, long_jobs, cancel_from_a_terminal)
    assert returncode != 0, output[-3000:]
    [batch_id] = long_jobs.jobs
    assert f"DLI batch job {batch_id} ended dead because it was cancelled by {CLI_CANCELLER} at " in output


def test_a_record_for_another_job_of_the_same_task_instance_keeps_the_waiting_jobs_record(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """A task instance can own two live jobs (a retry's takeover, a duplicate the sweeper cancels): a record for
    the other one, written after the waiting job's, must not take its place."""
    dag_id = "dli_test_cancelled_while_waiting_worker_cli_two_jobs"

    def cancel_the_waiting_job_then_another_of_its_task() -> None:
        [batch_id] = long_jobs.jobs
        owner = owner_of(DLIHook().get_batch(batch_id))
        assert owner is not None
        DLIHook().submit_sql_job({**INSERT, "tags": owner_tags(owner)})
        command = [*CLI, "cancel", dag_id, run_id_of(airflow_home, dag_id)]  # records batch jobs, then SQL jobs
        env = airflow_home.env(TEST_DAGS, long_jobs)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "Cancelled 2 DLI jobs" in result.stdout, result.stdout

    returncode, output = run_while_waiting(
        airflow_home, dag_id, long_jobs, cancel_the_waiting_job_then_another_of_its_task
    )
    assert returncode != 0, output[-3000:]
    [batch_id] = long_jobs.jobs
    assert f"DLI batch job {batch_id} ended dead because it was cancelled by {CLI_CANCELLER} at " in output, output[
        -3000:
    ]


def test_a_job_cancelled_outside_says_so(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    def cancel_as_the_console_would() -> None:
        [batch_id] = long_jobs.jobs
        DLIHook().cancel_batch(batch_id)

    returncode, output = run_while_waiting(airflow_home, "dli_test_worker_wait", long_jobs, cancel_as_the_console_would)
    assert returncode != 0
    [batch_id] = long_jobs.jobs
    assert f"DLI batch job {batch_id} ended dead: it was cancelled outside this DAG run" in output
    assert "its driver log says: WARN SparkContext: application killed by a cancel request" in output


TAKEN_OVER = "dli_test_taken_over_then_cancelled_by_{}"
"""Its first try fails on a refused state poll, its job still running; the retry takes the job over and waits."""


def run_taken_over(
    home: AirflowHome, dag_id: str, emulator: DLIEmulator, meanwhile: Callable[[], None]
) -> tuple[int, str]:
    """``dags test`` of a :data:`TAKEN_OVER` DAG until its retry waits on the job it took over, then
    ``meanwhile()``."""
    refused = emulator.add_fault(r".*/state", method="GET", status=400, times=1)  # the first try's first poll
    returncode, output = run_while_waiting(home, dag_id, emulator, meanwhile)  # an answered poll: the retry's
    assert refused.hits == 1
    assert "Reconnecting to DLI batch job" in output or "Adopting DLI batch job" in output, output[-3000:]
    return returncode, output


def test_a_retry_that_took_its_job_over_keeps_the_kill_switchs_cancel(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """The kill switch cancelled the job the retry waits on: the retry fails naming it, and runs no job again."""
    dag_id = TAKEN_OVER.format("kill_switch")

    def kill_switch() -> None:
        run_id = run_id_of(airflow_home, dag_id)
        airflow_home.run("tasks", "test", dag_id, "kill_switch", run_id, dags_folder=TEST_DAGS, emulator=long_jobs)

    returncode, output = run_taken_over(airflow_home, dag_id, long_jobs, kill_switch)
    assert returncode != 0, output[-3000:]
    [batch_id] = long_jobs.jobs  # not submitted anew: that would undo the kill switch's cancel
    assert (
        f"DLI batch job {batch_id} ended dead because it was cancelled by the kill switch (DLICancelBatchOperator "
        f"with this_dag_run=True) in task kill_switch of DAG {dag_id}, run {run_id_of(airflow_home, dag_id)}"
    ) in output, output[-3000:]
    assert "this retry submits the job anew" not in output


LATE_CALLBACK = """
import sys
from types import SimpleNamespace

from airflow_provider_dli.cancel_records import canceller, record_cancels, write_to_the_database
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.identity import owner_of

batch_id, dag_id, run_id = sys.argv[1:]
hook = DLIHook()
write_to_the_database()
first_try = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id="submit", map_index=-1)
by = canceller(first_try, "the DLICancelBatchNotifier callback")
record_cancels([(batch_id, owner_of(hook.get_batch(batch_id)))], by)
hook.cancel_batch(batch_id)
"""
"""What the first try's ``on_retry_callback=DLICancelBatchNotifier()`` does when Airflow runs it after the retry
took the job over: record itself on the task instance (as the task's own callback), then cancel the job."""


def test_a_retry_whose_job_its_earlier_tries_callback_cancelled_runs_the_job_anew(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    dag_id = TAKEN_OVER.format("own_callback")

    def first_tries_late_callback() -> None:
        [batch_id] = long_jobs.jobs
        script = [sys.executable, "-c", LATE_CALLBACK, batch_id, dag_id, run_id_of(airflow_home, dag_id)]
        env = airflow_home.env(TEST_DAGS, long_jobs)
        result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        wait_until(lambda: len(long_jobs.jobs) == 2, "the retry to submit the job anew")
        long_jobs.finish(list(long_jobs.jobs)[1])

    returncode, output = run_taken_over(airflow_home, dag_id, long_jobs, first_tries_late_callback)
    assert returncode == 0, output[-3000:]
    cancelled, anew = long_jobs.jobs
    assert f"DLI batch job {cancelled}, taken over from an earlier try, ended dead: this retry submits" in output
    assert long_jobs.state_of(anew) == "success"


@pytest.mark.parametrize("waits", ["worker", "deferred"])
def test_the_kill_switch_is_named_in_the_failure_of_the_sql_task_whose_job_it_cancelled(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, waits: str
) -> None:
    dag_id = f"dli_test_sql_cancelled_while_waiting_{waits}"

    def kill_switch() -> None:
        run_id = run_id_of(airflow_home, dag_id)
        airflow_home.run("tasks", "test", dag_id, "kill_switch", run_id, dags_folder=SQL_DAGS, emulator=long_jobs)

    returncode, output = run_while_waiting(airflow_home, dag_id, long_jobs, kill_switch, SQL_DAGS, status_polls)
    assert returncode != 0, output[-3000:]
    job_id = only_sql_job(long_jobs)  # not retried: the retry would run the job the kill switch cancelled
    [cancel] = long_jobs.cancel_events
    assert cancel.batch_id == job_id
    assert (
        f"DLI SQL job {job_id} ended CANCELLED because it was cancelled by the kill switch (DLICancelBatchOperator "
        f"with this_dag_run=True) in task kill_switch of DAG {dag_id}, run {run_id_of(airflow_home, dag_id)} at "
    ) in output, output[-3000:]
    assert "not a failure of the statement" in output


def test_a_notifier_in_a_siblings_callback_is_named_in_the_failure_of_the_sql_task_whose_job_it_cancelled(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """The notifier knows the SQL job by its id alone: it reads the owner from the tags of the job's status."""
    dag_id = "dli_test_sql_cancelled_while_waiting_notifier"

    def fail_the_sibling() -> None:  # its failure callback, DLICancelBatchNotifier(source_task_id="insert")
        run_id = run_id_of(airflow_home, dag_id)
        airflow_home.run("tasks", "test", dag_id, "check", run_id, dags_folder=SQL_DAGS, emulator=long_jobs)

    returncode, output = run_while_waiting(airflow_home, dag_id, long_jobs, fail_the_sibling, SQL_DAGS, status_polls)
    assert returncode != 0, output[-3000:]
    job_id = only_sql_job(long_jobs)  # not retried
    assert (
        f"DLI SQL job {job_id} ended CANCELLED because it was cancelled by the DLICancelBatchNotifier callback in "
        f"task check of DAG {dag_id}, run {run_id_of(airflow_home, dag_id)} at "
    ) in output, output[-3000:]


def test_a_sql_job_cancelled_outside_says_so(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    def cancel_as_the_console_would() -> None:
        DLIHook().cancel_sql_job(only_sql_job(long_jobs))

    dag_id = "dli_test_sql_cancelled_outside"
    returncode, output = run_while_waiting(
        airflow_home, dag_id, long_jobs, cancel_as_the_console_would, SQL_DAGS, status_polls
    )
    assert returncode != 0
    job_id = only_sql_job(long_jobs)
    assert f"DLI SQL job {job_id} ended CANCELLED: it was cancelled outside this DAG run" in output, output[-3000:]


def test_a_job_that_ended_already_gets_no_record(long_jobs: DLIEmulator) -> None:
    """A cancel by id finds an ended job finished: a record would call the job's own failure a cancel, and the
    waiting task, yet to see the end, would fail without its retry."""
    hook = DLIHook()
    owner = JobOwner("airflow", "d", "r", "t", -1, 1, True)
    batch_ids = [hook.create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: owner.conf_value()}})["id"] for _ in "ab"]
    sql_ids = [str(hook.submit_sql_job({**INSERT, "tags": owner_tags(owner)})["job_id"]) for _ in "ab"]
    long_jobs.finish(batch_ids[1], "dead")
    long_jobs.finish(sql_ids[1], "FAILED")
    wait_until(lambda: long_jobs.state_of(batch_ids[0]) == "running", "the job to run")
    assert [OWNER_BY_ID["batch"](hook, batch_id) for batch_id in batch_ids] == [owner, None]
    assert [OWNER_BY_ID["sql"](hook, job_id) for job_id in sql_ids] == [owner, None]


def test_the_failure_tells_a_failed_job_from_a_cancelled_one() -> None:
    record = {
        "job_id": "b",
        "by": "the orphan sweeper in task sweep of DAG s, run r",
        "at": "2026-12-01T03:00:00+00:00",
    }
    failed = ended_dead("b", None, ["ERROR SparkContext: application failed: exit code 1"])
    assert failed.startswith("DLI batch job b ended dead: the Spark application failed")
    assert "cancelled by the orphan sweeper in task sweep" in ended_dead("b", record, [])
    for own_failure in (
        "WARN YarnAllocator: Container killed by YARN for exceeding memory limits. 9.1 GB of 9 GB used",
        "ERROR TaskSchedulerImpl: Lost executor 2: Executor killed by driver (OutOfMemoryError)",
        "INFO DAGScheduler: Cancelling stage 3",
    ):
        assert "the Spark application failed" in ended_dead("b", None, [own_failure]), own_failure
    for cancelled in (
        "WARN SparkContext: application killed by a cancel request",
        "INFO Client: Application application_1_0001 was killed by user dli",
    ):
        assert "cancelled outside this DAG run" in ended_dead("b", None, [cancelled]), cancelled
    killed = ended_dead("b", None, ["INFO x", "ERROR ApplicationMaster: RECEIVED SIGNAL TERM"])
    assert killed.endswith("its driver log says: ERROR ApplicationMaster: RECEIVED SIGNAL TERM")
    assert "SQL job b ended CANCELLED because it was cancelled by the orphan sweeper" in ended_cancelled(
        "b", record, ""
    )
    assert ended_cancelled("b", None, "Job cancelled").endswith(
        "not by this task nor by a canceller of this provider; DLI says: Job cancelled"
    )

"""The failure-path matrix: however Airflow ends a task, its DLI job must not keep running.

Each row runs a real DAG (``airflow dags test``) against the emulator where Airflow can run that path
there, and calls the mechanism directly where it cannot (a person marking a deferred task failed).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_dli._compat import AirflowFailException
from airflow_provider_dli.client.token_store import TOKEN_STORE
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.exceptions import DLIAPIError
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.identity import OWNER_CONF_KEY, JobOwner, batch_job_name, owner_of
from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from airflow_provider_dli.sensors.dli import DLIBatchSensor
from airflow_provider_dli.triggers.dli import DLIBatchTrigger
from tests.airflow_cli import AIRFLOW, AirflowHome
from tests.conftest import SUBMIT_BODY, state_polls, wait_until

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow < 3.3: the SDK has none of its own
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

TEST_DAGS = Path(__file__).parent / "dags"
AIRFLOW_3_3 = Version(airflow_version) >= Version("3.3")


@pytest.fixture
def long_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[DLIEmulator]:
    """Jobs that run 10 minutes: only a cancel ends them within a test."""
    with DLIEmulator(starting_seconds=0.2, running_seconds=600) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(emulator.connection()))
        yield emulator


def run_dag(home: AirflowHome, dag_id: str, emulator: DLIEmulator) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = home.run(
        "dags", "test", dag_id, dags_folder=TEST_DAGS, emulator=emulator
    )
    return result


def only_job(emulator: DLIEmulator) -> str:
    [batch_id] = emulator.jobs
    return batch_id


def cancelled_by(emulator: DLIEmulator, batch_id: str) -> str:
    [event] = [event for event in emulator.cancel_events if event.batch_id == batch_id]
    return event.user_agent.partition("(")[2].rstrip(")")


def xcom_batch_id(home: AirflowHome, dag_id: str, key: str = "dli_batch_id") -> str:
    with sqlite3.connect(home.path / "airflow.db") as db:
        rows = db.execute("SELECT value FROM xcom WHERE dag_id = ? AND key = ?", (dag_id, key)).fetchall()
    [(value,)] = rows
    return str(json.loads(value))


# Rows that a real DAG run covers


def test_execution_timeout_of_a_waiting_task(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_execution_timeout", long_jobs)
    assert result.returncode != 0
    batch_id = only_job(long_jobs)
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dli_test_execution_timeout.submit"  # on_kill
    assert xcom_batch_id(airflow_home, "dli_test_execution_timeout") == batch_id  # pushed before waiting


def test_sigterm_of_the_task_process(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    env = airflow_home.env(TEST_DAGS, long_jobs)
    process = subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_sigterm"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: state_polls(long_jobs) > 0, "the task to wait on its job")
        batch_id = only_job(long_jobs)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dli_test_sigterm.submit"  # on_kill


def test_sigterm_during_an_iam_login_still_cancels_within_5_s(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """Airflow runs ``on_kill`` in its SIGTERM handler, in the thread the signal interrupted: here one that is
    logging in to a slow IAM for a new token after a 401, holding the token store's lock for that token."""
    connection = json.dumps(long_jobs.connection(auth_type="password"))
    env = airflow_home.env(TEST_DAGS, long_jobs, AIRFLOW_CONN_DLI_DEFAULT=connection)
    process = subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_sigterm"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: state_polls(long_jobs) > 0, "the task to wait on its job")
        batch_id = only_job(long_jobs)
        slow_login = long_jobs.add_fault(r"/v3/auth/tokens", method="POST", delay=45, times=1)
        long_jobs.revoke_tokens()  # the next poll gets a 401 and logs in again: slowly
        wait_until(lambda: slow_login.hits == 1, "the task to be logging in to IAM")
        terminated_at = time.time()
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: long_jobs.cancel_events, "the cancel", timeout=60)
    finally:  # Airflow's SIGKILL, 5 s after SIGTERM (``dags test`` would let the interrupted login finish)
        process.kill()
        process.wait()
    [cancel] = long_jobs.cancel_events
    assert cancel.batch_id == batch_id
    assert cancel.at - terminated_at < 5  # before the SIGKILL that follows SIGTERM after 5 s
    assert cancelled_by(long_jobs, batch_id) == "dli_test_sigterm.submit"  # on_kill


def test_killed_worker_callback_runs_in_the_dag_processor(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    env = airflow_home.env(TEST_DAGS, long_jobs)
    worker = subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_killed_worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: state_polls(long_jobs) > 0, "the task to wait on its job")
    finally:
        worker.send_signal(signal.SIGKILL)  # the worker dies: no on_kill, no callback on it
        worker.wait()
    batch_id = only_job(long_jobs)
    assert long_jobs.cancel_events == []
    run_in_dag_processor("task", "dli_test_killed_worker", "submit", env, tmp_path)
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dli_test_killed_worker.submit callback"


def test_dag_level_callback_runs_in_the_dag_processor(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    result = run_dag(airflow_home, "dli_test_dag_level_callback", long_jobs)
    assert result.returncode != 0
    batch_id = only_job(long_jobs)
    # airflow dags test runs DAG callbacks without a supervisor, so a notifier cannot read XCom there
    assert long_jobs.cancel_events == []
    env = airflow_home.env(TEST_DAGS, long_jobs)
    run_in_dag_processor("dag", "dli_test_dag_level_callback", "fail", env, tmp_path)
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dli_test_dag_level_callback.fail callback"


def test_dag_level_callback_cancels_every_live_job_of_the_run(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    """The README's backstop, ``DLICancelBatchNotifier(this_dag_run=True)``: one listing, every live job of
    this run cancelled, and nobody else's job."""
    other = str(DLIHook().create_batch({**SUBMIT_BODY, "name": "airflow.dli_test_dag_run_wide_callback.other.x"})["id"])
    refused = long_jobs.add_fault(r".*/batches/[^/]+", method="DELETE", status=403, times=None)
    result = run_dag(airflow_home, "dli_test_dag_run_wide_callback", long_jobs)  # its callback's cancels refused
    assert result.returncode != 0
    assert refused.hits == 2
    long_jobs.clear_faults()
    ours = [batch_id for batch_id in long_jobs.jobs if batch_id != other]
    assert len(ours) == 2
    env = airflow_home.env(TEST_DAGS, long_jobs)
    run_in_dag_processor("dag", "dli_test_dag_run_wide_callback", "fail", env, tmp_path)
    assert [long_jobs.state_of(batch_id) for batch_id in ours] == ["dead", "dead"]
    assert {cancelled_by(long_jobs, batch_id) for batch_id in ours} == {"dli_test_dag_run_wide_callback callback"}
    assert long_jobs.state_of(other) == "running"


def test_dag_level_callback_cancels_the_runs_jobs_under_dags_test(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """``airflow dags test`` runs a DAG's callbacks itself, with the scheduler's serialized DAG in the context,
    which has no template environment (apache/airflow#64649): the README's backstop must still cancel."""
    result = run_dag(airflow_home, "dli_test_dag_run_wide_callback", long_jobs)
    assert result.returncode != 0
    assert "Callback failed" not in result.stdout + result.stderr
    assert len(long_jobs.jobs) == 2
    assert [long_jobs.state_of(batch_id) for batch_id in long_jobs.jobs] == ["dead", "dead"]
    assert {cancelled_by(long_jobs, batch_id) for batch_id in long_jobs.jobs} == {
        "dli_test_dag_run_wide_callback callback"
    }


def test_dag_run_wide_notifier_takes_no_ids() -> None:
    with pytest.raises(ValueError, match="this_dag_run=True cancels the whole run's jobs"):
        DLICancelBatchNotifier(this_dag_run=True, source_task_id="submit")


def run_in_dag_processor(kind: str, dag_id: str, task_id: str, env: dict[str, str], tmp_path: Path) -> None:
    """Run the DAG's (``dag``) or the task's (``task``) failure callback in Airflow's real DAG processor."""
    script = Path(__file__).parent / "dag_processor_callback.py"
    log = tmp_path / "dag-processor.log"
    processor = subprocess.run(
        [sys.executable, str(script), kind, dag_id, task_id, str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = processor.stdout[-2000:] + processor.stderr[-2000:]
    assert processor.returncode == 0, output + (log.read_text()[-3000:] if log.exists() else "")


def test_deferral_timeout(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_deferral_timeout", long_jobs)
    assert result.returncode != 0
    assert "did not finish within execution_timeout (0:00:08); it was cancelled" in result.stdout + result.stderr
    batch_id = only_job(long_jobs)
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dli_test_deferral_timeout.submit"  # the trigger


def run_until_waiting_then_finish(home: AirflowHome, dag_id: str, emulator: DLIEmulator) -> str:
    """``airflow dags test`` until a task waits on a job (a state poll is answered); then end every job.

    The output goes to a file, not a pipe: nobody reads a pipe while the test waits, and output past the pipe's
    64 KiB buffer would block the run before it ever polls."""
    with tempfile.TemporaryFile(mode="w+") as log:
        with subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id],
            env=home.env(TEST_DAGS, emulator),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            try:
                wait_until(lambda: state_polls(emulator) > 0 or process.poll() is not None, "a task to wait on a job")
                for batch_id in list(emulator.jobs):
                    emulator.finish(batch_id)
                process.wait(timeout=300)
            finally:
                process.kill()
        log.seek(0)
        output = log.read()
    assert process.returncode == 0, output[-3000:]
    return output


def test_retried_task_reconnects_instead_of_resubmitting(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    # The first try fails while waiting (its first state poll is refused), the job still running.
    refused = long_jobs.add_fault(r".*/state", method="GET", status=400, times=1)
    # The refused poll is the first try's first; an answered one is the retry's, waiting on a live job
    # however long Airflow took to start it: only then do the jobs end.
    output = run_until_waiting_then_finish(airflow_home, "dli_test_retry_reconnect", long_jobs)
    assert refused.hits == 1
    assert len(long_jobs.jobs) == 1
    # The retry returns the job's id as a first try does, reconnected or adopted.
    assert xcom_batch_id(airflow_home, "dli_test_retry_reconnect", "return_value") == only_job(long_jobs)
    if AIRFLOW_3_3:
        assert "Reconnecting to DLI batch job" in output
    else:  # no task_state_store before 3.3: the retry finds its live job by name
        assert "Adopting DLI batch job" in output
    assert long_jobs.cancel_events == []


def polled(emulator: DLIEmulator) -> bool:
    """Whether a task has asked for its job's state, whatever the answer."""
    return any(record.path.endswith("/state") for record in emulator.request_log)


def run_through_then_finish(
    home: AirflowHome, dag_id: str, emulator: DLIEmulator, outage: Callable[[], bool]
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test`` until its task waits on its job and ``outage()`` (called once per 50 ms from then
    on) says the outage is over; then the job ends well."""
    with subprocess.Popen(
        [AIRFLOW, "dags", "test", dag_id],
        env=home.env(TEST_DAGS, emulator),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            wait_until(lambda: polled(emulator) or process.poll() is not None, "the task to wait on its job")
            wait_until(lambda: outage() or process.poll() is not None, "the outage to end")
            for batch_id in list(emulator.jobs):
                emulator.finish(batch_id)
            output, _ = process.communicate(timeout=300)
        finally:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def test_a_deferred_wait_outlasts_dli_server_errors(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    """DLI documents its server-side error as HTTP 400 ``DLI.0999``: four polls in a row that get only that
    (each after the client's own retries) must not end the wait, nor cancel the healthy job."""
    per_poll = 4  # the first attempt and the hook's 3 retries
    server_errors = long_jobs.add_fault(r".*/state", method="GET", status=400, error_code="DLI.0999", times=None)

    def four_polls_failed() -> bool:
        if server_errors.hits < 4 * per_poll:
            return False
        server_errors.times = server_errors.hits  # the outage ends
        return True

    result = run_through_then_finish(airflow_home, "dli_test_deferred_success", long_jobs, four_polls_failed)
    assert result.returncode == 0, result.stdout[-3000:]
    assert server_errors.hits >= 4 * per_poll
    assert long_jobs.state_of(only_job(long_jobs)) == "success"
    assert long_jobs.cancel_events == []


def test_a_wait_in_the_worker_outlasts_a_10_second_outage(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    outage: list[float] = []
    unavailable = long_jobs.add_fault(r".*/state", method="GET", status=503, times=0)

    def ten_seconds_of_503() -> bool:
        if not outage:
            outage.append(time.monotonic())
            unavailable.times = None  # from now on
        if time.monotonic() - outage[0] < 10:
            return False
        unavailable.times = unavailable.hits
        return True

    result = run_through_then_finish(airflow_home, "dli_test_worker_wait", long_jobs, ten_seconds_of_503)
    assert result.returncode == 0, result.stdout[-3000:]
    assert unavailable.hits > 4  # more than the client's own retries of one poll
    assert long_jobs.state_of(only_job(long_jobs)) == "success"
    assert long_jobs.cancel_events == []


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_a_sensor_outlasts_dli_server_errors(long_jobs: DLIEmulator, airflow_home: AirflowHome, mode: str) -> None:
    """A sensor that is not deferrable, after its first poke read the job live: three polls in a row that get
    only ``DLI.0999`` (each after the client's own retries) must not fail it. In reschedule mode the pokes are
    task runs of their own, which remember nothing of each other."""
    per_poll = 4  # the first attempt and the hook's 3 retries
    server_errors = long_jobs.add_fault(r".*/state", method="GET", status=400, error_code="DLI.0999", times=0)

    def three_polls_failed() -> bool:
        if server_errors.times == 0:
            server_errors.times = None  # from the second poll on
        if server_errors.hits < 3 * per_poll:
            return False
        server_errors.times = server_errors.hits  # the outage ends
        return True

    result = run_through_then_finish(airflow_home, f"dli_test_sensor_outage_{mode}", long_jobs, three_polls_failed)
    assert result.returncode == 0, result.stdout[-3000:]
    assert server_errors.hits >= 3 * per_poll
    assert "Could not read the state of DLI batch job" in result.stdout
    with sqlite3.connect(airflow_home.path / "airflow.db") as db:
        [(reschedules,)] = db.execute(
            "SELECT count(*) FROM task_reschedule JOIN task_instance ON task_instance.id = task_reschedule.ti_id "
            "WHERE task_instance.dag_id = ?",
            (f"dli_test_sensor_outage_{mode}",),
        ).fetchall()
    assert (reschedules > 0) == (mode == "reschedule")


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_a_sensor_gives_up_after_its_outage_tolerance(long_jobs: DLIEmulator, mode: str) -> None:
    """The outage is measured across pokes (one sensor object makes them in poke mode), or within the one poke
    of a rescheduled run: either way the sensor fails on DLI's error once the tolerance is spent, well before
    its own timeout."""
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    server_errors = long_jobs.add_fault(r".*/state", method="GET", status=400, error_code="DLI.0999", times=None)
    sensor = DLIBatchSensor(
        task_id="watch", batch_id=batch_id, mode=mode, poke_interval=0.05, timeout=120, outage_tolerance=1
    )
    # poke mode: the sensor's own loop of pokes; reschedule mode: a rescheduled run's one poke
    run = sensor.execute if mode == "poke" else sensor.poke
    started = time.monotonic()
    with pytest.raises(DLIAPIError, match=r"DLI\.0999"):
        run({})
    assert time.monotonic() - started >= 1.0
    assert server_errors.hits > 4  # more than one poll's attempts


def test_a_rescheduled_poke_waits_out_an_outage_for_its_tolerance_not_its_poke_interval(
    long_jobs: DLIEmulator,
) -> None:
    """A reschedule sensor's poke_interval is often an hour: an outage must not hold its worker slot that long."""
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    long_jobs.add_fault(r".*/state", method="GET", status=400, error_code="DLI.0999", times=None)
    sensor = DLIBatchSensor(
        task_id="watch", batch_id=batch_id, mode="reschedule", poke_interval=3600, timeout=7200, outage_tolerance=1
    )
    outcome: list[BaseException] = []

    def poke() -> None:
        try:
            sensor.poke({})
        except BaseException as error:
            outcome.append(error)

    poking = threading.Thread(target=poke, daemon=True)
    poking.start()
    poking.join(timeout=300)  # a bound on a hang (the poke_interval is an hour), not a measure of speed
    assert not poking.is_alive(), "the poke slept its poke_interval through the outage"
    [error] = outcome
    assert isinstance(error, DLIAPIError)
    assert "DLI.0999" in str(error)


@pytest.mark.parametrize("status", [401, 403])
def test_a_sensor_fails_at_once_on_an_authorization_refusal(long_jobs: DLIEmulator, status: int) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    refusals = long_jobs.add_fault(r".*/state", method="GET", status=status, times=None)
    sensor = DLIBatchSensor(task_id="watch", batch_id=batch_id, mode="reschedule", poke_interval=0.05)
    with pytest.raises(DLIAPIError, match=f"HTTP {status}"):
        sensor.poke({})
    assert refusals.hits == 1


@pytest.mark.parametrize(
    "readings",
    [{"recovering": "mid-run"}, {"create_answer": "DLI.0999"}, {"list_parameters": "t-cloud"}],
    ids=["recovering", "DLI.0999-after-create", "t-cloud-list-parameters"],
)
def test_submit_and_wait_under_each_reading(airflow_home: AirflowHome, readings: dict[str, str]) -> None:
    """A job that passes through ``recovering``, a create answered ``DLI.0999`` after DLI made the job (the task
    finds it by name), a list API that takes only T Cloud's parameters: one job, waited on until it succeeds."""
    with DLIEmulator(starting_seconds=0.5, running_seconds=3, readings=readings) as emulator:
        result = run_dag(airflow_home, "dli_test_worker_wait", emulator)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert emulator.state_of(only_job(emulator)) == "success"
        assert emulator.cancel_events == []
    output = result.stdout + result.stderr
    assert f"DLI batch job {only_job(emulator)} ended success" in output
    if "recovering" in readings:
        assert "is recovering" in output
    if "create_answer" in readings:
        assert f"Adopting DLI batch job {only_job(emulator)}" in output


def test_lost_submit_answer_adopts_the_job(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    # DLI creates the job but the answer never arrives: the task finds the job by its name and waits for it.
    long_jobs.add_fault(r".*/batches", method="POST", lose_answer=True)
    output = run_until_waiting_then_finish(airflow_home, "dli_test_lost_submit_answer", long_jobs)
    [batch_id] = long_jobs.jobs
    assert f"Adopting DLI batch job {batch_id}" in output
    assert xcom_batch_id(airflow_home, "dli_test_lost_submit_answer") == batch_id
    assert long_jobs.cancel_events == []


def test_retry_adopts_the_job_when_the_lookup_failed(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    # The answer is lost and so is the first look for the job: the first try fails, the retry adopts the job.
    long_jobs.add_fault(r".*/batches", method="POST", lose_answer=True)
    long_jobs.add_fault(r".*/batches", method="GET", status=403)
    output = run_until_waiting_then_finish(airflow_home, "dli_test_lost_submit_answer", long_jobs)
    [batch_id] = long_jobs.jobs
    assert "it could not be looked for" in output
    assert f"Adopting DLI batch job {batch_id}" in output
    assert long_jobs.cancel_events == []


# The submit operator's other duties, in real DAG runs


def test_dead_job_fails_the_task_and_its_log_reaches_the_task_log(
    dli_emulator: DLIEmulator, airflow_home: AirflowHome
) -> None:
    result = run_dag(airflow_home, "dli_test_job_fails", dli_emulator)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    batch_id = only_job(dli_emulator)
    assert f"DLI batch job {batch_id} ended dead" in output
    assert "ERROR SparkContext: application failed: exit code 1" in output
    assert dli_emulator.cancel_events == []


def test_deferred_wait_and_deferrable_sensor(airflow_home: AirflowHome) -> None:
    with DLIEmulator(starting_seconds=0.2, running_seconds=1) as emulator:
        result = run_dag(airflow_home, "dli_test_deferrable_sensor", emulator)
        assert result.returncode == 0, result.stdout[-3000:]
        assert emulator.state_of(only_job(emulator)) == "success"
        result = run_dag(airflow_home, "dli_test_deferred_success", emulator)
        assert result.returncode == 0, result.stdout[-3000:]
        assert len(emulator.jobs) == 2


def test_notifier_falls_back_to_return_value(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    run_dag(airflow_home, "dli_test_notifier_return_value", long_jobs)
    batch_id = only_job(long_jobs)
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dli_test_notifier_return_value.check callback"


def test_notifier_tries_every_id_then_fails_once(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    # The first id's cancel is refused for good; the callback still cancels the others, then reports.
    refusal = long_jobs.add_fault(r".*/batches/[^/]+", method="DELETE", status=403, times=1)
    result = run_dag(airflow_home, "dli_test_notifier_many_ids", long_jobs)
    output = result.stdout + result.stderr
    assert refusal.hits == 1
    [refused] = [r.path.rsplit("/", 1)[1] for r in long_jobs.request_log if r.method == "DELETE" and r.status == 403]
    others = [batch_id for batch_id in long_jobs.jobs if batch_id != refused]
    assert len(others) == 2
    assert [long_jobs.state_of(batch_id) for batch_id in others] == ["dead", "dead"]
    assert long_jobs.state_of(refused) == "running"
    assert "1 of 3 DLI batch jobs were not cancelled (Cancelled 2 DLI batch jobs;" in output
    assert f"{refused}: DLI DELETE" in output


def test_notifier_without_an_id_only_logs(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_notifier_no_id", dli_emulator)
    output = result.stdout + result.stderr
    assert "No DLI batch job id found for dli_test_notifier_no_id.fails_before_submitting" in output
    assert "Failed to send notification" not in output
    assert dli_emulator.request_log == []


# The trigger, called directly: a person ending a deferred task needs a running triggerer


def run_trigger(trigger: DLIBatchTrigger) -> dict[str, Any]:
    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            payload: dict[str, Any] = event.payload
            return payload
        raise AssertionError("the trigger fired no event")

    return asyncio.run(first_event())


def test_trigger_waits_through_a_short_outage_but_not_a_refusal(long_jobs: DLIEmulator) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    long_jobs.finish(batch_id)
    outage = long_jobs.add_fault(r".*/state", method="GET", status=503, times=4)  # every attempt of one poll
    event = run_trigger(DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05))
    assert outage.hits == 4
    assert event == {"status": "success", "batch_id": batch_id, "state": "success"}
    long_jobs.add_fault(r".*/state", method="GET", status=403, times=None)  # not an outage: no use waiting
    event = run_trigger(DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05))
    assert (event["status"], event["batch_id"]) == ("error", batch_id)
    assert "HTTP 403" in event["message"]


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 400, "error_code": "DLI.0999"},
        {"status": 404, "error_code": "APIGW.0101"},  # the gateway, during a deploy
        {"status": 502, "body": "<html><body>Bad Gateway</body></html>"},
        {"status": 200, "body": "<html><body>Down for maintenance</body></html>"},
        {"status": 302, "body": ""},
        {"drop": True},
    ],
    ids=["DLI.0999", "APIGW.0101", "502-html", "200-html", "302", "no-answer"],
)
def test_trigger_waits_through_what_a_wait_outlasts(long_jobs: DLIEmulator, fault: dict[str, Any]) -> None:
    hook = DLIHook()
    batch_id = str(hook.create_batch(SUBMIT_BODY)["id"])
    long_jobs.finish(batch_id)
    failing = long_jobs.add_fault(r".*/state", method="GET", times=8, **fault)  # two polls' every attempt
    event = run_trigger(DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05))
    assert failing.hits == 8
    assert event == {"status": "success", "batch_id": batch_id, "state": "success"}


@pytest.mark.parametrize("status", [401, 403])
def test_trigger_ends_the_wait_at_an_authorization_refusal(long_jobs: DLIEmulator, status: int) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    refusals = long_jobs.add_fault(r".*/state", method="GET", status=status, times=None)
    event = run_trigger(DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05))
    assert (event["status"], f"HTTP {status}" in event["message"]) == ("error", True)
    assert refusals.hits == 1  # at once: no retry, no second poll


def test_trigger_tolerates_an_outage_for_so_long(long_jobs: DLIEmulator) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    long_jobs.add_fault(r".*/state", method="GET", status=400, error_code="DLI.0999", times=None)
    started = time.monotonic()
    event = run_trigger(DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05, outage_tolerance=1.0))
    assert (event["status"], "DLI.0999" in event["message"]) == ("error", True)
    assert time.monotonic() - started >= 1.0


def test_trigger_on_kill_cancels_the_job(long_jobs: DLIEmulator) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    asyncio.run(DLIBatchTrigger(batch_id=batch_id, caller="dag.task").on_kill())
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dag.task"


def test_trigger_on_kill_does_not_wait_for_the_polls_login(
    long_jobs: DLIEmulator, monkeypatch: pytest.MonkeyPatch, token_folder: Path
) -> None:
    """The trigger's poll runs in a worker thread that may be logging in to a slow IAM, holding the token
    store's lock for that token: ``on_kill`` waits for it about one attempt, then logs in on its own."""
    monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(long_jobs.connection(auth_type="password")))
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    TOKEN_STORE.clear()  # as a triggerer on another machine, that has not logged in yet
    for token_file in token_folder.glob("*.json"):
        token_file.unlink()
    slow_login = long_jobs.add_fault(r"/v3/auth/tokens", method="POST", delay=30, times=1)
    poll = threading.Thread(target=DLIHook().get_batch_state, args=(batch_id,), daemon=True)
    poll.start()
    wait_until(lambda: slow_login.hits == 1, "the poll to be logging in to IAM")
    started = time.monotonic()
    asyncio.run(DLIBatchTrigger(batch_id=batch_id, caller="dag.task").on_kill())
    assert time.monotonic() - started < 10  # the trigger's on_kill deadline, not the slow login's 30 s
    assert long_jobs.state_of(batch_id) == "dead"
    assert cancelled_by(long_jobs, batch_id) == "dag.task"


def test_trigger_cleanup_and_opted_out_on_kill_never_cancel(long_jobs: DLIEmulator) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    asyncio.run(DLIBatchTrigger(batch_id=batch_id).cleanup())  # a triggerer restart
    asyncio.run(DLIBatchTrigger(batch_id=batch_id, cancel_on_kill=False).on_kill())
    assert long_jobs.cancel_events == []


def test_trigger_events(long_jobs: DLIEmulator) -> None:
    hook = DLIHook()
    batch_id = str(hook.create_batch(SUBMIT_BODY)["id"])
    event = run_trigger(DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05, deadline=time.time() + 0.3))
    assert event == {"status": "timeout", "batch_id": batch_id, "state": "running"}
    assert long_jobs.state_of(batch_id) == "dead"  # its own deadline cancels the job
    assert run_trigger(DLIBatchTrigger(batch_id=batch_id))["status"] == "dead"
    unknown = run_trigger(DLIBatchTrigger(batch_id="0a324461-d9d9-45da-a52a-3b3c7a3d809e"))
    assert unknown["status"] == "error"
    assert "DLI.0002" in unknown["message"]


def test_trigger_serializes_to_an_equal_trigger() -> None:
    trigger = DLIBatchTrigger(batch_id="b", project_id="p", poll_interval=3, deadline=12.5, caller="d.t")
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    import importlib

    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs


# The sensor's poke and the submit operator's checks, called directly


def test_sensor_poke(dli_connection: DLIEmulator) -> None:
    hook = DLIHook()
    batch_id = str(hook.create_batch(SUBMIT_BODY)["id"])
    sensor = DLIBatchSensor(task_id="watch", batch_id=batch_id)
    assert sensor.poke({}) is False
    hook.cancel_batch(batch_id)
    with pytest.raises(AirflowFailException, match="ended dead"):
        sensor.poke({})
    assert DLIBatchSensor(task_id="w", batch_id=batch_id, fail_on_dead=False).poke({}) is True


class _TaskInstance:
    """The identity fields that batch_body reads from the context's task instance."""

    dag_id, run_id, task_id, map_index, try_number = "dag", "manual__2026-01-01T00:00:00+00:00", "submit", 3, 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"file": ""}, "file must be a non-empty string"),
        ({"class_name": None}, "class_name must be a non-empty string"),
        ({"args": "--date 2024"}, "args must be a list of strings"),
        ({"jars": [None]}, "jars must be a list of strings"),
        ({"conf": ["a"]}, "conf must be a mapping"),
        ({"driver_memory": "2GB"}, "driver_memory must look like '512M' or '2G'"),
        ({"num_executors": 0}, "num_executors must be a whole number > 0"),
        ({"sc_type": "D"}, "sc_type must be one of"),
        ({"name": "x" * 129}, "name must be a string of 1 to 128 characters"),
        ({"queue_name": "etl", "extra_body": {"queue": "other"}}, "extra_body\\['queue'\\] repeats"),
        ({"outage_tolerance": 0}, "outage_tolerance must be a number of seconds > 0"),
    ],
)
def test_submit_parameters_are_checked_before_any_request(kwargs: dict[str, Any], message: str) -> None:
    arguments = {"task_id": "submit", "file": "obs://b/a.jar", "class_name": "A", **kwargs}
    with pytest.raises(ValueError, match=message):
        DLISubmitBatchOperator(**arguments).batch_body({"ti": _TaskInstance()})  # type: ignore[typeddict-item]


def test_outage_tolerance_from_the_argument_or_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    arguments: dict[str, Any] = {"task_id": "submit", "file": "obs://b/a.jar", "class_name": "A"}
    assert DLISubmitBatchOperator(**arguments).outage_tolerance == 600
    assert DLISubmitBatchOperator(**arguments, outage_tolerance=timedelta(minutes=30)).outage_tolerance == 1800
    monkeypatch.setenv("AIRFLOW__DLI__OUTAGE_TOLERANCE", "120")
    assert DLISubmitBatchOperator(**arguments).outage_tolerance == 120
    assert DLISubmitBatchOperator(**arguments, outage_tolerance=5).outage_tolerance == 5
    monkeypatch.setenv("AIRFLOW__DLI__OUTAGE_TOLERANCE", "ten minutes")
    with pytest.raises(ValueError, match=r"\[dli\] outage_tolerance \(AIRFLOW__DLI__OUTAGE_TOLERANCE\) must be"):
        DLISubmitBatchOperator(**arguments)


def test_a_deferred_sensor_waits_through_an_outage_for_its_outage_tolerance(long_jobs: DLIEmulator) -> None:
    batch_id = str(DLIHook().create_batch(SUBMIT_BODY)["id"])
    sensor = DLIBatchSensor(task_id="watch", batch_id=batch_id, deferrable=True, outage_tolerance=timedelta(minutes=2))
    with pytest.raises(TaskDeferred) as deferral:
        sensor.execute({})
    assert isinstance(deferral.value.trigger, DLIBatchTrigger)
    assert deferral.value.trigger.outage_tolerance == sensor.outage_tolerance == 120


def test_submit_body() -> None:
    operator = DLISubmitBatchOperator(
        task_id="submit",
        file="obs://b/a.jar",
        class_name="A",
        queue_name="etl",
        args=["--n", 3],  # type: ignore[list-item]
        py_files=["obs://b/lib.py"],
        driver_memory="2G",
        num_executors="4",  # type: ignore[arg-type]
        extra_body={"auto_recovery": True},
    )
    assert operator.batch_body({"ti": _TaskInstance()}) == {  # type: ignore[typeddict-item]
        "file": "obs://b/a.jar",
        "className": "A",
        "name": batch_job_name("dag", "manual__2026-01-01T00:00:00+00:00", "submit", 3),
        "queue": "etl",
        "args": ["--n", "3"],
        "pyFiles": ["obs://b/lib.py"],
        "driverMemory": "2G",
        "numExecutors": 4,
        "auto_recovery": True,
        "conf": {OWNER_CONF_KEY: operator.batch_body({"ti": _TaskInstance()})["conf"][OWNER_CONF_KEY]},  # type: ignore[typeddict-item]
    }
    assert operator.queue != "etl"  # the executor queue is untouched
    owner = owner_of({"req_body": json.dumps(operator.batch_body({"ti": _TaskInstance()}))})  # type: ignore[typeddict-item]
    name = operator.batch_body({"ti": _TaskInstance()})["name"]  # type: ignore[typeddict-item]
    assert owner == JobOwner(
        instance="airflow",
        dag_id="dag",
        run_id="manual__2026-01-01T00:00:00+00:00",  # exact, unlike the job's name
        task_id="submit",
        map_index=3,
        try_number=2,
        wait=True,
    )
    # The name is a hint in DLI's characters; the run id's ':' and '+' add a hash of the exact ids.
    assert re.fullmatch(r"airflow\.dag\.manual__2026-01-01T00_00_00_00_00-[0-9a-f]{8}\.submit\.3", name)


def test_the_owner_entry_is_the_operators_own() -> None:
    operator = DLISubmitBatchOperator(task_id="s", file="obs://b/a.jar", class_name="A", conf={OWNER_CONF_KEY: "{}"})
    with pytest.raises(ValueError, match=r"spark\.airflow\.dli\.owner"):
        operator.batch_body({"ti": _TaskInstance()})  # type: ignore[typeddict-item]

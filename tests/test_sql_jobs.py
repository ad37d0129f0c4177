"""DLISqlJobOperator in real DAG runs (``airflow dags test``) against the emulator: its results, and each path of
the abort matrix that applies to a SQL job, which must end with the job cancelled."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.operators.dli import DLISqlJobOperator
from airflow_provider_dli.owner_tags import owner_from_tags
from airflow_provider_dli.triggers.dli import DLIBatchTrigger
from tests.airflow_cli import AIRFLOW, AirflowHome
from tests.conftest import wait_until
from tests.test_failure_paths import AIRFLOW_3_3, cancelled_by, run_in_dag_processor, run_trigger
from tests.test_ownership import TaskInstance, context

TEST_DAGS = Path(__file__).parent / "sql_dags"
"""The SQL test DAGs, apart from tests/dags: every ``airflow dags test`` parses (and logs) its whole folder."""
INSERT = {"sql": "INSERT INTO sales SELECT * FROM staging", "queue_name": "etl"}


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


def only_sql_job(emulator: DLIEmulator) -> str:
    [job_id] = emulator.sql_jobs
    return job_id


def status_polls(emulator: DLIEmulator) -> int:
    """Status reads answered: the first marks the moment a task waits on its job (its id is in XCom by then)."""
    return sum(record.path.endswith("/status") and record.status == 200 for record in emulator.request_log)


def xcom(home: AirflowHome, dag_id: str, key: str, task_id: str = "%") -> Any:
    with sqlite3.connect(home.path / "airflow.db") as db:
        query = "SELECT value FROM xcom WHERE dag_id = ? AND key = ? AND task_id LIKE ?"
        rows = db.execute(query, (dag_id, key, task_id)).fetchall()
    [(value,)] = rows
    return json.loads(value)


# What the operator returns and sends


def test_a_query_returns_its_first_rows(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_query", dli_emulator)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job_id = only_sql_job(dli_emulator)
    assert xcom(airflow_home, "dli_test_sql_query", "dli_sql_job_id") == job_id
    assert xcom(airflow_home, "dli_test_sql_query", "return_value") == {
        "job_id": job_id,
        "job_type": "QUERY",
        "status": "FINISHED",
        "result_count": 5,
        "schema": [{"id": "int"}, {"value": "string"}],
        "rows": [[1, "row 1"], [2, "row 2"]],
    }
    job = dli_emulator.sql_jobs[job_id]
    assert (job.body["currentdb"], job.body["sql"]) == ("shop", "SELECT * FROM sales")
    assert "spark.sql.shuffle.partitions=4" in job.body["conf"]
    assert {"key": "team", "value": "sales"} in job.body["tags"]
    owner = owner_from_tags(job.body["tags"])
    assert owner is not None
    assert (owner.dag_id, owner.task_id, owner.run_id.startswith("manual__")) == ("dli_test_sql_query", "query", True)


def test_a_sql_file_is_rendered(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_file", dli_emulator)
    assert result.returncode == 0, result.stdout[-3000:]
    statement = dli_emulator.sql_jobs[only_sql_job(dli_emulator)].body["sql"]
    assert statement.startswith("INSERT INTO sales_daily SELECT * FROM sales WHERE day = '20")  # {{ ds }} rendered


def test_a_sync_statement_needs_no_wait(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_ddl", dli_emulator)
    assert result.returncode == 0, result.stdout[-3000:]
    returned = xcom(airflow_home, "dli_test_sql_ddl", "return_value")
    assert (returned["job_type"], returned["rows"]) == ("DDL", [[1, "row 1"], [2, "row 2"], [3, "row 3"]])
    assert status_polls(dli_emulator) == 0


def test_a_failed_job_fails_the_task_with_dlis_detail(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_fails", dli_emulator)
    assert result.returncode != 0
    job_id = only_sql_job(dli_emulator)
    assert f"DLI SQL job {job_id} ended FAILED: DLI.0005: emulated failure" in result.stdout + result.stderr
    assert dli_emulator.cancel_events == []


# The failure paths, in real DAG runs


def test_execution_timeout_while_waiting(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_execution_timeout", long_jobs)
    assert result.returncode != 0
    job_id = only_sql_job(long_jobs)
    assert long_jobs.state_of(job_id) == "CANCELLED"
    assert cancelled_by(long_jobs, job_id) == "dli_test_sql_execution_timeout.insert"  # on_kill
    assert xcom(airflow_home, "dli_test_sql_execution_timeout", "dli_sql_job_id") == job_id


def test_sigterm_of_the_task_process(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    env = airflow_home.env(TEST_DAGS, long_jobs)
    process = subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_sql_sigterm"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: status_polls(long_jobs) > 0, "the task to wait on its job")
        job_id = only_sql_job(long_jobs)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert long_jobs.state_of(job_id) == "CANCELLED"
    assert cancelled_by(long_jobs, job_id) == "dli_test_sql_sigterm.insert"  # on_kill


def test_deferred_wait_reaching_its_timeout(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_deferral_timeout", long_jobs)
    assert result.returncode != 0
    assert "did not finish within execution_timeout (0:00:08); it was cancelled" in result.stdout + result.stderr
    job_id = only_sql_job(long_jobs)
    assert long_jobs.state_of(job_id) == "CANCELLED"
    assert cancelled_by(long_jobs, job_id) == "dli_test_sql_deferral_timeout.insert"  # the trigger


def test_deferred_query_returns_its_rows(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_sql_deferred", dli_emulator)
    assert result.returncode == 0, result.stdout[-3000:]
    returned = xcom(airflow_home, "dli_test_sql_deferred", "return_value")
    assert (returned["status"], returned["rows"]) == ("FINISHED", [[1, "row 1"]])


def test_killed_worker_callback_runs_in_the_dag_processor(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    """The task's ``DLICancelBatchNotifier()`` finds the SQL job's id in XCom (``dli_sql_job_id``)."""
    env = airflow_home.env(TEST_DAGS, long_jobs)
    worker = subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_sql_killed_worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: status_polls(long_jobs) > 0, "the task to wait on its job")
    finally:
        worker.send_signal(signal.SIGKILL)  # the worker dies: no on_kill, no callback on it
        worker.wait()
    job_id = only_sql_job(long_jobs)
    assert long_jobs.cancel_events == []
    run_in_dag_processor("task", "dli_test_sql_killed_worker", "insert", env, tmp_path)
    assert long_jobs.state_of(job_id) == "CANCELLED"
    assert cancelled_by(long_jobs, job_id) == "dli_test_sql_killed_worker.insert callback"


def test_lost_submit_answer_adopts_the_job(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    """DLI creates the job but its answer never arrives: the task finds it by the run's tag and its owner record."""
    long_jobs.add_fault(r".*/jobs/submit-job", method="POST", lose_answer=True)
    with subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_sql_lost_answer"],
        env=airflow_home.env(TEST_DAGS, long_jobs),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            wait_until(lambda: status_polls(long_jobs) > 0 or process.poll() is not None, "the task to wait")
            job_id = only_sql_job(long_jobs)
            long_jobs.finish(job_id)
            output, _ = process.communicate(timeout=300)
        finally:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert f"Adopting DLI SQL job {job_id}" in output
    assert xcom(airflow_home, "dli_test_sql_lost_answer", "dli_sql_job_id") == job_id
    assert long_jobs.cancel_events == []


# The trigger with the SQL job kind, called directly (a person's action needs a running triggerer: tests/e2e)


def test_the_trigger_waits_on_a_sql_job_and_cancels_it(long_jobs: DLIEmulator) -> None:
    hook = DLIHook()
    job_id = str(hook.submit_sql_job(INSERT)["job_id"])
    trigger = DLIBatchTrigger(batch_id=job_id, job_kind="sql", poll_interval=0.05, deadline=time.time() + 0.3)
    assert run_trigger(trigger) == {"status": "timeout", "batch_id": job_id, "state": "RUNNING"}
    assert long_jobs.state_of(job_id) == "CANCELLED"
    assert run_trigger(DLIBatchTrigger(batch_id=job_id, job_kind="sql"))["status"] == "CANCELLED"
    other = str(hook.submit_sql_job(INSERT)["job_id"])
    asyncio.run(DLIBatchTrigger(batch_id=other, job_kind="sql", caller="dag.task").on_kill())
    assert long_jobs.state_of(other) == "CANCELLED"
    assert cancelled_by(long_jobs, other) == "dag.task"
    assert DLIBatchTrigger(batch_id=other, job_kind="sql").serialize()[1]["job_kind"] == "sql"
    with pytest.raises(ValueError, match="job_kind must be one of"):
        DLIBatchTrigger(batch_id=other, job_kind="flink")


# Arguments, checked when the DAG file is parsed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sql": ""}, "sql must be a non-empty string"),
        ({"sql": None}, "sql must be a non-empty string"),
        ({"database": "1234"}, "database must be letters, digits and '_'"),
        ({"queue_name": "_etl"}, "queue_name must be letters, digits and '_'"),
        ({"conf": ["a=b"]}, "conf must be a mapping"),
        ({"conf": {"a=b": "c"}}, "conf keys must be setting names"),
        ({"conf": {"a": [1]}}, r"conf\['a'\] must be a string or a number"),
        ({"tags": {"owner": '{"json": 1}'}}, "tags keys .* may hold only"),
        ({"tags": {"airflow.dli.run": "x"}}, "kept for the owner"),
        ({"result_preview_rows": 1001}, "result_preview_rows must be a whole number from 0 to 1000"),
        ({"poll_interval": 0}, "poll_interval must be a number of seconds > 0"),
        ({"project_id": "not-a-project"}, "project_id must be up to 64 letters and digits"),
    ],
)
def test_arguments_are_checked_at_parse(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DLISqlJobOperator(task_id="q", **{**INSERT, **kwargs})


def test_templated_arguments_wait_for_the_render() -> None:
    operator = DLISqlJobOperator(task_id="q", sql="{{ params.sql }}", database="{{ params.db }}", tags={"a": "{{ds}}"})
    assert operator.template_ext == (".sql",)
    assert {"sql", "database", "queue_name", "conf", "tags"} <= set(operator.template_fields)


# The run-wide tools: the kill switch and the DAG-level notifier find a run's SQL jobs by its tag


def test_the_kill_switch_cancels_the_runs_sql_and_batch_jobs(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    hook = DLIHook()
    other = str(hook.submit_sql_job(INSERT)["job_id"])  # another run's job (no owner record): left alone
    result = run_dag(airflow_home, "dli_test_sql_kill_switch", long_jobs)
    assert result.returncode != 0  # fail_after_cancel: the run fails
    ours = [job_id for job_id in long_jobs.sql_jobs if job_id != other]
    assert len(ours) == 2
    [batch_id] = long_jobs.jobs
    assert {long_jobs.state_of(job_id) for job_id in ours} == {"CANCELLED"}
    assert long_jobs.state_of(batch_id) == "dead"
    assert {cancelled_by(long_jobs, job_id) for job_id in [*ours, batch_id]} == {
        "dli_test_sql_kill_switch.cancel_this_runs_jobs"
    }
    assert long_jobs.state_of(other) == "RUNNING"
    assert INSERT["sql"] not in result.stdout + result.stderr  # a statement may carry a data source's password
    outcomes = xcom(airflow_home, "dli_test_sql_kill_switch", "return_value", "cancel_this_runs_jobs")
    cancelled = sorted((o["kind"], o["job_id"], o.get("batch_id")) for o in outcomes if o["outcome"] == "cancelled")
    assert cancelled == sorted([("batch", batch_id, batch_id), *(("sql", job_id, None) for job_id in ours)])


def test_dag_level_notifier_cancels_the_runs_sql_jobs(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    """In the DAG processor, where the scheduler has it run; ``airflow dags test`` runs it too, and there its
    cancel is refused so that the processor's run is the one that counts."""
    refused = long_jobs.add_fault(r".*/jobs/[^/]+", method="DELETE", status=403, times=None)
    result = run_dag(airflow_home, "dli_test_sql_dag_level_callback", long_jobs)
    assert result.returncode != 0
    job_id = only_sql_job(long_jobs)
    assert refused.hits == 1
    long_jobs.clear_faults()
    env = airflow_home.env(TEST_DAGS, long_jobs)
    run_in_dag_processor("dag", "dli_test_sql_dag_level_callback", "fail", env, tmp_path)
    assert long_jobs.state_of(job_id) == "CANCELLED"
    assert cancelled_by(long_jobs, job_id) == "dli_test_sql_dag_level_callback callback"


def test_the_sweeper_cancels_orphaned_sql_jobs_beside_batch_jobs(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """A run without any notifier fails and leaves a SQL job and a batch job running: one sweep cancels both,
    found by listings filtered by status and this instance's tag; a healthy SQL job, another deployment's and a
    job without an owner record are left alone."""
    hook = DLIHook()
    foreign = hook.submit_sql_job(
        {**INSERT, "tags": [{"key": "airflow.dli.instance", "value": "airflow"}]}  # the tag, but no owner record
    )["job_id"]
    untagged = hook.submit_sql_job(INSERT)["job_id"]
    assert run_dag(airflow_home, "dli_test_sql_orphans", long_jobs).returncode != 0
    orphans = {*long_jobs.sql_jobs, *long_jobs.jobs} - {foreign, untagged}
    assert run_dag(airflow_home, "dli_test_sql_healthy", long_jobs).returncode == 0
    [healthy] = set(long_jobs.sql_jobs) - orphans - {foreign, untagged}
    swept = run_dag(airflow_home, "dli_test_sql_sweeper", long_jobs)
    assert swept.returncode == 0, swept.stdout[-3000:]
    assert {long_jobs.state_of(job_id) for job_id in orphans} == {"CANCELLED", "dead"}
    assert {cancelled_by(long_jobs, job_id) for job_id in orphans} == {"dli_test_sql_sweeper.sweep"}
    assert [long_jobs.state_of(job_id) for job_id in (healthy, foreign, untagged)] == ["RUNNING"] * 3
    result = xcom(airflow_home, "dli_test_sql_sweeper", "return_value")
    assert {(o["kind"], o["task_id"], o["reason"]) for o in result["orphans"]} == {
        ("sql", "insert", "fire-and-forget job of a failed DAG run"),
        ("batch", "spark", "fire-and-forget job of a failed DAG run"),
    }
    listings = [r.path for r in long_jobs.request_log if r.method == "GET" and r.path.endswith("/jobs")]
    assert len(listings) == 2  # the sweep's only: one per live status, each filtered by the instance's tag


def test_a_retry_reconnects_to_its_sql_job_instead_of_resubmitting(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    """The first try fails while waiting (its first status poll is refused), the job still running: the retry
    waits on the same job (Airflow 3.3: reconnects through the task state store; 3.1: adopts it by its owner
    record), and there is one job in all."""
    refused = long_jobs.add_fault(r".*/jobs/[^/]+/status", method="GET", status=400, times=1)
    with subprocess.Popen(
        [AIRFLOW, "dags", "test", "dli_test_sql_retry"],
        env=airflow_home.env(TEST_DAGS, long_jobs),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            wait_until(lambda: status_polls(long_jobs) > 0 or process.poll() is not None, "the retry to wait")
            job_id = only_sql_job(long_jobs)
            long_jobs.finish(job_id)
            output, _ = process.communicate(timeout=300)
        finally:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert refused.hits == 1
    assert len(long_jobs.sql_jobs) == 1
    if AIRFLOW_3_3:
        assert f"Reconnecting to DLI SQL job {job_id}" in output
    else:  # no task_state_store before 3.3: the retry finds its live job by its owner record
        assert f"Adopting DLI SQL job {job_id}" in output
    assert long_jobs.cancel_events == []


def test_a_failed_sql_listing_never_keeps_the_kill_switch_from_the_batch_jobs(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    long_jobs.add_fault(r"/v1\.0/[^/]+/jobs", method="GET", status=403, times=None)
    result = run_dag(airflow_home, "dli_test_sql_kill_switch", long_jobs)
    assert result.returncode != 0
    [batch_id] = long_jobs.jobs
    assert long_jobs.state_of(batch_id) == "dead"
    assert {long_jobs.state_of(job_id) for job_id in long_jobs.sql_jobs} == {"RUNNING"}
    assert "The DLI SQL jobs could not be listed: DLI GET" in result.stdout + result.stderr


# One job per try, by the owner-record rule that batch jobs follow (identity.belongs_to, owned_jobs.take_over)


@pytest.mark.parametrize(
    "dag_id", ["dli_test_sql_lost_answer_job_finishes", "dli_test_sql_lost_answer_job_finishes_deferred"]
)
def test_a_lost_answer_whose_sql_job_finished_is_never_run_twice(airflow_home: AirflowHome, dag_id: str) -> None:
    """The submit's answer is lost and the try's look-up fails; the job finishes before the retry, which
    succeeds with it instead of running the statement a second time."""
    with DLIEmulator(starting_seconds=0, running_seconds=0) as emulator:
        emulator.add_fault(r".*/jobs/submit-job", method="POST", lose_answer=True)
        lookup = emulator.add_fault(r"/v1\.0/[^/]+/jobs", method="GET", status=403)  # the first try's look-up
        result = run_dag(airflow_home, dag_id, emulator)
        output = result.stdout + result.stderr
        assert lookup.hits == 1
        assert len(emulator.sql_jobs) == 1, output[-3000:]  # no second run of a statement that already ran
        assert result.returncode == 0, output[-3000:]
        [job_id] = emulator.sql_jobs
        assert f"Adopting DLI SQL job {job_id} (FINISHED), submitted by try 1" in output


def sql_try(ti: TaskInstance, retries: int = 1) -> str:
    """A fire-and-forget SQL task's try, called as Airflow calls it."""
    task = DLISqlJobOperator(
        task_id=ti.task_id,
        sql=INSERT["sql"],
        queue_name=INSERT["queue_name"],
        wait_for_completion=False,
        retries=retries,
    )
    return str(task.execute(context(ti))["job_id"])


RUN = "scheduled__2026-12-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("earlier_status", "adopted"), [("RUNNING", True), ("FINISHED", True), ("FAILED", False), ("CANCELLED", False)]
)
def test_a_retry_takes_its_earlier_sql_job_over_unless_it_failed(
    long_jobs: DLIEmulator, earlier_status: str, adopted: bool
) -> None:
    earlier = sql_try(TaskInstance("nightly", RUN, "insert", max_tries=1))
    if earlier_status == "CANCELLED":
        DLIHook().cancel_sql_job(earlier)
    elif earlier_status != "RUNNING":
        long_jobs.finish(earlier, earlier_status)
    retry = sql_try(TaskInstance("nightly", RUN, "insert", try_number=2, max_tries=1))
    assert (retry == earlier) is adopted
    assert len(long_jobs.sql_jobs) == (1 if adopted else 2)


@pytest.mark.parametrize("newest_status", ["FAILED", "CANCELLED"])
def test_a_sql_retry_after_a_failed_job_cancels_the_older_live_ones(long_jobs: DLIEmulator, newest_status: str) -> None:
    """Try 1's job still runs, try 2's (submitted beside it: its look-up missed try 1's) failed or was cancelled:
    try 3 submits anew and cancels try 1's, rather than leave it running for the sweeper."""
    older = sql_try(TaskInstance("nightly", RUN, "insert", max_tries=2), retries=2)
    task = DLISqlJobOperator(task_id="insert", sql=INSERT["sql"], queue_name=INSERT["queue_name"], retries=2)
    second_try = TaskInstance("nightly", RUN, "insert", try_number=2, max_tries=2)
    newest = str(DLIHook().submit_sql_job(task.job_body(context(second_try)))["job_id"])
    if newest_status == "CANCELLED":
        DLIHook().cancel_sql_job(newest)
    else:
        long_jobs.finish(newest, newest_status)
    retry = sql_try(TaskInstance("nightly", RUN, "insert", try_number=3, max_tries=2), retries=2)
    assert retry not in (older, newest)
    assert long_jobs.state_of(older) == "CANCELLED"
    assert long_jobs.state_of(retry) in {"LAUNCHING", "RUNNING"}


def test_a_sql_retry_adopts_only_its_own_task_instances_job(
    long_jobs: DLIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another deployment's job of the same DAG, run and task, and a cleared task's earlier job, are not the
    retry's: whose job it is, the owner record in the tags says, as for batch jobs."""
    monkeypatch.setenv("AIRFLOW__DLI__INSTANCE_ID", "staging")
    other_deployments = sql_try(TaskInstance("nightly", RUN, "insert", max_tries=1))
    monkeypatch.setenv("AIRFLOW__DLI__INSTANCE_ID", "production")
    ours = sql_try(TaskInstance("nightly", RUN, "insert", try_number=2, max_tries=1))
    assert ours != other_deployments
    cleared = sql_try(TaskInstance("nightly", RUN, "insert", try_number=3, max_tries=3))  # a person's clear
    assert cleared != ours
    assert {long_jobs.state_of(job_id) for job_id in (other_deployments, ours, cleared)} <= {"LAUNCHING", "RUNNING"}

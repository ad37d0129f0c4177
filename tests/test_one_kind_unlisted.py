"""A failed listing of one kind of job never keeps the other kind's jobs running.

A DAG run's live jobs come from two listings, one per kind: the batch API's and the SQL API's. Either can fail on
its own: an IAM user with rights on SQL jobs alone gets 403 from ``GET /batches``, or one API is down. Each tool
that cancels a run's (or a deployment's) jobs cancels every job it could list, then reports what it could not:
the kill switch fails, the notifier raises (Airflow logs it: a callback cannot fail its task), the sweeper's
report and XCom keep it, the CLI exits non-zero. Each test here runs both ways round, against the emulator
refusing one kind's listing with DLI's 403 error body.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.exceptions import DLIError
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.operators.dli import DLISqlJobOperator
from airflow_provider_dli.reconcile import sweep
from tests.airflow_cli import AirflowHome
from tests.conftest import RecordedAirflow
from tests.test_cli import CLI
from tests.test_ownership import TaskInstance, context, kill_switch, run_wide_notifier, submit

DAG, RUN = "nightly", "scheduled__2026-12-01T00:00:00+00:00"
LISTINGS = {"batch": r"/v2\.0/[^/]+/batches", "sql": r"/v1\.0/[^/]+/jobs"}
"""Each kind's listing, as the emulator's fault paths match it."""
UNLISTED = {
    "batch": "The DLI batch jobs could not be listed: DLI GET",
    "sql": "The DLI SQL jobs could not be listed: DLI GET",
}
CANCELLED = {"batch": "dead", "sql": "CANCELLED"}


def run_jobs(dli: DLIEmulator) -> dict[str, str]:
    """One live job of each kind, submitted by the run's fire-and-forget tasks (their owner records say so)."""
    batch_id, _ = submit(DAG, RUN, "spark")
    sql = DLISqlJobOperator(task_id="insert", sql="INSERT INTO t SELECT * FROM s", wait_for_completion=False)
    sql_id = str(sql.execute(context(TaskInstance(DAG, RUN, "insert")))["job_id"])
    assert {dli.state_of(batch_id), dli.state_of(sql_id)} <= {"starting", "LAUNCHING", "RUNNING"}
    return {"batch": batch_id, "sql": sql_id}


def refuse_listing(dli: DLIEmulator, kind: str) -> None:
    """DLI refuses every listing of ``kind`` with 403, as for a user without rights on that API."""
    dli.add_fault(LISTINGS[kind], method="GET", status=403, times=None)


def other(kind: str) -> str:
    return "sql" if kind == "batch" else "batch"


def assert_only_the_listed_kind_cancelled(dli: DLIEmulator, jobs: dict[str, str], unlisted: str) -> None:
    listed = other(unlisted)
    assert dli.state_of(jobs[listed]) == CANCELLED[listed]
    assert dli.state_of(jobs[unlisted]) != CANCELLED[unlisted]  # never seen, so never cancelled
    assert [event.batch_id for event in dli.cancel_events] == [jobs[listed]]


@pytest.mark.parametrize("unlisted", ["batch", "sql"])
def test_the_kill_switch_cancels_the_kind_it_could_list_then_fails(dli_connection: DLIEmulator, unlisted: str) -> None:
    jobs = run_jobs(dli_connection)
    refuse_listing(dli_connection, unlisted)
    with pytest.raises(Exception, match=re.escape(UNLISTED[unlisted])) as raised:
        kill_switch(DAG, RUN)
    assert "HTTP 403" in str(raised.value)
    assert_only_the_listed_kind_cancelled(dli_connection, jobs, unlisted)


@pytest.mark.parametrize("unlisted", ["batch", "sql"])
def test_the_kill_switchs_dry_run_fails_when_a_kind_could_not_be_listed(
    dli_connection: DLIEmulator, unlisted: str
) -> None:
    """A preview that shows one kind only must not pass for the whole run's."""
    jobs = run_jobs(dli_connection)
    refuse_listing(dli_connection, unlisted)
    with pytest.raises(Exception, match=re.escape(UNLISTED[unlisted])):
        kill_switch(DAG, RUN, list_only=True)
    assert dli_connection.cancel_events == []
    assert dli_connection.state_of(jobs[other(unlisted)]) != CANCELLED[other(unlisted)]


@pytest.mark.parametrize("unlisted", ["batch", "sql"])
def test_the_run_wide_notifier_cancels_the_kind_it_could_list_then_raises(
    dli_connection: DLIEmulator, unlisted: str
) -> None:
    jobs = run_jobs(dli_connection)
    refuse_listing(dli_connection, unlisted)
    with pytest.raises(DLIError, match=re.escape(UNLISTED[unlisted])):
        run_wide_notifier(DAG, RUN)
    assert_only_the_listed_kind_cancelled(dli_connection, jobs, unlisted)


@pytest.mark.parametrize("unlisted", ["batch", "sql"])
def test_the_sweeper_sweeps_the_kind_it_could_list_and_reports_the_other(
    dli_connection: DLIEmulator, unlisted: str
) -> None:
    jobs = run_jobs(dli_connection)
    refuse_listing(dli_connection, unlisted)
    airflow = RecordedAirflow({DAG: {RUN: {"spark": "failed", "insert": "failed"}}}, failed_runs=frozenset({RUN}))
    report = sweep(DLIHook(), airflow, instance_id="airflow", grace_period=timedelta(0))
    assert [(v.batch_id, v.outcome) for v in report.orphans] == [(jobs[other(unlisted)], "cancelled")]
    assert_only_the_listed_kind_cancelled(dli_connection, jobs, unlisted)
    result: dict[str, Any] = report.result()
    assert str(result["listing_error"]).startswith(UNLISTED[unlisted])
    assert "HTTP 403" in result["listing_error"]


@pytest.mark.parametrize("unlisted", ["batch", "sql"])
def test_the_cli_cancels_the_kind_it_could_list_then_exits_non_zero(
    dli_connection: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path, unlisted: str
) -> None:
    jobs = run_jobs(dli_connection)
    refuse_listing(dli_connection, unlisted)

    def dli(*args: str) -> subprocess.CompletedProcess[str]:
        env = airflow_home.env(tmp_path, dli_connection)
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False)

    listed = dli("jobs", DAG, RUN)
    assert listed.returncode != 0
    assert jobs[other(unlisted)] in listed.stdout
    assert UNLISTED[unlisted] in listed.stderr

    cancelled = dli("cancel", DAG, RUN)
    assert cancelled.returncode != 0, cancelled.stdout[-3000:]
    assert re.search(rf"{jobs[other(unlisted)]}\s+{other(unlisted)}\s+cancelled", cancelled.stdout)
    assert UNLISTED[unlisted] in cancelled.stderr
    assert_only_the_listed_kind_cancelled(dli_connection, jobs, unlisted)


def test_refused_credentials_are_not_sent_again_for_the_other_kind(dli_connection: DLIEmulator) -> None:
    """A 401 counts towards the gateway's lock of the access key, and the same key signs both listings."""
    run_jobs(dli_connection)
    dli_connection.add_fault(LISTINGS["batch"], method="GET", status=401, times=None)
    with pytest.raises(Exception, match=re.escape(UNLISTED["batch"])) as raised:
        kill_switch(DAG, RUN)
    assert "HTTP 401" in str(raised.value)
    assert "The DLI SQL jobs could not be listed: not asked, since DLI refused the credentials" in str(raised.value)
    assert [r.path for r in dli_connection.request_log if r.method == "GET" and r.path.endswith("/jobs")] == []
    assert dli_connection.cancel_events == []

"""The orphan sweeper: its decision table row by row, job ownership, and a sweep over real DAG runs.

The DAG runs (``airflow dags test``, with the emulator) leave orphans behind the ways that a callback or
``on_kill`` can fail, next to healthy jobs of waiting, deferred and fire-and-forget tasks and jobs that this
Airflow did not submit. The sweeper then runs as a real task, asking Airflow about each owner through the
Task SDK, and must cancel exactly the orphans.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.identity import OWNER_CONF_KEY, JobOwner, instance_id, owner_of
from airflow_provider_dli.operators.dli import DLIOrphanSweepOperator
from airflow_provider_dli.owned_jobs import live_batches
from airflow_provider_dli.reconcile import ACTIVE, DECISION_TABLE, ELSEWHERE, FAILED, Facts, decide, sweep
from tests.airflow_cli import AIRFLOW, REPO, AirflowHome
from tests.conftest import SUBMIT_BODY, RecordedAirflow, wait_until

TEST_DAGS = Path(__file__).parent / "dags"


def facts(owner_state: str, **changes: Any) -> Facts:
    values: dict[str, Any] = {
        "dated": True,
        "young": False,
        "superseded": False,
        "owner_state": owner_state,
        "wait": True,
        "instance_named": True,
        "run_failed": False,
    }
    return Facts(**{**values, **changes})


# The decision table, row by row: (facts, decision, reason)
ROWS: list[tuple[Facts, str, str]] = [
    (facts("failed", dated=False), "keep", "no creation time: left alone"),
    (facts("failed", young=True), "keep", "younger than the grace period"),
    (facts("running", superseded=True), "cancel", "the task's live try has a newer job"),
    (facts("deferred", superseded=True), "cancel", "the task's live try has a newer job"),
    (facts("queued", superseded=True), "keep", "the task is queued"),  # the coming try may take it over
    (facts("no dag run", instance_named=False), "keep", f"its DAG run is {ELSEWHERE}"),
    (facts("no dag run"), "cancel", "its DAG run no longer exists"),
    (facts("no task instance", instance_named=False), "keep", f"its task instance is {ELSEWHERE}"),
    (facts("no task instance"), "cancel", "its task instance no longer exists"),
    *[(facts(state), "cancel", f"the task is {state}") for state in sorted(FAILED)],
    *[(facts(state, run_failed=True), "keep", f"the task is {state}") for state in sorted(ACTIVE)],
    (facts("up_for_retry"), "keep", "the retry takes this job over"),
    (facts("success", wait=True), "cancel", "the task is success, but meant to wait"),
    (facts("skipped", wait=True), "cancel", "the task is skipped, but meant to wait"),
    (facts("success", wait=False, run_failed=True), "cancel", "fire-and-forget job of a failed DAG run"),
    (facts("success", wait=False, run_failed=False), "keep", "fire-and-forget job (wait_for_completion=False)"),
    (facts("some_new_state"), "keep", "unknown task state some_new_state: left alone"),
]


@pytest.mark.parametrize(("row", "decision", "reason"), ROWS, ids=[f"{r[0].owner_state}-{r[1]}" for r in ROWS])
def test_decision_table_row(row: Facts, decision: str, reason: str) -> None:
    assert decide(row) == (decision, reason)


def test_every_row_is_tested_and_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for rule in DECISION_TABLE:
        template = re.escape(rule.reason).replace(re.escape("{owner_state}"), ".+")
        assert any(re.fullmatch(template, reason) for _, _, reason in ROWS), rule.reason
        assert rule.reason.replace("{owner_state}", "STATE") in readme, rule.reason


# Ownership


def _owner_fields() -> dict[str, Any]:
    return {
        "instance": "airflow",
        "dag_id": "d",
        "run_id": "r",
        "task_id": "t",
        "map_index": -1,
        "try_number": 1,
        "wait": True,
    }


def test_owner_comes_back_exactly_from_a_listing(hook: DLIHook) -> None:
    owner = JobOwner("prod-eu", "dag with spaces/ü", "manual__2026-01-01T00:00:00+00:00", "t" * 200, 7, 3, False)
    batch_id = hook.create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: owner.conf_value(), "spark.x": "1"}})["id"]
    [listed] = [batch for batch in hook.list_batches() if batch["id"] == batch_id]
    assert owner_of(listed) == owner
    assert owner_of(hook.get_batch(batch_id)) == owner


@pytest.mark.parametrize(
    "req_body",
    [
        None,
        "not json",
        json.dumps(SUBMIT_BODY),
        json.dumps({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: "{"}}),
        json.dumps({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: json.dumps({"instance": "a"})}}),
        json.dumps({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: json.dumps({**_owner_fields(), "map_index": "1"})}}),
        json.dumps({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: json.dumps({**_owner_fields(), "dag_id": ""})}}),
    ],
)
def test_jobs_without_a_well_formed_owner_belong_to_nobody(req_body: str | None) -> None:
    assert owner_of({"id": "x", "req_body": req_body}) is None


def test_instance_id_comes_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert instance_id() == "airflow"
    monkeypatch.setenv("AIRFLOW__DLI__INSTANCE_ID", "prod-eu")
    assert instance_id() == "prod-eu"
    monkeypatch.setenv("AIRFLOW__DLI__INSTANCE_ID", "prod eu")
    with pytest.raises(ValueError, match=r"\[dli\] instance_id must be 1 to 64 letters"):
        instance_id()


def test_operator_arguments_are_checked() -> None:
    assert DLIOrphanSweepOperator(task_id="s", grace_period=90).grace_period == timedelta(seconds=90)
    with pytest.raises(ValueError, match="grace_period must be a timedelta or seconds >= 0"):
        DLIOrphanSweepOperator(task_id="s", grace_period=-1)
    with pytest.raises(ValueError, match="instance_id must be 1 to 64 letters"):
        DLIOrphanSweepOperator(task_id="s", instance_id="two words")
    with pytest.raises(ValueError, match="max_workers must be a whole number from 1 to 32"):
        DLIOrphanSweepOperator(task_id="s", max_workers=64)  # at parse time, not when orphans are found


# One sweep over real DAG runs


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


INSTANCE = {"AIRFLOW__DLI__INSTANCE_ID": "prod-eu"}
"""The deployment's own instance id: with the default, a deleted DAG run's job would be left alone."""


def run_dag(home: AirflowHome, dag_id: str, emulator: DLIEmulator) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = home.run(
        "dags", "test", dag_id, dags_folder=TEST_DAGS, emulator=emulator, **INSTANCE
    )
    return result


def jobs_of(emulator: DLIEmulator, dag_id: str) -> set[str]:
    return {
        job.id
        for job in emulator.jobs.values()
        if (owner_of({"req_body": json.dumps(job.body)}) or _NO).dag_id == dag_id
    }


_NO = JobOwner("", "", "", "", -1, 0, False)


def polled(emulator: DLIEmulator) -> set[str]:
    """The jobs whose state the emulator was asked for: a task polls (in the worker, or in its trigger when
    deferred) only once it waits on its job. Another task's polls say nothing of this one's."""
    return {record.path.split("/")[-2] for record in emulator.request_log if record.path.endswith("/state")}


def sweep_result(home: AirflowHome, dag_id: str) -> dict[str, Any]:
    """The result of the DAG's newest sweep: other tests sweep in the same Airflow home too."""
    with sqlite3.connect(home.path / "airflow.db") as db:
        [(value,)] = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'sweep' AND key = 'return_value' "
            "ORDER BY dag_run_id DESC LIMIT 1",
            (dag_id,),
        ).fetchall()
    result: dict[str, Any] = json.loads(value)
    return result


def test_one_sweep_cancels_every_orphan_and_no_healthy_job(
    dli_emulator: DLIEmulator, airflow_home: AirflowHome, make_hook: Any, background: list[subprocess.Popen[bytes]]
) -> None:
    dli = dli_emulator
    # Orphans: every DELETE fails while these runs fail, so the notifier and on_kill cannot cancel.
    unreachable = dli.add_fault(r"/v2\.0/.*/batches/.*", method="DELETE", status=503, times=None)
    assert run_dag(airflow_home, "dli_test_sweep_unreachable_cancel", dli).returncode != 0
    assert unreachable.hits >= 3  # the notifier (twice, one per mapped job) and on_kill tried
    dli.clear_faults()
    assert run_dag(airflow_home, "dli_test_sweep_no_notifier", dli).returncode != 0
    assert run_dag(airflow_home, "dli_test_sweep_deleted_run", dli).returncode == 0
    assert airflow_home.run("dags", "delete", "-y", "dli_test_sweep_deleted_run", dags_folder=TEST_DAGS).returncode == 0
    orphans = {
        *jobs_of(dli, "dli_test_sweep_unreachable_cancel"),
        *jobs_of(dli, "dli_test_sweep_no_notifier"),
        *jobs_of(dli, "dli_test_sweep_deleted_run"),
    }
    assert len(orphans) == 5

    # Healthy: fire-and-forget of a successful run; tasks waiting on their jobs, in the worker and deferred.
    assert run_dag(airflow_home, "dli_test_sweep_fire_and_forget", dli).returncode == 0
    for dag_id in ("dli_test_sweep_waiting", "dli_test_sweep_deferred"):
        env = airflow_home.env(TEST_DAGS, dli, **INSTANCE)
        process = subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        background.append(process)
        wait_until(lambda dag_id=dag_id: jobs_of(dli, dag_id) & polled(dli), f"{dag_id} to wait on its job")  # type: ignore[misc]
    # Not ours: a job submitted without the provider's owner entry, and one of another Airflow instance.
    hook = make_hook(dli.connection())
    other = JobOwner("other-airflow", "dli_test_sweep_no_notifier", "r", "submit", -1, 1, True)
    foreign = {
        hook.create_batch(SUBMIT_BODY)["id"],
        hook.create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: other.conf_value()}})["id"],
    }
    healthy = set(dli.jobs) - orphans

    swept = run_dag(airflow_home, "dli_test_sweeper", dli)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    result = sweep_result(airflow_home, "dli_test_sweeper")
    assert {event.batch_id for event in dli.cancel_events} == orphans
    assert all(dli.state_of(batch_id) == "dead" for batch_id in orphans)
    assert all(dli.state_of(batch_id) != "dead" for batch_id in healthy)
    assert result["live_jobs"] == len(orphans) + len(healthy)
    assert result["not_ours"] == len(foreign)
    assert result["kept"] == len(healthy) - len(foreign)
    reasons = {(o["dag_id"], o["task_id"], o["map_index"]): (o["task_state"], o["reason"]) for o in result["orphans"]}
    assert reasons == {
        ("dli_test_sweep_unreachable_cancel", "submit_mapped", 0): (
            "success",
            "fire-and-forget job of a failed DAG run",
        ),
        ("dli_test_sweep_unreachable_cancel", "submit_mapped", 1): (
            "success",
            "fire-and-forget job of a failed DAG run",
        ),
        ("dli_test_sweep_unreachable_cancel", "submit_timeout", -1): ("failed", "the task is failed"),
        ("dli_test_sweep_no_notifier", "submit", -1): ("success", "fire-and-forget job of a failed DAG run"),
        ("dli_test_sweep_deleted_run", "submit", -1): ("no dag run", "its DAG run no longer exists"),
    }
    assert {o["outcome"] for o in result["orphans"]} == {"cancelled"}
    output = swept.stdout + swept.stderr
    for batch_id in healthy - foreign:
        assert re.search(rf"{batch_id}\s.*kept", output), f"{batch_id} is missing from the sweep's table"


@pytest.fixture
def running_jobs(make_hook: Any) -> Iterator[tuple[DLIEmulator, DLIHook]]:
    with DLIEmulator(starting_seconds=0, running_seconds=600) as emulator:
        yield emulator, make_hook(emulator.connection())


def test_a_listing_without_req_body_falls_back_to_each_jobs_details(running_jobs: tuple[DLIEmulator, DLIHook]) -> None:
    """DLI's docs disagree on whether a listing carries req_body, and on how it filters: either way works."""
    dli, hook = running_jobs
    owner = JobOwner("airflow", "d", "r", "t", -1, 1, True)
    owned = hook.create_batch({**SUBMIT_BODY, "name": "airflow.d.r.t", "conf": {OWNER_CONF_KEY: owner.conf_value()}})
    hook.create_batch({**SUBMIT_BODY, "name": "someone-elses-job"})
    sessions = [{key: value for key, value in b.items() if key != "req_body"} for b in hook.list_batches()]
    listing = {"from": 0, "total": len(sessions), "sessions": sessions}
    # Every listing answers with all jobs, whatever state it asked for, and without req_body.
    dli.add_fault(r"/v2\.0/.*/batches", method="GET", status=200, body=json.dumps(listing), times=None)
    requests_before = len(dli.request_log)
    batches = {batch["id"]: batch for batch in live_batches(hook)}
    assert owner_of(batches[owned["id"]]) == owner
    assert len(batches) == 2
    sent = [(r.method, r.path.rsplit("/", 1)[-1]) for r in dli.request_log[requests_before:]]
    # One listing (the server ignored the state filter, so it held every job), then the details of the one
    # job whose name says this provider may own it.
    assert sent == [("GET", "batches"), ("GET", owned["id"])]


@pytest.mark.parametrize("edition", ["t-cloud", "huawei", "any"])
def test_a_sweep_works_whichever_list_parameters_dli_takes(make_hook: Any, edition: str) -> None:
    """The list API's parameters differ by edition (T Cloud documents no ``order``, Huawei's SDK no ``owner``);
    a server that refuses an undocumented one with 400 ``DLI.0001`` must not stop the sweep."""
    with DLIEmulator(starting_seconds=0, running_seconds=600, readings={"list_parameters": edition}) as dli:
        hook = make_hook(dli.connection())
        failed_owner = JobOwner("airflow", "d", "r1", "t", -1, 1, True)
        orphan = hook.create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: failed_owner.conf_value()}})["id"]
        airflow = RecordedAirflow({"d": {"r1": {"t": "failed"}}})
        swept = sweep(hook, airflow, instance_id="airflow", grace_period=timedelta(0))
        assert [(v.batch_id, v.outcome) for v in swept.orphans] == [(orphan, "cancelled")]
        assert sweep(hook, airflow, instance_id="airflow", grace_period=timedelta(0)).orphans == []
        # At most one refusal per process: the second sweep, and the second listing of each, know it.
        refused = [r for r in dli.request_log if r.path.endswith("/batches") and r.status == 400]
        assert len(refused) <= (0 if edition == "any" else 1)
        assert [r.status for r in dli.request_log if r.method == "DELETE"] == [200]


def test_a_cancel_that_fails_is_reported_and_retried_by_the_next_sweep(
    dli_emulator: DLIEmulator, hook: DLIHook
) -> None:
    failed_owner = JobOwner("airflow", "d", "r1", "t", -1, 1, True)
    running_owner = JobOwner("airflow", "d", "r2", "t", -1, 1, True)
    orphan = hook.create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: failed_owner.conf_value()}})["id"]
    hook.create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: running_owner.conf_value()}})
    airflow = RecordedAirflow({"d": {"r1": {"t": "failed"}, "r2": {"t": "running"}}})
    options: dict[str, Any] = {"instance_id": "airflow", "grace_period": timedelta(0)}

    young = sweep(hook, airflow, instance_id="airflow", grace_period=timedelta(minutes=5))
    assert [v.reason for v in young.verdicts] == ["younger than the grace period"] * 2
    dry_run = sweep(hook, airflow, list_only=True, **options)
    assert [(v.batch_id, v.outcome) for v in dry_run.orphans] == [(orphan, "listed")]
    dli_emulator.add_fault(r"/v2\.0/.*/batches/[^/]+", method="DELETE", status=503, times=None)
    failed = sweep(hook.__class__(hook.dli_conn_id, retry_limit=0), airflow, **options)
    assert [(v.batch_id, v.outcome) for v in failed.not_cancelled] == [(orphan, "error")]
    assert "HTTP 503" in str(failed.result()["orphans"][0]["error"])
    assert dli_emulator.cancel_events == []
    dli_emulator.clear_faults()
    retried = sweep(hook, airflow, **options)
    assert [(v.batch_id, v.outcome) for v in retried.orphans] == [(orphan, "cancelled")]
    assert retried.result()["kept"] == 1
    assert "the task is running" in retried.table()

"""Whose job is it: every tool that adopts or cancels a job decides from the job's owner record, never from its
name; a name is a search hint of DLI's documented characters; run-wide listings are bounded; one job per try.

The operators and the notifier are called as Airflow calls them, with the task instance's identity in the
context, where the test is about whose job it is; real DAG runs (``airflow dags test``) where Airflow's own
behaviour (retries, deferral) is part of the story. DLI is the emulator, or a forwarding proxy in front of it
for what DLI may do that the emulator does not play (an answer lost after the job was made).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.identity import owner_of
from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import (
    DLICancelBatchOperator,
    DLIOrphanSweepOperator,
    DLISubmitBatchOperator,
)
from tests.airflow_cli import AirflowHome, migrated_home
from tests.conftest import STILL, SUBMIT_BODY, RecordedAirflow
from tests.hostile_server import HostileServer, Received, head

TEST_DAGS = Path(__file__).parent / "dags"
DAG_TEST_AT = Path(__file__).parent / "dag_test_at.py"
OWNER_KEY = "spark.airflow.dli.owner"
DLI_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""A job name of DLI's documented characters."""


READINGS: dict[str, dict[str, str]] = {
    "as-sent": {},
    "whole-names-t-cloud": {
        "job_name_filter": "whole",
        "job_name_characters": "documented",
        "list_parameters": "t-cloud",
    },
    "filter-ignored-normalized-huawei": {
        "job_name_filter": "ignored",
        "req_body": "normalized",
        "list_parameters": "huawei",
    },
    "listings-without-req-body": {"req_body": "absent", "job_name_characters": "documented"},
}
"""The ways DLI may behave where its docs are silent (how ``job_name`` matches, which names it takes, the form of
``req_body``) or its editions differ (which list parameters it takes): every test here holds under each."""


@pytest.fixture(params=list(READINGS.values()), ids=list(READINGS))
def dli(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[DLIEmulator]:
    """The emulator playing one reading of DLI; the connection ``dli_default`` points at it."""
    with DLIEmulator(starting_seconds=STILL, running_seconds=STILL, readings=request.param) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(emulator.connection()))
        yield emulator


# The task instance, DAG run and DAG that Airflow puts into a task's context (only what the provider reads)


@dataclass
class TaskInstance:
    dag_id: str
    run_id: str
    task_id: str = "submit"
    map_index: int = -1
    try_number: int = 1
    max_tries: int = 0
    """Airflow's: the task's retries on a first try; a person's clear raises it to try_number + retries."""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    run_after: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    clear_number: int = 0


@dataclass
class Dag:
    dag_id: str


def context(ti: TaskInstance) -> Any:
    return {"ti": ti, "dag_run": DagRun(ti.dag_id, ti.run_id), "run_id": ti.run_id, "dag": Dag(ti.dag_id)}


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], None]:
    """Act as the Airflow deployment with this ``[dli] instance_id`` (None: the default)."""

    def act_as(instance_id: str | None) -> None:
        if instance_id is None:
            monkeypatch.delenv("AIRFLOW__DLI__INSTANCE_ID", raising=False)
        else:
            monkeypatch.setenv("AIRFLOW__DLI__INSTANCE_ID", instance_id)

    return act_as


def submit(
    dag_id: str,
    run_id: str,
    task_id: str = "submit",
    *,
    try_number: int = 1,
    retries: int = 0,
    max_tries: int | None = None,
    **operator: Any,
) -> tuple[str, TaskInstance]:
    """A fire-and-forget submit by this task instance's try (a first try or a retry unless ``max_tries`` says)."""
    ti = TaskInstance(
        dag_id, run_id, task_id, try_number=try_number, max_tries=retries if max_tries is None else max_tries
    )
    task = DLISubmitBatchOperator(
        task_id=task_id,
        file=SUBMIT_BODY["file"],
        class_name=SUBMIT_BODY["className"],
        wait_for_completion=False,
        retries=retries,
        **operator,
    )
    return str(task.execute(context(ti))), ti


def kill_switch(dag_id: str, run_id: str, **operator: Any) -> list[dict[str, Any]]:
    task = DLICancelBatchOperator(task_id="kill_switch", this_dag_run=True, **operator)
    return cast("list[dict[str, Any]]", task.execute(context(TaskInstance(dag_id, run_id, "kill_switch"))))


def cancel_by_name(job_name: str) -> list[dict[str, Any]]:
    task = DLICancelBatchOperator(task_id="cancel", job_name=job_name)
    return cast("list[dict[str, Any]]", task.execute(context(TaskInstance("ops", "manual", "cancel"))))


def run_wide_notifier(dag_id: str, run_id: str) -> None:
    DLICancelBatchNotifier(this_dag_run=True).notify(context(TaskInstance(dag_id, run_id, "fail")))


def cancelled(emulator: DLIEmulator) -> set[str]:
    return {event.batch_id for event in emulator.cancel_events}


def list_requests(emulator: DLIEmulator) -> int:
    return sum(record.method == "GET" and record.path.endswith("/batches") for record in emulator.request_log)


# 1. Another deployment that shares the DLI project runs the same DAG: same dag_id, run_id and task_id


RUN = "scheduled__2026-11-28T00:00:00+00:00"


def test_kill_switch_leaves_another_deployments_job_alone(dli: DLIEmulator, deployment: Any) -> None:
    deployment("prod")
    prod, _ = submit("nightly", RUN)
    deployment("staging")
    staging, _ = submit("nightly", RUN)
    outcomes = kill_switch("nightly", RUN)
    assert [outcome["batch_id"] for outcome in outcomes] == [staging]
    assert cancelled(dli) == {staging}
    assert dli.state_of(prod) == "starting"


def test_run_wide_notifier_leaves_another_deployments_job_alone(dli: DLIEmulator, deployment: Any) -> None:
    deployment("prod")
    prod, _ = submit("nightly", RUN)
    deployment("staging")
    staging, _ = submit("nightly", RUN)
    run_wide_notifier("nightly", RUN)
    assert cancelled(dli) == {staging}
    assert dli.state_of(prod) == "starting"


def test_retry_never_adopts_another_deployments_job(dli: DLIEmulator, deployment: Any) -> None:
    deployment("prod")
    prod, _ = submit("nightly", RUN)
    deployment("staging")
    retried, _ = submit("nightly", RUN, try_number=2, retries=1)  # the first try failed before it submitted
    assert retried != prod
    assert len(dli.jobs) == 2
    assert cancelled(dli) == set()


def owners(emulator: DLIEmulator) -> dict[str, Any]:
    """Every job's owner record, by job id."""
    return {job.id: owner_of({"req_body": json.dumps(job.body)}) for job in list(emulator.jobs.values())}


def test_two_deployments_run_the_same_dag_run_in_real_dag_runs(
    airflow_home: AirflowHome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Real DAG runs in two Airflow homes (prod and staging, each its own database and instance id) of the same
    DAG at the same time, so the same run id, task ids and job names. Staging's create is refused once (its
    retry then looks for its earlier try's job), its check fails, its kill switch and its DAG-level notifier
    cancel the run's jobs, and it sweeps: prod's job lives through all of it."""
    prod_home = migrated_home(tmp_path_factory.mktemp("prod-airflow-home"))
    dag_file, dag_id = str(TEST_DAGS / "dli_test_ownership.py"), "dli_test_two_deployments"
    with DLIEmulator(starting_seconds=0, running_seconds=STILL) as emulator:

        def run_in(home: AirflowHome, instance_id: str, *conf: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, str(DAG_TEST_AT), dag_file, dag_id, "2026-11-28T00:00:00+00:00", *conf]
            env = home.env(TEST_DAGS, emulator, AIRFLOW__DLI__INSTANCE_ID=instance_id)
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)

        prod = run_in(prod_home, "prod")
        assert prod.returncode == 0, prod.stdout[-3000:] + prod.stderr[-3000:]
        [prod_job] = emulator.jobs
        refused = emulator.add_fault(r".*/batches", method="POST", status=403)
        staging = run_in(airflow_home, "staging", '{"fail": true}')
        output = staging.stdout + staging.stderr
        assert "DAG run manual__2026-11-28T00:00:00+00:00: failed" in output, output[-3000:]
        assert refused.hits == 1
        by_job = owners(emulator)
        [staging_job] = [batch_id for batch_id, owner in by_job.items() if owner.instance == "staging"]
        assert (by_job[staging_job].run_id, by_job[staging_job].try_number) == (by_job[prod_job].run_id, 2)
        assert "(callback of DAG run manual__2026-11-28T00:00:00+00:00)" in output, output[-3000:]  # the notifier ran
        swept = airflow_home.run(
            "dags",
            "test",
            "dli_test_sweeper",
            dags_folder=TEST_DAGS,
            emulator=emulator,
            AIRFLOW__DLI__INSTANCE_ID="staging",
        )
        assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
        assert cancelled(emulator) == {staging_job}
        assert emulator.state_of(prod_job) == "running"


# 2. Run ids that sanitize to the same characters, or one a prefix of the other


ALIKE = [("nightly+2026-01-01", "nightly_2026-01-01"), ("rerun:1", "rerun~1"), ("r1", "r1.retry")]


@pytest.mark.parametrize(("run_id", "other_run_id"), ALIKE, ids=["plus", "colon-tilde", "dot-prefix"])
def test_run_ids_that_sanitize_alike_are_different_runs(dli: DLIEmulator, run_id: str, other_run_id: str) -> None:
    other, _ = submit("nightly", other_run_id)
    own, _ = submit("nightly", run_id)
    names = {dli.jobs[batch_id].body["name"] for batch_id in (own, other)}
    assert len(names) == 2, names  # distinct inputs, distinct names
    assert all(DLI_NAME.fullmatch(name) for name in names), names
    retried, _ = submit("nightly", run_id, try_number=2, retries=1)
    assert retried == own  # the retry takes its own earlier try's job over, never the other run's
    assert [outcome["batch_id"] for outcome in kill_switch("nightly", run_id)] == [own]
    assert dli.state_of(other) == "starting"
    run_wide_notifier("nightly", other_run_id)
    assert dli.state_of(other) == "dead"
    assert cancelled(dli) == {own, other}


# 6. Names: only DLI's documented characters, 128 at most, whatever the ids


def test_long_ids_give_a_name_of_documented_characters(dli: DLIEmulator) -> None:
    dag_id, task_id = "d" * 200 + ".ü", "t" * 240
    first, _ = submit(dag_id, RUN, task_id)
    second, _ = submit(dag_id, RUN.replace("28", "29"), task_id)
    names = [dli.jobs[batch_id].body["name"] for batch_id in (first, second)]
    assert all(DLI_NAME.fullmatch(name) for name in names), names
    assert names[0] != names[1]


# 8. Run-wide tools list live jobs by state, not the project's whole history


def test_run_wide_cancels_read_a_few_pages_in_a_project_with_a_long_history(dli: DLIEmulator) -> None:
    finished = {"dli.emulator.starting_seconds": 0, "dli.emulator.running_seconds": 0}
    dli.seed_jobs(5000, {**SUBMIT_BODY, "name": "history", "conf": finished})
    live, _ = submit("nightly", RUN)
    before = list_requests(dli)
    run_wide_notifier("nightly", RUN)
    notifier_listings = list_requests(dli) - before
    assert cancelled(dli) == {live}
    again, _ = submit("nightly", RUN.replace("28", "27"))
    before = list_requests(dli)
    assert [outcome["batch_id"] for outcome in kill_switch("nightly", RUN.replace("28", "27"))] == [again]
    kill_switch_listings = list_requests(dli) - before
    assert notifier_listings <= 4, notifier_listings  # one listing per live state, not 51 pages of history
    assert kill_switch_listings <= 4, kill_switch_listings


# 7. DLICancelBatchOperator(job_name=...) whatever DLI's job_name filter does


class Proxy:
    """Forwards every request to the emulator as it came (signature and all), and lets a test rewrite answers."""

    def __init__(self, emulator: DLIEmulator, rewrite: Callable[[Received, int, bytes], tuple[int, bytes]]) -> None:
        self.emulator, self.rewrite = emulator, rewrite
        self.server = HostileServer(self.answer)

    def answer(self, server: HostileServer, request: Received, conn: socket.socket) -> None:
        target = urlsplit(self.emulator.url)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
        try:
            upstream.request(request.method, request.path, body=request.body, headers=request.headers)
            response = upstream.getresponse()
            status, body = self.rewrite(request, response.status, response.read())
        finally:
            upstream.close()
        content_type = "text/html" if body.startswith(b"<") else "application/json"
        server.send(conn, head(status, {"Content-Type": content_type, "Content-Length": str(len(body))}) + body)

    def __enter__(self) -> Proxy:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(None, None, None)

    def connection(self) -> dict[str, Any]:
        return {**self.emulator.connection(), "host": self.server.url}


@pytest.fixture
def through_proxy(
    dli: DLIEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Callable[[Received, int, bytes], tuple[int, bytes]]], Proxy]]:
    """``through_proxy(rewrite)``: the connection ``dli_default`` now reaches the emulator through a proxy."""
    proxies: list[Proxy] = []

    def start(rewrite: Callable[[Received, int, bytes], tuple[int, bytes]]) -> Proxy:
        proxy = Proxy(dli, rewrite).__enter__()
        proxies.append(proxy)
        monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(proxy.connection()))
        return proxy

    yield start
    for proxy in proxies:
        proxy.__exit__()


def test_cancel_by_job_name_whatever_dlis_filter_does(dli: DLIEmulator) -> None:
    """Under each reading of DLI's ``job_name`` filter: parts of names, whole names only, or ignored."""
    nightly = [submit("nightly", RUN, f"part_{n}", name=f"nightly-sales-{n}")[0] for n in range(2)]
    other, _ = submit("weekly", RUN, name="weekly-sales")
    outcomes = cancel_by_name("nightly")
    assert sorted(outcome["batch_id"] for outcome in outcomes) == sorted(nightly)
    assert dli.state_of(other) == "starting"


# 5. A create answered with a server-side error, or an unreadable 200, after DLI made the job


def made_then(status: int, answer: bytes) -> Callable[[Received, int, bytes], tuple[int, bytes]]:
    """DLI makes the job, then the answer to the create is this one."""

    def rewrite(request: Received, made: int, body: bytes) -> tuple[int, bytes]:
        if request.method == "POST" and request.path.split("?")[0].endswith("/batches") and made == 200:
            return status, answer
        return made, body

    return rewrite


SERVER_SIDE_ERROR = json.dumps({"error_code": "DLI.0999", "error_msg": "Internal error", "request_id": "r"}).encode()


@pytest.mark.parametrize(
    ("status", "answer"),
    [(400, SERVER_SIDE_ERROR), (200, b"<html><body>Gateway maintenance</body></html>"), (200, b'{"msg": "ok"}')],
    ids=["DLI.0999", "html-200", "no-id-200"],
)
def test_a_create_that_may_have_been_carried_out_adopts_the_job(
    dli: DLIEmulator, through_proxy: Callable[..., Proxy], status: int, answer: bytes
) -> None:
    through_proxy(made_then(status, answer))
    batch_id, ti = submit("nightly", RUN)
    assert list(dli.jobs) == [batch_id]  # one job, the one DLI made, adopted
    assert ti.pushed["dli_batch_id"] == batch_id


# 3. and 4. The orphan sweeper decides with Airflow's knowledge


def sweep(airflow: RecordedAirflow, **operator: Any) -> dict[str, Any]:
    task = DLIOrphanSweepOperator(task_id="sweep", grace_period=0, **operator)
    return task.execute(cast("Any", {"ti": airflow}))


def test_run_id_reused_after_a_deleted_run(dli: DLIEmulator, deployment: Any) -> None:
    """The run was deleted while its try-3 job ran; a new run with the same run id now waits on its try-1 job.
    The sweep's own facts with Airflow's answers recorded, on both Airflow versions; on a running Airflow 3.3,
    with a real deleted and re-triggered run: tests/e2e/test_whose_job.py."""
    deployment("prod")
    orphan, _ = submit("nightly", RUN, try_number=3, retries=2)
    live, _ = submit("nightly", RUN)
    result = sweep(RecordedAirflow({"nightly": {RUN: {"submit": "running"}}}))
    assert [o["batch_id"] for o in result["orphans"]] == [orphan]
    assert dli.state_of(live) == "starting"


def test_sweeper_keeps_a_job_that_the_retry_takes_over(dli: DLIEmulator, deployment: Any) -> None:
    """On a running Airflow 3.3, with a real task up for retry and its retry: tests/e2e/test_whose_job.py."""
    deployment("prod")
    batch_id, _ = submit("nightly", RUN, retries=1, durable=False)
    result = sweep(RecordedAirflow({"nightly": {RUN: {"submit": "up_for_retry"}}}))
    assert result["orphans"] == []
    assert dli.state_of(batch_id) == "starting"


def test_a_retry_after_a_failed_job_cancels_the_older_live_ones(dli: DLIEmulator, deployment: Any) -> None:
    """Try 1's job still runs, try 2's (submitted beside it: its look-up missed try 1's) failed: try 3 submits anew
    and cancels try 1's, rather than leave it running for the sweeper."""
    deployment("prod")
    older, _ = submit("nightly", RUN, retries=2)
    second_try = TaskInstance("nightly", RUN, try_number=2, max_tries=2)
    task = DLISubmitBatchOperator(
        task_id="submit", file=SUBMIT_BODY["file"], class_name=SUBMIT_BODY["className"], retries=2
    )
    newest = str(DLIHook().create_batch(task.batch_body(context(second_try)))["id"])
    dli.finish(newest, "dead")
    retry, _ = submit("nightly", RUN, try_number=3, retries=2)
    assert retry not in (older, newest)
    assert cancelled(dli) == {older}
    assert dli.state_of(older) == "dead"
    assert dli.state_of(retry) == "starting"


def test_deployments_on_the_default_instance_id_never_sweep_each_others_runs(dli: DLIEmulator, deployment: Any) -> None:
    deployment(None)
    theirs, _ = submit("nightly", RUN)  # another deployment's, on the default instance id too
    result = sweep(RecordedAirflow({}))  # this Airflow has no such DAG run
    assert result["orphans"] == []
    assert dli.state_of(theirs) == "starting"


def test_one_malformed_job_never_stops_a_sweep(
    dli: DLIEmulator, through_proxy: Callable[..., Proxy], deployment: Any
) -> None:
    doctor: dict[str, str] = {}

    def doctored(request: Received, status: int, body: bytes) -> tuple[int, bytes]:
        if request.method != "GET" or not request.path.split("?")[0].endswith("/batches") or status != 200:
            return status, body
        listing = json.loads(body)
        for batch in listing["sessions"]:
            if batch["id"] == doctor.get("hostile"):  # a foreign job whose req_body nests deeper than parsers recurse
                batch["req_body"] = "[" * 100_000 + "]" * 100_000
            if batch["id"] == doctor.get("undated"):
                del batch["create_time"]
        return status, json.dumps(listing).encode()

    through_proxy(doctored)
    deployment("prod")
    orphan, _ = submit("nightly", RUN)
    undated, _ = submit("nightly", RUN, "undated")
    hostile, _ = submit("nightly", RUN, "hostile")
    doctor.update(hostile=hostile, undated=undated)
    airflow = RecordedAirflow({"nightly": {RUN: {"submit": "failed", "undated": "failed", "hostile": "failed"}}})
    result = sweep(airflow)
    assert [o["batch_id"] for o in result["orphans"]] == [orphan]
    assert dli.state_of(undated) == "starting"  # no creation time: kept, not swept
    assert dli.state_of(hostile) == "starting"


# 5. One job per try, in real DAG runs: a lost answer whose job succeeds before the retry


def run_dag(home: AirflowHome, dag_id: str, emulator: DLIEmulator) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = home.run(
        "dags", "test", dag_id, dags_folder=TEST_DAGS, emulator=emulator
    )
    return result


@pytest.mark.parametrize("dag_id", ["dli_test_lost_answer_job_succeeds", "dli_test_lost_answer_job_succeeds_deferred"])
def test_a_lost_answer_whose_job_succeeded_is_never_run_twice(airflow_home: AirflowHome, dag_id: str) -> None:
    # Jobs end successfully at once: the job is done before the retry starts.
    with DLIEmulator(starting_seconds=0, running_seconds=0) as emulator:
        emulator.add_fault(r".*/batches", method="POST", lose_answer=True)
        lookup = emulator.add_fault(r".*/batches", method="GET", status=403)  # the first try's look-up fails
        result = run_dag(airflow_home, dag_id, emulator)
        output = result.stdout + result.stderr
        assert lookup.hits == 1
        assert len(emulator.jobs) == 1, output[-3000:]  # no second copy of a job that already ran
        assert result.returncode == 0, output[-3000:]  # the retry succeeds with the job that succeeded
        assert "a retry looks for it again" not in output or "deferred" not in dag_id


def test_a_clear_runs_the_job_again(dli: DLIEmulator) -> None:
    """A person cleared the task after its try 1: Airflow raised max_tries to try_number + retries (both Airflow
    versions do, when the cleared try ends). On a running Airflow 3.3, with the REST API's clear of a running
    task: tests/e2e/test_whose_job.py."""
    earlier, _ = submit("nightly", RUN, retries=1)
    again, _ = submit("nightly", RUN, try_number=2, retries=1, max_tries=2)
    assert again != earlier
    assert len(dli.jobs) == 2

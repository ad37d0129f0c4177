"""Mapped submit tasks in real DAG runs: a map index's failure path cancels its own job, never its siblings';
run-wide tools (a DAG-level callback, the kill switch) reach every map index's job."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from tests.airflow_cli import AirflowHome
from tests.test_failure_paths import TEST_DAGS, cancelled_by, run_dag, run_in_dag_processor


@pytest.fixture
def long_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[DLIEmulator]:
    """Jobs that run 10 minutes: only a cancel (or the test) ends them."""
    with DLIEmulator(starting_seconds=0.2, running_seconds=600) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(emulator.connection()))
        yield emulator


def job_of_map_index(emulator: DLIEmulator, map_index: int) -> str:
    """The job of one map index (its latest, when retries submitted several)."""
    jobs = [job for job in emulator.jobs.values() if job.body["name"].endswith(f".submit.{map_index}")]
    return max(jobs, key=lambda job: job.created).id


def cancel_requests(emulator: DLIEmulator) -> list[str]:
    """The ids that DELETE requests named, accepted or not."""
    return [record.path.rsplit("/", 1)[1] for record in emulator.request_log if record.method == "DELETE"]


def dag_run_state(home: AirflowHome, dag_id: str) -> str:
    with sqlite3.connect(home.path / "airflow.db") as db:
        [(state,)] = db.execute("SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,))
    return str(state)


def xcom_value(home: AirflowHome, dag_id: str, task_id: str, key: str) -> Any:
    with sqlite3.connect(home.path / "airflow.db") as db:
        [(value,)] = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", (dag_id, task_id, key)
        )
    return json.loads(value)


def test_a_failed_map_index_cancels_only_its_own_job(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_mapped_job_fails", dli_emulator)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "ended dead" in output
    siblings = [job_of_map_index(dli_emulator, n) for n in (0, 1)]
    assert [dli_emulator.state_of(batch_id) for batch_id in siblings] == ["starting", "starting"]
    first_try, second_try = sorted(
        (job for job in dli_emulator.jobs.values() if job.body["name"].endswith(".submit.2")), key=lambda j: j.created
    )
    # Each try's callback cancels that try's job (already dead); the siblings' jobs are never touched.
    assert cancel_requests(dli_emulator)[-1] == second_try.id
    assert set(cancel_requests(dli_emulator)) <= {first_try.id, second_try.id}
    assert dli_emulator.cancel_events == []


def test_a_timed_out_map_index_cancels_only_its_own_job(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_mapped_timeout", long_jobs)
    assert result.returncode != 0
    own = job_of_map_index(long_jobs, 2)
    assert long_jobs.state_of(own) == "dead"
    assert cancelled_by(long_jobs, own) == "dli_test_mapped_timeout.submit"  # on_kill; the notifier found it dying
    siblings = [job_of_map_index(long_jobs, n) for n in (0, 1)]
    assert {long_jobs.state_of(batch_id) for batch_id in siblings} == {"running"}
    assert set(cancel_requests(long_jobs)) == {own}


def test_notifier_with_source_map_index(long_jobs: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_mapped_source_map_index", long_jobs)
    assert result.returncode != 0
    states = {n: long_jobs.state_of(job_of_map_index(long_jobs, n)) for n in (0, 1, 2)}
    assert states == {0: "running", 1: "dead", 2: "running"}
    assert cancelled_by(long_jobs, job_of_map_index(long_jobs, 1)) == "dli_test_mapped_source_map_index.check callback"


def test_dag_level_callback_cancels_every_map_index(
    long_jobs: DLIEmulator, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    result = run_dag(airflow_home, "dli_test_mapped_dag_level_callback", long_jobs)
    assert result.returncode != 0
    assert long_jobs.cancel_events == []  # airflow dags test leaves DAG callbacks to the DAG processor
    env = airflow_home.env(TEST_DAGS, long_jobs)
    run_in_dag_processor("dag", "dli_test_mapped_dag_level_callback", "fail", env, tmp_path)
    assert {long_jobs.state_of(batch_id) for batch_id in long_jobs.jobs} == {"dead"}
    assert len(long_jobs.jobs) == 2


def test_kill_switch_cancels_every_map_index_and_fails_the_run(
    long_jobs: DLIEmulator, airflow_home: AirflowHome
) -> None:
    result = run_dag(airflow_home, "dli_test_mapped_kill_switch", long_jobs)
    assert result.returncode != 0
    names = sorted(job.body["name"] for job in long_jobs.jobs.values())
    assert [name.rsplit(".", 2)[1:] for name in names] == [["submit", "0"], ["submit", "1"], ["submit", "2"]]
    assert all(name.startswith("airflow.dli_test_mapped_kill_switch.manual__") for name in names)
    assert {long_jobs.state_of(batch_id) for batch_id in long_jobs.jobs} == {"dead"}
    assert {cancelled_by(long_jobs, batch_id) for batch_id in long_jobs.jobs} == {
        "dli_test_mapped_kill_switch.kill_switch"
    }
    assert dag_run_state(airflow_home, "dli_test_mapped_kill_switch") == "failed"
    outcomes = xcom_value(airflow_home, "dli_test_mapped_kill_switch", "kill_switch", "return_value")
    assert sorted(outcome["batch_id"] for outcome in outcomes) == sorted(long_jobs.jobs)
    assert {outcome["outcome"] for outcome in outcomes} == {"cancelled"}

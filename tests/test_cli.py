"""``airflow dli`` (Airflow 3.3+) and ``python -m airflow_provider_dli`` (every release): real commands in their
own processes, against DAG runs that ``airflow dags test`` left behind with live jobs at the emulator."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_dli.emulator import DLIEmulator
from tests.airflow_cli import AIRFLOW, AirflowHome

AIRFLOW_ADDS_THE_GROUP = Version(airflow_version) >= Version("3.3")
"""Airflow 3.3 reads the provider info's ``cli`` entry; 3.1 does not."""
CLI = [AIRFLOW, "dli"] if AIRFLOW_ADDS_THE_GROUP else [sys.executable, "-m", "airflow_provider_dli"]

# Two fire-and-forget Spark jobs and a SQL job, then a failure: the run ends failed with the three jobs running.
DAG_FILE = """
from airflow.sdk import DAG, task
from airflow_provider_dli.operators.dli import DLISqlJobOperator, DLISubmitBatchOperator

with DAG("dli_test_cli", schedule=None, catchup=False):
    @task
    def check_input() -> None:
        raise ValueError("bad input")

    [
        *(
            DLISubmitBatchOperator(
                task_id=f"submit_{n}", file="obs://b/app.jar", class_name="A", wait_for_completion=False
            )
            for n in range(2)
        ),
        DLISqlJobOperator(task_id="load", sql="INSERT INTO t SELECT * FROM s", wait_for_completion=False),
    ] >> check_input()
"""


@pytest.fixture(scope="module")
def emulator() -> Iterator[DLIEmulator]:
    with DLIEmulator(starting_seconds=0.2, running_seconds=600) as dli:
        yield dli


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-dags")
    (folder / "dli_test_cli.py").write_text(DAG_FILE)
    return folder


def failed_run(home: AirflowHome, dags_folder: Path, emulator: DLIEmulator) -> tuple[str, set[str], str]:
    """A failed run of the DAG: its run id, its two live batch jobs and its live SQL job."""
    before, sql_before = set(emulator.jobs), set(emulator.sql_jobs)
    result = home.run("dags", "test", "dli_test_cli", dags_folder=dags_folder, emulator=emulator)
    assert result.returncode != 0  # check_input failed
    with sqlite3.connect(home.path / "airflow.db") as db:
        [(run_id,)] = db.execute("SELECT run_id FROM dag_run WHERE dag_id = 'dli_test_cli' ORDER BY id DESC LIMIT 1")
    jobs = set(emulator.jobs) - before
    [sql_job] = set(emulator.sql_jobs) - sql_before
    assert len(jobs) == 2
    return str(run_id), jobs, sql_job


def dli(home: AirflowHome, dags_folder: Path, emulator: DLIEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=home.env(dags_folder, emulator),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_list_cancel_and_sweep_a_failed_runs_jobs(
    airflow_home: AirflowHome, dags_folder: Path, emulator: DLIEmulator
) -> None:
    """Each command covers a run's SQL job beside its Spark jobs, and names each job's kind."""
    run_a, jobs_a, sql_a = failed_run(airflow_home, dags_folder, emulator)
    _, jobs_b, sql_b = failed_run(airflow_home, dags_folder, emulator)

    listed = dli(airflow_home, dags_folder, emulator, "jobs", "dli_test_cli", run_a)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert f"2 DLI batch job(s) and 1 SQL job(s) of DAG run dli_test_cli / {run_a}" in listed.stdout
    assert all(batch_id in listed.stdout for batch_id in jobs_a)
    assert re.search(rf"{sql_a}\s+sql\s+RUNNING", listed.stdout)
    assert not any(job_id in listed.stdout for job_id in {*jobs_b, sql_b})

    dry_run = dli(airflow_home, dags_folder, emulator, "cancel", "dli_test_cli", run_a, "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr[-3000:]
    assert "Live: 2 DLI batch job(s) and 1 SQL job(s)" in dry_run.stdout
    assert "would be cancelled (dry run)" in dry_run.stdout
    assert all(job_id in dry_run.stdout for job_id in {*jobs_a, sql_a})

    # The sweeper's dry run: both runs failed, so their fire-and-forget jobs are orphans, listed and left alone.
    preview = dli(airflow_home, dags_folder, emulator, "sweep", "--list-only", "--grace-period", "0")
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert "6 orphan(s) (list only: nothing cancelled)" in preview.stdout
    for job_id in jobs_a | jobs_b | {sql_a, sql_b}:
        [line] = [line for line in preview.stdout.splitlines() if line.startswith(job_id)]
        assert "listed" in line
        assert "fire-and-forget job of a failed DAG run" in line
        assert re.match(rf"{job_id}\s+{'sql' if job_id in (sql_a, sql_b) else 'batch'}\s", line)
    assert emulator.cancel_events == []

    cancelled = dli(airflow_home, dags_folder, emulator, "cancel", "dli_test_cli", run_a)
    assert cancelled.returncode == 0, cancelled.stderr[-3000:]
    assert "Cancelled 3 DLI jobs" in cancelled.stdout
    assert re.search(rf"{sql_a}\s+sql\s+cancelled", cancelled.stdout)
    assert {emulator.state_of(batch_id) for batch_id in jobs_a} == {"dead"}
    assert emulator.state_of(sql_a) == "CANCELLED"
    assert {emulator.state_of(job_id) for job_id in {*jobs_b, sql_b}} == {"running", "RUNNING"}
    assert {event.user_agent.partition("(")[2].rstrip(")") for event in emulator.cancel_events} == {"airflow dli"}

    swept = dli(airflow_home, dags_folder, emulator, "sweep", "--grace-period", "0")
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert "3 orphan(s):" in swept.stdout
    assert {emulator.state_of(batch_id) for batch_id in jobs_b} == {"dead"}
    assert emulator.state_of(sql_b) == "CANCELLED"


def test_the_fallback_takes_the_same_commands(airflow_home: AirflowHome, dags_folder: Path) -> None:
    """``python -m airflow_provider_dli`` on every release, with Airflow's group where Airflow adds it."""
    fallback = subprocess.run(
        [sys.executable, "-m", "airflow_provider_dli", "--help"],
        env=airflow_home.env(dags_folder, None),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    commands = ("jobs ", "cancel ", "sweep ", "list and cancel a DAG run's jobs")
    assert all(name in fallback.stdout for name in commands), fallback.stdout
    if AIRFLOW_ADDS_THE_GROUP:
        group = airflow_home.run("dli", "--help", dags_folder=dags_folder)
        assert group.returncode == 0, group.stderr[-3000:]
        assert all(name in group.stdout for name in commands), group.stdout


CHEAP_START = """
import sys
from airflow_provider_dli.cli import get_cli_commands
get_cli_commands()
print(sorted(m for m in ("requests", "airflow_provider_dli.hooks.dli") if m in sys.modules))
"""


def test_every_airflow_command_imports_the_group_cheaply() -> None:
    """Airflow imports the group at the start of every command: the hook and requests only when one runs."""
    result = subprocess.run([sys.executable, "-c", CHEAP_START], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"

"""The example DAGs: they parse, and each runs end to end against the emulator with ``airflow dags test``."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from tests.airflow_cli import REPO, AirflowHome
from tests.conftest import SUBMIT_BODY

EXAMPLES = REPO / "example_dags"


def test_every_example_parses_without_import_errors() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    dagbag = DagBag(dag_folder=str(EXAMPLES))  # AIRFLOW__CORE__LOAD_EXAMPLES is False (conftest)
    assert dagbag.import_errors == {}
    assert {Path(path).name for path in dagbag.file_last_changed} == {p.name for p in EXAMPLES.glob("*.py")}
    assert set(dagbag.dag_ids) == {
        "example_dli_cancel_on_failure",
        "example_dli_cancel_batch",
        "dli_orphan_sweeper",
        "example_dli_sql_job",
    }


@pytest.fixture
def long_running_emulator() -> Iterator[DLIEmulator]:
    with DLIEmulator(starting_seconds=0.5, running_seconds=600) as emulator:
        yield emulator


def run_example(
    home: AirflowHome, dag_id: str, emulator: DLIEmulator, conf: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test DAG_ID [-c CONF]`` on the example DAGs, against ``emulator``."""
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf is not None else [])
    result: subprocess.CompletedProcess[str] = home.run(*args, dags_folder=EXAMPLES, emulator=emulator)
    return result


def test_failed_check_cancels_the_job(long_running_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    emulator = long_running_emulator
    result = run_example(airflow_home, "example_dli_cancel_on_failure", emulator)
    assert result.returncode != 0  # the DAG run fails, as the check does
    [job] = emulator.jobs.values()
    assert emulator.state_of(job.id) == "dead"
    [event] = emulator.cancel_events
    assert event.batch_id == job.id
    assert event.user_agent.endswith("(example_dli_cancel_on_failure.check_source_data callback)")
    assert job.body["name"].startswith("airflow.example_dli_cancel_on_failure.manual__")
    assert job.body["name"].endswith(".submit_spark_job")


def test_passing_check_leaves_the_job_running(long_running_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    emulator = long_running_emulator
    result = run_example(airflow_home, "example_dli_cancel_on_failure", emulator, {"input_ready": True})
    assert result.returncode == 0, result.stdout[-3000:]
    [job] = emulator.jobs.values()
    assert emulator.cancel_events == []
    assert emulator.state_of(job.id) in ("starting", "running")


def test_cancel_by_id_from_the_run_conf(dli_connection: DLIEmulator, airflow_home: AirflowHome) -> None:
    batch_id = DLIHook().create_batch(SUBMIT_BODY)["id"]
    result = run_example(airflow_home, "example_dli_cancel_batch", dli_connection, {"batch_id": batch_id})
    assert result.returncode == 0, result.stdout[-3000:]
    assert dli_connection.state_of(batch_id) == "dead"
    assert [event.batch_id for event in dli_connection.cancel_events] == [batch_id]


def test_cancel_by_id_rejects_a_malformed_id(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_example(airflow_home, "example_dli_cancel_batch", dli_emulator, {"batch_id": "../../etc"})
    assert result.returncode != 0
    assert dli_emulator.request_log == []


def test_the_sweeper_example_runs(dli_connection: DLIEmulator, airflow_home: AirflowHome) -> None:
    """The one-line sweeper DAG: a job whose DAG run does not exist is an orphan, but not in its first minutes."""
    from airflow_provider_dli.identity import OWNER_CONF_KEY, JobOwner

    owner = JobOwner("airflow", "gone", "manual__2026-01-01T00:00:00+00:00", "submit", -1, 1, True)
    batch_id = DLIHook().create_batch({**SUBMIT_BODY, "conf": {OWNER_CONF_KEY: owner.conf_value()}})["id"]
    result = run_example(airflow_home, "dli_orphan_sweeper", dli_connection)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(rf"{batch_id}\s.*kept\s+younger than the grace period", result.stdout + result.stderr)
    assert "Sweeping for the default Airflow instance id 'airflow'" in result.stdout + result.stderr  # said, not silent
    assert dli_connection.cancel_events == []


def test_the_sql_job_example_loads_then_counts(airflow_home: AirflowHome) -> None:
    with DLIEmulator(starting_seconds=0.2, running_seconds=0.5) as emulator:
        result = run_example(airflow_home, "example_dli_sql_job", emulator)
        assert result.returncode == 0, result.stdout[-3000:]
        load, count = sorted(emulator.sql_jobs.values(), key=lambda job: job.created)
    assert (load.job_type, count.job_type) == ("INSERT", "QUERY")
    assert load.body["conf"] == ["spark.sql.shuffle.partitions=64"]
    assert emulator.cancel_events == []

"""DLICancelBatchOperator: inside a real DAG run (``airflow dags test``), and its options one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli._compat import AirflowFailException
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.operators.dli import DLICancelBatchOperator
from tests.airflow_cli import AirflowHome
from tests.conftest import SUBMIT_BODY

TEST_DAGS = Path(__file__).parent / "dags"


def test_cancel_in_a_real_dag_run_with_batch_id_from_xcom(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = airflow_home.run("dags", "test", "dli_test_cancel_from_xcom", dags_folder=TEST_DAGS, emulator=dli_emulator)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [job] = dli_emulator.jobs.values()
    assert dli_emulator.state_of(job.id) == "dead"
    [event] = dli_emulator.cancel_events
    assert event.batch_id == job.id
    assert event.user_agent.endswith("(dli_test_cancel_from_xcom.cancel)")
    assert f"DLI batch job {job.id} is dead" in result.stdout + result.stderr
    secret = dli_emulator.connection()["password"]
    assert secret not in result.stdout + result.stderr
    assert airflow_home.contains(secret) == []  # not in XCom, rendered fields or task logs


def cancel(dli_emulator: DLIEmulator, batch_id: str, **kwargs: Any) -> Any:
    operator = DLICancelBatchOperator(task_id="cancel", batch_id=batch_id, **kwargs)
    return operator.execute(context={})


@pytest.fixture
def live_job(dli_connection: DLIEmulator) -> str:
    return str(DLIHook().create_batch(SUBMIT_BODY)["id"])


def test_returns_the_cancel_result(dli_connection: DLIEmulator, live_job: str) -> None:
    assert cancel(dli_connection, live_job) == {
        "batch_id": live_job,
        "cancelled": True,
        "outcome": "cancelled",
        "state": None,
    }


def test_waits_for_the_terminal_state(dli_connection: DLIEmulator, live_job: str) -> None:
    dli_connection.jobs[live_job].cancel_lag = 1.0  # DLI reports 'dead' a little after the cancel
    result = cancel(dli_connection, live_job, wait_for_termination=True, poll_interval=0.1)
    assert result == {"batch_id": live_job, "cancelled": True, "outcome": "cancelled", "state": "dead"}
    polls = [r for r in dli_connection.request_log if r.path.endswith("/state")]
    assert len(polls) >= 2  # one saw the job still alive, the last saw it dead


def test_fails_when_termination_takes_too_long(dli_connection: DLIEmulator, live_job: str) -> None:
    dli_connection.jobs[live_job].cancel_lag = 60
    with pytest.raises(Exception, match=r"still 'starting' after 0\.3 s \(termination_timeout\)"):
        cancel(dli_connection, live_job, wait_for_termination=True, poll_interval=0.1, termination_timeout=0.3)


def test_already_finished_is_a_success_by_default(dli_connection: DLIEmulator, live_job: str) -> None:
    DLIHook().cancel_batch(live_job)
    assert cancel(dli_connection, live_job) == {
        "batch_id": live_job,
        "cancelled": False,
        "outcome": "already_finished",
        "state": "dead",
    }


def test_fail_if_finished(dli_connection: DLIEmulator, live_job: str) -> None:
    DLIHook().cancel_batch(live_job)
    with pytest.raises(AirflowFailException, match="had already finished \\(dead\\)"):
        cancel(dli_connection, live_job, fail_if_finished=True)


def test_rendered_none_batch_id_is_a_clear_error(dli_connection: DLIEmulator) -> None:
    with pytest.raises(ValueError, match=r"batch_id must be a DLI batch job id.*got 'None'"):
        cancel(dli_connection, "None")
    assert dli_connection.request_log == []


def test_fail_if_finished_passes_when_a_lost_answer_hid_the_cancel(dli_connection: DLIEmulator, live_job: str) -> None:
    dli_connection.add_fault(r".*/batches/[^/]+", method="DELETE", lose_answer=True)
    result = cancel(dli_connection, live_job, fail_if_finished=True)
    assert (result["cancelled"], result["outcome"], result["state"]) == (True, "cancelled", "dead")


def test_fail_if_finished_passes_when_another_cancel_is_under_way(dli_connection: DLIEmulator, live_job: str) -> None:
    dli_connection.jobs[live_job].cancel_lag = 1.0
    DLIHook().cancel_batch(live_job)  # on_kill's cancel: the job reads live for a moment longer
    result = cancel(dli_connection, live_job, fail_if_finished=True, wait_for_termination=True, poll_interval=0.1)
    assert (result["cancelled"], result["outcome"], result["state"]) == (True, "already_cancelling", "dead")


@pytest.mark.parametrize("name", ["poll_interval", "termination_timeout"])
@pytest.mark.parametrize("value", [0, -1, "5", True])
def test_bad_durations_fail_at_dag_parse(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a number of seconds > 0"):
        DLICancelBatchOperator(task_id="cancel", batch_id="x", **{name: value})


def test_template_fields() -> None:
    assert set(DLICancelBatchOperator.template_fields) == {
        "batch_id",
        "queue_name",
        "job_name",
        "project_id",
        "dli_conn_id",
    }

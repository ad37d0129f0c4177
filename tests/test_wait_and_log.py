"""Waiting on a job: undocumented states end the wait after a few polls; the driver log is best effort and, for
an ``auto_recovery`` job, the last driver's."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from airflow_provider_dli.sensors.dli import DLIBatchSensor
from airflow_provider_dli.states import UNKNOWN_STATE_POLLS
from airflow_provider_dli.triggers.dli import DLIBatchTrigger
from tests.airflow_cli import AirflowHome
from tests.conftest import SUBMIT_BODY, state_polls
from tests.test_failure_paths import run_dag

TEST_DAGS = Path(__file__).parent / "dags"


def answer_state(emulator: DLIEmulator, state: str, times: int | None = None) -> None:
    emulator.add_fault(r".*/state", method="GET", status=200, body=json.dumps({"state": state}), times=times)


def submit(**conf: Any) -> str:
    body = dict(SUBMIT_BODY, conf={f"dli.emulator.{key}": value for key, value in conf.items()})
    return str(DLIHook().create_batch(body)["id"])


# Item: a state outside the documented five never keeps a wait going forever


def test_the_submit_operator_stops_waiting_and_cancels(dli_connection: DLIEmulator) -> None:
    batch_id = submit()
    answer_state(dli_connection, "FAILED")
    operator = DLISubmitBatchOperator(task_id="submit", file="obs://b/a.jar", class_name="A", poll_interval=0.01)
    operator.batch_id = batch_id  # as after its own submit
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            operator.poll_until_complete(batch_id, context={})
        except BaseException as error:
            raised.append(error)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout=120)
    assert not waiter.is_alive(), "still polling a job in an unknown state"
    [error] = raised
    assert isinstance(error, AirflowException)
    assert f"batch job {batch_id} in state 'failed', which is none of the documented states" in str(error)
    assert state_polls(dli_connection) == UNKNOWN_STATE_POLLS
    assert [event.batch_id for event in dli_connection.cancel_events] == [batch_id]


def test_the_trigger_reports_an_error_event(dli_connection: DLIEmulator) -> None:
    batch_id = submit()
    answer_state(dli_connection, "cancelled")

    async def first_event() -> dict[str, Any]:
        async for event in DLIBatchTrigger(batch_id=batch_id, poll_interval=0.01).run():
            payload: dict[str, Any] = event.payload
            return payload
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=120))
    assert event["status"] == "error"
    assert "state 'cancelled'" in event["message"]


def test_the_sensor_tolerates_a_passing_oddity_then_fails(dli_connection: DLIEmulator) -> None:
    batch_id = submit()
    sensor = DLIBatchSensor(task_id="watch", batch_id=batch_id)
    answer_state(dli_connection, "unknown", times=UNKNOWN_STATE_POLLS - 1)
    for _ in range(UNKNOWN_STATE_POLLS):  # two odd answers, then 'starting': the count starts over
        assert sensor.poke({}) is False
    answer_state(dli_connection, "FAILED")
    for _ in range(UNKNOWN_STATE_POLLS - 1):
        assert sensor.poke({}) is False
    with pytest.raises(AirflowException, match="state 'failed'"):
        sensor.poke({})


def test_a_rescheduled_sensor_counts_unknown_states_within_its_poke(dli_connection: DLIEmulator) -> None:
    """In ``reschedule`` mode each poke is a new sensor object in a new process, which would count from zero at
    every poke and poll a job in an undocumented state until its timeout: the poke reads again in place."""
    batch_id = submit()
    answer_state(dli_connection, "unknown", times=UNKNOWN_STATE_POLLS - 1)  # a passing oddity, then 'starting'
    assert DLIBatchSensor(task_id="watch", batch_id=batch_id, mode="reschedule", poke_interval=0.01).poke({}) is False
    assert state_polls(dli_connection) == UNKNOWN_STATE_POLLS
    answer_state(dli_connection, "FAILED")
    rescheduled = DLIBatchSensor(task_id="watch", batch_id=batch_id, mode="reschedule", poke_interval=0.01)
    with pytest.raises(AirflowException, match=f"state 'failed'.* {UNKNOWN_STATE_POLLS} polls in a row"):
        rescheduled.poke({})


# Item: the log is best effort, and the last driver's


def test_tail_of_the_last_driver(dli_connection: DLIEmulator) -> None:
    batch_id = submit(driver_attempts=3, starting_seconds=0, running_seconds=0)
    hook = DLIHook()
    assert hook.last_driver_attempt(batch_id) == 2
    last = hook.tail_batch_log(batch_id, 10, last_attempt=True)
    assert f"INFO DLI: driver attempt 3 of job {batch_id}" in last
    assert "INFO SparkContext: Successfully stopped SparkContext" in last
    first = hook.tail_batch_log(batch_id, 10)  # what DLI answers without an index
    assert "ERROR DLI: driver attempt 1 lost; restarting it (auto_recovery)" in first


def test_a_recovered_job_logs_its_last_driver(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = run_dag(airflow_home, "dli_test_recovered_job_log", dli_emulator)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    [batch_id] = dli_emulator.jobs
    assert f"DLI batch job {batch_id} ended success; its last driver's last driver log lines:" in output
    assert f"INFO DLI: driver attempt 2 of job {batch_id}" in output
    assert "driver attempt 1 lost" not in output


def test_an_unreadable_log_never_fails_a_successful_task(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    dli_emulator.add_fault(r".*/log", method="GET", status=404, times=None)  # the deprecated API is gone
    result = run_dag(airflow_home, "dli_test_recovered_job_log", dli_emulator)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    [batch_id] = dli_emulator.jobs
    assert f"DLI batch job {batch_id} ended success; its driver log could not be read" in output

"""One classification of DLI's answers, asked by every caller: each judges ``DLI.0999`` (DLI's server-side error,
which it sends as HTTP 400) as it judges a 5xx, and an unreadable 2xx as an answer that may hide a done deed."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, cast

import pytest

from airflow_provider_dli.client import answers
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.exceptions import DLIAPIError, DLIError
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from airflow_provider_dli.triggers.dli import DLIBatchTrigger
from airflow_provider_dli.xcom_keys import XCOM_BATCH_ID
from tests.conftest import SUBMIT_BODY, MakeHook, state_polls

if TYPE_CHECKING:
    from airflow.sdk import Context

SERVER_SIDE_ERROR = {"status": 400, "error_code": "DLI.0999"}
ONE_POLL = 4
"""Every attempt of one poll with the hook's default retry_limit (3): the wait itself must judge the answer."""


def submit(hook: DLIHook) -> str:
    return str(hook.create_batch(SUBMIT_BODY)["id"])


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"status": 503}, answers.SERVER_ERROR),
        (SERVER_SIDE_ERROR, answers.SERVER_ERROR),
        ({"status": 200, "body": "<html><body>Maintenance</body></html>"}, answers.UNREADABLE),
        ({"status": 401}, answers.UNAUTHENTICATED),
        ({"status": 403}, answers.FORBIDDEN),
        ({"status": 400}, answers.REFUSED),
        ({"status": 404}, answers.REFUSED),
        ({"drop": True}, answers.NO_ANSWER),
    ],
)
def test_each_error_carries_what_its_answer_meant(
    dli_emulator: DLIEmulator, make_hook: MakeHook, fault: dict[str, Any], expected: answers.Answer
) -> None:
    hook = make_hook(dli_emulator.connection(), retry_limit=0, deadline=3.0)
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", times=None, **fault)
    with pytest.raises(DLIError) as raised:
        hook.get_batch_state(batch_id)
    assert raised.value.answer is expected


# The transport's retries


def test_dli_0999_is_retried_like_a_5xx_for_reads_and_never_for_a_create(
    dli_emulator: DLIEmulator, hook: DLIHook
) -> None:
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", times=2, **SERVER_SIDE_ERROR)
    dli_emulator.add_fault(r".*/state", times=1, status=200, body="<html>a proxy's page</html>")
    assert hook.get_batch_state(batch_id) == "starting"
    assert [r.status for r in dli_emulator.request_log if r.path.endswith("/state")] == [400, 400, 200, 200]
    dli_emulator.add_fault(r".*/batches", method="POST", **SERVER_SIDE_ERROR)
    with pytest.raises(DLIAPIError) as raised:
        submit(hook)
    assert raised.value.answer.may_have_acted
    assert [r.status for r in dli_emulator.request_log if r.method == "POST"] == [200, 400]


# The trigger's wait


def test_dli_0999_does_not_end_a_deferred_wait(dli_connection: DLIEmulator) -> None:
    batch_id = submit(DLIHook())
    dli_connection.finish(batch_id)
    outage = dli_connection.add_fault(r".*/state", method="GET", times=ONE_POLL, **SERVER_SIDE_ERROR)

    async def first_event() -> dict[str, Any]:
        async for event in DLIBatchTrigger(batch_id=batch_id, poll_interval=0.05).run():
            payload: dict[str, Any] = event.payload
            return payload
        raise AssertionError("the trigger fired no event")

    assert asyncio.run(first_event()) == {"status": "success", "batch_id": batch_id, "state": "success"}
    assert outage.hits == ONE_POLL
    assert dli_connection.cancel_events == []


# The worker's wait


def test_dli_0999_does_not_end_a_worker_wait_when_the_next_poll_answers(dli_connection: DLIEmulator) -> None:
    batch_id = submit(DLIHook())
    dli_connection.finish(batch_id)
    outage = dli_connection.add_fault(r".*/state", method="GET", times=ONE_POLL, **SERVER_SIDE_ERROR)
    operator = DLISubmitBatchOperator(task_id="submit", file="obs://b/a.jar", class_name="A", poll_interval=0.01)
    operator.batch_id = batch_id  # as after its own submit
    operator.poll_until_complete(batch_id, context=cast("Context", {}))
    assert outage.hits == ONE_POLL
    assert state_polls(dli_connection) == 1  # the poll after the failed one read the job's end
    assert dli_connection.cancel_events == []


def test_a_refusal_still_ends_a_worker_wait(dli_connection: DLIEmulator) -> None:
    batch_id = submit(DLIHook())
    dli_connection.add_fault(r".*/state", method="GET", status=403, times=None)
    operator = DLISubmitBatchOperator(task_id="submit", file="obs://b/a.jar", class_name="A", poll_interval=0.01)
    operator.batch_id = batch_id
    with pytest.raises(DLIAPIError, match="HTTP 403"):
        operator.poll_until_complete(batch_id, context=cast("Context", {}))
    assert len([r for r in dli_connection.request_log if r.path.endswith("/state")]) == 1


# The submit's adoption after an answer that may hide a created job


class _TaskInstance:
    dag_id, run_id, task_id, map_index, try_number = "answers", "manual__2026-12-01T00:00:00+00:00", "submit", -1, 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize(
    "answer",
    [
        SERVER_SIDE_ERROR,
        {"status": 502},
        {"status": 200, "body": "<html><body>Welcome to the proxy</body></html>"},
        {"status": 200, "body": json.dumps({"msg": "created"})},  # a 200 without an id
    ],
    ids=["DLI.0999", "502", "HTML 200", "200 without id"],
)
def test_a_create_that_dli_carried_out_is_adopted_not_submitted_again(
    dli_connection: DLIEmulator, answer: dict[str, Any]
) -> None:
    dli_connection.add_fault(r".*/batches", method="POST", acted=True, **answer)
    ti = _TaskInstance()
    operator = DLISubmitBatchOperator(task_id="submit", file="obs://b/a.jar", class_name="A")
    batch_id = operator.submit_job(cast("Context", {"ti": ti}))
    assert list(dli_connection.jobs) == [batch_id]  # one job: DLI's, adopted
    assert ti.pushed[XCOM_BATCH_ID] == batch_id
    assert [r.method for r in dli_connection.request_log] == ["POST", "GET"]  # the create, then the look


def test_a_refused_create_is_not_looked_for(dli_connection: DLIEmulator) -> None:
    dli_connection.add_fault(r".*/batches", method="POST", status=400, error_code="DLI.0001")
    operator = DLISubmitBatchOperator(task_id="submit", file="obs://b/a.jar", class_name="A")
    with pytest.raises(DLIAPIError, match=r"DLI\.0001"):
        operator.submit_job(cast("Context", {"ti": _TaskInstance()}))
    assert [r.method for r in dli_connection.request_log] == ["POST"]
    assert dli_connection.jobs == {}


# The judging of a refused cancel


@pytest.mark.parametrize("answer", [SERVER_SIDE_ERROR, {"status": 500}], ids=["DLI.0999", "500"])
def test_a_cancel_refused_after_a_dli_0999_is_judged_by_the_jobs_state(
    dli_emulator: DLIEmulator, hook: DLIHook, answer: dict[str, Any]
) -> None:
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/batches/[^/]+", method="DELETE", acted=True, **answer)
    # DLI cancelled the job but answered with its server error; the retry is refused: the job is dead.
    assert hook.cancel_batch(batch_id) == {
        "batch_id": batch_id,
        "cancelled": True,
        "outcome": "cancelled",
        "state": "dead",
    }
    assert [r.status for r in dli_emulator.request_log if r.method == "DELETE"] == [answer["status"], 400]
    assert len(dli_emulator.cancel_events) == 1

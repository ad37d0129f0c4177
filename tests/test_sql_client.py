"""The SQL-job API of the client and the hook, against the emulator: submit, status, preview, paging and tag
filters, and cancels that say what they found (a finished job is ``already_finished``, never an error)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_dli.client.answers import SERVER_ERROR, UNREADABLE
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.exceptions import DLIAPIError
from airflow_provider_dli.hooks.dli import DLIHook
from tests.conftest import STILL, MakeHook

INSERT = {"sql": "INSERT INTO sales SELECT * FROM staging", "queue_name": "etl"}
UNKNOWN = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"


def test_submit_status_and_cancel(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    answer = hook.submit_sql_job({**INSERT, "tags": [{"key": "team", "value": "sales"}]})
    job_id = answer["job_id"]
    assert (answer["job_type"], answer["job_mode"]) == ("INSERT", "async")
    status = hook.get_sql_job_status(job_id)
    assert (status["status"], status["queue_name"], status["tags"]) == (
        "LAUNCHING",
        "etl",
        [{"key": "team", "value": "sales"}],
    )
    assert hook.cancel_sql_job(job_id) == {"batch_id": job_id, "cancelled": True, "outcome": "cancelled", "state": None}
    assert hook.get_sql_job_state(job_id) == "CANCELLED"
    again = hook.cancel_sql_job(job_id)
    assert (again["outcome"], again["cancelled"], again["state"]) == ("already_finished", False, "CANCELLED")


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_a_cancel_of_a_finished_job_is_already_finished(dli_emulator: DLIEmulator, hook: DLIHook, status: str) -> None:
    job_id = hook.submit_sql_job(INSERT)["job_id"]
    dli_emulator.finish(job_id, status)
    result = hook.cancel_sql_job(job_id)
    assert (result["outcome"], result["cancelled"], result["state"]) == ("already_finished", False, status)
    assert dli_emulator.cancel_events == []


def test_a_cancel_while_an_earlier_one_takes_the_job_down(make_hook: MakeHook) -> None:
    with DLIEmulator(starting_seconds=0, running_seconds=STILL, cancel_lag=1.0) as emulator:
        hook = make_hook(emulator.connection())
        job_id = hook.submit_sql_job(INSERT)["job_id"]
        assert hook.cancel_sql_job(job_id)["outcome"] == "cancelled"
        second = hook.cancel_sql_job(job_id)  # refused while the job still reads RUNNING; then CANCELLED
        assert (second["outcome"], second["state"]) == ("already_cancelling", "CANCELLED")


def test_a_cancel_whose_answer_was_lost(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    job_id = hook.submit_sql_job(INSERT)["job_id"]
    dli_emulator.add_fault(r".*/jobs/[^/]+", method="DELETE", lose_answer=True)
    assert hook.cancel_sql_job(job_id)["outcome"] == "cancelled"  # the retry was refused: the job was dying
    assert len(dli_emulator.cancel_events) == 1


def test_a_sync_statement_and_a_querys_preview(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    ddl = hook.submit_sql_job({"sql": "SHOW TABLES", "conf": ["dli.emulator.result_rows=2"]})
    assert (ddl["job_mode"], ddl["is_success"], ddl["rows"]) == ("sync", True, [[1, "row 1"], [2, "row 2"]])
    assert hook.get_sql_job_state(ddl["job_id"]) == "FINISHED"
    query = hook.submit_sql_job({"sql": "SELECT * FROM sales", "conf": ["dli.emulator.result_rows=4"]})["job_id"]
    dli_emulator.finish(query)
    assert hook.get_sql_job_status(query)["result_count"] == 4
    preview = hook.preview_sql_job(query, queue_name="etl")
    assert (preview["row_count"], preview["rows"][-1]) == (4, [4, "row 4"])


def test_listing_pages_through_every_job_once(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    ids = {hook.submit_sql_job(INSERT)["job_id"] for _ in range(25)}
    listed = [job["job_id"] for job in hook.list_sql_jobs(page_size=10)]
    assert sorted(listed) == sorted(ids)
    assert dli_emulator.counters.by_route["GET jobs"] == 3  # 10 + 10 + 5: a short page ends the listing


def test_listing_by_tag_and_status(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    def tagged(run: str) -> str:
        return str(hook.submit_sql_job({**INSERT, "tags": [{"key": "airflow.dli.run", "value": run}]})["job_id"])

    ours, other = [tagged("r1"), tagged("r1")], tagged("r2")
    dli_emulator.finish(ours[0])
    assert {job["job_id"] for job in hook.list_sql_jobs(tags={"airflow.dli.run": "r1"})} == set(ours)
    live = hook.list_sql_jobs(tags={"airflow.dli.run": "r1"}, status="launching")
    assert [job["job_id"] for job in live] == [ours[1]]
    assert other not in {job["job_id"] for job in hook.list_sql_jobs(status="FINISHED")}


def test_a_server_that_ignores_the_page_ends_the_listing(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    for _ in range(3):
        hook.submit_sql_job(INSERT)
    # Every page answered as the first: the listing stops instead of looping.
    page = json.dumps({"is_success": True, "job_count": 3, "jobs": [{"job_id": UNKNOWN}]})
    dli_emulator.add_fault(r".*/jobs", method="GET", status=200, body=page, times=None)
    assert [job["job_id"] for job in hook.list_sql_jobs(page_size=1)] == [UNKNOWN]


def test_bulk_cancel_of_sql_jobs(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    live = [hook.submit_sql_job(INSERT)["job_id"] for _ in range(3)]
    finished = hook.submit_sql_job(INSERT)["job_id"]
    dli_emulator.finish(finished)
    outcomes = hook.cancel_sql_jobs([*live, finished, live[0]])
    assert [(o["job_id"], o["kind"], o["outcome"]) for o in outcomes] == [
        *((job_id, "sql", "cancelled") for job_id in live),
        (finished, "sql", "already_finished"),
    ]
    assert not any("batch_id" in outcome for outcome in outcomes)  # a SQL job's id is no batch id
    assert {dli_emulator.state_of(job_id) for job_id in live} == {"CANCELLED"}


def test_answers_are_judged_by_the_one_classification(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    job_id = hook.submit_sql_job(INSERT)["job_id"]
    dli_emulator.add_fault(r".*/jobs/[^/]+/status", status=400, error_code="DLI.0999", times=1)
    assert hook.get_sql_job_state(job_id) == "LAUNCHING"  # DLI.0999 is a server error: read again
    dli_emulator.add_fault(r".*/jobs/submit-job", status=400, error_code="DLI.0999", times=1)
    with pytest.raises(DLIAPIError) as raised:
        hook.submit_sql_job(INSERT)  # not sent again: DLI may have made the job
    assert raised.value.answer is SERVER_ERROR
    assert raised.value.answer.may_have_acted
    dli_emulator.add_fault(r".*/jobs/submit-job", status=200, body='{"is_success": true}', times=1)
    with pytest.raises(DLIAPIError, match="without a job id") as unreadable:
        hook.submit_sql_job(INSERT)
    assert unreadable.value.answer is UNREADABLE


def test_a_refused_submit(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    with pytest.raises(DLIAPIError, match="queue_name") as raised:
        hook.submit_sql_job({**INSERT, "queue_name": "_bad"})
    assert raised.value.answer.refusal
    assert dli_emulator.sql_jobs == {}


def test_bad_input_is_refused_before_any_request(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    with pytest.raises(ValueError, match="job_id must be a DLI SQL job id"):
        hook.get_sql_job_status("not-a-uuid")
    with pytest.raises(ValueError, match="job_id must be a DLI SQL job id"):
        hook.cancel_sql_job("42")
    with pytest.raises(ValueError, match="job_ids must be DLI SQL job ids"):
        hook.cancel_sql_jobs(["42"])
    with pytest.raises(ValueError, match="a SQL job needs 'sql'"):
        hook.submit_sql_job({"sql": "  "})
    with pytest.raises(ValueError, match="unknown SQL job filter 'state'"):
        hook.list_sql_jobs(state="RUNNING")
    with pytest.raises(ValueError, match="filter 'status' must be one of"):
        hook.list_sql_jobs(status="dead")
    with pytest.raises(ValueError, match="without '=' or ','"):
        hook.list_sql_jobs(tags={"a=b": "c"})
    with pytest.raises(ValueError, match="page_size must be a whole number from 1 to 100"):
        hook.list_sql_jobs(page_size=101)
    assert dli_emulator.request_log == []

"""The emulator's SQL-job API, driven by the vendor's SDK (``huaweicloudsdkdli``) as a real client, and by hand
where the SDK would not send what a test needs."""

from __future__ import annotations

from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ServiceResponseException
from huaweicloudsdkdli.v1 import (
    CancelSqlJobRequest,
    CreateSqlJobRequest,
    CreateSqlJobRequestBody,
    ListSqlJobsRequest,
    PreviewSqlJobResultRequest,
    ShowSqlJobStatusRequest,
    Tag,
)

from airflow_provider_dli.emulator import DEFAULT_PROJECT_ID, DLIEmulator
from tests.conftest import STILL
from tests.test_emulator import signed, vendor_client

JOBS = f"/v1.0/{DEFAULT_PROJECT_ID}/jobs"


@pytest.fixture
def client(dli_emulator: DLIEmulator) -> Any:
    return vendor_client(dli_emulator)


def submit(client: Any, sql: str = "INSERT INTO sales SELECT * FROM staging", **fields: Any) -> Any:
    body = CreateSqlJobRequestBody(sql=sql, queue_name=fields.pop("queue_name", "etl"), **fields)
    return client.create_sql_job(CreateSqlJobRequest(body=body))


def status_of(client: Any, job_id: str) -> Any:
    return client.show_sql_job_status(ShowSqlJobStatusRequest(job_id=job_id))


def refusal(call: Any) -> ServiceResponseException:
    with pytest.raises(ServiceResponseException) as raised:
        call()
    return raised.value


def test_vendor_sdk_submits_waits_on_and_cancels_a_job(dli_emulator: DLIEmulator, client: Any) -> None:
    created = submit(client, currentdb="shop", conf=["spark.sql.shuffle.partitions=4"], tags=[Tag("team", "sales")])
    assert (created.is_success, created.job_type, created.job_mode) == (True, "INSERT", "async")
    status = status_of(client, created.job_id)
    assert (status.status, status.queue_name, status.database_name) == ("LAUNCHING", "etl", "shop")
    assert status.statement == "INSERT INTO sales SELECT * FROM staging"
    assert [(tag.key, tag.value) for tag in status.tags] == [("team", "sales")]

    cancelled = client.cancel_sql_job(CancelSqlJobRequest(job_id=created.job_id))
    assert cancelled.is_success is True
    assert status_of(client, created.job_id).status == "CANCELLED"
    [event] = dli_emulator.cancel_events
    assert (event.batch_id, event.state_before) == (created.job_id, "LAUNCHING")

    again = refusal(lambda: client.cancel_sql_job(CancelSqlJobRequest(job_id=created.job_id)))
    assert (again.status_code, again.error_code) == (400, "DLI.0007")
    listed = client.list_sql_jobs(ListSqlJobsRequest(queue_name="etl"))
    assert listed.job_count == 1
    assert (listed.jobs[0].job_id, listed.jobs[0].status) == (created.job_id, "CANCELLED")


def test_statuses_move_with_the_clock() -> None:
    with DLIEmulator(starting_seconds=STILL, running_seconds=STILL) as emulator:
        client = vendor_client(emulator)
        launching = submit(client).job_id
        running = submit(client, conf=["dli.emulator.launching_seconds=0"]).job_id
        ended = ["dli.emulator.launching_seconds=0", "dli.emulator.running_seconds=0"]
        finished = submit(client, conf=ended).job_id
        failed = submit(client, conf=[*ended, "dli.emulator.final_state=FAILED"]).job_id
        statuses = {job_id: status_of(client, job_id) for job_id in (launching, running, finished, failed)}
    assert [statuses[job_id].status for job_id in (launching, running, finished, failed)] == [
        "LAUNCHING",
        "RUNNING",
        "FINISHED",
        "FAILED",
    ]
    assert "emulated failure" in statuses[failed].detail
    assert statuses[finished].detail == ""


def test_a_finished_job_cannot_be_cancelled(dli_emulator: DLIEmulator, client: Any) -> None:
    job_id = submit(client).job_id
    dli_emulator.finish(job_id)
    refused = refusal(lambda: client.cancel_sql_job(CancelSqlJobRequest(job_id=job_id)))
    assert (refused.status_code, refused.error_code) == (400, "DLI.0007")
    assert status_of(client, job_id).status == "FINISHED"
    assert dli_emulator.cancel_events == []


def test_a_ddl_statement_is_synchronous(client: Any) -> None:
    created = submit(client, sql="CREATE TABLE sales (id INT) USING parquet", currentdb="shop")
    assert (created.is_success, created.job_type, created.job_mode) == (True, "DDL", "sync")
    assert status_of(client, created.job_id).status == "FINISHED"
    shown = submit(client, sql="SHOW TABLES", conf=["dli.emulator.result_rows=2"])
    assert shown.rows == [[1, "row 1"], [2, "row 2"]]
    assert shown.schema == [{"id": "int"}, {"value": "string"}]
    refused = refusal(lambda: client.cancel_sql_job(CancelSqlJobRequest(job_id=created.job_id)))
    assert refused.status_code == 400


def test_a_failed_sync_statement_says_why(client: Any) -> None:
    created = submit(client, sql="DROP TABLE sales", conf=["dli.emulator.final_state=FAILED"])
    assert (created.is_success, created.job_mode) == (False, "sync")
    assert "emulated failure" in created.message
    assert status_of(client, created.job_id).status == "FAILED"


def test_a_querys_rows_are_previewed_once_it_finished(dli_emulator: DLIEmulator, client: Any) -> None:
    job_id = submit(client, sql="SELECT * FROM sales", conf=["dli.emulator.result_rows=1500"]).job_id
    early = refusal(lambda: client.preview_sql_job_result(PreviewSqlJobResultRequest(job_id=job_id)))
    assert (early.status_code, early.error_code) == (400, "DLI.0001")
    dli_emulator.finish(job_id)
    assert status_of(client, job_id).result_count == 1500
    preview = client.preview_sql_job_result(PreviewSqlJobResultRequest(job_id=job_id, queue_name="etl"))
    assert (preview.job_type, preview.row_count, len(preview.rows)) == ("QUERY", 1000, 1000)  # the first 1,000
    assert preview.rows[:2] == [[1, "row 1"], [2, "row 2"]]
    insert = submit(client).job_id
    dli_emulator.finish(insert)
    refused = refusal(lambda: client.preview_sql_job_result(PreviewSqlJobResultRequest(job_id=insert)))
    assert "only a query's result" in refused.error_msg


@pytest.fixture
def tagged(client: Any) -> dict[str, list[str]]:
    """Five jobs of run a, three of run b."""
    jobs: dict[str, list[str]] = {"a": [], "b": []}
    for run, count in (("a", 5), ("b", 3)):
        for _ in range(count):
            jobs[run].append(submit(client, tags=[Tag("airflow.run", run), Tag("team", "sales")]).job_id)
    return jobs


def test_listing_filters_by_tag_and_pages(client: Any, tagged: dict[str, list[str]]) -> None:
    listed = client.list_sql_jobs(ListSqlJobsRequest(tags="airflow.run=a"))
    assert listed.job_count == 5
    assert {job.job_id for job in listed.jobs} == set(tagged["a"])
    both = client.list_sql_jobs(ListSqlJobsRequest(tags="airflow.run=b,team=sales"))
    assert {job.job_id for job in both.jobs} == set(tagged["b"])
    assert client.list_sql_jobs(ListSqlJobsRequest(tags="airflow.run=c")).job_count == 0
    pages = [
        client.list_sql_jobs(ListSqlJobsRequest(page_size=3, current_page=page, order="start_time_asc")).jobs
        for page in (1, 2, 3, 4)
    ]
    assert [len(page) for page in pages] == [3, 3, 2, 0]
    assert [job.job_id for page in pages for job in page] == tagged["a"] + tagged["b"]
    assert client.list_sql_jobs(ListSqlJobsRequest()).job_count == 8  # 50 a page by default


def test_listing_filters_by_status(dli_emulator: DLIEmulator, client: Any, tagged: dict[str, list[str]]) -> None:
    dli_emulator.finish(tagged["a"][0])
    client.cancel_sql_job(CancelSqlJobRequest(job_id=tagged["a"][1]))
    by_status = {
        status: {job.job_id for job in client.list_sql_jobs(ListSqlJobsRequest(job_status=status)).jobs}
        for status in ("LAUNCHING", "FINISHED", "CANCELLED")
    }
    assert by_status == {
        "LAUNCHING": set(tagged["a"][2:] + tagged["b"]),
        "FINISHED": {tagged["a"][0]},
        "CANCELLED": {tagged["a"][1]},
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page-size=101", "page-size"),
        ("page-size=0", "page-size"),
        ("current-page=0", "current-page"),
        ("order=random", "order"),
        ("tags=novalue", "key=value"),
    ],
)
def test_bad_listings_are_parameter_errors(dli_emulator: DLIEmulator, query: str, message: str) -> None:
    response = signed(dli_emulator, "GET", f"{JOBS}?{query}")
    assert response.status_code == 400
    assert response.json()["error_code"] == "DLI.0001"
    assert message in response.json()["error_msg"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"queue_name": "etl"}, "sql is required"),
        ({"sql": "SELECT 1", "queue_name": "_etl"}, "queue_name"),
        ({"sql": "SELECT 1", "currentdb": "123"}, "currentdb"),
        ({"sql": "SELECT 1", "conf": ["no value"]}, "key=value"),
        ({"sql": "SELECT 1", "conf": {"a": "b"}}, "key=value"),
        ({"sql": "SELECT 1", "tags": [{"key": "owner", "value": '{"dag": 1}'}]}, "letters, digits"),
        ({"sql": "SELECT 1", "tags": [{"key": "k", "value": "x" * 256}]}, "<= 255"),
        ({"sql": "SELECT 1", "tags": [{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]}, "keys unique"),
        ({"sql": "SELECT 1", "conf": ["dli.emulator.final_state=dead"]}, "FINISHED or FAILED"),
    ],
)
def test_submit_checks_the_body(dli_emulator: DLIEmulator, body: dict[str, Any], message: str) -> None:
    response = signed(dli_emulator, "POST", f"{JOBS}/submit-job", body)
    assert response.status_code == 400
    assert message in response.json()["error_msg"]
    assert dli_emulator.sql_jobs == {}


def test_unknown_job_and_unknown_route(dli_emulator: DLIEmulator) -> None:
    unknown = signed(dli_emulator, "GET", f"{JOBS}/0a324461-d9d9-45da-a52a-3b3c7a3d809e/status")
    assert (unknown.status_code, unknown.json()["error_code"]) == (400, "DLI.0002")
    assert signed(dli_emulator, "GET", f"{JOBS}/submit-job").status_code == 404
    assert signed(dli_emulator, "PUT", JOBS).status_code == 404


def test_same_auth_faults_and_rate_limit_as_the_batch_api(dli_emulator: DLIEmulator) -> None:
    wrong = vendor_client(dli_emulator, secret_key="wrong-secret-key")
    refused = refusal(lambda: wrong.list_sql_jobs(ListSqlJobsRequest()))
    assert (refused.status_code, refused.error_code) == (401, "APIGW.0301")
    dli_emulator.add_fault(r".*/jobs/[^/]+/status", status=503)
    client = vendor_client(dli_emulator)
    job_id = submit(client).job_id
    assert refusal(lambda: status_of(client, job_id)).status_code == 503
    with DLIEmulator(rate_limit=1) as limited:
        client = vendor_client(limited)
        submit(client)
        throttled = refusal(lambda: submit(client))
        assert (throttled.status_code, throttled.error_code) == (429, "APIGW.0308")
        assert limited.counters.by_route["POST jobs/submit-job"] == 1


def test_a_cancelled_job_reads_live_for_the_cancel_lag() -> None:
    with DLIEmulator(starting_seconds=STILL, running_seconds=STILL, cancel_lag=STILL) as emulator:
        client = vendor_client(emulator)
        job_id = submit(client).job_id
        client.cancel_sql_job(CancelSqlJobRequest(job_id=job_id))
        assert status_of(client, job_id).status == "LAUNCHING"  # its old status, until the lag has passed
        refused = refusal(lambda: client.cancel_sql_job(CancelSqlJobRequest(job_id=job_id)))
        assert refused.status_code == 400
        assert len(emulator.cancel_events) == 1

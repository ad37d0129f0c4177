"""The emulator on its own: raw HTTP, the vendor SDK as a real client, and the command line."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkdli.v1 import (
    CancelSparkJobRequest,
    CreateSparkJobRequest,
    CreateSparkJobRequestBody,
    DliClient,
    ListSparkJobsRequest,
    ShowSparkJobStatusRequest,
)

from airflow_provider_dli.client import signing
from airflow_provider_dli.emulator import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    DLIEmulator,
)
from airflow_provider_dli.emulator.readings import allowed_values
from airflow_provider_dli.hooks.dli import DLIHook
from tests.airflow_cli import AIRFLOW, AirflowHome
from tests.conftest import STILL, SUBMIT_BODY, wait_until

BATCHES = f"/v2.0/{DEFAULT_PROJECT_ID}/batches"


def signed(
    emulator: DLIEmulator | str,
    method: str,
    path: str,
    body: Any = None,
    *,
    secret_key: str = DEFAULT_SECRET_KEY,
    access_key: str = DEFAULT_ACCESS_KEY,
    date: datetime | None = None,
) -> requests.Response:
    """One request signed by hand with the pure signer, outside the hook, to an emulator (or its URL)."""
    url = (emulator if isinstance(emulator, str) else emulator.url) + path
    data = json.dumps(body).encode() if body is not None else b""
    headers = {
        "Content-Type": "application/json",
        "X-Project-Id": DEFAULT_PROJECT_ID,
        "X-Sdk-Date": signing.sdk_date(date),
    }
    headers = signing.sign_request(method, url, headers, data, access_key=access_key, secret_key=secret_key)
    return requests.request(method, url, headers=headers, data=data, timeout=10)


def vendor_client(emulator: DLIEmulator, secret_key: str = DEFAULT_SECRET_KEY) -> Any:
    credentials = BasicCredentials(DEFAULT_ACCESS_KEY, secret_key, DEFAULT_PROJECT_ID)
    return DliClient.new_builder().with_credentials(credentials).with_endpoints([emulator.url]).build()


# The vendor's SDK as a real client


def test_vendor_sdk_drives_the_emulator(dli_emulator: DLIEmulator) -> None:
    client = vendor_client(dli_emulator)
    body = CreateSparkJobRequestBody(file="obs://bucket/app.jar", class_name="com.example.App", queue="etl")
    created = client.create_spark_job(CreateSparkJobRequest(body=body))
    assert created.state == "starting"
    status = client.show_spark_job_status(ShowSparkJobStatusRequest(batch_id=created.id))
    assert status.state == "starting"
    assert client.cancel_spark_job(CancelSparkJobRequest(batch_id=created.id)).msg == "deleted"
    assert client.show_spark_job_status(ShowSparkJobStatusRequest(batch_id=created.id)).state == "dead"
    listed = client.list_spark_jobs(ListSparkJobsRequest(queue_name="etl"))
    assert listed.total == 1
    assert listed.sessions[0].id == created.id
    assert listed.sessions[0].state == "dead"


def test_listed_jobs_carry_their_request_body_and_times_in_milliseconds(dli_emulator: DLIEmulator) -> None:
    """As documented for the list API: ``req_body`` (the create request, a JSON string) on every session, and
    every time, the listing's own ``create_time`` too, in epoch milliseconds."""
    client = vendor_client(dli_emulator)
    body = CreateSparkJobRequestBody(
        file="obs://bucket/app.jar", class_name="com.example.App", queue="etl", conf={"spark.x": "1"}
    )
    created = client.create_spark_job(CreateSparkJobRequest(body=body))
    before = time.time() * 1000
    listed = client.list_spark_jobs(ListSparkJobsRequest())
    [session] = listed.sessions
    assert json.loads(session.req_body) == {
        "file": "obs://bucket/app.jar",
        "className": "com.example.App",
        "queue": "etl",
        "conf": {"spark.x": "1"},
    }
    assert before - 60_000 < listed.create_time <= time.time() * 1000
    assert session.create_time == created.create_time
    details = signed(dli_emulator, "GET", f"{BATCHES}/{created.id}").json()
    assert details["req_body"] == session.req_body


@pytest.mark.parametrize("how", ["finished", "cancelled"])
def test_a_finished_jobs_clock_stops(dli_emulator: DLIEmulator, how: str) -> None:
    batch_id = signed(dli_emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"]
    if how == "finished":
        dli_emulator.finish(batch_id)
    else:
        signed(dli_emulator, "DELETE", f"{BATCHES}/{batch_id}")
    ended = signed(dli_emulator, "GET", f"{BATCHES}/{batch_id}").json()
    assert ended["state"] in ("success", "dead")
    wait_until(lambda: time.time() * 1000 > ended["update_time"] + 5, "the clock to move on")
    later = signed(dli_emulator, "GET", f"{BATCHES}/{batch_id}").json()
    [listed] = signed(dli_emulator, "GET", BATCHES).json()["sessions"]
    for batch in (later, listed):
        assert (batch["update_time"], batch["duration"]) == (ended["update_time"], ended["duration"])
        assert batch["duration"] == batch["update_time"] - batch["create_time"]


def test_vendor_sdk_with_a_wrong_secret_key_is_refused(dli_emulator: DLIEmulator) -> None:
    client = vendor_client(dli_emulator, secret_key="wrong-secret-key")
    with pytest.raises(ClientRequestException) as raised:
        client.list_spark_jobs(ListSparkJobsRequest())
    assert raised.value.status_code == 401
    assert raised.value.error_code == "APIGW.0301"


# Authentication


def test_signature_over_a_tampered_request_is_refused(dli_emulator: DLIEmulator) -> None:
    url = dli_emulator.url + BATCHES
    headers = {"Content-Type": "application/json", "X-Project-Id": DEFAULT_PROJECT_ID, "X-Sdk-Date": signing.sdk_date()}
    headers = signing.sign_request(
        "GET", url + "?size=1", headers, b"", access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY
    )
    assert requests.get(url + "?size=1", headers=headers, timeout=10).status_code == 200
    response = requests.get(url + "?size=2", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error_code"] == "APIGW.0301"


def test_unknown_access_key_is_refused(dli_emulator: DLIEmulator) -> None:
    response = signed(dli_emulator, "GET", BATCHES, access_key="UNKNOWNKEY")
    assert (response.status_code, response.json()["error_code"]) == (401, "APIGW.0301")


@pytest.mark.parametrize("skew", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_clock_skew_over_15_minutes_is_refused(dli_emulator: DLIEmulator, skew: timedelta) -> None:
    """The gateway's IAM code (``APIGW.0301``), not ``APIG.0303``, which is for apps' own authentication."""
    response = signed(dli_emulator, "GET", BATCHES, date=datetime.now(UTC) + skew)
    assert (response.status_code, response.json()["error_code"]) == (401, "APIGW.0301")
    assert "signature expired" in response.json()["error_msg"]
    assert signed(dli_emulator, "GET", BATCHES, date=datetime.now(UTC) + timedelta(minutes=14)).status_code == 200


def test_no_credentials_and_expired_tokens_are_refused(dli_emulator: DLIEmulator) -> None:
    assert requests.get(dli_emulator.url + BATCHES, timeout=10).status_code == 401
    dli_emulator.token_ttl = 0.2
    token = dli_emulator.issue_token()
    headers = {"X-Auth-Token": token}
    assert requests.get(dli_emulator.url + BATCHES, headers=headers, timeout=10).status_code == 200
    time.sleep(0.3)
    assert requests.get(dli_emulator.url + BATCHES, headers=headers, timeout=10).status_code == 401


def test_iam_token_endpoint(dli_emulator: DLIEmulator) -> None:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "airflow", "password": "emulator-password", "domain": {"name": "emulator"}}
                },
            },
            "scope": {"project": {"id": DEFAULT_PROJECT_ID}},
        }
    }
    response = requests.post(dli_emulator.url + "/v3/auth/tokens", json=body, timeout=10)
    assert response.status_code == 201
    expires = datetime.fromisoformat(response.json()["token"]["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    token = response.headers["X-Subject-Token"]
    assert requests.get(dli_emulator.url + BATCHES, headers={"X-Auth-Token": token}, timeout=10).status_code == 200
    body["auth"]["identity"]["password"]["user"]["password"] = "wrong"
    assert requests.post(dli_emulator.url + "/v3/auth/tokens", json=body, timeout=10).status_code == 401


def test_every_answer_carries_a_request_id(dli_emulator: DLIEmulator) -> None:
    ok = signed(dli_emulator, "GET", BATCHES)
    error = signed(dli_emulator, "GET", f"{BATCHES}/0a324461-d9d9-45da-a52a-3b3c7a3d809e")
    assert ok.headers["X-Request-Id"]
    assert error.json()["request_id"] == error.headers["X-Request-Id"]
    assert error.json()["error_code"] == "DLI.0002"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2.0/{project}/jobs"), ("GET", "/v1.0/{project}/batches"), ("PUT", "/v2.0/{project}/batches")],
)
def test_unknown_api_is_the_gateways_404(dli_emulator: DLIEmulator, method: str, path: str) -> None:
    response = signed(dli_emulator, method, path.format(project=DEFAULT_PROJECT_ID))
    assert (response.status_code, response.json()["error_code"]) == (404, "APIGW.0101")


# Malformed requests get the gateway's 4xx, never a 500, a traceback or a hung thread


def raw_request(
    emulator: DLIEmulator, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> tuple[int, Any]:
    """One request with headers exactly as given (http.client checks nothing), and its answer."""
    host, port = emulator.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        own_host = any(name.lower() == "host" for name, _ in headers)
        connection.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("length", "status"),
    [("abc", 400), ("-1", 400), ("²", 400), ("1e3", 400), (str(10**12), 413), (str(13 * 1024 * 1024), 413)],
)
def test_malformed_content_length(dli_emulator: DLIEmulator, length: str, status: int) -> None:
    answer = raw_request(dli_emulator, "POST", BATCHES, [("Content-Length", length)], b"{}")
    assert answer[0] == status
    assert answer[1]["error_code"] == "APIGW.0201"
    assert signed(dli_emulator, "GET", BATCHES).status_code == 200  # still serving


def test_two_different_content_lengths_are_refused(dli_emulator: DLIEmulator) -> None:
    headers = [("Content-Length", "2"), ("Content-Length", "5")]
    assert raw_request(dli_emulator, "POST", BATCHES, headers, b"{}")[0] == 400


def test_non_ascii_signature_and_iam_password_are_refused_not_crashed(dli_emulator: DLIEmulator) -> None:
    authorization = f"SDK-HMAC-SHA256 Access={DEFAULT_ACCESS_KEY}, SignedHeaders=x-sdk-date, Signature=éé"
    headers = {"X-Sdk-Date": signing.sdk_date(), "Authorization": authorization}
    response = requests.get(dli_emulator.url + BATCHES, headers=headers, timeout=10)
    assert (response.status_code, response.json()["error_code"]) == (401, "APIGW.0301")
    user = {"name": "airflow", "password": "pässwörd-漢字", "domain": {"name": "emulator"}}
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": {"id": DEFAULT_PROJECT_ID}},
        }
    }
    assert requests.post(dli_emulator.url + "/v3/auth/tokens", json=body, timeout=10).status_code == 401


def test_non_ascii_iam_password_of_a_real_user() -> None:
    with DLIEmulator(users={("emulator", "airflow"): "pässwörd-漢字"}) as emulator:
        user = {"name": "airflow", "password": "pässwörd-漢字", "domain": {"name": "emulator"}}
        body = {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": {"id": DEFAULT_PROJECT_ID}},
            }
        }
        assert requests.post(emulator.url + "/v3/auth/tokens", json=body, timeout=10).status_code == 201


@pytest.mark.parametrize("query", ["from=abc", "size=abc", "from=-1", "size=0", "from=²"])
def test_bad_log_paging_is_a_parameter_error(dli_emulator: DLIEmulator, query: str) -> None:
    batch_id = signed(dli_emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"]
    response = signed(dli_emulator, "GET", f"{BATCHES}/{batch_id}/log?{query}")
    assert (response.status_code, response.json()["error_code"]) == (400, "DLI.0001")


def test_bad_job_timing_conf_is_a_parameter_error(dli_emulator: DLIEmulator) -> None:
    response = signed(dli_emulator, "POST", BATCHES, dict(SUBMIT_BODY, conf={"dli.emulator.running_seconds": "x"}))
    assert (response.status_code, response.json()["error_code"]) == (400, "DLI.0001")


def test_bad_control_requests_are_refused(dli_emulator: DLIEmulator) -> None:
    for path, body in (("/_emulator/faults", {"path": ".*", "nonsense": 1}), ("/_emulator/jobs", {"count": "x"})):
        assert requests.post(dli_emulator.url + path, json=body, timeout=10).status_code == 400


# Jobs


def test_state_machine() -> None:
    with DLIEmulator(starting_seconds=0.2, running_seconds=0.2) as emulator:
        batch_id = signed(emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"]
        seen: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not seen or seen[-1] != "success"):
            state = signed(emulator, "GET", f"{BATCHES}/{batch_id}/state").json()["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.02)
        assert seen == ["starting", "running", "success"]


def test_conf_makes_a_job_fail(dli_emulator: DLIEmulator) -> None:
    conf = {"dli.emulator.final_state": "dead", "dli.emulator.starting_seconds": 0, "dli.emulator.running_seconds": 0}
    batch_id = signed(dli_emulator, "POST", BATCHES, dict(SUBMIT_BODY, conf=conf)).json()["id"]
    assert dli_emulator.state_of(batch_id) == "dead"
    log = signed(dli_emulator, "GET", f"{BATCHES}/{batch_id}/log?from=0&size=10").json()
    assert log["from"] == "0"  # as the real service sends it
    assert log["log"][-1].startswith("ERROR")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"className": "A"}, "file is required"),
        ({"file": "obs://b/a.jar"}, "className is required"),
        (dict(SUBMIT_BODY, name="x" * 129), "longer than 128"),
        (dict(SUBMIT_BODY, conf=[]), "conf must be an object"),
    ],
)
def test_create_validates_the_body(dli_emulator: DLIEmulator, body: dict[str, Any], message: str) -> None:
    response = signed(dli_emulator, "POST", BATCHES, body)
    assert (response.status_code, response.json()["error_code"]) == (400, "DLI.0001")
    assert message in response.json()["error_msg"]


def test_cancel_rules(dli_emulator: DLIEmulator) -> None:
    batch_id = signed(dli_emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"]
    first = signed(dli_emulator, "DELETE", f"{BATCHES}/{batch_id}")
    assert (first.status_code, first.json()) == (200, {"msg": "deleted"})
    again = signed(dli_emulator, "DELETE", f"{BATCHES}/{batch_id}")
    assert (again.status_code, again.json()["error_code"]) == (400, "DLI.0007")
    unknown = signed(dli_emulator, "DELETE", f"{BATCHES}/0a324461-d9d9-45da-a52a-3b3c7a3d809e")
    assert (unknown.status_code, unknown.json()["error_code"]) == (400, "DLI.0002")
    [event] = dli_emulator.cancel_events
    assert (event.batch_id, event.state_before) == (batch_id, "starting")


def test_list_filters_and_pages(dli_emulator: DLIEmulator) -> None:
    for index in range(5):
        signed(dli_emulator, "POST", BATCHES, dict(SUBMIT_BODY, name=f"run-{index}", queue="q1" if index % 2 else "q2"))
    page = signed(dli_emulator, "GET", f"{BATCHES}?from=1&size=2").json()
    assert (page["from"], page["total"], len(page["sessions"])) == (1, 5, 2)
    assert signed(dli_emulator, "GET", f"{BATCHES}?queue_name=q1").json()["total"] == 2
    assert signed(dli_emulator, "GET", f"{BATCHES}?job_name=run-3").json()["sessions"][0]["name"] == "run-3"
    assert signed(dli_emulator, "GET", f"{BATCHES}?state=dead").json()["total"] == 0
    assert signed(dli_emulator, "GET", f"{BATCHES}?size=0").status_code == 400


def test_concurrent_clients(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            batch_id = str(hook.create_batch(SUBMIT_BODY)["id"])
            hook.cancel_batch(batch_id)
            with lock:
                ids.append(batch_id)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 80
    assert len(dli_emulator.cancel_events) == 80
    assert all(dli_emulator.state_of(batch_id) == "dead" for batch_id in ids)


def test_faults_over_the_control_endpoint(dli_emulator: DLIEmulator) -> None:
    fault = {"path": ".*/batches", "method": "GET", "status": 503, "times": 2}
    assert requests.post(dli_emulator.url + "/_emulator/faults", json=fault, timeout=10).status_code == 200
    assert [signed(dli_emulator, "GET", BATCHES).status_code for _ in range(3)] == [503, 503, 200]
    state = requests.get(dli_emulator.url + "/_emulator/state", timeout=10).json()
    assert state["requests"] == 1  # faults answer before the API counts a request
    assert requests.delete(dli_emulator.url + "/_emulator/faults", timeout=10).status_code == 200


def test_seeding_jobs_over_the_control_endpoint(dli_emulator: DLIEmulator) -> None:
    body = {"count": 3, "body": dict(SUBMIT_BODY, name="seeded")}
    ids = requests.post(dli_emulator.url + "/_emulator/jobs", json=body, timeout=10).json()["ids"]
    assert len(ids) == 3
    assert all(dli_emulator.jobs[batch_id].body["name"] == "seeded" for batch_id in ids)
    assert signed(dli_emulator, "GET", f"{BATCHES}?job_name=seeded").json()["total"] == 3


def test_a_test_reads_the_jobs_while_the_emulator_creates_more(dli_emulator: DLIEmulator) -> None:
    """A test looks through ``jobs`` (and ``sql_jobs``) while tasks in other processes submit, and the
    emulator's handler threads add their jobs: what it reads must never change under it."""
    submitted: list[str] = []

    def submit() -> None:
        for _ in range(40):
            submitted.append(signed(dli_emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"])
            signed(dli_emulator, "POST", f"/v1.0/{DEFAULT_PROJECT_ID}/jobs/submit-job", {"sql": "SELECT 1"})

    submitter = threading.Thread(target=submit)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the handler threads may take over at any bytecode, as on a loaded machine
    try:
        submitter.start()
        while submitter.is_alive():
            for job in dli_emulator.jobs.values():
                json.dumps(job.body)
            for sql_job in dli_emulator.sql_jobs.values():
                json.dumps(sql_job.body)
    finally:
        sys.setswitchinterval(switch_interval)
        submitter.join()
    assert set(submitted) <= set(dli_emulator.jobs)
    assert len(dli_emulator.sql_jobs) == 40


# The readings: where DLI's documentation is silent or its editions differ, each way it may behave, on request

UNKNOWN_BATCH = f"{BATCHES}/0a324461-d9d9-45da-a52a-3b3c7a3d809e"


def cancel_of_a_finished_job(emulator: DLIEmulator) -> tuple[int, str]:
    batch_id = signed(emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"]
    emulator.finish(batch_id)
    refused = signed(emulator, "DELETE", f"{BATCHES}/{batch_id}")
    return refused.status_code, refused.json()["error_code"]


def answers_for_an_unknown_batch(emulator: DLIEmulator) -> set[tuple[int, str]]:
    """Every endpoint that names a batch answers alike for one DLI does not know."""
    answers = [
        signed(emulator, method, UNKNOWN_BATCH + leaf)
        for method, leaf in (("GET", ""), ("GET", "/state"), ("GET", "/log"), ("DELETE", ""))
    ]
    return {(answer.status_code, answer.json()["error_code"]) for answer in answers}


def log_from(emulator: DLIEmulator) -> object:
    batch_id = signed(emulator, "POST", BATCHES, SUBMIT_BODY).json()["id"]
    return signed(emulator, "GET", f"{BATCHES}/{batch_id}/log?from=0&size=10").json()["from"]


def edition_only_list_parameters(emulator: DLIEmulator) -> tuple[int, ...]:
    """The job list's answer to T Cloud's ``owner`` and to Huawei's ``order`` and ``start``/``end``."""
    queries = ("owner=someone", "order=CREATE_TIME_DESC", "start=0&end=1")
    return tuple(signed(emulator, "GET", f"{BATCHES}?{query}").status_code for query in queries)


def state_in_the_middle_of_a_run(emulator: DLIEmulator) -> str:
    conf = {"dli.emulator.starting_seconds": 0, "dli.emulator.running_seconds": 30}
    batch_id = signed(emulator, "POST", BATCHES, {**SUBMIT_BODY, "conf": conf}).json()["id"]
    emulator.jobs[batch_id].created -= 15  # half way through its run
    state: str = signed(emulator, "GET", f"{BATCHES}/{batch_id}/state").json()["state"]
    return state


def create_answer(emulator: DLIEmulator) -> tuple[int, str | None, int]:
    """The create's status and error code, and how many jobs it made."""
    before = len(emulator.jobs)
    answer = signed(emulator, "POST", BATCHES, SUBMIT_BODY)
    return answer.status_code, answer.json().get("error_code"), len(emulator.jobs) - before


def retry_after_under_the_rate_limit(emulator: DLIEmulator) -> str:
    emulator.throttle.rate = 2.0  # the bucket holds 2, and frees one up every 0.5 s
    url = f"{emulator.url}/v2.0/{emulator.project_id}/batches/{UNKNOWN_BATCH.rsplit('/', 1)[1]}/state"
    answers = [requests.get(url, timeout=10) for _ in range(3)]
    emulator.throttle.rate = None
    throttled: str = answers[-1].headers["Retry-After"]
    return throttled


def jobs_named_by_the_filter(emulator: DLIEmulator) -> list[str]:
    for name in ("nightly", "nightly-sales", "weekly"):
        signed(emulator, "POST", BATCHES, {**SUBMIT_BODY, "name": name})
    return sorted(batch["name"] for batch in signed(emulator, "GET", f"{BATCHES}?job_name=nightly").json()["sessions"])


def create_with_a_tilde_in_the_name(emulator: DLIEmulator) -> tuple[int, str | None]:
    answer = signed(emulator, "POST", BATCHES, {**SUBMIT_BODY, "name": "airflow.nightly~1"})
    return answer.status_code, answer.json().get("error_code")


def req_body_forms(emulator: DLIEmulator) -> tuple[object, object]:
    """The form of ``req_body`` in a listing and in the details: the request's key or DLI's, and the conf."""
    body = {**SUBMIT_BODY, "auto_recovery": True, "conf": {"spark.k": "v"}}
    batch_id = signed(emulator, "POST", BATCHES, body).json()["id"]
    [listed] = [b for b in signed(emulator, "GET", BATCHES).json()["sessions"] if b["id"] == batch_id]
    details = signed(emulator, "GET", f"{BATCHES}/{batch_id}").json()

    def form(text: str | None) -> object:
        if text is None:
            return None
        request = json.loads(text)
        return ("autoRecovery" if "autoRecovery" in request else "auto_recovery", request["conf"])

    return form(listed.get("req_body")), form(details["req_body"])


AS_SENT = ("auto_recovery", {"spark.k": "v"})
PLAYED: dict[tuple[str, str], tuple[Callable[[DLIEmulator], object], object]] = {
    ("cancel_finished_code", "DLI.0007"): (cancel_of_a_finished_job, (400, "DLI.0007")),
    ("cancel_finished_code", "DLI.0001"): (cancel_of_a_finished_job, (400, "DLI.0001")),
    ("unknown_batch", "DLI.0002"): (answers_for_an_unknown_batch, {(400, "DLI.0002")}),
    ("unknown_batch", "DLI.0023"): (answers_for_an_unknown_batch, {(404, "DLI.0023")}),
    ("log_from", "string"): (log_from, "0"),
    ("log_from", "integer"): (log_from, 0),
    ("list_parameters", "any"): (edition_only_list_parameters, (200, 200, 200)),
    ("list_parameters", "t-cloud"): (edition_only_list_parameters, (200, 400, 400)),
    ("list_parameters", "huawei"): (edition_only_list_parameters, (400, 200, 200)),
    ("recovering", "never"): (state_in_the_middle_of_a_run, "running"),
    ("recovering", "mid-run"): (state_in_the_middle_of_a_run, "recovering"),
    ("retry_after", "rounded-up"): (retry_after_under_the_rate_limit, "1"),
    ("retry_after", "rounded-down"): (retry_after_under_the_rate_limit, "0"),
    ("create_answer", "job"): (create_answer, (200, None, 1)),
    ("create_answer", "DLI.0999"): (create_answer, (400, "DLI.0999", 1)),
    ("job_name_filter", "substring"): (jobs_named_by_the_filter, ["nightly", "nightly-sales"]),
    ("job_name_filter", "whole"): (jobs_named_by_the_filter, ["nightly"]),
    ("job_name_filter", "ignored"): (jobs_named_by_the_filter, ["nightly", "nightly-sales", "weekly"]),
    ("job_name_characters", "any"): (create_with_a_tilde_in_the_name, (200, None)),
    ("job_name_characters", "documented"): (create_with_a_tilde_in_the_name, (400, "DLI.0001")),
    ("req_body", "request"): (req_body_forms, (AS_SENT, AS_SENT)),
    ("req_body", "normalized"): (req_body_forms, (("autoRecovery", {"spark.k": "v"}),) * 2),
    ("req_body", "absent"): (req_body_forms, (None, AS_SENT)),
}
"""For each value of each reading: what a client observes over HTTP, and what that value makes it observe."""


def test_every_value_of_every_reading_is_tested() -> None:
    assert set(PLAYED) == {(name, value) for name, values in allowed_values().items() for value in values}


@pytest.mark.parametrize(("reading", "value"), sorted(PLAYED))
def test_each_reading_is_played(reading: str, value: str) -> None:
    observe, expected = PLAYED[reading, value]
    with DLIEmulator(starting_seconds=STILL, running_seconds=STILL, readings={reading: value}) as emulator:
        assert observe(emulator) == expected


def test_readings_default_to_the_first_value(dli_emulator: DLIEmulator) -> None:
    for (reading, value), (observe, expected) in PLAYED.items():
        if value == allowed_values()[reading][0]:
            assert observe(dli_emulator) == expected, reading


@pytest.mark.parametrize(
    ("readings", "message"),
    [
        ({"log_from": "float"}, "reading 'log_from' must be one of 'string', 'integer'; got 'float'"),
        ({"no_such_reading": "x"}, "unknown reading 'no_such_reading'; the readings are cancel_finished_code, "),
    ],
)
def test_an_unknown_reading_or_value_is_refused_by_name(readings: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        DLIEmulator(readings=readings)
    command = [sys.executable, "-m", "airflow_provider_dli.emulator", "--port", "0"]
    refused = subprocess.run(
        [*command, *(f"--reading={name}={value}" for name, value in readings.items())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (refused.returncode, refused.stdout) == (2, "")
    assert message in refused.stderr


def test_readings_from_the_command_line() -> None:
    command = [str(Path(sys.executable).with_name("dli-emulator")), "--port", "0", "--starting-seconds", str(STILL)]
    readings = ["--reading", "log_from=integer", "--reading", "unknown_batch=DLI.0023"]
    process = subprocess.Popen([*command, *readings], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[4]
        state = requests.get(f"{url}/_emulator/state", timeout=10).json()
        assert state["readings"] == {
            "cancel_finished_code": "DLI.0007",
            "unknown_batch": "DLI.0023",
            "log_from": "integer",
            "list_parameters": "any",
            "recovering": "never",
            "retry_after": "rounded-up",
            "create_answer": "job",
            "job_name_filter": "substring",
            "job_name_characters": "any",
            "req_body": "request",
        }
        assert signed(url, "GET", UNKNOWN_BATCH).status_code == 404
        batch_id = signed(url, "POST", BATCHES, SUBMIT_BODY).json()["id"]
        assert signed(url, "GET", f"{BATCHES}/{batch_id}/log").json()["from"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_help_lists_every_reading_and_its_values() -> None:
    usage = subprocess.run(
        [str(Path(sys.executable).with_name("dli-emulator")), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name, values in allowed_values().items():
        assert f"{name}={'|'.join(values)}:" in usage


# The command line


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("how", ["console-script", "module"])
def test_command_line(tmp_path: Path, stop_signal: signal.Signals, how: str) -> None:
    command = (
        [str(Path(sys.executable).with_name("dli-emulator"))]
        if how == "console-script"
        else [sys.executable, "-m", "airflow_provider_dli.emulator"]
    )
    process = subprocess.Popen(
        [*command, "--port", "0", "--access-key", "MYAK", "--secret-key", "my-secret", "--project-id", "proj1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("DLI emulator listening on http://127.0.0.1:")
        url = ready.split()[4]
        connection = json.loads(process.stdout.readline().split("=", 1)[1].strip("'\n"))
        assert connection["host"] == url
        assert (connection["login"], connection["extra"]["project_id"]) == ("MYAK", "proj1")
        response = requests.get(f"{url}/_emulator/state", timeout=10)
        assert response.json()["jobs"] == []
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read().strip() == "DLI emulator stopped"
    finally:
        process.kill()
        process.wait()


def test_a_non_loopback_host_needs_an_explicit_flag() -> None:
    """``--host 0.0.0.0`` would expose the unauthenticated ``/_emulator/*`` endpoints: refused without a word from
    the user, and loudly warned about with one."""
    everywhere = "0.0.0.0"  # noqa: S104 - the point of the test
    command = [sys.executable, "-m", "airflow_provider_dli.emulator", "--host", everywhere, "--port", "0"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "--allow-remote" in refused.stderr
    assert "/_emulator/" in refused.stderr
    assert refused.stdout == ""
    process = subprocess.Popen([*command, "--allow-remote"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline().startswith("DLI emulator listening on http://0.0.0.0:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        warning = process.stderr.read()
        assert warning.startswith("WARNING: the DLI emulator listens on 0.0.0.0, beyond this machine")
        assert "no authentication" in warning
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_hosts_need_no_flag(host: str) -> None:
    from airflow_provider_dli.emulator.__main__ import is_loopback

    assert is_loopback(host)
    assert not any(is_loopback(other) for other in ("0.0.0.0", "::", ""))  # noqa: S104


def test_help_explains_every_option_in_plain_text() -> None:
    from airflow_provider_dli.emulator.__main__ import build_parser

    usage = subprocess.run(
        [str(Path(sys.executable).with_name("dli-emulator")), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "`" not in usage  # no reStructuredText (or Markdown) markup in a terminal
    options = [action for action in build_parser()._actions if action.option_strings]
    assert {"--access-key", "--secret-key", "--project-id"} <= {o for a in options for o in a.option_strings}
    undocumented = [action.option_strings for action in options if not action.help]
    assert not undocumented


def test_the_printed_connection_line_works_when_pasted_into_a_shell(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """What a user does: start the emulator, paste its line, ``airflow connections test dli_default``."""
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dli-emulator")), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        line = process.stdout.readline().strip()
        assert line.startswith("export AIRFLOW_CONN_DLI_DEFAULT=")
        env = airflow_home.env(tmp_path, None, AIRFLOW__CORE__TEST_CONNECTION="Enabled")
        pasted = subprocess.run(
            ["bash", "-c", f"{line}\n{AIRFLOW} connections test dli_default"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert pasted.returncode == 0, pasted.stdout[-2000:] + pasted.stderr[-2000:]
        assert "Connection success!" in pasted.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


@pytest.mark.parametrize("host", ["::1:8080", "", "a b", "[::1]:80:80"])
def test_a_malformed_host_header_is_refused(dli_emulator: DLIEmulator, host: str) -> None:
    """As by any HTTP server in front of DLI: an IPv6 address in ``Host`` needs its brackets."""
    status, body = raw_request(dli_emulator, "GET", BATCHES, [("Host", host)])
    assert (status, body["error_code"]) == (400, "APIGW.0201")

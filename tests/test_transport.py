"""The request layer against a hostile or flaky network: redirects, trickled, oversized and truncated
answers, TLS that fails verification, and DLI's own retryable errors. Each test talks HTTP to a real local
server: the emulator, or a HostileServer that writes answers byte by byte."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import requests

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.exceptions import DLIAPIError, DLIConnectionError
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
from tests.conftest import SUBMIT_BODY, MakeHook, wait_until
from tests.hostile_server import (
    HostileServer,
    Received,
    head,
    one_byte_at_a_time,
    pieces,
    reply,
    self_signed_tls,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

BATCH_ID = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"
STATE_BODY = json.dumps({"id": BATCH_ID, "state": "running"}).encode()


def aksk_connection(url: str) -> dict[str, Any]:
    return {"conn_type": "dli", "host": url, "login": "AK", "password": "SECRET-KEY", "extra": {"project_id": "p1"}}


def submit(hook: DLIHook) -> str:
    return str(hook.create_batch(SUBMIT_BODY)["id"])


# 1. Redirects are never followed


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_cancel_is_an_error_not_a_get(make_hook: MakeHook, status: int) -> None:
    with HostileServer(reply(200, b'{"msg": "deleted"}')) as elsewhere:
        location = f"{elsewhere.url}/v2.0/p1/batches/{BATCH_ID}"
        with HostileServer(reply(status, headers={"Location": location})) as front:
            hook = make_hook(aksk_connection(front.url))
            with pytest.raises(DLIAPIError, match=f"HTTP {status}: redirected to {location}") as raised:
                hook.cancel_batch(BATCH_ID)
    assert raised.value.status_code == status
    assert [request.method for request in front.received] == ["DELETE"]  # not retried either
    assert elsewhere.received == []  # neither the GET that a 302 becomes, nor the credentials


def test_a_redirected_iam_login_never_sends_the_password_elsewhere(make_hook: MakeHook) -> None:
    with HostileServer(reply(201, b"{}", {"X-Subject-Token": "stolen"})) as elsewhere:
        location = f"{elsewhere.url}/v3/auth/tokens"
        with HostileServer(reply(307, headers={"Location": location})) as iam:
            extra = {"project_id": "p1", "auth_type": "password", "domain_name": "d", "iam_endpoint": iam.url}
            connection = {"conn_type": "dli", "host": elsewhere.url, "login": "u", "password": "IAM-PASSWORD"}
            hook = make_hook({**connection, "extra": extra})
            with pytest.raises(DLIAPIError, match="HTTP 307: redirected to") as raised:
                hook.get_batch_state(BATCH_ID)
    assert "IAM-PASSWORD" not in str(raised.value)
    assert [request.path for request in iam.received] == ["/v3/auth/tokens"]
    assert elsewhere.received == []


def test_a_token_never_follows_a_redirect_to_another_host(make_hook: MakeHook) -> None:
    with (
        HostileServer(reply(200, STATE_BODY)) as elsewhere,
        HostileServer(reply(302, headers={"Location": f"{elsewhere.url}/x"})) as front,
    ):
        extra = {"project_id": "p1", "auth_type": "token", "token": "IAM-TOKEN"}
        hook = make_hook({"conn_type": "dli", "host": front.url, "extra": extra})
        with pytest.raises(DLIAPIError, match="HTTP 302: redirected to"):
            hook.get_batch_state(BATCH_ID)
    assert front.received[0].headers["x-auth-token"] == "IAM-TOKEN"
    assert elsewhere.received == []


# 2. Every attempt has an overall deadline


def trickled_state(server: HostileServer, request: Received, conn: socket.socket) -> None:
    """A complete, valid answer, one byte every 0.25 s, headers included: no single read ever times out."""
    answer = head(200, {"Content-Type": "application/json", "Content-Length": str(len(STATE_BODY))}) + STATE_BODY
    pieces(lambda: one_byte_at_a_time(answer), every=0.25)(server, request, conn)


def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(make_hook: MakeHook) -> None:
    with HostileServer(trickled_state) as server:
        hook = make_hook(aksk_connection(server.url), timeout=(1.0, 2.0), retry_limit=0)
        with pytest.raises(DLIConnectionError, match=r"no complete answer within 3 s \(the deadline of one attempt\)"):
            hook.get_batch_state(BATCH_ID)
        wait_until(lambda: server.cut_off == 1, "the server to notice that the client hung up")
    assert server.completed == 0  # the answer (about 30 s of trickle) was abandoned, not waited for


def test_on_kill_cancel_ends_within_its_budget_whatever_the_server_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with HostileServer(trickled_state) as server:
        monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(aksk_connection(server.url)))
        operator = DLISubmitBatchOperator(task_id="submit", file="obs://b/app.jar", class_name="App")
        operator.batch_id = BATCH_ID
        operator.on_kill()  # SIGTERM: 5 s before SIGKILL
        wait_until(lambda: server.cut_off == 1, "the server to notice that the client hung up")
    assert server.completed == 0
    assert [request.method for request in server.received] == ["DELETE"]
    assert "no complete answer within 3 s" in capsys.readouterr().out


def test_the_hook_deadline_bounds_retries_and_follow_up_requests(make_hook: MakeHook) -> None:
    with HostileServer(trickled_state) as server:
        hook = make_hook(aksk_connection(server.url), timeout=(1.0, 2.0), retry_limit=5, deadline=4.0)
        with pytest.raises(DLIConnectionError):
            hook.get_batch_state(BATCH_ID)
    assert len(server.received) <= 2  # 3 s, then what is left of the 4 s: never 6 attempts


# 3. Answers larger than any DLI answer are not read


def endless_chunks(server: HostileServer, request: Received, conn: socket.socket) -> None:
    """200 with a chunked body of up to 512 MiB: no Content-Length to go by."""
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
    pieces(lambda: [head(200, {"Transfer-Encoding": "chunked"}), *[chunk] * 512])(server, request, conn)


def declared_huge(server: HostileServer, request: Received, conn: socket.socket) -> None:
    """502 with an HTML body that says it is 500 MiB long."""
    size = 500 << 20
    headers = {"Content-Type": "text/html", "Content-Length": str(size)}
    pieces(lambda: [head(502, headers), *[b"<p>" + b"x" * ((1 << 20) - 3)] * 500])(server, request, conn)


@pytest.mark.parametrize(("answer", "status"), [(endless_chunks, 200), (declared_huge, 502)])
def test_an_oversized_answer_is_a_clear_error(make_hook: MakeHook, answer: Any, status: int) -> None:
    with HostileServer(answer) as server:
        hook = make_hook(aksk_connection(server.url))
        with pytest.raises(DLIAPIError, match=f"HTTP {status}: the answer is larger than 4 MiB") as raised:
            hook.get_batch_state(BATCH_ID)
        wait_until(lambda: server.cut_off == 1, "the server to notice that the client hung up")
    assert raised.value.status_code == status
    assert len(server.received) == 1  # not retried: it would be as large again
    assert server.sent < 64 << 20  # the client stopped reading: the rest was never sent


# 4. What is retried


def truncated_once(good: bytes) -> Any:
    """The first answer breaks off in the middle of a chunked body; the next ones are whole."""

    def answer(server: HostileServer, request: Received, conn: socket.socket) -> None:
        if len(server.received) == 1:
            server.send(conn, head(200, {"Transfer-Encoding": "chunked"}) + b'40\r\n{"id": ')
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return  # closed with a reset, mid-body
        reply(200, good)(server, request, conn)

    return answer


@pytest.mark.parametrize(
    ("call", "good"),
    [
        (lambda hook: hook.get_batch_state(BATCH_ID), STATE_BODY),
        (lambda hook: hook.cancel_batch(BATCH_ID)["cancelled"], b'{"msg": "deleted"}'),
    ],
    ids=["GET", "DELETE"],
)
def test_a_connection_reset_mid_body_is_retried(make_hook: MakeHook, call: Any, good: bytes) -> None:
    with HostileServer(truncated_once(good)) as server:
        assert call(make_hook(aksk_connection(server.url))) in ("running", True)
    assert len(server.received) == 2


def test_a_reset_mid_body_of_a_submit_is_not_retried(make_hook: MakeHook) -> None:
    with HostileServer(truncated_once(b"{}")) as server, pytest.raises(DLIConnectionError, match="after 1 attempt"):
        submit(make_hook(aksk_connection(server.url)))
    assert len(server.received) == 1


def test_a_certificate_that_fails_verification_is_not_retried(make_hook: MakeHook, tmp_path: Path) -> None:
    with HostileServer(reply(200, STATE_BODY), tls=self_signed_tls(tmp_path)) as server:
        hook = make_hook(aksk_connection(server.url), retry_limit=3)
        with pytest.raises(DLIConnectionError, match=r"after 1 attempt.*SSLError: self-signed certificate"):
            hook.get_batch_state(BATCH_ID)
    assert server.connections == 1


def test_dli_0999_as_http_400_is_retried_for_reads_only(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", status=400, error_code="DLI.0999", times=2)
    assert hook.get_batch_state(batch_id) == "starting"
    assert [r.status for r in dli_emulator.request_log if r.path.endswith("/state")] == [400, 400, 200]
    dli_emulator.add_fault(r".*/batches", method="POST", status=400, error_code="DLI.0999")
    with pytest.raises(DLIAPIError, match=r"HTTP 400: DLI\.0999"):
        submit(hook)
    assert [r.status for r in dli_emulator.request_log if r.method == "POST"] == [200, 400]


@pytest.mark.parametrize("retry_after", [float("nan"), float("inf"), float("-inf")])
def test_retry_after_that_is_not_finite_is_ignored(
    dli_emulator: DLIEmulator, make_hook: MakeHook, retry_after: float
) -> None:
    hook = make_hook(dli_emulator.connection())
    ids = [submit(hook) for _ in range(5)]
    dli_emulator.add_fault(r".*/batches/[^/]+", method="DELETE", status=429, retry_after=retry_after, times=3)
    outcomes = hook.cancel_batches(ids, max_workers=4)
    assert [outcome["outcome"] for outcome in outcomes] == ["cancelled"] * 5
    assert {dli_emulator.state_of(batch_id) for batch_id in ids} == {"dead"}


# 8. Paging: stop on a short page, whatever 'total' means; survive a server that ignores 'from'

JOBS = [{"id": f"{n:08x}-d9d9-45da-a52a-3b3c7a3d809e", "state": "running", "name": f"job{n}"} for n in range(5)]


def job_list(pages: Any) -> Any:
    """Answers GET /batches with ``pages(from, size)`` -> the page's JSON object."""

    def answer(server: HostileServer, request: Received, conn: socket.socket) -> None:
        query = dict(part.split("=", 1) for part in request.path.partition("?")[2].split("&") if part)
        body = json.dumps(pages(int(query.get("from", 0)), int(query.get("size", 100)))).encode()
        reply(200, body)(server, request, conn)

    return answer


@pytest.mark.parametrize(
    "total",
    [
        pytest.param(lambda page: len(page), id="total-counts-the-page"),
        pytest.param(lambda page: len(JOBS), id="total-counts-every-job"),
        pytest.param(lambda page: None, id="no-total"),
    ],
)
def test_paging_reads_every_job_whatever_total_means(make_hook: MakeHook, total: Any) -> None:
    def pages(start: int, size: int) -> dict[str, Any]:
        page = JOBS[start : start + size]
        return {"from": start, "total": total(page), "sessions": page}

    with HostileServer(job_list(pages)) as server:
        listed = [batch["id"] for batch in make_hook(aksk_connection(server.url)).list_batches(page_size=2)]
    assert listed == [job["id"] for job in JOBS]
    assert len(server.received) == 3  # 2 + 2 + 1: the short page is the last


def test_paging_stops_when_the_server_ignores_from(make_hook: MakeHook) -> None:
    with HostileServer(job_list(lambda start, size: {"total": 1000, "sessions": JOBS[:size]})) as server:
        listed = [batch["id"] for batch in make_hook(aksk_connection(server.url)).list_batches(page_size=2)]
    assert listed == [job["id"] for job in JOBS[:2]]
    assert len(server.received) == 2  # the same jobs again: stop, not 500 requests


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ({"total": "abc", "sessions": JOBS}, "'total' is not a count: 'abc'"),
        ({"total": 5, "sessions": {"id": "x"}}, "'sessions' is not a list but dict"),
        ({"total": 5, "sessions": [1, 2]}, "a job without a string 'id': 1"),
        ({"total": 5, "sessions": [{"id": 7}]}, "a job without a string 'id'"),
    ],
)
def test_a_malformed_page_is_a_dli_api_error(make_hook: MakeHook, page: dict[str, Any], problem: str) -> None:
    with HostileServer(job_list(lambda start, size: page)) as server:
        hook = make_hook(aksk_connection(server.url))
        with pytest.raises(DLIAPIError, match=r"malformed page: " + re.escape(problem)):
            list(hook.list_batches())


# 15. The Test button answers within about 10 s


def test_test_connection_answers_soon_when_the_server_never_does(make_hook: MakeHook) -> None:
    test_over = threading.Event()

    def silent(server: HostileServer, request: Received, conn: socket.socket) -> None:
        test_over.wait(60)

    with HostileServer(silent) as server:
        try:
            ok, message = make_hook(aksk_connection(server.url)).test_connection()
        finally:
            test_over.set()
    assert not ok
    assert "failed after 1 attempt(s): ReadTimeout" in message  # after 5 s, not 4 attempts of 60 s
    assert len(server.received) == 1  # no retries


# 5. A refused key stops a bulk cancel before the gateway locks it


def test_the_emulator_locks_a_key_after_5_failed_authentications(make_hook: MakeHook) -> None:
    with DLIEmulator(lockout_seconds=600) as emulator:
        good = make_hook(emulator.connection(), retry_limit=0)
        wrong = make_hook({**emulator.connection(), "password": "wrong-secret-key"}, retry_limit=0)
        batch_id = submit(good)
        for _ in range(4):
            with pytest.raises(DLIAPIError, match="verify aksk signature fail"):
                wrong.get_batch_state(batch_id)
        assert good.get_batch_state(batch_id) == "starting"  # a success starts the count again
        for _ in range(5):
            with pytest.raises(DLIAPIError, match="verify aksk signature fail"):
                wrong.get_batch_state(batch_id)
        with pytest.raises(DLIAPIError, match="the access key is locked for 600 s after 5 failed") as raised:
            good.get_batch_state(batch_id)  # the right key too, for everyone
        assert (raised.value.status_code, raised.value.error_code) == (401, "APIGW.0301")


def test_a_locked_key_is_unlocked_after_the_lockout(make_hook: MakeHook) -> None:
    with DLIEmulator(lockout_seconds=5) as emulator:  # long enough to see the lock on a loaded machine
        good = make_hook(emulator.connection(), retry_limit=0)
        wrong = make_hook({**emulator.connection(), "password": "wrong-secret-key"}, retry_limit=0)
        for _ in range(5):
            assert not wrong.test_connection()[0]
        assert "the access key is locked" in good.test_connection()[1]
        wait_until(lambda: good.test_connection()[0], "the lockout to end")


def test_a_bulk_cancel_with_a_wrong_key_stops_at_the_first_refusal(
    dli_emulator: DLIEmulator, make_hook: MakeHook
) -> None:
    good = make_hook(dli_emulator.connection())
    ids = [submit(good) for _ in range(40)]
    wrong = make_hook({**dli_emulator.connection(), "password": "wrong-secret-key"})
    outcomes = wrong.cancel_batches(ids, max_workers=16)
    assert outcomes[0]["outcome"] == "error"
    assert "HTTP 401: APIGW.0301" in str(outcomes[0]["error"])
    assert {outcome["outcome"] for outcome in outcomes[1:]} == {"not_tried"}
    assert [r.method for r in dli_emulator.request_log].count("DELETE") == 1  # one failure, not 16 at once
    assert [outcome["outcome"] for outcome in good.cancel_batches(ids)] == ["cancelled"] * 40  # not locked


def test_the_operator_fails_once_for_a_refused_key(
    dli_connection: DLIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowException

    from airflow_provider_dli.operators.dli import DLICancelBatchOperator

    ids = [submit(DLIHook()) for _ in range(5)]
    monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps({**dli_connection.connection(), "password": "wrong"}))
    operator = DLICancelBatchOperator(task_id="cancel", batch_id=ids)
    refused = r"5 of 5 DLI batch jobs were not cancelled \(.*4 were not tried\)\. .*HTTP 401"
    with pytest.raises(AirflowException, match=refused):
        operator.execute(cast("Context", {}))
    assert {dli_connection.state_of(batch_id) for batch_id in ids} == {"starting"}


# 7. Under DLI's rate limit, the whole pool slows down together


def test_the_emulator_throttles_past_its_rate_limit() -> None:
    for retry_after in (True, False):
        with DLIEmulator(rate_limit=1, rate_limit_retry_after=retry_after) as emulator:
            url = f"{emulator.url}/v2.0/{emulator.project_id}/batches/{BATCH_ID}/state"
            answers = [requests.get(url, timeout=10) for _ in range(8)]
        statuses = [answer.status_code for answer in answers]
        assert statuses[0] == 401  # the first passes the limit (then fails authentication: no credentials)
        assert 429 in statuses[1:]  # 8 requests in well under 7 s: more than 1 a second
        throttled = next(answer for answer in answers if answer.status_code == 429)
        assert throttled.json()["error_code"] == "APIGW.0308"
        assert ("Retry-After" in throttled.headers) is retry_after


def test_a_retry_after_of_0_still_pauses_under_a_rate_limit(make_hook: MakeHook) -> None:
    """A gateway that rounds its ``Retry-After`` down says 0 when the limit frees up within a second: sent again
    at once, a client hammers the throttled API (69 requests in 3 s). The backoff's minimum is the floor."""
    readings = {"retry_after": "rounded-down"}
    with DLIEmulator(starting_seconds=600, rate_limit=1, readings=readings) as emulator:
        hook = make_hook(emulator.connection(), retry_delay=1.0)  # the floor: half of it
        batch_id = submit(hook)
        ends_at = time.monotonic() + 3
        reads = 0
        while time.monotonic() < ends_at:
            assert hook.get_batch_state(batch_id) == "starting"
            reads += 1
        throttled = emulator.counters.throttled
    assert reads >= 2  # the rate limit lets one a second through
    assert throttled <= 3 / 0.5 + 1, f"{throttled} requests answered 429 in 3 s"


@pytest.mark.parametrize("retry_after", [0, -5], ids=["zero", "negative"])
def test_a_retry_after_of_0_or_less_waits_the_backoffs_minimum(
    dli_emulator: DLIEmulator, make_hook: MakeHook, retry_after: float
) -> None:
    hook = make_hook(dli_emulator.connection(), retry_delay=1.0)
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", method="GET", status=429, retry_after=retry_after, times=2)
    started = time.monotonic()
    assert hook.get_batch_state(batch_id) == "starting"
    assert time.monotonic() - started >= 2 * 0.5  # two pauses of at least half the retry delay


@pytest.mark.parametrize("retry_after", [True, False], ids=["with-Retry-After", "without-Retry-After"])
def test_a_bulk_cancel_under_a_rate_limit_cancels_every_job(make_hook: MakeHook, retry_after: bool) -> None:
    # 16 threads against 5 requests/s: threads that each wait out their own 429 all come back at once
    # and spend their retries on 429s; paused together, with fewer requests in flight, every job is cancelled.
    with DLIEmulator(starting_seconds=600, rate_limit=5, rate_limit_retry_after=retry_after) as emulator:
        hook = make_hook(emulator.connection(), retry_delay=1.0)
        ids = emulator.seed_jobs(30)
        outcomes = hook.cancel_batches(ids, max_workers=16)
        assert [outcome["outcome"] for outcome in outcomes] == ["cancelled"] * 30
        assert {emulator.state_of(batch_id) for batch_id in ids} == {"dead"}

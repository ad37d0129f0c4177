"""DLIHook against the emulator over HTTP: configuration, auth modes, retries, errors, cancel semantics."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.emulator.server import DEFAULT_PROJECT_ID
from airflow_provider_dli.exceptions import DLIAPIError, DLIConnectionError
from airflow_provider_dli.hooks.dli import DLIHook
from tests.conftest import SUBMIT_BODY, MakeHook

UNKNOWN_ID = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"


def submit(hook: DLIHook, **conf: Any) -> str:
    body = dict(SUBMIT_BODY, conf={f"dli.emulator.{key}": value for key, value in conf.items()})
    return str(hook.create_batch(body)["id"])


# Configuration: every problem is reported before a request is sent.


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": {}}, "project_id is missing.*extra 'project_id'"),
        ({"extra": {"project_id": "../etc"}}, "project_id must be up to 64 letters and digits"),
        ({"extra": {"project_id": "a" * 65}}, "project_id must be up to 64 letters and digits"),
        ({"host": None}, "set the host .* or the extra 'region'"),
        ({"host": "ftp://dli.example.com"}, "must be an http:// or https:// URL"),
        ({"login": None}, "auth_type 'aksk' needs the access key ID as login"),
        ({"password": None}, "secret access key as password"),
        ({"extra": {"project_id": DEFAULT_PROJECT_ID, "auth_type": "kerberos"}}, "'auth_type' .* one of"),
        ({"extra": {"project_id": DEFAULT_PROJECT_ID, "auth_type": "password"}}, "extra 'domain_name'"),
        (
            {"extra": {"project_id": DEFAULT_PROJECT_ID, "auth_type": "password", "domain_name": "d"}},
            "needs the extra 'iam_endpoint' or 'region'",
        ),
        ({"extra": {"project_id": DEFAULT_PROJECT_ID, "auth_type": "token"}}, "IAM token in the extra 'token'"),
        ({"host": None, "extra": {"project_id": DEFAULT_PROJECT_ID, "region": "eu-nl"}}, "only in .*eu-de"),
        ({"host": None, "extra": {"project_id": DEFAULT_PROJECT_ID, "region": "Europe"}}, "region must be"),
    ],
)
def test_bad_connection_is_rejected_before_any_request(
    dli_emulator: DLIEmulator, make_hook: MakeHook, change: dict[str, Any], message: str
) -> None:
    hook = make_hook({**dli_emulator.connection(), **change})
    with pytest.raises(ValueError, match=message):
        hook.cancel_batch(UNKNOWN_ID)
    assert dli_emulator.request_log == []


@pytest.mark.parametrize("batch_id", ["", "../x", "?x=1", None, 42, UNKNOWN_ID + "/state", UNKNOWN_ID[:-1]])
def test_batch_id_must_be_a_uuid(dli_emulator: DLIEmulator, hook: DLIHook, batch_id: Any) -> None:
    with pytest.raises(ValueError, match="batch_id must be a DLI batch job id, a UUID"):
        hook.cancel_batch(batch_id)
    with pytest.raises(ValueError, match="batch_id must be"):
        hook.get_batch_state(batch_id)
    assert dli_emulator.request_log == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry_limit": -1}, "retry_limit"),
        ({"retry_limit": True}, "retry_limit"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": (1, 2, 3)}, "timeout"),
    ],
)
def test_bad_hook_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DLIHook(**kwargs)


def test_project_id_argument_overrides_the_extra(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    connection = dli_emulator.connection()
    connection["extra"] = {"project_id": "otherproject"}
    hook = make_hook(connection, project_id=DEFAULT_PROJECT_ID)
    assert hook.test_connection() == (True, f"Connected to DLI project {DEFAULT_PROJECT_ID}")


def test_legacy_extra_spelling_is_read(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    connection = dli_emulator.connection()
    connection["extra"] = {"extra__dli__project_id": DEFAULT_PROJECT_ID}
    assert make_hook(connection).test_connection()[0]


@pytest.mark.parametrize(
    ("region", "dli", "iam"),
    [
        ("eu-de", "https://dli.eu-de.otc.t-systems.com", "https://iam.eu-de.otc.t-systems.com"),
        ("cn-north-4", "https://dli.cn-north-4.myhuaweicloud.com", "https://iam.cn-north-4.myhuaweicloud.com"),
        ("eu-west-101", "https://dli.eu-west-101.myhuaweicloud.eu", "https://iam.eu-west-101.myhuaweicloud.eu"),
    ],
)
def test_endpoints_from_region(make_hook: MakeHook, region: str, dli: str, iam: str) -> None:
    hook = make_hook(
        {
            "conn_type": "dli",
            "login": "user",
            "password": "pw",
            "extra": {"project_id": "p1", "region": region, "auth_type": "password", "domain_name": "d"},
        }
    )
    assert hook.settings.base_url == f"{dli}/v2.0/p1"
    assert hook.settings.iam_endpoint == iam


def test_host_without_scheme_and_port_field(make_hook: MakeHook) -> None:
    connection = {"conn_type": "dli", "host": "dli.example.com", "port": 8443, "login": "a", "password": "b"}
    hook = make_hook(dict(connection, extra={"project_id": "p1"}))
    assert hook.settings.base_url == "https://dli.example.com:8443/v2.0/p1"


# Auth modes


def test_aksk_round_trip(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    assert hook.get_batch_state(batch_id) == "starting"
    assert hook.get_batch(batch_id)["id"] == batch_id
    assert [batch["id"] for batch in hook.list_batches(queue_name="etl")] == [batch_id]


def test_wrong_secret_key_is_refused(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook({**dli_emulator.connection(), "password": "not-the-secret-key"})
    with pytest.raises(DLIAPIError) as raised:
        hook.get_batch_state(UNKNOWN_ID)
    assert (raised.value.status_code, raised.value.error_code) == (401, "APIGW.0301")
    assert raised.value.request_id
    assert "not-the-secret-key" not in str(raised.value)


def test_temporary_credentials_send_the_security_token(make_hook: MakeHook) -> None:
    keys = {"TEMPAK": ("temp-secret", "security-token-value")}
    with DLIEmulator(access_keys={"OTHER": "x"}, temporary_keys=keys) as emulator:
        connection = {**emulator.connection(), "login": "TEMPAK", "password": "temp-secret"}
        without_token = make_hook(connection)
        with pytest.raises(DLIAPIError, match="401"):
            without_token.get_batch_state(UNKNOWN_ID)
        connection["extra"] = dict(connection["extra"], security_token="security-token-value")
        assert make_hook(connection).test_connection()[0]


def test_password_auth_caches_one_token_per_process(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    connection = dli_emulator.connection(auth_type="password")
    batch_id = submit(make_hook(connection))
    for _ in range(5):  # new hook instances, as new tasks would create
        make_hook(connection).get_batch_state(batch_id)
    assert dli_emulator.counters.token_requests == 1


def test_password_auth_concurrent_cold_cache_fetches_once(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    connection = dli_emulator.connection(auth_type="password")
    hooks = [make_hook(connection) for _ in range(8)]
    barrier = threading.Barrier(len(hooks))
    errors: list[BaseException] = []

    def call(hook: DLIHook) -> None:
        barrier.wait()
        try:
            hook.test_connection()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(hook,)) for hook in hooks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert dli_emulator.counters.token_requests == 1


def test_revoked_token_is_fetched_again_exactly_once(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(dli_emulator.connection(auth_type="password"))
    batch_id = submit(hook)
    dli_emulator.revoke_tokens()
    assert hook.get_batch_state(batch_id) == "starting"
    assert dli_emulator.counters.token_requests == 2
    statuses = [record.status for record in dli_emulator.request_log if record.path.endswith("/state")]
    assert statuses == [401, 200]


def test_persistent_401_is_not_retried_forever(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(dli_emulator.connection(auth_type="password"))
    dli_emulator.add_fault(r".*/state", status=401, times=None)
    with pytest.raises(DLIAPIError, match="HTTP 401"):
        hook.get_batch_state(UNKNOWN_ID)
    assert dli_emulator.counters.token_requests == 2  # the first token, and one refetch after the 401


def test_token_is_refreshed_before_it_expires(make_hook: MakeHook) -> None:
    with DLIEmulator(token_ttl=0.5) as emulator:
        hook = make_hook(emulator.connection(auth_type="password"))
        hook.test_connection()
        threading.Event().wait(0.3)  # past half the lifetime: refreshed although still valid
        hook.test_connection()
        assert emulator.counters.token_requests == 2
        assert [r.status for r in emulator.request_log if r.path.startswith("/v2.0")] == [200, 200]


def test_wrong_iam_password_is_a_clear_error(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    connection = {**dli_emulator.connection(auth_type="password"), "password": "wrong-password"}
    with pytest.raises(DLIAPIError, match="HTTP 401: 401 - The username or password is wrong") as raised:
        make_hook(connection).get_batch_state(UNKNOWN_ID)
    assert "wrong-password" not in str(raised.value)


def test_ready_token_auth(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    token = dli_emulator.issue_token()
    extra = {"project_id": DEFAULT_PROJECT_ID, "auth_type": "token", "token": token}
    hook = make_hook({"conn_type": "dli", "host": dli_emulator.url, "extra": extra})
    assert hook.test_connection()[0]
    dli_emulator.revoke_tokens()
    ok, message = hook.test_connection()
    assert not ok
    assert "401" in message
    assert token not in message


# Retries


def test_server_errors_are_retried_for_reads_and_cancels(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", status=503, times=2)
    dli_emulator.add_fault(r".*/batches/[^/]+", method="DELETE", status=500, times=1)
    assert hook.get_batch_state(batch_id) == "starting"
    assert hook.cancel_batch(batch_id)["cancelled"] is True
    statuses = [(r.method, r.status) for r in dli_emulator.request_log if not r.path.endswith("/batches")]
    assert statuses == [("GET", 503), ("GET", 503), ("GET", 200), ("DELETE", 500), ("DELETE", 200)]


def test_retry_limit_bounds_the_attempts(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(dli_emulator.connection(), retry_limit=2)
    dli_emulator.add_fault(r".*/state", status=502, times=None)
    with pytest.raises(DLIAPIError, match=r"HTTP 502: DLI\.0999"):
        hook.get_batch_state(UNKNOWN_ID)
    assert len(dli_emulator.request_log) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_client_errors_are_not_retried(dli_emulator: DLIEmulator, hook: DLIHook, status: int) -> None:
    dli_emulator.add_fault(r".*/state", status=status, times=None)
    with pytest.raises(DLIAPIError) as raised:
        hook.get_batch_state(UNKNOWN_ID)
    assert raised.value.status_code == status
    assert len(dli_emulator.request_log) == 1


def test_submit_is_not_retried_after_a_server_error(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    dli_emulator.add_fault(r".*/batches", method="POST", status=500)
    with pytest.raises(DLIAPIError, match="HTTP 500"):
        submit(hook)
    assert len(dli_emulator.request_log) == 1


def test_submit_is_not_retried_when_the_connection_drops(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    dli_emulator.add_fault(r".*/batches", method="POST", drop=True)
    with pytest.raises(DLIConnectionError, match="after 1 attempt"):
        submit(hook)
    assert len(dli_emulator.request_log) == 1
    assert dli_emulator.jobs == {}


def test_reads_are_retried_when_the_connection_drops(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", drop=True, times=1)
    assert hook.get_batch_state(batch_id) == "starting"


def test_throttled_submit_honours_retry_after(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    dli_emulator.add_fault(r".*/batches", method="POST", status=429, retry_after=0.3)
    submit(hook)
    first, second = dli_emulator.request_log
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.3
    assert len(dli_emulator.jobs) == 1


def test_read_timeout_is_retried(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(dli_emulator.connection(), timeout=(2.0, 0.3))
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/state", delay=1.0, times=1)
    assert hook.get_batch_state(batch_id) == "starting"
    assert [r.path.endswith("/state") for r in dli_emulator.request_log].count(True) == 2


def test_refused_connection_is_retried_then_reported(
    make_hook: MakeHook, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    connection = {
        "conn_type": "dli",
        "host": f"http://127.0.0.1:{closed_port}",
        "login": "AK",
        "password": "SK",
        "extra": {"project_id": "p1"},
    }
    hook = make_hook(connection, retry_limit=2)
    with pytest.raises(DLIConnectionError, match=r"after 3 attempt.*ConnectionError: .*Connection refused"):
        hook.create_batch(SUBMIT_BODY)  # refused: never reached DLI, so even a submit is retried
    output = capsys.readouterr().out
    assert output.count("retry 1 of 2") == output.count("retry 2 of 2") == 1


# Error bodies


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html><body><h1>502 Bad Gateway</h1></body></html>", "non-JSON body (text/html): 502 Bad Gateway"),
        ("", "empty body"),
    ],
)
def test_non_json_error_bodies(dli_emulator: DLIEmulator, make_hook: MakeHook, body: str, expected: str) -> None:
    hook = make_hook(dli_emulator.connection(), retry_limit=0)
    dli_emulator.add_fault(r".*/state", status=502, body=body)
    with pytest.raises(DLIAPIError) as raised:
        hook.get_batch_state(UNKNOWN_ID)
    assert raised.value.status_code == 502
    assert raised.value.error_code is None
    assert raised.value.error_msg is not None
    assert expected in raised.value.error_msg


# Cancel semantics


def test_cancel_a_running_job(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    assert hook.cancel_batch(batch_id) == {
        "batch_id": batch_id,
        "cancelled": True,
        "outcome": "cancelled",
        "state": None,
    }
    assert dli_emulator.state_of(batch_id) == "dead"


def test_cancel_is_idempotent(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    hook.cancel_batch(batch_id)
    assert hook.cancel_batch(batch_id) == {
        "batch_id": batch_id,
        "cancelled": False,
        "outcome": "already_finished",
        "state": "dead",
    }


def test_second_cancel_while_the_job_is_dying(make_hook: MakeHook) -> None:
    # on_kill, then the notifier, then a kill switch: DLI refuses the later cancels while the job still reads live.
    with DLIEmulator(starting_seconds=600, cancel_lag=5.0) as emulator:
        hook = make_hook(emulator.connection())
        batch_id = submit(hook)
        assert hook.cancel_batch(batch_id)["outcome"] == "cancelled"
        assert emulator.state_of(batch_id) == "starting"  # still dying
        second = hook.cancel_batch(batch_id)
        assert second == {"batch_id": batch_id, "cancelled": True, "outcome": "already_cancelling", "state": "dead"}
        assert len(emulator.cancel_events) == 1


@pytest.mark.parametrize("cancel_lag", [0.0, 5.0])
def test_cancel_whose_answer_was_lost_is_cancelled(make_hook: MakeHook, cancel_lag: float) -> None:
    # DLI takes the DELETE but the answer never arrives; the retry is refused (the job is dying, or dead).
    with DLIEmulator(starting_seconds=600, cancel_lag=cancel_lag) as emulator:
        hook = make_hook(emulator.connection())
        batch_id = submit(hook)
        emulator.add_fault(r".*/batches/[^/]+", method="DELETE", lose_answer=True)
        assert hook.cancel_batch(batch_id) == {
            "batch_id": batch_id,
            "cancelled": True,
            "outcome": "cancelled",
            "state": "dead",
        }
        assert [r.status for r in emulator.request_log if r.method == "DELETE"] == [0, 400]
        assert len(emulator.cancel_events) == 1


@pytest.mark.parametrize("code", ["DLI.0007", "DLI.0001"])
def test_cancel_a_finished_job(make_hook: MakeHook, code: str) -> None:
    """DLI refuses it (HTTP 400), with a code its docs do not name: the job's state tells what the refusal meant."""
    with DLIEmulator(starting_seconds=0, running_seconds=0, readings={"cancel_finished_code": code}) as emulator:
        hook = make_hook(emulator.connection())
        batch_id = submit(hook)
        result = hook.cancel_batch(batch_id)
        assert result == {"batch_id": batch_id, "cancelled": False, "outcome": "already_finished", "state": "success"}
        assert emulator.cancel_events == []


@pytest.mark.parametrize(("code", "status"), [("DLI.0002", 400), ("DLI.0023", 404)])
def test_an_unknown_job_is_reported_at_once(make_hook: MakeHook, code: str, status: int) -> None:
    """Whichever answer DLI gives for a job it does not know: a refusal, neither retried nor taken for an
    outage of the gateway (whose 404 says ``APIGW.0101``)."""
    with DLIEmulator(readings={"unknown_batch": code}) as emulator:
        hook = make_hook(emulator.connection())
        for call in (hook.cancel_batch, hook.get_batch_state):
            with pytest.raises(DLIAPIError) as raised:
                call(UNKNOWN_ID)
            assert (raised.value.status_code, raised.value.error_code) == (status, code)
            assert raised.value.answer.refusal
            assert not raised.value.answer.wait_goes_on
        # the cancel reads the state to judge its refusal; nothing is sent twice
        sent = [(record.method, record.status) for record in emulator.request_log]
        assert sent == [("DELETE", status), ("GET", status), ("GET", status)]


def test_cancel_refused_for_a_live_job_raises(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    batch_id = submit(hook)
    dli_emulator.add_fault(r".*/batches/[^/]+", method="DELETE", status=400)
    with pytest.raises(DLIAPIError, match=r"HTTP 400.*still 'starting' after 0\.3 s, so no cancel was under way"):
        hook.cancel_batch(batch_id, settle_timeout=0.3)
    assert dli_emulator.state_of(batch_id) == "starting"


def test_create_batch_checks_required_fields(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    with pytest.raises(ValueError, match="a batch job needs 'className'"):
        hook.create_batch({"file": "obs://b/a.jar"})
    assert dli_emulator.request_log == []


@pytest.mark.parametrize("log_from", ["string", "integer"])
def test_log_lines(make_hook: MakeHook, log_from: str) -> None:
    with DLIEmulator(readings={"log_from": log_from}) as emulator:
        hook = make_hook(emulator.connection())
        batch_id = submit(hook, starting_seconds=0, running_seconds=0)
        total, lines = hook.get_batch_log(batch_id)
        assert (total, lines[-1]) == (4, "INFO SparkContext: Successfully stopped SparkContext")
        assert hook.tail_batch_log(batch_id, lines=2) == lines[-2:]
        assert hook.tail_batch_log(batch_id, lines=10) == lines


def test_list_batches_walks_every_page(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    ids = {submit(hook) for _ in range(7)}
    assert {batch["id"] for batch in hook.list_batches(page_size=3)} == ids
    assert sum(1 for r in dli_emulator.request_log if r.method == "GET") == 3


# Secrets


def test_secrets_are_masked_and_never_logged(
    dli_emulator: DLIEmulator,
    make_hook: MakeHook,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    caplog.set_level(logging.DEBUG)  # urllib3 and requests too
    aksk = dli_emulator.connection()
    aksk["extra"] = dict(aksk["extra"], security_token="temporary-security-token-value")
    password_conn = dli_emulator.connection(auth_type="password")
    errors = []
    for hook in (make_hook(aksk), make_hook(password_conn)):
        hook.test_connection()
        hook.cancel_batch(submit(hook))
        with pytest.raises(DLIAPIError) as raised:
            hook.cancel_batch(UNKNOWN_ID)
        errors.append(f"{raised.value!s} {raised.value!r}")
    output = capfd.readouterr()
    logged = caplog.text + output.out + output.err + " ".join(errors)
    assert "Submitted DLI batch job" in logged  # the logs were captured
    token = next(iter(dli_emulator._tokens))
    for secret in [aksk["password"], "temporary-security-token-value", password_conn["password"], token]:
        assert redact(secret) == "***"
        assert secret not in logged


def test_tls_verification_is_on(hook: DLIHook, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    assert hook.client._environment("https://dli.eu-de.otc.t-systems.com/v2.0/p")["verify"] is True


def test_proxy_environment_is_honoured(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    ok, message = make_hook(dli_emulator.connection(), retry_limit=0).test_connection()
    assert (ok, "ProxyError" in message) == (False, True)  # the (closed) proxy was used
    assert dli_emulator.request_log == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert make_hook(dli_emulator.connection()).test_connection()[0]


def test_ca_bundle_from_the_environment(make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    hook = make_hook(
        {"conn_type": "dli", "login": "a", "password": "b", "extra": {"project_id": "p", "region": "eu-de"}}
    )
    assert hook.client._environment("https://dli.eu-de.otc.t-systems.com/x")["verify"] == str(bundle)

"""Bad input is refused with a ValueError that names the field, as early as it can be known: when the DAG file is
parsed for a value given there, and before any request for a value rendered from a template. Each test shows
that nothing reached the emulator (``request_log == []``) or that the fixed input now works over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkdli.v1 import CancelSparkJobRequest, CreateSparkJobRequest, CreateSparkJobRequestBody, DliClient

from airflow_provider_dli.client import signing
from airflow_provider_dli.emulator import DEFAULT_ACCESS_KEY, DEFAULT_PROJECT_ID, DEFAULT_SECRET_KEY, DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLICancelBatchOperator, DLISubmitBatchOperator
from airflow_provider_dli.sensors.dli import DLIBatchSensor
from airflow_provider_dli.triggers.dli import DLIBatchTrigger
from tests.airflow_cli import REPO
from tests.conftest import SUBMIT_BODY, MakeHook

BATCH_ID = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"
JOB = {"file": "obs://bucket/app.jar", "class_name": "com.example.App", "name": "job"}


def submit_operator(**kwargs: Any) -> DLISubmitBatchOperator:
    return DLISubmitBatchOperator(**{"task_id": "submit", "wait_for_completion": False, **JOB, **kwargs})


def render(task: Any, *, native: bool = False, **params: Any) -> None:
    """Render the task's template fields the way a task run does (``params`` as the context's params)."""
    with DAG(f"render_{id(task)}", schedule=None, render_template_as_native_obj=native) as dag:
        dag.add_task(task)
    task.render_template_fields({"params": params})


# Full matches: "$" also matches before a trailing newline


def test_a_trailing_newline_is_not_an_id(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    for call in (hook.cancel_batch, hook.get_batch_state, hook.get_batch, lambda i: hook.cancel_batches([i])):
        with pytest.raises(ValueError, match=r"must be DLI batch job id|must be a DLI batch job id"):
            call(BATCH_ID + "\n")
    with pytest.raises(ValueError, match="batch_id must be a DLI batch job id"):
        DLICancelBatchOperator(task_id="cancel", batch_id=BATCH_ID + "\n")
    assert dli_emulator.request_log == []


def test_a_trailing_newline_in_project_region_or_memory(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    with pytest.raises(ValueError, match="project_id must be up to 64 letters and digits"):
        make_hook(dli_emulator.connection(), project_id=DEFAULT_PROJECT_ID + "\n")
    regional = {**dli_emulator.connection(), "host": None}
    with pytest.raises(ValueError, match="region must be a Huawei Cloud region"):
        make_hook(regional, region="cn-north-4\n").cancel_batch(BATCH_ID)
    with pytest.raises(ValueError, match="driver_memory must look like '512M' or '2G'"):
        submit_operator(driver_memory="2G\n")
    with pytest.raises(ValueError, match="project_id must be up to 64 letters and digits"):
        submit_operator(project_id="p1\n")
    assert dli_emulator.request_log == []


def test_the_example_dags_form_refuses_a_trailing_newline() -> None:
    try:
        from airflow.sdk.exceptions import ParamValidationError
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import ParamValidationError

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    dagbag = DagBag(dag_folder=str(REPO / "example_dags" / "example_dli_cancel_batch.py"))
    param = dagbag.dags["example_dli_cancel_batch"].params.get_param("batch_id")
    assert param.resolve(BATCH_ID) == BATCH_ID
    with pytest.raises(ParamValidationError):
        param.resolve(BATCH_ID + "\n")


# Keys pasted with whitespace around them work; a key with whitespace inside is named, never shown


def test_access_and_secret_key_with_surrounding_whitespace_work(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    connection = {
        **dli_emulator.connection(),
        "login": f" {DEFAULT_ACCESS_KEY}\n",
        "password": f"{DEFAULT_SECRET_KEY}\n",
    }
    hook = make_hook(connection)
    batch_id = str(hook.create_batch(SUBMIT_BODY)["id"])
    assert hook.cancel_batch(batch_id)["cancelled"] is True
    assert [record.status for record in dli_emulator.request_log] == [200, 200]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"password": "secret key\twith a tab"}, r"the secret access key \(password\)"),
        ({"password": "sécret-key"}, r"the secret access key \(password\)"),
        ({"login": "AK\nX-Injected: 1"}, r"the access key ID \(login\)"),
        ({"extra": {"project_id": DEFAULT_PROJECT_ID, "security_token": "tok\nen"}}, "the extra 'security_token'"),
        ({"extra": {"project_id": DEFAULT_PROJECT_ID, "auth_type": "token", "token": "a b"}}, "the extra 'token'"),
    ],
)
def test_malformed_keys_are_named_not_shown(
    dli_emulator: DLIEmulator, make_hook: MakeHook, change: dict[str, Any], field: str
) -> None:
    connection = {**dli_emulator.connection(), **change}
    with pytest.raises(ValueError, match=f"{field} of connection .* contains whitespace") as raised:
        make_hook(connection).cancel_batch(BATCH_ID)
    for secret in ("secret key", "sécret", "tok\nen", "a b"):
        assert secret not in str(raised.value)
    assert dli_emulator.request_log == []


# Wrong types: a ValueError naming the field, never a TypeError or AttributeError


def test_wrong_types_in_the_hook(dli_emulator: DLIEmulator, make_hook: MakeHook, hook: DLIHook) -> None:
    with pytest.raises(ValueError, match=r"project_id must be up to 64 letters and digits .*got 123"):
        make_hook(dli_emulator.connection(), project_id=123)
    with pytest.raises(ValueError, match="region must be a string"):
        make_hook(dli_emulator.connection(), region=["eu-de"])
    with pytest.raises(ValueError, match=r"batch_id must be a DLI batch job id.*got 5"):
        hook.cancel_batch(5)  # type: ignore[arg-type]
    for not_a_list in (10, BATCH_ID, {BATCH_ID: 1}):
        with pytest.raises(ValueError, match="batch_ids must be a list of DLI batch job ids"):
            hook.cancel_batches(not_a_list)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a batch job's body must be a mapping"):
        hook.create_batch("file=obs://b/a.jar")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start must be a whole number >= 0"):
        hook.get_batch_log(BATCH_ID, start="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lines must be a whole number >= 1"):
        hook.tail_batch_log(BATCH_ID, lines=0)
    for bad in ({"retry_delay": float("nan")}, {"timeout": True}, {"timeout": (1, float("inf"))}):
        with pytest.raises(ValueError, match=r"retry_delay|timeout"):
            make_hook(dli_emulator.connection(), **bad)
    assert dli_emulator.request_log == []


@pytest.mark.parametrize("name", ["project_id", "security_token", "region"])
def test_an_extra_that_is_not_a_string(dli_emulator: DLIEmulator, make_hook: MakeHook, name: str) -> None:
    """An object is refused, not sent as its text; its content is never shown (it may be a secret)."""
    connection = dli_emulator.connection()
    connection["extra"] = {"project_id": DEFAULT_PROJECT_ID, name: {"value": "hidden-content"}}
    with pytest.raises(ValueError, match=f"the extra '{name}' of connection .* must be a string; got a dict") as raised:
        make_hook(connection).cancel_batch(BATCH_ID)
    assert "hidden-content" not in str(raised.value)
    assert dli_emulator.request_log == []


def test_wrong_types_in_the_submit_operator_rendered_at_run_time(dli_connection: DLIEmulator) -> None:
    """A template may render into anything: the rendered value is checked before the request."""
    for field, rendered, message in (
        ("extra_body", "modules=[x]", "extra_body must be a mapping"),
        ("num_executors", "²", "num_executors must be a whole number > 0"),
        ("queue_name", "", "queue_name must be a non-empty string"),
        ("conf", ["spark.a=1"], "conf must be a mapping"),
        ("args", "--flag", "args must be a list of strings"),
    ):
        operator = submit_operator(**{field: "{{ params.value }}"})
        render(operator, native=True, value=rendered)
        with pytest.raises(ValueError, match=message):
            operator.execute(context={})
    assert dli_connection.request_log == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_name": ""}, "queue_name must be a non-empty string"),
        ({"spark_version": " "}, "spark_version must be a non-empty string"),
        ({"num_executors": 0}, "num_executors must be a whole number > 0"),
        ({"extra_body": ["modules"]}, "extra_body must be a mapping"),
        ({"conf": {1: "x"}}, "conf must be a mapping with string keys"),
        ({"args": ["--flag", None]}, "args must be a list of strings"),
        ({"sc_type": "D"}, "sc_type must be one of"),
        ({"file": None}, "file must be a non-empty string; got None"),
        ({"dli_conn_id": ""}, "dli_conn_id must be a non-empty string"),
    ],
)
def test_submit_operator_values_fail_at_dag_parse(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        submit_operator(**kwargs)


def test_templates_and_xcom_args_wait_for_the_run() -> None:
    """Only values known at parse time are checked then: a template or an XComArg is checked once rendered."""
    with DAG("parse_only", schedule=None):
        upstream = submit_operator(task_id="upstream")
        submit_operator(
            task_id="templated",
            queue_name="{{ params.queue }}",
            num_executors="{{ params.n }}",
            extra_body="{{ params.body }}",
            driver_memory="{{ params.memory }}",
            project_id="{{ params.project }}",
        )
        DLICancelBatchOperator(task_id="by_xcom", batch_id=upstream.output)  # type: ignore[arg-type]
        DLICancelBatchOperator(task_id="list", batch_id=[BATCH_ID, "{{ params.other }}"])
        DLIBatchSensor(task_id="watch", batch_id=upstream.output)  # type: ignore[arg-type]
        DLICancelBatchNotifier(batch_id="{{ params.id }}")


def test_cancel_operator_batch_id_types(dli_connection: DLIEmulator) -> None:
    for bad in (5, {"id": BATCH_ID}, [BATCH_ID, 5]):
        with pytest.raises(ValueError, match="batch_id"):
            DLICancelBatchOperator(task_id="cancel", batch_id=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_id must be a DLI batch job id"):
        DLIBatchSensor(task_id="watch", batch_id=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_id must be a DLI batch job id"):
        DLICancelBatchNotifier(batch_id="not-an-id")
    assert dli_connection.request_log == []


def test_a_batch_id_that_renders_to_nothing_never_cancels_every_job(dli_connection: DLIEmulator) -> None:
    """With native rendering a missing XCom renders to None: that must not turn into "no filter: every job"."""
    live = DLIHook().create_batch(SUBMIT_BODY)["id"]
    operator = DLICancelBatchOperator(task_id="cancel", batch_id="{{ params.id }}")
    render(operator, native=True, id=None)
    assert operator.batch_id is None
    with pytest.raises(ValueError, match="batch_id must be a DLI batch job id or a list of them; got None"):
        operator.execute(context={})
    assert dli_connection.state_of(live) == "starting"
    assert [record.method for record in dli_connection.request_log] == ["POST"]


# Checks that ran too late or not at all


def test_max_workers_is_checked_at_dag_parse() -> None:
    with pytest.raises(ValueError, match="max_workers must be a whole number from 1 to 32; got 64"):
        DLICancelBatchOperator(task_id="cancel", queue_name="etl", max_workers=64)


@pytest.mark.parametrize("deferrable", [True, False])
def test_a_sensor_never_polls_without_a_pause(deferrable: bool) -> None:
    with pytest.raises(ValueError, match="poke_interval must be seconds > 0"):
        DLIBatchSensor(task_id="watch", batch_id=BATCH_ID, poke_interval=0, deferrable=deferrable)
    with pytest.raises(ValueError, match="poll_interval must be seconds > 0"):
        DLIBatchTrigger(batch_id=BATCH_ID, poll_interval=0)


def test_an_empty_queue_rendered_at_run_time_is_not_sent(dli_connection: DLIEmulator) -> None:
    operator = submit_operator(queue_name="{{ params.queue }}")
    render(operator, queue="")
    with pytest.raises(ValueError, match="queue_name must be a non-empty string; got ''"):
        operator.execute(context={})
    assert dli_connection.request_log == []


# A host URL with a user name and password: refused, the secret never shown


@pytest.mark.parametrize("where", ["host", "iam_endpoint"])
def test_userinfo_in_an_endpoint_is_refused_without_showing_it(
    dli_emulator: DLIEmulator, make_hook: MakeHook, where: str
) -> None:
    port = dli_emulator.url.rsplit(":", 1)[1]
    with_secret = f"http://user:SUPER-SECRET-PW@127.0.0.1:{port}"
    if where == "host":
        connection = {**dli_emulator.connection(), "host": with_secret}
    else:
        connection = dli_emulator.connection(auth_type="password")
        connection["extra"]["iam_endpoint"] = with_secret
    hook = make_hook(connection)
    with pytest.raises(ValueError, match="must not hold a user name or password") as raised:
        hook.cancel_batch(BATCH_ID)
    ok, message = make_hook(connection).test_connection()
    assert not ok
    assert "SUPER-SECRET-PW" not in str(raised.value) + message
    assert dli_emulator.request_log == []


# IPv6: "Host: [::1]:port", signed as sent


def test_ipv6_host_header_matches_the_vendor_signer() -> None:
    url = f"http://[::1]:8999/v2.0/{DEFAULT_PROJECT_ID}/batches?size=1"
    headers = {"Content-Type": "application/json", "X-Sdk-Date": "20240101T120000Z"}
    ours = signing.sign_request("GET", url, headers, b"", access_key="AK", secret_key="SK")
    assert ours["Host"] == "[::1]:8999"
    request = SdkRequest(
        method="GET",
        schema="http",
        host="[::1]:8999",  # what the vendor SDK takes from an endpoint URL: its netloc
        resource_path=f"/v2.0/{DEFAULT_PROJECT_ID}/batches",
        query_params=[("size", "1")],
        header_params=dict(headers),
        body=b"",
    )
    vendor = Signer(BasicCredentials("AK", "SK")).sign(request).header_params
    assert (ours["Host"], ours["Authorization"]) == (vendor["Host"], vendor["Authorization"])


def test_ipv6_emulator_with_the_hook_and_the_vendor_sdk(make_hook: MakeHook) -> None:
    with DLIEmulator(host="::1") as emulator:
        assert emulator.url.startswith("http://[::1]:")
        hook = make_hook(emulator.connection())
        batch_id = str(hook.create_batch(SUBMIT_BODY)["id"])
        assert hook.cancel_batch(batch_id)["cancelled"] is True
        port = int(emulator.url.rsplit(":", 1)[1])
        bare = {**emulator.connection(), "host": "http://[::1]", "port": port}
        assert make_hook(bare).test_connection()[0]
        credentials = BasicCredentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_PROJECT_ID)
        client = DliClient.new_builder().with_credentials(credentials).with_endpoints([emulator.url]).build()
        body = CreateSparkJobRequestBody(file="obs://bucket/app.jar", class_name="com.example.App")
        created = client.create_spark_job(CreateSparkJobRequest(body=body))
        assert client.cancel_spark_job(CancelSparkJobRequest(batch_id=created.id)).msg == "deleted"
        assert {record.status for record in emulator.request_log} == {200}


def test_a_bare_ipv6_host_gets_its_brackets(make_hook: MakeHook) -> None:
    connection = {"conn_type": "dli", "host": "::1", "port": 8443, "login": "a", "password": "b"}
    hook = make_hook(dict(connection, extra={"project_id": "p1"}))
    assert hook.settings.base_url == "https://[::1]:8443/v2.0/p1"


def test_a_blank_project_id_means_the_connections(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    """A template that renders empty falls back to the connection's project, as None does."""
    assert make_hook(dli_emulator.connection(), project_id="").test_connection()[0]
    operator = DLICancelBatchOperator(task_id="cancel", batch_id=BATCH_ID, project_id="")
    assert operator.project_id == ""

"""Bulk cancel: listing every page, cancelling many jobs at once, and the operator's list and filter forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from airflow_provider_dli.identity import OWNER_CONF_KEY
from airflow_provider_dli.operators.dli import DLICancelBatchOperator
from tests.airflow_cli import AirflowHome
from tests.conftest import SUBMIT_BODY, MakeHook
from tests.test_mapped_tasks import dag_run_state

if TYPE_CHECKING:
    from airflow.sdk import Context

TEST_DAGS = Path(__file__).parent / "dags"


def submit(hook: DLIHook, name: str = "job", queue: str = "etl", owner: str | None = None, **conf: Any) -> str:
    """A job; ``owner`` (a run id of the DAG ``nightly``) adds the owner record the submit operator writes."""
    spark_conf = {f"dli.emulator.{k}": v for k, v in conf.items()}
    if owner is not None:
        task_id = name.rsplit(".", 1)[-1]
        record: dict[str, Any] = {"instance": "airflow", "dag_id": "nightly", "run_id": owner, "task_id": task_id}
        record |= {"map_index": -1, "try_number": 1, "wait": False}
        spark_conf[OWNER_CONF_KEY] = json.dumps(record)
    body = dict(SUBMIT_BODY, name=name, queue=queue, conf=spark_conf)
    return str(hook.create_batch(body)["id"])


def test_list_batches_pages_filters_and_deduplicates(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    etl = {submit(hook, queue="etl") for _ in range(5)}
    submit(hook, queue="adhoc")
    assert {batch["id"] for batch in hook.list_batches(page_size=2, queue_name="etl")} == etl
    pages = [r for r in dli_emulator.request_log if r.method == "GET"]
    assert len(pages) == 3  # 2 + 2 + 1


def test_list_batches_sees_a_job_once_when_pages_shift(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    ids = [submit(hook) for _ in range(4)]
    listing = hook.list_batches(page_size=2)  # newest first: a new job pushes the others down a page
    first_page = [next(listing)["id"], next(listing)["id"]]
    newest = submit(hook)
    rest = [batch["id"] for batch in listing]
    assert len(first_page + rest) == len(set(first_page + rest)) == 4
    assert set(first_page + rest) == set(ids)
    assert newest not in rest


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"queue": "etl"}, "unknown batch job filter 'queue'"),
        ({"state": "finished"}, "filter 'state' must be one of"),
        ({"start": "yesterday"}, "filter 'start' must be epoch milliseconds"),
        ({"order": "NEWEST"}, "filter 'order' must be one of"),
        ({"job_name": " "}, "filter 'job_name' must be a non-empty string"),
        ({"page_size": 0}, "page_size must be a whole number from 1 to 100"),
    ],
)
def test_bad_filters_are_rejected_before_any_request(
    dli_emulator: DLIEmulator, hook: DLIHook, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hook.list_batches(**filters)  # at the call, before iterating
    assert dli_emulator.request_log == []


def test_cancel_batches_partial_failure(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(dli_emulator.connection(), retry_limit=0)
    live = [submit(hook) for _ in range(6)]
    finished = submit(hook, starting_seconds=0, running_seconds=0)
    unknown = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"
    dli_emulator.add_fault(f".*/batches/{live[2]}", method="DELETE", status=503, times=None)
    outcomes = hook.cancel_batches([*live, finished, unknown, live[0]], max_workers=4)
    by_id = {outcome["batch_id"]: outcome for outcome in outcomes}
    assert [outcome["batch_id"] for outcome in outcomes] == [*live, finished, unknown]  # in order, once each
    assert by_id[live[2]]["outcome"] == "error"
    assert "HTTP 503" in str(by_id[live[2]]["error"])
    assert by_id[unknown]["outcome"] == "error"
    assert by_id[finished] == {
        "job_id": finished,
        "kind": "batch",
        "batch_id": finished,  # the key bulk cancels returned before SQL jobs: kept for a batch job
        "outcome": "already_finished",
        "state": "success",
        "error": None,
    }
    others = [batch_id for batch_id in live if batch_id != live[2]]
    assert all(by_id[batch_id]["outcome"] == "cancelled" for batch_id in others)
    assert all(dli_emulator.state_of(batch_id) == "dead" for batch_id in others)
    assert dli_emulator.state_of(live[2]) == "starting"


def test_one_freak_answer_is_that_ids_error_only(dli_emulator: DLIEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(dli_emulator.connection(), retry_limit=0)
    ids = [submit(hook) for _ in range(5)]
    nested = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError, not a ValueError
    dli_emulator.add_fault(f".*/batches/{ids[1]}", method="DELETE", status=200, body=nested)
    outcomes = hook.cancel_batches(ids, max_workers=2)
    assert [outcome["outcome"] for outcome in outcomes] == ["cancelled", "error", "cancelled", "cancelled", "cancelled"]
    assert str(outcomes[1]["error"]).startswith("RecursionError: ")
    assert len(str(outcomes[1]["error"])) <= 500


def test_bulk_cancel_reports_jobs_already_being_cancelled(make_hook: MakeHook) -> None:
    with DLIEmulator(starting_seconds=600, cancel_lag=1.0) as emulator:
        hook = make_hook(emulator.connection())
        ids = [submit(hook) for _ in range(3)]
        hook.cancel_batch(ids[0])
        outcomes = hook.cancel_batches(ids)
        assert [(o["outcome"], o["state"]) for o in outcomes] == [
            ("already_cancelling", "dead"),
            ("cancelled", None),
            ("cancelled", None),
        ]


def test_cancel_batches_checks_every_id_first(dli_emulator: DLIEmulator, hook: DLIHook) -> None:
    with pytest.raises(ValueError, match=r"not: '\.\./x', None"):
        hook.cancel_batches([submit(hook), "../x", None])  # type: ignore[list-item]
    assert dli_emulator.cancel_events == []


def run_operator(**kwargs: Any) -> Any:
    operator = DLICancelBatchOperator(task_id="cancel", **kwargs)
    return operator.execute(cast("Context", {"ti": _TaskInstance()}))


class _TaskInstance:
    """What the cancel operator reads from its context's task instance, and the XComs it pushes."""

    dag_id, run_id = "nightly", "scheduled__2026-11-28T00:00:00+00:00"
    pushed: ClassVar[dict[str, Any]] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_thousands_of_failures_give_a_short_message_and_keep_every_outcome(
    dli_connection: DLIEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    ids = dli_connection.seed_jobs(5000)
    failing = {batch_id for batch_id in ids if batch_id[0] in "01"}  # about one in eight
    dli_connection.add_fault(r".*/batches/[01][^/]*", method="DELETE", status=403, times=None)
    _TaskInstance.pushed.clear()
    with pytest.raises(Exception, match="DLI batch jobs were not cancelled") as raised:
        run_operator(batch_id=ids)
    message = str(raised.value)
    assert len(message) < 1500
    assert f"{len(failing)} of 5000 DLI batch jobs were not cancelled" in message
    assert f"Cancelled {5000 - len(failing)} DLI batch jobs" in message
    assert f"and {len(failing) - 3} more" in message
    outcomes = _TaskInstance.pushed["return_value"]
    assert [outcome["batch_id"] for outcome in outcomes] == ids
    assert {o["batch_id"] for o in outcomes if o["outcome"] == "error"} == failing
    log = capfd.readouterr()
    table = (log.out + log.err).partition("could not be cancelled:")[2]
    rows = {
        line.split()[0]: tuple(line.split()[1:3])
        for line in table.splitlines()
        if line.startswith("  ") and "-" in line
    }
    assert rows == {outcome["batch_id"]: ("batch", outcome["outcome"]) for outcome in outcomes}  # id, kind, outcome


def test_operator_with_a_list_of_ids(dli_connection: DLIEmulator) -> None:
    hook = DLIHook()
    ids = [submit(hook) for _ in range(3)]
    outcomes = run_operator(batch_id=ids)
    assert [outcome["outcome"] for outcome in outcomes] == ["cancelled"] * 3


def test_operator_fails_after_trying_every_id(dli_connection: DLIEmulator) -> None:
    hook = DLIHook()
    ids = [submit(hook) for _ in range(3)]
    dli_connection.add_fault(f".*/batches/{ids[0]}", method="DELETE", status=503, times=None)
    with pytest.raises(Exception, match=f"1 of 3 DLI batch jobs were not cancelled .*{ids[0]}: .*HTTP 503"):
        run_operator(batch_id=ids)
    assert [dli_connection.state_of(batch_id) for batch_id in ids[1:]] == ["dead", "dead"]


def test_queue_filter_holds_when_the_server_ignores_it(dli_connection: DLIEmulator) -> None:
    hook = DLIHook()
    etl, adhoc = submit(hook, queue="etl"), submit(hook, queue="adhoc")
    # A server (or a proxy) that ignores queue_name answers with every job of the project.
    everything = {"from": 0, "total": 2, "sessions": list(hook.list_batches())}
    dli_connection.add_fault(r".*/batches", method="GET", status=200, body=json.dumps(everything), times=None)
    outcomes = run_operator(queue_name="etl")
    assert [outcome["batch_id"] for outcome in outcomes] == [etl]
    assert dli_connection.state_of(adhoc) == "starting"


def test_operator_filter_form_and_list_only(dli_connection: DLIEmulator) -> None:
    hook = DLIHook()
    run, before = _TaskInstance.run_id, "scheduled__2026-11-27T00:00:00+00:00"
    mine = [
        submit(hook, name=f"airflow.nightly.scheduled__2026-11-28T00_00_00_00_00.t{n}", owner=run) for n in range(3)
    ]
    other_run = submit(hook, name="airflow.nightly.scheduled__2026-11-27T00_00_00_00_00.t0", owner=before)
    other_queue = submit(hook, name="airflow.nightly.scheduled__2026-11-28T00_00_00_00_00.x", queue="adhoc", owner=run)
    done = submit(
        hook,
        name="airflow.nightly.scheduled__2026-11-28T00_00_00_00_00.y",
        owner=run,
        starting_seconds=0,
        running_seconds=0,
    )
    # Named like the run's jobs, but without an owner record: no run-wide tool touches it.
    unowned = submit(hook, name="airflow.nightly.scheduled__2026-11-28T00_00_00_00_00.z")

    preview = run_operator(this_dag_run=True, queue_name="etl", list_only=True)
    assert {row["batch_id"] for row in preview} == set(mine)
    assert dli_connection.cancel_events == []

    outcomes = run_operator(this_dag_run=True, queue_name="etl")
    assert {outcome["batch_id"] for outcome in outcomes} == set(mine)
    assert {dli_connection.state_of(batch_id) for batch_id in mine} == {"dead"}
    assert dli_connection.state_of(other_run) == dli_connection.state_of(other_queue) == "starting"
    assert dli_connection.state_of(unowned) == "starting"
    assert dli_connection.state_of(done) == "success"

    by_name = run_operator(job_name="2026-11-27")
    assert [outcome["batch_id"] for outcome in by_name] == [other_run]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give either batch_id, or a filter"),
        ({"batch_id": "x", "queue_name": "etl"}, "give either batch_id, or a filter"),
        ({"batch_id": "x", "list_only": True}, "list_only lists what a filter matches"),
        ({"queue_name": "etl", "states": ["success"]}, "states can only be live states"),
        ({"queue_name": "etl", "states": "running"}, "states must be a non-empty list"),
        ({"queue_name": "etl", "max_workers": 0}, "max_workers must be a whole number from 1 to 32"),
    ],
)
def test_operator_arguments_fail_at_dag_parse(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DLICancelBatchOperator(task_id="cancel", **kwargs)


def test_kill_switch_in_a_real_dag_run(airflow_home: AirflowHome) -> None:
    with DLIEmulator(starting_seconds=0.2, running_seconds=600) as emulator:
        result = airflow_home.run("dags", "test", "dli_test_kill_switch", dags_folder=TEST_DAGS, emulator=emulator)
        output = result.stdout + result.stderr
        assert "ValueError: bad input" in output
        # The kill switch, the run's leaf, fails after cancelling: so the run fails, as a task did.
        assert result.returncode != 0, output[-3000:]
        assert dag_run_state(airflow_home, "dli_test_kill_switch") == "failed"
        assert "Kill switch: Cancelled 3 DLI batch jobs" in output
        assert len(emulator.jobs) == 3
        assert {emulator.state_of(batch_id) for batch_id in emulator.jobs} == {"dead"}
        assert {event.user_agent.rpartition("(")[2] for event in emulator.cancel_events} == {
            "dli_test_kill_switch.cancel_this_runs_jobs)"
        }

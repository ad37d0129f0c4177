"""One IAM token per machine, on a running deployment: mapped task runs with password auth, each in a process
of its own, several at once, make one IAM token request per machine (the local topology is one machine, the
Celery topology two); after the token is revoked, exactly one more per machine."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from tests.e2e.conftest import Measurement
from tests.e2e.dags.dli_e2e_tokens import PASSWORD_CONN_ID
from tests.e2e.deployment import Deployment

DAG_ID = "dli_e2e_tokens"
MAPPED = 8


def run_cancels(airflow: Deployment, dli: DLIEmulator, count: int) -> list[str]:
    """One DAG run whose ``count`` mapped tasks each cancel one job; the ids of the jobs."""
    ids = dli.seed_jobs(count)
    run_id = f"e2e_tokens_{int(time.time() * 1000)}_{secrets.token_hex(2)}"
    airflow.api(
        "POST", f"/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": {"batch_ids": ids}}
    )
    assert airflow.wait_for_run_state(DAG_ID, run_id, "success", "failed") == "success", airflow.diagnostics()
    return ids


@pytest.mark.topologies("local", "celery")
def test_mapped_task_runs_share_one_iam_token_per_machine(
    airflow_deployment: Deployment, e2e_emulator: DLIEmulator, measure: list[Measurement]
) -> None:
    airflow, dli = airflow_deployment, e2e_emulator
    connection = dli.connection(auth_type="password")
    airflow.api(
        "POST",
        "/connections",
        {
            "connection_id": PASSWORD_CONN_ID,
            "conn_type": "dli",
            "host": connection["host"],
            "login": connection["login"],
            "password": connection["password"],
            "extra": json.dumps(connection["extra"]),
        },
        expect=(201, 409),
    )
    airflow.wait_for_dags(DAG_ID)
    before = dli.counters.token_requests
    machines = len(airflow.token_folders)

    ids = run_cancels(airflow, dli, MAPPED)
    assert [dli.state_of(batch_id) for batch_id in ids] == ["dead"] * MAPPED
    assert dli.counters.token_requests - before == machines
    assert [len(list(folder.glob("*.json"))) for folder in airflow.token_folders] == [1] * machines

    dli.revoke_tokens()
    ids = run_cancels(airflow, dli, MAPPED)
    assert [dli.state_of(batch_id) for batch_id in ids] == ["dead"] * MAPPED
    assert dli.counters.token_requests - before == 2 * machines
    measure.append(
        Measurement(
            f"password auth, {MAPPED} mapped tasks: IAM logins (one per machine)",
            "test_mapped_task_runs_share_one_iam_token_per_machine",
            None,
            f"{machines} login(s) on {machines} machine(s), {machines} more after a revocation",
        )
    )

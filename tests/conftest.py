"""Shared fixtures. Every test talks HTTP to a real local server: the DLI emulator (``dli_emulator``, from
the package's pytest plugin) or a bare socket server for transport failures."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Airflow reads its home at import time: keep the tests away from ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dli-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# ... and every process they start away from the user's IAM token cache (each test gets its own folder below).
os.environ["AIRFLOW__DLI__LOGIN_CACHE_PATH"] = tempfile.mkdtemp(prefix="dli-test-tokens-")

from airflow_provider_dli.client.token_store import TOKEN_STORE
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from tests.airflow_cli import AirflowHome, migrated_home

SUBMIT_BODY = {"file": "obs://bucket/jobs/app.jar", "className": "com.example.App", "queue": "etl"}

# A job stays where the test put it: on a loaded machine, seconds pass between two lines of a test and more
# between submitting a job and ``airflow dags test`` reaching its cancel. Jobs here stay ``starting`` for ten
# minutes unless a test asks for other lifetimes (``dli.emulator.*`` conf, or its own emulator), or ends them
# with ``DLIEmulator.finish``.
STILL = 600.0


@pytest.fixture
def dli_emulator() -> Iterator[DLIEmulator]:
    """The plugin's emulator, with jobs that never move by themselves within a test."""
    with DLIEmulator(starting_seconds=STILL, running_seconds=STILL) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def token_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test's own IAM token folder (for the hooks and the processes it starts) and an empty in-process cache:
    no test shares a token with another one, or with the user's real cache."""
    folder = tmp_path_factory.mktemp("tokens") / "iam-tokens"
    monkeypatch.setenv("AIRFLOW__DLI__LOGIN_CACHE_PATH", str(folder))
    TOKEN_STORE.clear()
    yield folder
    TOKEN_STORE.clear()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 240.0) -> None:
    """Wait for an event (a request the emulator saw, a state), never for a fixed time; ``timeout`` only bounds
    a test that would otherwise hang, and is generous for a loaded machine."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def state_polls(emulator: DLIEmulator, status: int = 200) -> int:
    """How many state reads the emulator has answered with ``status``: a task polls only after its job's id is
    in XCom and on the operator, so the first poll marks the moment a task is waiting on its job."""
    return sum(record.path.endswith("/state") and record.status == status for record in emulator.request_log)


MakeHook = Callable[..., DLIHook]


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch) -> MakeHook:
    """``make_hook(connection_dict, **hook_kwargs)``: a hook on a connection set through ``AIRFLOW_CONN_*``."""
    counter = iter(range(1_000_000))

    def make(connection: dict[str, Any], **hook_kwargs: Any) -> DLIHook:
        conn_id = f"dli_test_{next(counter)}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        hook_kwargs.setdefault("retry_delay", 0.01)
        return DLIHook(conn_id, **hook_kwargs)

    return make


@pytest.fixture
def hook(dli_emulator: DLIEmulator, make_hook: MakeHook) -> DLIHook:
    return make_hook(dli_emulator.connection())


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """A migrated SQLite AIRFLOW_HOME shared by the tests that run ``airflow`` commands."""
    return migrated_home(tmp_path_factory.mktemp("airflow-home"))


class RecordedAirflow:
    """Airflow's answers to the sweeper's Task SDK calls, in the execution API's format, for tests of what the
    sweep does with DLI (the calls themselves run for real in tests/test_sweeper.py's DAG runs)."""

    def __init__(self, task_states: dict[str, dict[str, dict[str, str]]], failed_runs: frozenset[str] = frozenset()):
        self.task_states, self.failed_runs = task_states, failed_runs
        self.pushed: dict[str, Any] = {}

    def get_task_states(
        self,
        dag_id: str,
        *,
        map_index: int | None = None,
        task_ids: list[str] | None = None,
        run_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        runs = self.task_states.get(dag_id, {})
        return {run_id: states for run_id, states in runs.items() if run_ids is None or run_id in run_ids}

    def get_dr_count(self, dag_id: str, *, run_ids: list[str] | None = None, states: list[str] | None = None) -> int:
        return len(set(run_ids or []) & self.failed_runs)

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        return "failed" if run_id in self.failed_runs else "running"

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

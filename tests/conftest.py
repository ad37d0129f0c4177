"""Shared fixtures. Every test talks HTTP to a real local server: the DLI emulator (``dli_emulator``, from
the package's pytest plugin) or a bare socket server for transport failures."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Airflow reads its home at import time: keep the tests away from ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dli-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_dli.auth import TOKEN_CACHE
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.hooks.dli import DLIHook
from tests.airflow_cli import AirflowHome, migrated_home

SUBMIT_BODY = {"file": "obs://bucket/jobs/app.jar", "className": "com.example.App", "queue": "etl"}


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


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

"""pytest fixtures for testing DAGs against the local DLI emulator (registered as the ``dli_emulator`` plugin).

``dli_emulator`` yields a running :class:`~airflow_provider_dli.emulator.DLIEmulator`; ``dli_connection``
points the Airflow connection ``dli_default`` at it through ``AIRFLOW_CONN_DLI_DEFAULT``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_dli.emulator.server import DLIEmulator


@pytest.fixture
def dli_emulator() -> Iterator[DLIEmulator]:
    with DLIEmulator() as emulator:
        yield emulator


@pytest.fixture
def dli_connection(dli_emulator: DLIEmulator, monkeypatch: pytest.MonkeyPatch) -> DLIEmulator:
    monkeypatch.setenv("AIRFLOW_CONN_DLI_DEFAULT", json.dumps(dli_emulator.connection()))
    return dli_emulator

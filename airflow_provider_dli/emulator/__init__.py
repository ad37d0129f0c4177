"""A local Data Lake Insight emulator for offline DAG runs and tests: see :class:`DLIEmulator`."""

from __future__ import annotations

from airflow_provider_dli.emulator.server import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_USER,
    DLIEmulator,
    Fault,
    Readings,
)

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_DOMAIN",
    "DEFAULT_PASSWORD",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_SECRET_KEY",
    "DEFAULT_USER",
    "DLIEmulator",
    "Fault",
    "Readings",
]

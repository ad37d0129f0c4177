"""The few names that moved between Airflow 3.1 and 3.3: one place to import them from."""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1: still in airflow-core
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

__all__ = ["AirflowFailException"]

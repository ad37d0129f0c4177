"""The provider's errors, where users import them from; defined in :mod:`airflow_provider_dli.client.errors`."""

from __future__ import annotations

from airflow_provider_dli.client.errors import DLIAPIError, DLIConnectionError, DLIError

__all__ = ["DLIAPIError", "DLIConnectionError", "DLIError"]

"""The DLI client: signing, IAM tokens, the transport and the DLI APIs, importable without Airflow.

from airflow_provider_dli.client import AKSK, ClientSettings, DLIClient

client = DLIClient(ClientSettings("https://dli.eu-de.otc.t-systems.com", project_id, AKSK(ak, sk)))
batch_id = client.create_batch({"file": "obs://bucket/app.jar", "className": "com.example.App"})["id"]
"""

from __future__ import annotations

from airflow_provider_dli.client.cancels import (
    BulkCancelOutcome,
    CancelOutcome,
    CancelResult,
    bulk_cancel_counts,
    bulk_cancel_failure,
    bulk_cancel_table,
    cancel_summary,
)
from airflow_provider_dli.client.dli import DLIClient
from airflow_provider_dli.client.errors import DLIAPIError, DLIConnectionError, DLIError
from airflow_provider_dli.client.settings import AKSK, Auth, ClientSettings, IAMPassword, IAMToken

__all__ = [
    "AKSK",
    "Auth",
    "BulkCancelOutcome",
    "CancelOutcome",
    "CancelResult",
    "ClientSettings",
    "DLIAPIError",
    "DLIClient",
    "DLIConnectionError",
    "DLIError",
    "IAMPassword",
    "IAMToken",
    "bulk_cancel_counts",
    "bulk_cancel_failure",
    "bulk_cancel_table",
    "cancel_summary",
]

"""DLIClient: the whole conversation with DLI, free of Airflow.

Built from :class:`~airflow_provider_dli.client.settings.ClientSettings`; each API sits on the shared request
layer (:class:`~airflow_provider_dli.client.conversation.Conversation`) in a module of its own, and the client
is their sum. The Airflow hook (:mod:`airflow_provider_dli.hooks.dli`) builds one from a connection.
"""

from __future__ import annotations

from airflow_provider_dli.client.batches import BatchJobs
from airflow_provider_dli.client.sql_jobs import SqlJobs


class DLIClient(BatchJobs, SqlJobs):
    """Talk to the DLI APIs of one project: ``DLIClient(ClientSettings(endpoint, project_id, auth))``.

    The Spark batch-job API (:class:`~airflow_provider_dli.client.batches.BatchJobs`): ``create_batch``,
    ``get_batch``, ``get_batch_state``, ``get_batch_log``, ``tail_batch_log``, ``list_batches``,
    ``cancel_batch``, ``cancel_batches``; the SQL-job API (:class:`~airflow_provider_dli.client.sql_jobs.SqlJobs`):
    ``submit_sql_job``, ``get_sql_job_status``, ``get_sql_job_state``, ``preview_sql_job``, ``list_sql_jobs``,
    ``cancel_sql_job``, ``cancel_sql_jobs``; and ``request`` for any other call.
    """

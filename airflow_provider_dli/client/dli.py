"""DLIClient: the whole conversation with DLI, free of Airflow.

Built from :class:`~airflow_provider_dli.client.settings.ClientSettings`; each API sits on the shared request
layer (:class:`~airflow_provider_dli.client.conversation.Conversation`) in a module of its own, and the client
is their sum. The Airflow hook (:mod:`airflow_provider_dli.hooks.dli`) builds one from a connection.
"""

from __future__ import annotations

from airflow_provider_dli.client.batches import BatchJobs


class DLIClient(BatchJobs):
    """Talk to the DLI APIs of one project: ``DLIClient(ClientSettings(endpoint, project_id, auth))``.

    The Spark batch-job API (:class:`~airflow_provider_dli.client.batches.BatchJobs`): ``create_batch``,
    ``get_batch``, ``get_batch_state``, ``get_batch_log``, ``tail_batch_log``, ``list_batches``,
    ``cancel_batch``, ``cancel_batches``; and ``request`` for any other call.
    """

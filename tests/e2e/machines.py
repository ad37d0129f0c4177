"""The two worker machines of the Celery topology, as Airflow and the e2e DAGs see them.

Each has a Celery queue of its own (besides ``default``), so that a DAG can place a task on one machine
(``queue=MACHINE_A``); the LocalExecutor ignores queues, so the same DAGs run unchanged on the local topology.
:func:`hostname` is the workers' ``[core] hostname_callable``: Airflow records it as the task instance's host.
"""

from __future__ import annotations

import os

MACHINE_A = "machine_a"
MACHINE_B = "machine_b"
MACHINES = (MACHINE_A, MACHINE_B)
HOSTNAME_VARIABLE = "DLI_E2E_HOSTNAME"


def hostname() -> str:
    """This machine's name: set per worker by the deployment (``[core] hostname_callable``)."""
    return os.environ[HOSTNAME_VARIABLE]

"""The XCom keys that the submit operator writes and the trigger, the notifier and the kill switch read.

Their own module, free of imports, so that each of those reads them without importing the others.
"""

from __future__ import annotations

XCOM_BATCH_ID = "dli_batch_id"
"""The key under which the submit operator pushes the job's id the moment the job exists."""
XCOM_RETURN_VALUE = "return_value"
"""Airflow's key for what a task returns: a submit task's batch id, or ids from a task that used the hook."""
XCOM_CANCELLED_BY = "dli_cancelled_by"
"""The key, followed by ``:`` and the job's id, under which a canceller of this provider records itself on the task
instance that owns the job (:mod:`airflow_provider_dli.cancel_records`)."""
BATCH_ID_KEYS = (XCOM_BATCH_ID, XCOM_RETURN_VALUE)
"""Where a failure callback looks for a task's batch ids, in this order."""
XCOM_SQL_JOB_ID = "dli_sql_job_id"
"""The key under which the SQL job operator pushes the job's id the moment DLI accepts the job."""

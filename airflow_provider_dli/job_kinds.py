"""The kinds of DLI job that a wait, a cancel and a sweep treat alike: Spark batch jobs and SQL jobs.

Each kind is data (its states, the XCom key its operator pushes the id under, the names of the client's methods
that read its state and cancel it), so that one trigger, one notifier, one kill switch and one sweeper serve
both. Free of imports beyond the states and XCom keys, so that it is read while a DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_dli.states import LIVE_STATES, SQL_LIVE_STATES, SQL_TERMINAL_STATES, TERMINAL_STATES
from airflow_provider_dli.xcom_keys import XCOM_BATCH_ID, XCOM_SQL_JOB_ID


@dataclass(frozen=True)
class JobKind:
    name: str
    noun: str
    """How a log line names a job of this kind."""
    xcom_key: str
    live: frozenset[str]
    terminal: frozenset[str]
    succeeded: str
    """The one state in which a job did its work: a retry that finds it there succeeds with it."""
    read_state: str
    """The client's (and the hook's) method that reads a job's state: ``method(job_id) -> str``."""
    cancel: str
    """... that cancels one job: ``method(job_id, settle_timeout=...) -> CancelResult``."""
    cancel_many: str
    """... that cancels many: ``method(job_ids, max_workers=...) -> list[BulkCancelOutcome]``."""

    @property
    def known(self) -> frozenset[str]:
        return self.live | self.terminal


BATCH = JobKind(
    "batch", "DLI batch job", XCOM_BATCH_ID, LIVE_STATES, TERMINAL_STATES, "success", "get_batch_state", "cancel_batch",
    "cancel_batches",
)  # fmt: skip
SQL = JobKind(
    "sql", "DLI SQL job", XCOM_SQL_JOB_ID, SQL_LIVE_STATES, SQL_TERMINAL_STATES, "FINISHED", "get_sql_job_state",
    "cancel_sql_job", "cancel_sql_jobs",
)  # fmt: skip
JOB_KINDS: dict[str, JobKind] = {kind.name: kind for kind in (BATCH, SQL)}


def job_kind(name: object) -> JobKind:
    """The kind named ``name``; a ValueError naming the kinds there are."""
    if not isinstance(name, str) or name not in JOB_KINDS:
        raise ValueError(f"job_kind must be one of {sorted(JOB_KINDS)}; got {name!r}")
    return JOB_KINDS[name]

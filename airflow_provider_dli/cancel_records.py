"""Who cancelled a job: each canceller of this provider records itself where the job's waiting task reads it.

DLI has no field to annotate a job with, and reports a cancelled batch job ``dead`` like a failed one, so a task
whose job was cancelled by a kill switch would fail as if Spark had failed (a SQL job ends ``CANCELLED``, but
nothing says by whom). Before it cancels, every canceller of this provider (the cancel operator, the notifier in a
task's callback, the orphan sweeper, ``airflow dli cancel``) therefore writes the XCom ``dli_cancelled_by:JOB_ID``
onto the task instance that owns the job, as the job's owner record names it. The waiting task reads its own XCom
when its job ends ``dead`` (a SQL job ``CANCELLED``): one Task SDK call, no database connection, on any executor. A
deferred task reads it in ``execute_complete``, on a worker: the trigger only reports the state, so the triggerer
never needs the record (and cannot write XCom anyway). A cancel by ids reads each job's owner first: a batch job's
from its details, a SQL job's from the tags of its status answer.

Why XCom of the owning task instance: the owner record says exactly which one that is, whoever cancels (another
DAG's sweeper, a terminal); Airflow clears it when the task's next try starts (not when a deferred task resumes),
so a record never outlives the try whose job it names; it is in the UI's XCom tab beside the job's id; and
Airflow deletes it with the DAG run. One key per job, because a task instance can own two live jobs (a retry's
takeover, a duplicate the sweeper cancels as older than the newer one) whose cancellers may write at the same
moment: a record for one never replaces the other's, with no read-modify-write to race. A record carries the job's
id too, which the reader checks.

Written before the cancel, so that a task that sees ``dead`` a moment after the cancel finds it. Best effort: a
record that cannot be written is logged, never a reason not to cancel. Never written from the DAG processor (a
DAG-level callback, or the callback of a killed task): its supervisor answers no XCom write, and the request would
wait forever; the tasks such a callback cancels for have ended by then anyway.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow_provider_dli.identity import JobOwner, owner_of
from airflow_provider_dli.owner_tags import owner_from_tags
from airflow_provider_dli.states import LIVE_STATES, SQL_LIVE_STATES
from airflow_provider_dli.xcom_keys import XCOM_CANCELLED_BY

Record = dict[str, str]
"""``{"job_id", "by", "at"}``: the job (batch or SQL), who cancelled it (a phrase), and when (UTC, ISO 8601)."""
Writer = Callable[[JobOwner, Record], None]

log = logging.getLogger(__name__)

KILLED_LINES = re.compile(
    r"RECEIVED SIGNAL (TERM|KILL)|(application|app|job)\b.{0,40}\bkilled by|killed by (a |the )?(user|cancel)|"
    r"cancel(l?ed)? by (a |the )?(user|request)",
    re.IGNORECASE,
)
"""A driver log line that says the application was killed rather than failed on its own; not a container or an
executor killed for its memory, nor a stage cancelled inside a failing job: those are the job's own failure."""
OWNER_READS = 100
"""Jobs of a cancel by ids whose owners are read (one request each, before the cancel): a cancel of thousands of
ids is not held up by thousands of reads; the jobs past these get no record."""


def canceller(ti: Any, what: str) -> str:
    """``what`` (the path, e.g. ``the kill switch``), then the task instance it runs in; never an error, which
    would stop the cancel it describes."""
    map_index = getattr(ti, "map_index", None)
    mapped = f"[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else ""
    task, dag, run = (getattr(ti, name, "?") for name in ("task_id", "dag_id", "run_id"))
    return f"{what} in task {task}{mapped} of DAG {dag}, run {run}"


def record_cancels(jobs: Iterable[tuple[str, JobOwner | None]], by: str) -> None:
    """Record on each job's owning task instance that ``by`` cancels it; jobs of no owner, or of another
    deployment's Airflow, get none."""
    from airflow_provider_dli.identity import instance_id

    write = _writer()
    if write is None:
        return
    try:
        this_airflow = instance_id()
    except Exception as error:  # a malformed [dli] instance_id: never a reason not to cancel
        log.warning("Could not record who cancels DLI jobs: %s", error)
        return
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for job_id, owner in jobs:
        if owner is None or owner.instance != this_airflow:
            continue
        try:
            write(owner, {"job_id": job_id, "by": by, "at": at})
        except Exception as error:
            log.warning("Could not record on task %s who cancels DLI job %s: %s", owner.describe(), job_id, error)


class OwnerReader(Protocol):
    """What reading a job's owner by its id needs from a hook (or a client)."""

    def get_batch(self, batch_id: str) -> dict[str, Any]: ...
    def get_sql_job_status(self, job_id: str) -> dict[str, Any]: ...


def _live_batch_owner(hook: OwnerReader, batch_id: str) -> JobOwner | None:
    job = hook.get_batch(batch_id)
    return owner_of(job) if job.get("state") in LIVE_STATES else None


def _live_sql_owner(hook: OwnerReader, job_id: str) -> JobOwner | None:
    status = hook.get_sql_job_status(job_id)
    return owner_from_tags(status.get("tags")) if status.get("status") in SQL_LIVE_STATES else None


OWNER_BY_ID: dict[str, Callable[[OwnerReader, str], JobOwner | None]] = {
    "batch": _live_batch_owner,  # the Spark conf of its details
    "sql": _live_sql_owner,  # the tags of its status answer
}
"""Where a job of each kind carries its owner record, read by the job's id alone; none for a job that has ended
already: its cancel finds it finished, and a record would call its own failure a cancel (and stop its retry)."""


def owners_by_id(hook: OwnerReader, job_ids: Sequence[str], kind: str = "batch") -> list[tuple[str, JobOwner | None]]:
    """Each job's owner, read by its id (a cancel by id knows no more than the id). The first job whose owner
    cannot be read ends the reading, so that a refused credential fails once, not once per job, before the
    cancel itself; the rest (and any past :data:`OWNER_READS`) then get no record."""
    if _writer() is None:
        return []
    owners: list[tuple[str, JobOwner | None]] = []
    for job_id in job_ids[:OWNER_READS]:
        try:
            owners.append((job_id, OWNER_BY_ID[kind](hook, job_id)))
        except Exception as error:
            log.info(
                "Could not read whose DLI %s job %s is, so who cancels it is not recorded: %s", kind, job_id, error
            )
            break
    return owners


def recorded_cancel(ti: Any, job_id: str) -> Record | None:
    """The record of who cancelled ``job_id``, from the XCom of ``ti`` (the waiting task); None when none."""
    from airflow.sdk.execution_time.xcom import XCom

    if _task_sdk() is None:
        return None  # not in a task: a test calling execute itself
    try:
        value = XCom.get_one(
            key=_key(job_id), dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index
        )
    except Exception:
        log.warning("Could not read who cancelled DLI job %s", job_id, exc_info=True)
        return None
    if isinstance(value, str):  # written by the CLI: Airflow's database API stores the record as JSON text
        with suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, dict) and value.get("job_id") == job_id:
        return {key: str(value.get(key, "")) for key in ("job_id", "by", "at")}
    return None


CANCELLED_OUTSIDE = (
    "it was cancelled outside this DAG run (in the DLI console, by another tool, or by DLI), not by this task nor "
    "by a canceller of this provider"
)
NOT_RETRIED = "not retried (the retry would run the job again)"


def _cancelled_by(record: Record) -> str:
    return f"because it was cancelled by {record['by']} at {record['at']}"


def ended_dead(batch_id: str, record: Record | None, log_lines: Sequence[str]) -> str:
    """Why a job the task waited for ended ``dead``: cancelled by whom this provider recorded; cancelled outside
    (its driver log says it was killed); or, DLI telling the two apart no further, failed or cancelled."""
    if record is not None:
        return (
            f"DLI batch job {batch_id} ended dead {_cancelled_by(record)}: not a failure of the Spark application, "
            f"and {NOT_RETRIED}"
        )
    killed = next((line for line in reversed(log_lines) if KILLED_LINES.search(line)), None)
    if killed is not None:
        return f"DLI batch job {batch_id} ended dead: {CANCELLED_OUTSIDE}; its driver log says: {killed.strip()}"
    return (
        f"DLI batch job {batch_id} ended dead: the Spark application failed (its driver log lines are above), or "
        "the job was cancelled outside this provider (DLI reports both as dead)"
    )


def ended_cancelled(job_id: str, record: Record | None, detail: str) -> str:
    """Why a SQL job the task waited for ended ``CANCELLED`` (DLI's own state, so no log is needed to tell a
    cancel from a failure): cancelled by whom this provider recorded, or else outside it."""
    if record is not None:
        return (
            f"DLI SQL job {job_id} ended CANCELLED {_cancelled_by(record)}: not a failure of the statement, and "
            f"{NOT_RETRIED}"
        )
    return f"DLI SQL job {job_id} ended CANCELLED: {CANCELLED_OUTSIDE}; DLI says: {detail}"


_database_writes = False
"""Set by :func:`write_to_the_database` in a process outside any task that reaches Airflow's database itself."""


def write_to_the_database() -> None:
    """Record into the metadata database from now on, where no Task SDK is there to ask: the CLI."""
    global _database_writes
    _database_writes = True


def _writer() -> Writer | None:
    """How this process writes a task instance's XCom: through the Task SDK in a task (a worker, ``dags test``,
    ``tasks test``), into the metadata database in the CLI; None in the DAG processor, and anywhere else."""
    if _task_sdk() is None:
        return _write_to_database if _database_writes else None
    if _called_by_the_dag_processor():
        return None  # it answers no SetXCom, and the request would wait forever
    return _write_through_task_sdk


DAG_PROCESSOR_MODULE = "airflow.dag_processing.processor"
"""Where the DAG processor's parsing process starts (``_parse_file_entrypoint``) and runs the callbacks it was
sent, in Airflow 3.1 to 3.3."""


def _called_by_the_dag_processor() -> bool:
    """Whether this call runs under the DAG processor's code: it calls the callbacks it was sent in its own
    thread, so its module is on this thread's call stack (a callback that starts a thread of its own to cancel
    from is not recognised, and its record is then refused: best effort, logged). Sturdier than the repr of the
    processor's message decoder, whose wording is pydantic's; the tests that run callbacks in Airflow's real DAG
    processor fail should this ever miss it."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals.get("__name__") == DAG_PROCESSOR_MODULE:
            return True
        frame = frame.f_back
    return False


def _task_sdk() -> object | None:
    """The channel to Airflow's execution API this process has: in a task, a triggerer, the DAG processor."""
    from airflow.sdk.execution_time import task_runner

    return getattr(task_runner, "SUPERVISOR_COMMS", None)


def _key(job_id: str) -> str:
    """The XCom key of the record of one job: ``dli_cancelled_by:JOB_ID``."""
    return f"{XCOM_CANCELLED_BY}:{job_id}"


def _write_through_task_sdk(owner: JobOwner, record: Record) -> None:
    from airflow.sdk.execution_time.xcom import XCom

    XCom.set(
        _key(record["job_id"]),
        record,
        dag_id=owner.dag_id,
        task_id=owner.task_id,
        run_id=owner.run_id,
        map_index=owner.map_index,
    )


def _write_to_database(owner: JobOwner, record: Record) -> None:
    from airflow.models.xcom import XComModel

    XComModel.set(  # its own session, committed
        key=_key(record["job_id"]),
        value=record,
        dag_id=owner.dag_id,
        task_id=owner.task_id,
        run_id=owner.run_id,
        map_index=owner.map_index,
    )

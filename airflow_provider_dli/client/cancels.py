"""What a cancel found, and how a task log says it: one job's result, a bulk cancel's outcomes; the judging of a
refused cancel and the bulk cancel itself, shared by every kind of job (batch and SQL).

A refused ``DELETE`` is judged by the job's state (:data:`REFUSED_CANCEL`), since DLI refuses to cancel a job
that has finished and one that an earlier cancel is taking down with the same undocumented error.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

from airflow_provider_dli.client.errors import DLIAPIError, error_text
from airflow_provider_dli.validation import shown, validate_max_workers

if TYPE_CHECKING:
    from airflow_provider_dli.client.conversation import Conversation

CancelOutcome = Literal["cancelled", "already_cancelling", "already_finished"]
"""What a cancel found: ``cancelled`` by this call (also when DLI took it but its answer was lost),
``already_cancelling`` (an earlier cancel, e.g. ``on_kill``'s, was taking the job down), ``already_finished``."""

CANCEL_SETTLE_TIMEOUT = 10.0
"""Seconds a refused cancel re-reads the job's state: after an accepted cancel DLI refuses another one while
the job is dying but its state still reads live, for a moment, before it turns ``dead``."""
SETTLE_POLL = 0.5
NOT_TRIED = "not tried: DLI refused the credentials (HTTP 401) on an earlier request of this bulk cancel"

REFUSED_CANCEL: dict[tuple[bool, bool, str], CancelOutcome | None] = {
    # (an earlier attempt of this call may have reached DLI, the job was live when first read after the
    # refusal, its state once settled) -> the outcome; None: a real refusal, raised.
    (True, True, "dead"): "cancelled",
    (True, False, "dead"): "cancelled",
    (False, True, "dead"): "already_cancelling",
    (False, False, "dead"): "already_finished",
    (True, True, "success"): "already_finished",
    (True, False, "success"): "already_finished",
    (False, True, "success"): "already_finished",
    (False, False, "success"): "already_finished",
    (True, True, "live"): None,
    (False, True, "live"): None,
}
"""How a refused ``DELETE`` ends. A job that still reads live after :data:`CANCEL_SETTLE_TIMEOUT` was not
being cancelled: DLI's refusal stands. ``dead``: the job ended in the state a cancel leaves; ``success``: it
ended in a state only the job itself reaches."""

BATCH_SETTLED: dict[str, str] = {"dead": "dead", "success": "success"}
"""A batch job's terminal states as :data:`REFUSED_CANCEL` reads them (``dead`` is also a failed job's)."""
SQL_SETTLED: dict[str, str] = {"CANCELLED": "dead", "FAILED": "success", "FINISHED": "success"}
"""A SQL job's: only a cancel makes it ``CANCELLED``."""


JobKindName = Literal["batch", "sql"]
BulkOutcome = Literal["cancelled", "already_cancelling", "already_finished", "error", "not_tried"]


class BulkCancelOutcome(TypedDict):
    """One job's outcome. ``job_id`` and ``kind`` name every job; a batch job's id is also ``batch_id``, the key
    this provider's bulk cancels have always returned (a SQL job's outcome has none: its id is no batch id)."""

    job_id: str
    kind: JobKindName
    batch_id: NotRequired[str]
    outcome: BulkOutcome
    state: str | None
    error: str | None


class CancelResult(TypedDict):
    batch_id: str
    cancelled: bool
    """True when the job was cancelled, by this call or by one still in progress; False when it had finished."""
    outcome: CancelOutcome
    state: str | None
    """The job's state as last read; None after a cancel that DLI accepted at once (it updates the state later)."""


_CANCEL_SUMMARIES: dict[CancelOutcome, str] = {
    "cancelled": "Cancelled {noun} {batch_id}",
    "already_cancelling": "{noun} {batch_id} was already being cancelled; it is now {state}",
    "already_finished": "{noun} {batch_id} had already finished ({state}): nothing to cancel",
}


def cancel_summary(result: CancelResult, noun: str = "DLI batch job") -> str:
    """One line for a task log: what a cancel of a job (``noun``: ``DLI SQL job`` for one of those) did."""
    return _CANCEL_SUMMARIES[result["outcome"]].format(noun=noun, **result)


_OTHER_OUTCOMES: tuple[tuple[str, str, str], ...] = (
    # (outcome, the phrase for one job, for several)
    ("already_cancelling", "1 was already being cancelled", "{n} were already being cancelled"),
    ("already_finished", "1 had already finished", "{n} had already finished"),
    ("error", "1 could not be cancelled", "{n} could not be cancelled"),
    ("not_tried", "1 was not tried", "{n} were not tried"),
)


def _noun(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """What the jobs are: ``DLI batch job`` or ``DLI SQL job`` when all are of one kind, else ``DLI job``."""
    kinds = {outcome["kind"] for outcome in outcomes}
    return {frozenset({"sql"}): "DLI SQL job", frozenset({"batch", "sql"}): "DLI job"}.get(
        frozenset(kinds), "DLI batch job"
    )


def bulk_cancel_counts(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """One line for a bulk cancel that names only what happened: ``Cancelled 3 DLI batch jobs`` when all went
    well, ``Cancelled 2 DLI batch jobs; 1 had already finished`` otherwise (``DLI jobs`` for both kinds)."""
    counts: Counter[str] = Counter(outcome["outcome"] for outcome in outcomes)
    if not outcomes:
        return "No DLI batch job to cancel"
    cancelled, noun = counts["cancelled"], _noun(outcomes)
    lead = (
        f"Cancelled {cancelled} {noun}{'' if cancelled == 1 else 's'}"
        if cancelled
        else f"Cancelled none of {len(outcomes)} {noun}{'' if len(outcomes) == 1 else 's'}"
    )
    others = [
        one if counts[name] == 1 else several.format(n=counts[name])
        for name, one, several in _OTHER_OUTCOMES
        if counts[name]
    ]
    return "; ".join([lead, *others])


CANCELLING = "cancelling"
"""The state a table shows for a job this cancel took down: DLI accepted the cancel and has not said ``dead`` yet."""


def bulk_cancel_table(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """Every outcome of a bulk cancel, one aligned line per job, for the task log. It starts and ends with a line
    break, so that the logger's own prefix and suffix stay on lines of their own and the columns line up in the
    console and in the UI alike."""
    rows = [f"  {'job id':36}  {'kind':5}  {'outcome':18}  {'state':10}  error"]
    rows += [
        f"  {o['job_id']:36}  {o['kind']:5}  {o['outcome']:18}  {_state(o):10}  {o['error'] or ''}".rstrip()
        for o in outcomes
    ]
    return "\n" + "\n".join(rows) + "\n"


def _state(outcome: BulkCancelOutcome) -> str:
    if outcome["state"]:
        return outcome["state"]
    return CANCELLING if outcome["outcome"] == "cancelled" else "-"


def bulk_cancel_failure(outcomes: Sequence[BulkCancelOutcome], where: str, shown: int = 3) -> str | None:
    """A short message for a bulk cancel that left jobs uncancelled (None if none): the counts and the first few
    errors. The message stays short however many jobs failed; the full list is in the table and in XCom."""
    failed = [o for o in outcomes if o["outcome"] in ("error", "not_tried")]
    if not failed:
        return None
    first = "; ".join(f"{o['job_id']}: {str(o['error'])[:200]}" for o in failed[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return (
        f"{len(failed)} of {len(outcomes)} {_noun(outcomes)}s were not cancelled ({bulk_cancel_counts(outcomes)}). "
        f"{first}{more}. Every job's outcome is in {where}."
    )


def judge_refused_cancel(
    client: Conversation,
    job_id: str,
    refused: DLIAPIError,
    answer_lost: bool,
    settle_timeout: float,
    read_state: Callable[[str], str],
    settled: Mapping[str, str],
) -> CancelResult:
    """The outcome of a refused cancel, from the job's state (``read_state``) re-read for up to ``settle_timeout``
    seconds until it is one of ``settled``'s terminal states (:data:`REFUSED_CANCEL`); raises when the job stays
    live, or when its state cannot be read (then DLI's refusal is the answer)."""
    try:
        state = read_state(job_id)
    except DLIAPIError:
        raise refused from None
    was_live = state not in settled
    deadline = time.monotonic() + settle_timeout
    while state not in settled and (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(SETTLE_POLL, remaining))
        state = read_state(job_id)
    outcome = REFUSED_CANCEL.get((answer_lost, was_live, settled.get(state, "live")))
    if outcome is None:
        raise DLIAPIError(
            f"{refused} - the job is still {state!r} after {settle_timeout:g} s, so no cancel was under way",
            status_code=refused.status_code,
            error_code=refused.error_code,
            error_msg=refused.error_msg,
            request_id=refused.request_id,
        ) from refused
    client.log.debug("DLI job %s: cancel refused, judged %s (%s)", job_id, outcome, state)
    return {"batch_id": job_id, "cancelled": outcome != "already_finished", "outcome": outcome, "state": state}


def cancel_many(
    client: Conversation,
    job_ids: Iterable[str],
    cancel_one: Callable[[str], CancelResult],
    id_pattern: re.Pattern[str],
    noun: str,
    max_workers: int,
    field: str,
    kind: JobKindName,
) -> list[BulkCancelOutcome]:
    """Cancel many jobs at once with ``cancel_one`` (``field`` names the ids in errors): one outcome per distinct
    id, in order; one failure never stops the others, except a refusal of the credentials.

    Every id is checked before the first request. Each outcome is ``cancelled``, ``already_cancelling`` or
    ``already_finished`` (with the state), ``error`` (any exception, as one line), or ``not_tried``: after DLI
    refused the credentials (HTTP 401), no further request is sent. The gateway locks an access key for 5 minutes
    after 5 failed authentications in a row, for every DAG that uses it; for the same reason the first cancel goes
    alone, so a wrong key or a skewed clock fails once, not once per worker.
    """
    if isinstance(job_ids, str | bytes | Mapping) or not isinstance(job_ids, Iterable):
        raise ValueError(f"{field} must be a list of {noun} ids; got {shown(job_ids)}")
    ids = list(dict.fromkeys(job_ids))
    bad = [shown(job_id) for job_id in ids if not isinstance(job_id, str) or not id_pattern.fullmatch(job_id)]
    if bad:
        raise ValueError(f"{field} must be {noun} ids (UUIDs); not: {', '.join(bad[:5])}")
    validate_max_workers(max_workers)

    refused: list[DLIAPIError] = []  # the first refusal of the credentials stops every other request

    def one(job_id: str) -> BulkCancelOutcome:
        if refused:
            return named(job_id, "not_tried", None, NOT_TRIED)
        try:
            result = cancel_one(job_id)
        except Exception as error:  # any failure (even a RecursionError from a freak body) is this id's only
            if isinstance(error, DLIAPIError) and error.answer.locks_key:
                refused.append(error)
            return named(job_id, "error", None, error_text(error))
        return named(job_id, result["outcome"], result["state"], None)

    def named(job_id: str, outcome: BulkOutcome, state: str | None, error: str | None) -> BulkCancelOutcome:
        record: BulkCancelOutcome = {"job_id": job_id, "kind": kind, "outcome": outcome, "state": state, "error": error}
        if kind == "batch":
            record["batch_id"] = job_id
        return record

    if not ids:
        return []
    client.log.info("Cancelling %d %ss of project %s", len(ids), noun, client.project_id)
    outcomes = [one(ids[0])]
    if len(ids) > 1:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(ids) - 1), thread_name_prefix="dli-cancel") as pool:
            outcomes += pool.map(one, ids[1:])
    if refused:
        not_tried = sum(outcome["outcome"] == "not_tried" for outcome in outcomes)
        client.log.error(
            "DLI refused the credentials (%s): %d of %d jobs were not tried, so that the access key is not "
            "locked by repeated failures",
            refused[0],
            not_tried,
            len(ids),
        )
    return outcomes  # the caller logs the summary with its table (bulk_cancel_counts, bulk_cancel_table)

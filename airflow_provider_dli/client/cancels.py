"""What a cancel found, and how a task log says it: one job's result, a bulk cancel's outcomes.

A refused ``DELETE`` is judged by the job's state (:data:`REFUSED_CANCEL`), since DLI refuses to cancel a job
that has finished and one that an earlier cancel is taking down with the same undocumented error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal, TypedDict

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
being cancelled: DLI's refusal stands."""


class BulkCancelOutcome(TypedDict):
    batch_id: str
    outcome: Literal["cancelled", "already_cancelling", "already_finished", "error", "not_tried"]
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
    "cancelled": "Cancelled DLI batch job {batch_id}",
    "already_cancelling": "DLI batch job {batch_id} was already being cancelled; it is now {state}",
    "already_finished": "DLI batch job {batch_id} had already finished ({state}): nothing to cancel",
}


def cancel_summary(result: CancelResult) -> str:
    """One line for a task log: what a cancel did."""
    return _CANCEL_SUMMARIES[result["outcome"]].format(**result)


_OTHER_OUTCOMES: tuple[tuple[str, str, str], ...] = (
    # (outcome, the phrase for one job, for several)
    ("already_cancelling", "1 was already being cancelled", "{n} were already being cancelled"),
    ("already_finished", "1 had already finished", "{n} had already finished"),
    ("error", "1 could not be cancelled", "{n} could not be cancelled"),
    ("not_tried", "1 was not tried", "{n} were not tried"),
)


def bulk_cancel_counts(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """One line for a bulk cancel that names only what happened: ``Cancelled 3 DLI batch jobs`` when all went
    well, ``Cancelled 2 DLI batch jobs; 1 had already finished`` otherwise."""
    counts: Counter[str] = Counter(outcome["outcome"] for outcome in outcomes)
    if not outcomes:
        return "No DLI batch job to cancel"
    cancelled = counts["cancelled"]
    lead = (
        f"Cancelled {cancelled} DLI batch job{'' if cancelled == 1 else 's'}"
        if cancelled
        else f"Cancelled none of {len(outcomes)} DLI batch job{'' if len(outcomes) == 1 else 's'}"
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
    rows = [f"  {'batch id':36}  {'outcome':18}  {'state':10}  error"]
    rows += [f"  {o['batch_id']:36}  {o['outcome']:18}  {_state(o):10}  {o['error'] or ''}".rstrip() for o in outcomes]
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
    first = "; ".join(f"{o['batch_id']}: {str(o['error'])[:200]}" for o in failed[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return (
        f"{len(failed)} of {len(outcomes)} DLI batch jobs were not cancelled ({bulk_cancel_counts(outcomes)}). "
        f"{first}{more}. Every job's outcome is in {where}."
    )

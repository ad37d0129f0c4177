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


def bulk_cancel_counts(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """``Cancelled 3 DLI batch jobs; 1 was already being cancelled; ...``: one line for a bulk cancel."""
    counts = Counter(outcome["outcome"] for outcome in outcomes)
    not_tried = f"; {counts['not_tried']} were not tried" if counts["not_tried"] else ""
    return (
        f"Cancelled {counts['cancelled']} DLI batch jobs; {counts['already_cancelling']} were already being "
        f"cancelled; {counts['already_finished']} had already finished; {counts['error']} could not be "
        f"cancelled{not_tried}"
    )


def bulk_cancel_table(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """Every outcome of a bulk cancel, one aligned line per job, for the task log."""
    rows = [f"  {'batch id':36}  {'outcome':18}  {'state':10}  error"]
    rows += [
        f"  {o['batch_id']:36}  {o['outcome']:18}  {o['state'] or '':10}  {o['error'] or ''}".rstrip() for o in outcomes
    ]
    return "\n".join(rows)


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

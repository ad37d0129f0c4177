"""DLI batch-job states, and how a wait judges its polls. Their own module, free of imports, so that operators
can check them while a DAG file is parsed without loading the hook (and ``requests``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_dli.client.errors import DLIError

LIVE_STATES = frozenset({"starting", "running", "recovering"})
TERMINAL_STATES = frozenset({"success", "dead"})
"""``success`` (the console's Finished) and ``dead`` (Failed, and what a cancelled job becomes)."""
KNOWN_STATES = LIVE_STATES | TERMINAL_STATES

UNKNOWN_STATE_POLLS = 3
"""Consecutive polls that may read a state outside the documented five before waiting ends in an error: a
passing oddity is tolerated, a state DLI added (or a proxy invented) is reported instead of polled forever."""


class UnknownStates:
    """Counts a wait's consecutive polls that read an undocumented state (``FAILED``, ``cancelled``...)."""

    def __init__(self, batch_id: str, limit: int = UNKNOWN_STATE_POLLS) -> None:
        self.batch_id = batch_id
        self.limit = limit
        self.seen = 0

    def check(self, state: str) -> str | None:
        """None while waiting may go on; the error message once ``limit`` polls in a row read unknown states."""
        if state in KNOWN_STATES:
            self.seen = 0
            return None
        self.seen += 1
        if self.seen < self.limit:
            return None
        return (
            f"DLI reports batch job {self.batch_id} in state {state!r}, which is none of the documented states "
            f"{sorted(KNOWN_STATES)}, {self.seen} polls in a row: stopped waiting for it"
        )


OUTAGE_POLLS = 10
"""State polls in a row that may fail on a transient answer (each after the client's own retries) before a wait
gives up: the trigger's ``error`` event makes the task cancel the job, and a worker's wait fails the task, which
a short outage of DLI must not do to a healthy job."""


class FailedPolls:
    """Counts a wait's consecutive polls that failed; what a failure means is the client's classification
    (``error.answer``, :mod:`airflow_provider_dli.client.answers`), asked here for the trigger and the worker."""

    def __init__(self, limit: int = OUTAGE_POLLS) -> None:
        self.limit = limit
        self.seen = 0

    def answered(self) -> None:
        """A poll read the state: the count starts again."""
        self.seen = 0

    def tolerate(self, error: DLIError) -> bool:
        """True when waiting may go on after this failed poll: its answer was transient (DLI may answer the next
        poll), and fewer than ``limit`` polls in a row failed."""
        self.seen += 1
        return error.answer.transient and self.seen < self.limit

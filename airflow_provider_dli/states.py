"""DLI batch-job and SQL-job states, and how a wait judges its polls. Their own module, free of the package's
imports, so that operators can check them while a DAG file is parsed without loading the hook (and ``requests``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_dli.client.errors import DLIError

LIVE_STATES = frozenset({"starting", "running", "recovering"})
TERMINAL_STATES = frozenset({"success", "dead"})
"""``success`` (the console's Finished) and ``dead`` (Failed, and what a cancelled job becomes)."""
KNOWN_STATES = LIVE_STATES | TERMINAL_STATES

SQL_LIVE_STATES = frozenset({"LAUNCHING", "RUNNING"})
SQL_TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELLED"})
"""A SQL job's statuses, upper-case as DLI sends them; only a cancel makes a job ``CANCELLED``."""
SQL_KNOWN_STATES = SQL_LIVE_STATES | SQL_TERMINAL_STATES

UNKNOWN_STATE_POLLS = 3
"""Consecutive polls that may read a state outside the documented five before waiting ends in an error: a
passing oddity is tolerated, a state DLI added (or a proxy invented) is reported instead of polled forever."""


class UnknownStates:
    """Counts a wait's consecutive polls that read an undocumented state (``FAILED``, ``cancelled``...)."""

    def __init__(
        self,
        batch_id: str,
        limit: int = UNKNOWN_STATE_POLLS,
        *,
        known: frozenset[str] = KNOWN_STATES,
        noun: str = "batch job",
    ) -> None:
        self.batch_id = batch_id
        self.limit = limit
        self.known = known
        self.noun = noun
        self.seen = 0

    def check(self, state: str) -> str | None:
        """None while waiting may go on; the error message once ``limit`` polls in a row read unknown states."""
        if state in self.known:
            self.seen = 0
            return None
        self.seen += 1
        if self.seen < self.limit:
            return None
        return (
            f"DLI reports {self.noun} {self.batch_id} in state {state!r}, which is none of the documented states "
            f"{sorted(self.known)}, {self.seen} polls in a row: stopped waiting for it"
        )


OUTAGE_TOLERANCE = 600.0
"""Seconds a wait on a job goes on while every poll fails on an answer that lets it (``wait_goes_on``: no answer,
a 5xx, ``DLI.0999``, a maintenance page...), each after the client's own retries: the trigger's ``error`` event
makes the task cancel the job, and a worker's wait fails the task, which an outage of DLI must not do to a
healthy job. Measured in time, not polls, so that it means the same whatever the poll interval. Airflow's option
``[dli] outage_tolerance`` and an operator's ``outage_tolerance`` change it."""


class Outage:
    """How long a wait has gone without the job's state; what a failed poll means is the client's classification
    (``error.answer``, :mod:`airflow_provider_dli.client.answers`), asked here for the trigger and the worker."""

    def __init__(self, tolerance: float = OUTAGE_TOLERANCE) -> None:
        self.tolerance = tolerance
        self.failed_polls = 0
        self._since: float | None = None

    def answered(self) -> None:
        """A poll read the state: the outage, if any, is over."""
        self.failed_polls, self._since = 0, None

    def tolerate(self, error: DLIError) -> bool:
        """True when waiting may go on after this failed poll: its answer lets a wait go on, and the polls have
        been failing for no longer than ``tolerance`` seconds."""
        now = time.monotonic()
        self._since = now if self._since is None else self._since
        self.failed_polls += 1
        return error.answer.wait_goes_on and self.seconds <= self.tolerance

    @property
    def seconds(self) -> float:
        """How long the polls have been failing."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    def describe(self) -> str:
        """For the warning of each failed poll."""
        return (
            f"{self.failed_polls} poll(s) in a row failed over {self.seconds:.0f} s; the wait goes on through up "
            f"to {self.tolerance:g} s of that"
        )

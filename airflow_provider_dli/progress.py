"""What a wait on a DLI job tells the task log while the job runs.

A wait polls every few seconds; a line per poll would be hundreds of identical lines for a long job. So a wait
logs a line when the job's state changes, and otherwise a heartbeat every ``[dli] progress_log_interval``
seconds (5 minutes by default), each with the time waited so far. The worker's wait and the
trigger's wait log the same lines, so a deferred task's log reads like a waiting one's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

PROGRESS_LOG_INTERVAL = 300.0
"""Seconds between two heartbeat lines of a job whose state does not change (``[dli] progress_log_interval``)."""


def progress_log_interval() -> float:
    """``[dli] progress_log_interval`` in seconds; a ValueError names the option when it is not a number > 0."""
    from airflow_provider_dli._compat import conf

    raw = conf.get("dli", "progress_log_interval", fallback="") or str(PROGRESS_LOG_INTERVAL)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            "Airflow's option [dli] progress_log_interval (AIRFLOW__DLI__PROGRESS_LOG_INTERVAL) must be a number "
            f"of seconds > 0; got {raw!r}"
        )
    return seconds


def progress_log_interval_or_default(warn: Callable[[str], object]) -> float:
    """The interval for a trigger: a bad option is warned about, never a reason to end a wait (the task checked
    the option before it submitted, so only a triggerer configured otherwise gets here)."""
    try:
        return progress_log_interval()
    except ValueError as error:
        warn(f"{error}: logging every {PROGRESS_LOG_INTERVAL:g} s instead")
        return PROGRESS_LOG_INTERVAL


def elapsed(seconds: float) -> str:
    """``45s``, ``12m 05s``, ``2h 03m``: short, and exact enough for a person watching a job."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


class WaitProgress:
    """Decides, poll by poll, whether the wait on one job logs a line, and says it.

    :param batch_id: the job.
    :param noun: how a line names it (``DLI SQL job`` for one of those).
    :param since: epoch seconds the wait began (the submit); a trigger that moves to another triggerer gets
        the same start, so its times go on from where they were.
    :param interval: seconds between heartbeats; by default ``[dli] progress_log_interval``.
    """

    def __init__(
        self,
        batch_id: str,
        *,
        since: float | None = None,
        interval: float | None = None,
        noun: str = "DLI batch job",
    ) -> None:
        self.batch_id = batch_id
        self.noun = noun
        self.since = time.time() if since is None else since
        self.interval = progress_log_interval() if interval is None else interval
        self.state: str | None = None
        self.logged_at = -math.inf

    def line(self, state: str) -> str | None:
        """The line to log after a poll that read ``state``; None when nothing is worth a line."""
        now = time.time()
        waited = elapsed(now - self.since)
        if state != self.state:
            self.state, self.logged_at = state, now
            return f"{self.noun} {self.batch_id} is {state} (waited {waited})"
        if now - self.logged_at >= self.interval:
            self.logged_at = now
            return f"{self.noun} {self.batch_id} is still {state} (waited {waited})"
        return None

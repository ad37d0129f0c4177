"""The provider's metrics, through Airflow's ``Stats`` (StatsD, OpenTelemetry or Datadog, as ``[metrics]`` says).

Every name is under ``dli.`` (Airflow adds its ``statsd_prefix``, ``airflow.`` by default). :data:`METRICS` lists
them with when each is counted; the README's table shows the same. ``Stats`` is imported at the first count,
not with this module: operator modules are imported on every DAG file parse. A metric that cannot be sent
never fails the task that counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "dli."

METRICS: dict[str, str] = {
    "dli.batch.submitted": "a submit operator created a DLI batch job",
    "dli.batch.adopted": "a submit operator adopted its task instance's live job instead of creating one (a retry, "
    "or a create whose answer was lost)",
    "dli.sql.submitted": "a SQL job operator created a DLI SQL job",
    "dli.sql.adopted": "a SQL job operator adopted its task instance's SQL job instead of creating one (a retry, or "
    "a submit whose answer was lost)",
    "dli.cancel.cancelled": "a cancel of one job took it down (every cancel path: on_kill, trigger, kill switch, "
    "notifier, sweeper)",
    "dli.cancel.already_cancelling": "a cancel found its job already being cancelled (e.g. by on_kill)",
    "dli.cancel.already_finished": "a cancel found its job already finished: nothing to cancel",
    "dli.cancel.error": "a cancel failed: the job may still run",
    "dli.cancel.not_tried": "a bulk cancel did not try a job, after DLI refused the credentials",
    "dli.sweep.orphans_found": "a sweep decided to cancel a job (also in a dry run), once per job and sweep",
    "dli.sweep.orphans_cancelled": "a sweep cancelled an orphan",
    "dli.poll.failed": "a wait's state poll failed on a transient answer (5xx, no answer...) and the wait went on, "
    "in a worker or the triggerer",
}
"""Every counter, and when it is counted."""


def count(name: str, by: int = 1) -> None:
    """Add ``by`` to the counter ``name`` (one of :data:`METRICS`)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; the metrics are {sorted(METRICS)}")
    if by <= 0:
        return
    try:
        _incr()(name, by)
    except Exception:
        log.debug("Could not count the metric %s", name, exc_info=True)


def _incr() -> Callable[..., Any]:
    """Airflow's counter function: in the Task SDK on Airflow 3.3+, in airflow-core on 3.1 and 3.2."""
    try:
        from airflow.sdk.observability.stats import incr
    except ImportError:  # Airflow < 3.3
        from airflow.stats import Stats

        return Stats.incr
    return incr

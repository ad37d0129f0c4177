"""Airflow alone, no provider code: tasks that defer for a few seconds and resume (apache/airflow#67287,
#72716). A trigger that fires while the scheduler has not yet processed the executor's event for the worker
that deferred lets that stale ``success`` event fail the resumed task ("state mismatch")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator

DEFER_SECONDS = [3.0 + 0.25 * step for step in range(13)]
"""How long each mapped task defers: around the 5 s the executor may take to report a deferral."""


class DeferBriefly(BaseOperator):
    def __init__(self, *, seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def execute(self, context: Any) -> None:
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=self.seconds)), method_name="resume")

    def resume(self, context: Any, event: Any = None) -> None:
        return None


with DAG("airflow_defer_race", schedule=None, catchup=False, max_active_runs=4):
    DeferBriefly.partial(task_id="defer").expand(seconds=DEFER_SECONDS)

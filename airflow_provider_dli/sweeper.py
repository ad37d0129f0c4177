"""The orphan sweeper as a DAG: :func:`orphan_sweeper_dag` schedules
:class:`~airflow_provider_dli.operators.dli.DLIOrphanSweepOperator`, which reconciles DLI with Airflow
(:mod:`airflow_provider_dli.reconcile`) and cancels the orphans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dli.operators.sweep import DLIOrphanSweepOperator


def orphan_sweeper_dag(
    dag_id: str = "dli_orphan_sweeper",
    *,
    schedule: timedelta | str | None = timedelta(minutes=10),
    **sweep_options: Any,
) -> DAG:
    """A DAG that sweeps on a schedule; one line in a DAG file adds it to a deployment::

        from airflow_provider_dli.sweeper import orphan_sweeper_dag

        dag = orphan_sweeper_dag()  # every 10 minutes; options go to DLIOrphanSweepOperator

    One run at a time; a run never catches up on missed ones (the next run sees everything anyway).
    """
    with DAG(
        dag_id,
        schedule=schedule,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["dli"],
        doc_md="Cancels DLI batch jobs that outlived the Airflow task that submitted them (the orphan sweeper).",
    ) as dag:
        DLIOrphanSweepOperator(task_id="sweep", retries=1, retry_delay=timedelta(minutes=1), **sweep_options)
    return dag

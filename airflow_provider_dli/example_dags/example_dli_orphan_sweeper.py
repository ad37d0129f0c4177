"""The orphan sweeper, every 10 minutes: the last line of defence against DLI jobs that outlive their task.

Every other cancel path runs once, when a task fails, and can fail or never run at all (a task process
killed by the OOM killer runs no callback; DLI can be unreachable for the minute a callback runs). The
sweeper lists the live jobs that this Airflow submitted, asks Airflow about each job's task instance, and
cancels the orphans. Drop this file into the DAGs folder of a deployment; that is all it takes.
"""

from __future__ import annotations

from airflow_provider_dli.sweeper import orphan_sweeper_dag

dag = orphan_sweeper_dag()  # options: dag_id, schedule, and DLIOrphanSweepOperator's (grace_period, list_only...)

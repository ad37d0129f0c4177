"""Operators for DLI Spark batch jobs and SQL jobs: submit (and watch) one, cancel some, sweep the orphans.

The public import path of every operator; each family lives in its own module (:mod:`.batch`, :mod:`.sql`,
:mod:`.cancel`, :mod:`.sweep`). The hook (and with it ``requests``) is imported when a task runs, not when a
DAG file is parsed: the DAG processor imports operator modules on every parse.
"""

from __future__ import annotations

from airflow_provider_dli.operators.batch import DLISubmitBatchOperator
from airflow_provider_dli.operators.cancel import DLICancelBatchOperator
from airflow_provider_dli.operators.sql import DLISqlJobOperator
from airflow_provider_dli.operators.sweep import DLIOrphanSweepOperator

__all__ = ["DLICancelBatchOperator", "DLIOrphanSweepOperator", "DLISqlJobOperator", "DLISubmitBatchOperator"]

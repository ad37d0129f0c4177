"""Names for the jobs a DAG run submits, so that all of one run's jobs can be found (and cancelled) later.

``airflow.{dag_id}.{run_id}.{task_id}[.{map_index}]``, with characters outside ``A-Za-z0-9_-.`` replaced
by ``_`` and long parts shortened with a hash so that the name fits DLI's 128 characters and stays unique.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 128
_MAX_PREFIX = 100
_HASH = 8


def _clean(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", part)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH]
    return f"{text[: limit - _HASH - 1]}~{digest}"


def dag_run_job_prefix(dag_id: str, run_id: str) -> str:
    """What every job name of this DAG run starts with (followed by ``.``)."""
    return _shorten(f"airflow.{_clean(dag_id)}.{_clean(run_id)}", _MAX_PREFIX)


def batch_job_name(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    prefix = dag_run_job_prefix(dag_id, run_id)
    task = _clean(task_id) + (f".{map_index}" if map_index >= 0 else "")
    return f"{prefix}.{_shorten(task, MAX_NAME - len(prefix) - 1)}"

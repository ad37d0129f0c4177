"""Names for the jobs a DAG run submits, so that all of one run's jobs can be found (and cancelled) later.

:func:`owned_by` is the one place that decides from a name whether a job belongs to a DAG run or a task
instance: the kill switch matches a run's jobs with it, the submit operator adopts its own job with it.

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


def owned_by(name: object, dag_id: str, run_id: str, task_id: str | None = None, map_index: int | None = -1) -> bool:
    """Whether a job named ``name`` was submitted (under its default name) by this DAG run, when ``task_id`` is
    None, or else by this task instance (``map_index`` -1 for a task that is not mapped). A name is exact:
    DLI's ``job_name`` filter may match parts of names, so listings are matched again here."""
    if not isinstance(name, str):
        return False
    if task_id is None:
        return name.startswith(dag_run_job_prefix(dag_id, run_id) + ".")
    return name == batch_job_name(dag_id, run_id, task_id, -1 if map_index is None else map_index)

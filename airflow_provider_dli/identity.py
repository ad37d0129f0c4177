"""Whose job is it: the names of the jobs a DAG run submits, and the owner record each job carries.

**Names**, so that all of one run's jobs can be found (and cancelled) later:
``airflow.{dag_id}.{run_id}.{task_id}[.{map_index}]``, with characters outside ``A-Za-z0-9_-.`` replaced by
``_`` and long parts shortened with a hash so that the name fits DLI's 128 characters and stays unique.
:func:`owned_by` is the one place that decides from a name whether a job belongs to a DAG run or a task
instance: the kill switch matches a run's jobs with it, the submit operator adopts its own job with it.

**The owner record.** A name is shortened and sanitized, so it cannot say exactly who submitted a job. The
submit operator therefore adds one Spark ``conf`` entry to every job it creates, ``spark.airflow.dli.owner``,
whose value is a small JSON object: this Airflow's instance id and the DAG, run, task, map index and try that
submitted the job, and how the task meant to treat it (wait for it or not; can a retry reconnect to it). DLI
keeps the create request and returns it as ``req_body`` (a JSON string), in a job's details and, per the
T Cloud docs, in each job of a listing; the orphan sweeper reads the owner back from there (:func:`owner_of`).

The instance id (``[dli] instance_id``, e.g. ``AIRFLOW__DLI__INSTANCE_ID``; default ``airflow``) tells several
Airflow deployments that share one DLI project apart: a sweeper only ever touches jobs of its own instance.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# Names

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


# The owner record

OWNER_CONF_KEY = "spark.airflow.dli.owner"
DEFAULT_INSTANCE_ID = "airflow"
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class JobOwner:
    """The task instance (and try) that submitted a job, and what it meant to do with it."""

    instance: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    wait: bool
    """The operator waits for the job (``wait_for_completion``): the job must not outlive the task."""
    resumable: bool
    """A retry of the task reconnects to this job (Airflow 3.3+, ``durable``, waiting in the worker)."""

    @property
    def task_instance(self) -> tuple[str, str, str, int]:
        return self.dag_id, self.run_id, self.task_id, self.map_index

    def describe(self) -> str:
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}/{self.run_id}/{self.task_id}{mapped} try {self.try_number}"

    def conf_value(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def instance_id() -> str:
    """This Airflow's instance id, from ``[dli] instance_id``; a ValueError if it is malformed."""
    from airflow_provider_dli._compat import conf

    value = conf.get("dli", "instance_id", fallback=DEFAULT_INSTANCE_ID) or DEFAULT_INSTANCE_ID
    return validate_instance_id(value, "[dli] instance_id")


def validate_instance_id(value: object, field: str = "instance_id") -> str:
    if isinstance(value, str) and _INSTANCE_ID.match(value):
        return value
    raise ValueError(f"{field} must be 1 to 64 letters, digits, '_', '.' or '-'; got {value!r}")


def owner_of(batch: Mapping[str, Any]) -> JobOwner | None:
    """The owner recorded in a batch object's ``req_body``; None when there is none (or it is malformed):
    a job that this provider did not submit, or submitted by a version that did not record its owner."""
    request = batch.get("req_body")
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except ValueError:
            return None
    if not isinstance(request, Mapping):
        return None
    spark_conf = request.get("conf")
    if not isinstance(spark_conf, Mapping) or not isinstance(spark_conf.get(OWNER_CONF_KEY), str):
        return None
    try:
        fields = json.loads(spark_conf[OWNER_CONF_KEY])
        owner = JobOwner(**fields)
    except (ValueError, TypeError):
        return None
    text = (owner.instance, owner.dag_id, owner.run_id, owner.task_id)
    numbers = (owner.map_index, owner.try_number)
    if not all(isinstance(value, str) and value for value in text):
        return None
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in numbers):
        return None
    if not isinstance(owner.wait, bool) or not isinstance(owner.resumable, bool):
        return None
    return owner

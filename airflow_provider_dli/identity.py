"""Whose job is it: the names of the jobs a DAG run submits (hints), and the owner record each job carries (proof).

**Names** are a hint for people (the console's search) and for DLI's list filter, never proof of whose job it is:
they are sanitized and shortened, and another deployment running the same DAG gives its jobs the same names.
``airflow.{dag_id}.{run_id}.{task_id}[.{map_index}]``, in DLI's documented characters only (letters, digits,
``_``, ``-`` and ``.``) and at most 128 of them. Where that form could not say the ids exactly (an id with
another character, a dot inside an id, which would blur where the parts meet, or a name too long), the run's
part and the task's part each end in ``-`` and a hash of the exact ids they stand for, so that distinct ids give
distinct names: ``nightly+2026-01-01`` and ``nightly_2026-01-01`` differ, and every job of one DAG run still
starts with :func:`dag_run_job_prefix`.

**The owner record.** The submit operator adds one Spark ``conf`` entry to every job it creates,
``spark.airflow.dli.owner``, whose value is a small JSON object: this Airflow's instance id, the exact DAG, run
and task ids, the map index, the try and the first try of this run of the task (a person's clear starts a new
one), the try's task-instance id, and whether the task waits for the job. DLI keeps the create request and
returns it as ``req_body`` (a JSON string), in a job's details and, per the SDK, in each job of a listing.

:func:`belongs_to` answers the one question "does this job belong to this deployment / DAG run / task
instance?" for every tool that adopts or cancels jobs: the submit operator's adoption, the kill switch, the
run-wide notifier and the orphan sweeper. A job without an owner record (submitted with another tool, by a
person, or by a version of this provider that did not record one) belongs to nobody: no run-wide tool adopts
or cancels it; only naming it (its id, or ``job_name=``) does. The record is parsed from its text by
:func:`owner_from_text`, whatever carried it (a Spark batch job's ``conf``; a SQL job's tag).

The instance id (``[dli] instance_id``, e.g. ``AIRFLOW__DLI__INSTANCE_ID``; default ``airflow``) tells several
Airflow deployments that share one DLI project apart. Nothing unique to a deployment is seen alike by all of
its components without a database (an Airflow 3 worker knows only the execution API's URL, ``localhost`` in
many deployments), so the default cannot be made unique: while it is unset, the sweeper leaves alone the jobs
whose DAG run it cannot find, since they may be another deployment's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, asdict, dataclass, fields
from typing import Any

# Names

MAX_NAME = 128
_MAX_PREFIX = 100
_HASH = 8
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
"""An id that stands for itself in a name: documented characters, and no dot (the parts' separator)."""


def _clean(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", part)


def _digest(*exact: str) -> str:
    return hashlib.sha256("\0".join(exact).encode()).hexdigest()[:_HASH]


def _hinted(text: str, exact: tuple[str, ...], plain: bool, limit: int) -> str:
    """``text`` as it is when it says ``exact`` plainly and fits; else its start, ``-`` and a hash of ``exact``."""
    if plain and len(text) <= limit:
        return text
    return f"{text[: limit - _HASH - 1]}-{_digest(*exact)}"


def dag_run_job_prefix(dag_id: str, run_id: str) -> str:
    """What every job name of this DAG run starts with (followed by ``.``)."""
    plain = all(_PLAIN.fullmatch(part) for part in (dag_id, run_id))
    return _hinted(f"airflow.{_clean(dag_id)}.{_clean(run_id)}", (dag_id, run_id), plain, _MAX_PREFIX)


def batch_job_name(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The default name of the job this task instance submits."""
    prefix = dag_run_job_prefix(dag_id, run_id)
    index = f".{map_index}" if map_index >= 0 else ""
    room = MAX_NAME - len(prefix) - 1 - len(index)
    return f"{prefix}.{_hinted(_clean(task_id), (task_id,), bool(_PLAIN.fullmatch(task_id)), room)}{index}"


# The owner record

OWNER_CONF_KEY = "spark.airflow.dli.owner"
DEFAULT_INSTANCE_ID = "airflow"
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_RECORD = 16 * 1024
"""Characters of a ``req_body`` (or record) read at most: a record is a few hundred; anything longer is not one."""


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
    _: KW_ONLY
    first_try: int = 1
    """The first try of this run of the task: 1, or the try after a person's clear."""
    ti_id: str = ""
    """The try's task-instance id (Airflow 3 gives each try its own): this try's job, exactly."""

    @property
    def task_instance(self) -> tuple[str, str, str, int]:
        return self.dag_id, self.run_id, self.task_id, self.map_index

    def describe(self) -> str:
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}/{self.run_id}/{self.task_id}{mapped} try {self.try_number}"

    def conf_value(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass(frozen=True)
class Scope:
    """What a tool asks about: a deployment's jobs, a DAG run's, a task instance's, or some of its tries'.

    Every id is compared exactly, as Airflow spells it (never a job name's sanitized form)."""

    instance: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    first_try: int | None = None
    """Only jobs of this run of the task: since its first try (a person's clear starts a new run of it)."""
    tries: range | None = None
    """Only jobs submitted by these tries."""
    ti_id: str | None = None
    """Only the job of this try (its task-instance id)."""


def belongs_to(owner: JobOwner | None, scope: Scope) -> bool:
    """Whether a job with this owner record belongs to ``scope``: the one rule every tool asks."""
    if owner is None or owner.instance != scope.instance:
        return False
    wanted = (scope.dag_id, scope.run_id, scope.task_id, scope.map_index)
    actual = (owner.dag_id, owner.run_id, owner.task_id, owner.map_index)
    if any(want is not None and want != have for want, have in zip(wanted, actual, strict=True)):
        return False
    if scope.first_try is not None and owner.first_try != scope.first_try:
        return False
    if scope.tries is not None and owner.try_number not in scope.tries:
        return False
    return scope.ti_id is None or owner.ti_id == scope.ti_id


def first_try(try_number: int, max_tries: object, retries: int) -> int:
    """The first try of this run of the task: a retry takes the jobs of the tries since then over; a person's
    clear starts a new run of the task, which runs its job again. Airflow sets ``max_tries`` to the task's
    retries, and a clear raises it to the last try plus the retries, so the first try is ``max_tries - retries +
    1`` (Airflow's own formula, in ``RuntimeTaskInstance.get_first_reschedule_date``). Not told: every later try
    is a retry."""
    if isinstance(max_tries, bool) or not isinstance(max_tries, int):
        return 1
    return min(max(1, max_tries - retries + 1), try_number)


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
    """The owner recorded in a batch object's ``req_body``; None when there is none or it is malformed.

    ``req_body`` is the create request as DLI keeps it: a JSON string (or, from some servers, the object),
    the client's fields or DLI's normalized ones (``autoRecovery``, ``maxRetryTimes``...); the Spark ``conf``,
    where the record is, has the same name in both. Whatever a foreign job's ``req_body`` holds (nesting deeper
    than a parser recurses, megabytes), the answer is None, never an error."""
    try:
        request = batch.get("req_body")
        if isinstance(request, str):
            if len(request) > MAX_RECORD * 64:
                return None
            request = json.loads(request)
        spark_conf = request.get("conf") if isinstance(request, Mapping) else None
        text = spark_conf.get(OWNER_CONF_KEY) if isinstance(spark_conf, Mapping) else None
    except (ValueError, RecursionError, AttributeError, TypeError):
        return None
    return owner_from_text(text)


def owner_from_text(text: object) -> JobOwner | None:
    """The owner record in its text form (wherever it was read from); None unless it is well formed.

    Fields another version adds are ignored (earlier ones wrote ``resumable``); the fields an earlier version
    did not write take their defaults."""
    if not isinstance(text, str) or len(text) > MAX_RECORD:
        return None
    try:
        values = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(values, dict):
        return None
    known = {f.name: f for f in fields(JobOwner)}
    try:
        owner = JobOwner(**{name: value for name, value in values.items() if name in known})
    except TypeError:  # a required field is missing
        return None
    text_fields = (owner.instance, owner.dag_id, owner.run_id, owner.task_id)
    numbers = (owner.map_index, owner.try_number, owner.first_try)
    if not all(isinstance(value, str) and value for value in text_fields) or not isinstance(owner.ti_id, str):
        return None
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in numbers):
        return None
    return owner if isinstance(owner.wait, bool) else None

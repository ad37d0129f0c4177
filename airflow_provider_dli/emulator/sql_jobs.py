"""The SQL-job API (``/v1.0/{project_id}/jobs``): the jobs, their clock, their results, and the endpoints.

A job's status is derived from the clock on every read (``LAUNCHING`` -> ``RUNNING`` -> ``FINISHED``), as for
batch jobs. DDL and DCL statements are synchronous (``job_mode: sync``): finished when the submit is answered,
their result in the answer. A query's result (``result_count`` rows, ``dli.emulator.result_rows``) is read
with the preview API once it has finished. The job's ``conf`` entries (``key=value`` strings) steer it:

- ``dli.emulator.final_state``: ``FINISHED`` (default) or ``FAILED``; a failed job's ``detail`` says why
- ``dli.emulator.launching_seconds`` / ``dli.emulator.running_seconds``: override the emulator's defaults
- ``dli.emulator.result_rows``: how many rows a query (or a sync statement) returns (default 3; 0 for DDL)

Where DLI's documentation is silent the emulator follows the API contract's inferred reading: a cancel of a
finished job is refused with 400 (the code of the ``cancel_finished_code`` reading), and an unknown job id
gets 400 ``DLI.0002``. Tags follow DLI's documented tag rules; a listing's ``tags`` filter (``key=value``,
several joined by ``,``) keeps the jobs that carry every tag named.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_dli.emulator.api import Answer, Area, Call, Reject, query_int
from airflow_provider_dli.emulator.jobs import CONF_PREFIX, CancelEvent

SQL_JOBS_PATH = re.compile(
    r"/v1\.0/(?P<project>[^/]+)/jobs(?:/submit-job|/(?P<id>[^/]+)(?:/(?:status|detail|preview))?)?"
)
LIVE = frozenset({"LAUNCHING", "RUNNING"})
FINAL = frozenset({"FINISHED", "FAILED"})
"""The states a job can end in by itself; a cancel ends it ``CANCELLED``."""
TERMINAL = FINAL | {"CANCELLED"}

# The statement's first word decides the job type (DLI's job-type values), and DDL and DCL run synchronously.
JOB_TYPES: dict[str, str] = {
    "SELECT": "QUERY",
    "WITH": "QUERY",
    "VALUES": "QUERY",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "LOAD": "IMPORT",
    "EXPORT": "EXPORT",
    "GRANT": "DCL",
    "REVOKE": "DCL",
}
"""Every other statement (CREATE, DROP, ALTER, SHOW, DESCRIBE...) is DDL."""
SYNC_TYPES = frozenset({"DDL", "DCL"})
RESULT_TYPES = frozenset({"QUERY"}) | SYNC_TYPES
"""Job types that have result rows: a query's are previewed, a sync statement's come with its answer."""
MAX_PREVIEW_ROWS = 1000
"""DLI returns at most the first 1,000 rows of a result, in a sync answer or a preview."""

_NAME = re.compile(r"(?![0-9]+$)(?!_)[A-Za-z0-9_]{1,128}")
"""A queue or database name: letters, digits and ``_``, not only digits, not starting with ``_`` [DOC]."""
_TAG_TEXT = re.compile(r"[\w .:=+\-@]*")
"""Tag keys and values: letters, digits, spaces and ``_ . : = + - @`` [DOC: DLI's tag rules]."""
MAX_TAGS = 20
ORDERS: dict[str, tuple[str, bool]] = {
    "start_time_desc": ("start_time", True),
    "start_time_asc": ("start_time", False),
    "duration_desc": ("duration", True),
    "duration_asc": ("duration", False),
}
SCHEMA = [{"id": "int"}, {"value": "string"}]
"""The columns of every emulated result."""


def _row(index: int) -> list[Any]:
    return [index + 1, f"row {index + 1}"]


@dataclass
class SqlJob:
    id: str
    body: dict[str, Any]
    conf: dict[str, str]
    job_type: str
    created: float  # epoch seconds
    launching_seconds: float
    running_seconds: float
    final_status: str
    result_rows: int
    owner: str
    cancelled_at: float | None = None
    cancel_lag: float = 0.0

    @property
    def job_mode(self) -> str:
        return "sync" if self.job_type in SYNC_TYPES else "async"

    def status(self, now: float) -> str:
        if self.cancelled_at is not None and now >= self.cancelled_at + self.cancel_lag:
            return "CANCELLED"
        elapsed = now - self.created
        if elapsed < self.launching_seconds:
            return "LAUNCHING"
        if elapsed < self.launching_seconds + self.running_seconds or self.cancelled_at is not None:
            return "RUNNING"
        return self.final_status

    def ended_at(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at + self.cancel_lag
        return self.created + self.launching_seconds + self.running_seconds

    def detail(self, status: str) -> str:
        return {
            "FAILED": f"DLI.0005: emulated failure of {self.job_type} job {self.id} ({CONF_PREFIX}final_state=FAILED)",
            "CANCELLED": f"Job {self.id} was cancelled",
        }.get(status, "")

    def rows(self) -> list[list[Any]]:
        return [_row(index) for index in range(min(self.result_rows, MAX_PREVIEW_ROWS))]

    def as_listed(self, now: float) -> dict[str, Any]:
        """The job as the list and status APIs show it; a finished job's clock stops when it ends."""
        status = self.status(now)
        until = min(now, self.ended_at()) if status in TERMINAL else now
        created_ms = int(self.created * 1000)
        job: dict[str, Any] = {
            "job_id": self.id,
            "job_type": self.job_type,
            "job_mode": self.job_mode,
            "queue_name": self.body.get("queue_name") or "default",
            "owner": self.owner,
            "start_time": created_ms,
            "duration": int(until * 1000) - created_ms,
            "status": status,
            "input_row_count": 0,
            "bad_row_count": 0,
            "input_size": 0,
            "result_count": self.result_rows if status == "FINISHED" and self.job_type in RESULT_TYPES else 0,
            "database_name": self.body.get("currentdb") or "",
            "table_name": "",
            "detail": self.detail(status),
            "statement": self.body["sql"],
            "engine_type": self.body.get("engine_type") or "spark",
            "tags": list(self.body.get("tags") or []),
            "message": "",
        }
        if status in TERMINAL:
            job["end_time"] = int(until * 1000)
        return job

    def as_status(self, now: float) -> dict[str, Any]:
        listed = self.as_listed(now)
        listed.pop("end_time", None)
        return {**listed, "is_success": True, "user_conf": json.dumps(self.conf)}


class SqlJobs:
    """The project's SQL jobs; the API area that serves them. Cancels go to the emulator's one list of cancel
    events, beside the batch jobs' (a job id tells which kind was cancelled)."""

    def __init__(
        self,
        *,
        launching_seconds: float,
        running_seconds: float,
        cancel_lag: float,
        cancel_events: list[CancelEvent],
        lock: threading.RLock,
    ) -> None:
        self.launching_seconds = launching_seconds
        self.running_seconds = running_seconds
        self.cancel_lag = cancel_lag
        self.jobs: dict[str, SqlJob] = {}
        self.cancel_events = cancel_events
        self._lock = lock
        self.area = Area(
            SQL_JOBS_PATH,
            {
                "POST jobs/submit-job": lambda call: (200, self.submit(call.owner, call.payload), {}),
                "GET jobs": self._list,
                "GET jobs/{id}/status": lambda call: (200, self._job(call.object_id).as_status(time.time()), {}),
                "GET jobs/{id}/detail": self._detail,
                "GET jobs/{id}/preview": self._preview,
                "DELETE jobs/{id}": self._cancel,
            },
        )

    def submit(self, owner: str, body: Any) -> dict[str, Any]:
        """A new job from a submit request's body, or a 400 ``DLI.0001`` naming what is wrong with it."""
        if not isinstance(body, dict):
            raise Reject(400, "DLI.0001", "Parameter check error: the request body must be a JSON object")
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise Reject(400, "DLI.0001", "Parameter check error: sql is required")
        for name in ("queue_name", "currentdb"):
            if body.get(name) is not None and not (isinstance(body[name], str) and _NAME.fullmatch(body[name])):
                raise Reject(
                    400,
                    "DLI.0001",
                    f"Parameter check error: {name} may hold only letters, digits and '_', not only digits, and "
                    "may not start with '_'",
                )
        if body.get("engine_type", "spark") not in ("spark", "hetuEngine"):
            raise Reject(400, "DLI.0001", "Parameter check error: engine_type must be spark or hetuEngine")
        conf = _conf(body.get("conf"))
        _check_tags(body.get("tags"))
        job_type = JOB_TYPES.get(sql.split(None, 1)[0].upper(), "DDL")
        final_status = conf.get(CONF_PREFIX + "final_state", "FINISHED").upper()
        if final_status not in FINAL:
            raise Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}final_state must be FINISHED or FAILED")
        launching = _seconds(conf, "launching_seconds", self.launching_seconds)
        running = _seconds(conf, "running_seconds", self.running_seconds)
        rows = conf.get(CONF_PREFIX + "result_rows", "0" if job_type == "DDL" else "3")
        if not re.fullmatch(r"[0-9]{1,9}", rows):
            raise Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}result_rows must be a whole number")
        now = time.time()
        job = SqlJob(
            id=str(uuid.uuid4()),
            body=body,
            conf=conf,
            job_type=job_type,
            created=now,
            # A sync statement has run when it is answered: its clock ends at once.
            launching_seconds=0.0 if job_type in SYNC_TYPES else launching,
            running_seconds=0.0 if job_type in SYNC_TYPES else running,
            final_status=final_status,
            result_rows=int(rows) if job_type in RESULT_TYPES else 0,
            owner=owner,
            cancel_lag=self.cancel_lag,
        )
        with self._lock:
            self.jobs[job.id] = job
        answer: dict[str, Any] = {
            "is_success": True,
            "message": "",
            "job_id": job.id,
            "job_type": job.job_type,
            "job_mode": job.job_mode,
        }
        if job.job_mode == "sync":
            status = job.status(now)
            answer.update(is_success=status == "FINISHED", message=job.detail(status))
            if status == "FINISHED":
                answer.update(schema=SCHEMA, rows=job.rows())
        return answer

    def finish(self, job_id: str, status: str) -> None:
        """End a live job now, ``FINISHED`` or ``FAILED``."""
        if status not in FINAL:
            raise ValueError(f"status must be one of {sorted(FINAL)}; got {status!r}")
        now = time.time()
        with self._lock:
            job = self.jobs[job_id]
            if job.status(now) in TERMINAL:
                return
            elapsed = now - job.created
            job.launching_seconds = min(job.launching_seconds, elapsed)
            job.running_seconds = elapsed - job.launching_seconds
            job.final_status = status

    # The endpoints

    def _job(self, job_id: str) -> SqlJob:
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise Reject(400, "DLI.0002", f"The job {job_id} does not exist")
        return job

    def _list(self, call: Call) -> Answer:
        query = call.query

        def one(name: str) -> str | None:
            return query[name][0] if query.get(name) else None

        size, page = query_int(query, "page-size", 50), query_int(query, "current-page", 1)
        if not 1 <= size <= 100 or page < 1:
            raise Reject(400, "DLI.0001", "Parameter check error: 1 <= page-size <= 100 and current-page >= 1")
        order = (one("order") or "start_time_desc").lower()
        if order not in ORDERS:
            raise Reject(400, "DLI.0001", f"Parameter check error: order must be one of {', '.join(ORDERS)}")
        wanted_tags = _tag_filter(one("tags"))
        window = (query_int(query, "start", 0), query_int(query, "end", 0))
        now = time.time()
        with self._lock:
            jobs = list(self.jobs.values())
        filters: dict[str, Callable[[dict[str, Any], str], bool]] = {
            "job-status": lambda j, v: j["status"] == v.upper(),
            "job-id": lambda j, v: j["job_id"] == v,
            "job-type": lambda j, v: v.upper() == "ALL" or j["job_type"] == v.upper(),
            "queue_name": lambda j, v: j["queue_name"] == v,
            "owner": lambda j, v: j["owner"] == v,
            "db_name": lambda j, v: j["database_name"] == v,
            "engine-type": lambda j, v: j["engine_type"] == v,
            "sql_pattern": lambda j, v: v.lower() in j["statement"].lower(),
        }
        listed = [job.as_listed(now) for job in jobs]
        for name, keep in filters.items():
            wanted = one(name)
            if wanted is not None:
                listed = [j for j in listed if keep(j, wanted)]
        listed = [j for j in listed if wanted_tags.items() <= {t["key"]: t["value"] for t in j["tags"]}.items()]
        if window[0]:
            listed = [j for j in listed if j["start_time"] >= window[0]]
        if window[1]:
            listed = [j for j in listed if j["start_time"] <= window[1]]
        key, descending = ORDERS[order]
        listed.sort(key=lambda j: j[key], reverse=descending)
        first = (page - 1) * size
        page_of_jobs = listed[first : first + size]
        return 200, {"is_success": True, "message": "", "job_count": len(listed), "jobs": page_of_jobs}, {}

    def _detail(self, call: Call) -> Answer:
        job = self._job(call.object_id)
        listed = job.as_listed(time.time())
        fields = ("job_id", "owner", "start_time", "duration", "database_name", "table_name", "tags")
        return 200, {"is_success": True, "message": "", **{name: listed[name] for name in fields}}, {}

    def _preview(self, call: Call) -> Answer:
        job = self._job(call.object_id)
        status = job.status(time.time())
        if job.job_type not in RESULT_TYPES:
            raise Reject(
                400, "DLI.0001", f"Job {job.id} is a {job.job_type} job: only a query's result can be previewed"
            )
        if status != "FINISHED":
            raise Reject(400, "DLI.0001", f"Job {job.id} is {status}: only a finished job's result can be previewed")
        rows = job.rows()
        answer = {
            "is_success": True,
            "message": "",
            "job_id": job.id,
            "job_type": job.job_type,
            "row_count": len(rows),
            "input_size": 0,
            "schema": SCHEMA,
            "rows": rows,
        }
        return 200, answer, {}

    def _cancel(self, call: Call) -> Answer:
        job_id, now = call.object_id, time.time()
        with self._lock:
            job = self._job(job_id)
            status = job.status(now)
            if status in TERMINAL or job.cancelled_at is not None:
                raise Reject(
                    400, call.readings.cancel_finished_code, f"The job {job_id} is {status} and cannot be canceled"
                )
            job.cancelled_at = now
            self.cancel_events.append(CancelEvent(job_id, now, status, call.user_agent))
        return 200, {"is_success": True, "message": ""}, {}


def _conf(value: object) -> dict[str, str]:
    """A submit's ``conf``: a list of ``key=value`` strings."""
    if value is None:
        return {}
    if not isinstance(value, list) or not all(isinstance(entry, str) and "=" in entry for entry in value):
        raise Reject(400, "DLI.0001", "Parameter check error: conf must be a list of 'key=value' strings")
    return dict(entry.split("=", 1) for entry in value)


def _seconds(conf: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(conf.get(CONF_PREFIX + name, default))
    except ValueError:
        raise Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}{name} must be seconds") from None


def _check_tags(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise Reject(400, "DLI.0001", f"Parameter check error: tags must be a list of at most {MAX_TAGS} tags")
    keys: set[str] = set()
    for tag in value:
        key, text = (tag.get("key"), tag.get("value")) if isinstance(tag, dict) else (None, None)
        if not isinstance(key, str) or not isinstance(text, str) or key in keys:
            raise Reject(400, "DLI.0001", "Parameter check error: each tag is a {key, value} of strings, keys unique")
        keys.add(key)
        if not (0 < len(key) <= 128 and len(text) <= 255) or key.startswith("_sys_"):
            raise Reject(400, "DLI.0001", "Parameter check error: a tag key has 1 to 128 characters, a value <= 255")
        for part in (key, text):
            if not _TAG_TEXT.fullmatch(part) or part != part.strip():
                raise Reject(
                    400,
                    "DLI.0001",
                    "Parameter check error: tags may hold only letters, digits, spaces and _ . : = + - @, and may "
                    "not start or end with a space",
                )


def _tag_filter(value: str | None) -> dict[str, str]:
    """The ``tags`` filter (``k1=v1,k2=v2``; the client escapes ``=`` and ``,``) as a mapping."""
    if not value:
        return {}
    wanted: dict[str, str] = {}
    for pair in value.split(","):
        key, equals, text = pair.partition("=")
        if not key or not equals:
            raise Reject(400, "DLI.0001", "Parameter check error: tags must be 'key=value' pairs joined by ','")
        wanted[key] = text
    return wanted

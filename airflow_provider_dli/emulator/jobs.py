"""The Spark batch-job API (``/v2.0/{project_id}/batches``): the jobs, their clock, and the endpoints.

Job states are derived from the clock on every read (``starting`` -> ``running`` -> ``success``), so no
background thread moves them; a job's Spark ``conf`` can change its timing or make it end ``dead``:

- ``dli.emulator.final_state``: ``success`` (default) or ``dead``
- ``dli.emulator.starting_seconds`` / ``dli.emulator.running_seconds``: override the emulator's defaults
- ``dli.emulator.driver_attempts``: how many drivers ran (``auto_recovery`` restarts); each has its own log,
  read with the log API's ``index`` (0, the default, is the first; past the last, an empty log)

Under the reading ``recovering=mid-run`` a job reads ``recovering`` for the middle third of its run.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_dli.emulator.api import Answer, Area, Call, Reject, query_int
from airflow_provider_dli.emulator.readings import Readings

TERMINAL = frozenset({"success", "dead"})
CONF_PREFIX = "dli.emulator."
BATCHES_PATH = re.compile(r"/v2\.0/(?P<project>[^/]+)/batches(?:/(?P<id>[^/]+)(?:/(?:state|log))?)?")


@dataclass
class CancelEvent:
    batch_id: str
    at: float  # epoch seconds
    state_before: str
    user_agent: str


@dataclass
class Job:
    id: str
    body: dict[str, Any]
    created: float  # epoch seconds
    starting_seconds: float
    running_seconds: float
    final_state: str
    owner: str
    cancelled_at: float | None = None
    cancel_lag: float = 0.0
    driver_attempts: int = 1
    recovers: bool = False
    """Whether the job reads ``recovering`` for the middle third of its run."""

    def state(self, now: float) -> str:
        if self.cancelled_at is not None and now >= self.cancelled_at + self.cancel_lag:
            return "dead"
        elapsed = now - self.created
        if elapsed < self.starting_seconds:
            return "starting"
        if elapsed < self.starting_seconds + self.running_seconds or self.cancelled_at is not None:
            third = (elapsed - self.starting_seconds) * 3 // self.running_seconds if self.running_seconds else 0
            return "recovering" if self.recovers and third == 1 else "running"
        return self.final_state

    def ended_at(self) -> float:
        """When the job turns (or turned) terminal: a cancel's end, else the end of its natural run."""
        if self.cancelled_at is not None:
            return self.cancelled_at + self.cancel_lag
        return self.created + self.starting_seconds + self.running_seconds

    def log_lines(self, now: float, index: int | None = None) -> list[str]:
        """Driver attempt ``index``'s log (the last attempt's by default); every attempt but the last was lost."""
        state = self.state(now)
        last = self.driver_attempts - 1
        index = last if index is None else index
        if not 0 <= index <= last:
            return []
        lines = [f"INFO DLI: batch job {self.id} submitted to queue {self.body.get('queue') or 'default'}"]
        if index < last:
            return [*lines, f"ERROR DLI: driver attempt {index + 1} lost; restarting it (auto_recovery)"]
        if index:
            lines.append(f"INFO DLI: driver attempt {index + 1} of job {self.id}")
        if state == "starting":
            return lines
        lines += [
            f"INFO SparkContext: Running Spark application {self.body.get('className')}",
            f"INFO SparkContext: Submitted application: {self.body.get('name') or self.id}",
        ]
        if self.cancelled_at is not None and state == "dead":
            lines.append("WARN SparkContext: application killed by a cancel request")
        elif state == "success":
            lines.append("INFO SparkContext: Successfully stopped SparkContext")
        elif state == "dead":
            lines.append("ERROR SparkContext: application failed: exit code 1")
        return lines

    def as_batch(self, now: float) -> dict[str, Any]:
        """The batch object; a finished job's clock stops when it ends (``update_time``, ``duration``)."""
        state = self.state(now)
        until = min(now, self.ended_at()) if state in TERMINAL else now
        created_ms, updated_ms = int(self.created * 1000), int(until * 1000)
        return {
            "id": self.id,
            "appId": f"application_{int(self.created)}_{self.id[:4]}" if state != "starting" else "",
            "name": self.body.get("name") or "",
            "owner": self.owner,
            "proxyUser": "",
            "state": state,
            "kind": "",
            "log": self.log_lines(now)[-3:],
            "sc_type": self.body.get("sc_type") or "A",
            "cluster_name": self.body.get("cluster_name") or "",
            "queue": self.body.get("queue") or self.body.get("cluster_name") or "default",
            "create_time": created_ms,
            "update_time": updated_ms,
            "duration": updated_ms - created_ms,
        }

    def as_listed_batch(self, now: float, readings: Readings, *, listed: bool = False) -> dict[str, Any]:
        """The batch object as the details (or, ``listed``, a listing) answer it: with ``req_body``, the create
        request as a JSON string, in the form the readings say (or without it)."""
        batch = self.as_batch(now)
        if listed and readings.req_body == "absent":
            return batch
        request = normalized(self.body) if readings.req_body == "normalized" else self.body
        return {**batch, "req_body": json.dumps(request)}


NORMALIZED_DEFAULTS: dict[str, Any] = {"autoRecovery": False, "maxRetryTimes": 20, "modelFiles": [], "conf": {}}
"""Fields DLI's normalized ``req_body`` carries whether or not the request gave them [INFER]."""


def normalized(body: dict[str, Any]) -> dict[str, Any]:
    """A create request as DLI keeps it [INFER]: every field camelCase (``auto_recovery`` -> ``autoRecovery``),
    with DLI's defaults for those not given; the Spark ``conf`` as sent."""
    fields = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key): value for key, value in body.items()}
    return {**NORMALIZED_DEFAULTS, **fields}


JOB_NAME = re.compile(r"[A-Za-z0-9_.-]*")
"""The job-name characters DLI documents."""
JOB_NAME_FILTERS: dict[str, Callable[[str, str], bool]] = {
    "substring": lambda name, wanted: wanted in name,
    "whole": lambda name, wanted: name == wanted,
    "ignored": lambda name, wanted: True,
}
"""How the list filter ``job_name`` matches, by the reading of the same name."""


UNKNOWN_BATCH_STATUS = {"DLI.0002": 400, "DLI.0023": 404}
"""The HTTP status of each reading of an unknown batch id's answer."""
_BOTH_EDITIONS = frozenset({"job_name", "job-id", "queue_name", "cluster_name", "state", "from", "size"})
LIST_PARAMETERS: dict[str, frozenset[str] | None] = {
    "any": None,
    "t-cloud": _BOTH_EDITIONS | {"owner"},
    "huawei": _BOTH_EDITIONS | {"start", "end", "order"},
}
"""The job list's query parameters by the reading ``list_parameters``: None takes any."""


class BatchJobs:
    """The project's batch jobs and the cancels they received; the API area that serves them."""

    def __init__(
        self, *, starting_seconds: float, running_seconds: float, cancel_lag: float, lock: threading.RLock
    ) -> None:
        self.starting_seconds = starting_seconds
        self.running_seconds = running_seconds
        self.cancel_lag = cancel_lag
        self.jobs: dict[str, Job] = {}
        self.cancel_events: list[CancelEvent] = []
        self._lock = lock
        self.area = Area(
            BATCHES_PATH,
            {
                "POST batches": self._create,
                "GET batches": self._list,
                "GET batches/{id}": self._details,
                "DELETE batches/{id}": self._cancel,
                "GET batches/{id}/state": self._state,
                "GET batches/{id}/log": self._log,
            },
        )

    def create(self, owner: str, body: Any, *, recovers: bool = False) -> dict[str, Any]:
        """A new job from a create request's body, or a 400 ``DLI.0001`` naming what is wrong with it."""
        if not isinstance(body, dict):
            raise Reject(400, "DLI.0001", "Parameter check error: the request body must be a JSON object")
        for name in ("file", "className"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise Reject(400, "DLI.0001", f"Parameter check error: {name} is required")
        if len(str(body.get("name") or "")) > 128:
            raise Reject(400, "DLI.0001", "Parameter check error: name is longer than 128 characters")
        conf = {} if body.get("conf") is None else body["conf"]
        if not isinstance(conf, dict):
            raise Reject(400, "DLI.0001", "Parameter check error: conf must be an object")
        final_state = str(conf.get(CONF_PREFIX + "final_state", "success")).lower()
        if final_state not in TERMINAL:
            raise Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}final_state must be success or dead")
        timings = {}
        for name, default in (("starting_seconds", self.starting_seconds), ("running_seconds", self.running_seconds)):
            try:
                timings[name] = float(conf.get(CONF_PREFIX + name, default))
            except (TypeError, ValueError):
                raise Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}{name} must be seconds") from None
        attempts = conf.get(CONF_PREFIX + "driver_attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}driver_attempts must be >= 1")
        job = Job(
            id=str(uuid.uuid4()),
            body=body,
            created=time.time(),
            starting_seconds=timings["starting_seconds"],
            running_seconds=timings["running_seconds"],
            final_state=final_state,
            owner=owner,
            cancel_lag=self.cancel_lag,
            driver_attempts=attempts,
            recovers=recovers,
        )
        with self._lock:
            self.jobs[job.id] = job
        return job.as_batch(job.created)

    def finish(self, batch_id: str, state: str) -> None:
        if state not in TERMINAL:
            raise ValueError(f"state must be one of {sorted(TERMINAL)}; got {state!r}")
        now = time.time()
        with self._lock:
            job = self.jobs[batch_id]
            if job.state(now) in TERMINAL:
                return
            elapsed = now - job.created
            job.starting_seconds = min(job.starting_seconds, elapsed)
            job.running_seconds = elapsed - job.starting_seconds
            job.final_state = state

    # The endpoints

    def _job(self, batch_id: str, readings: Readings) -> Job:
        with self._lock:
            job = self.jobs.get(batch_id)
        if job is None:
            code = readings.unknown_batch
            raise Reject(UNKNOWN_BATCH_STATUS[code], code, f"The batch job {batch_id} does not exist")
        return job

    def _create(self, call: Call) -> Answer:
        name = call.payload.get("name") if isinstance(call.payload, dict) else None
        if call.readings.job_name_characters == "documented" and not JOB_NAME.fullmatch(str(name or "")):
            raise Reject(400, "DLI.0001", "Parameter check error: name may have only letters, digits, '_', '-', '.'")
        batch = self.create(call.owner, call.payload, recovers=call.readings.recovering == "mid-run")
        if call.readings.create_answer == "DLI.0999":
            raise Reject(400, "DLI.0999", "Server-side errors occur")  # and the job exists
        return 200, batch, {}

    def _list(self, call: Call) -> Answer:
        query = call.query
        accepted = LIST_PARAMETERS[call.readings.list_parameters]
        if accepted is not None and (undocumented := sorted(set(query) - accepted)):
            raise Reject(400, "DLI.0001", f"Parameter check error: unknown parameter {undocumented[0]!r}")

        def one(name: str) -> str | None:
            return query[name][0] if query.get(name) else None

        start, size = query_int(query, "from", 0), query_int(query, "size", 100)
        window = (query_int(query, "start", 0), query_int(query, "end", 0))
        if start < 0 or not 1 <= size <= 1000:
            raise Reject(400, "DLI.0001", "Parameter check error: from >= 0 and 1 <= size <= 1000")
        now = time.time()
        with self._lock:
            jobs = dict(self.jobs)
        wanted_state = (one("state") or "").lower()
        # The state filter first: building 10,000 batch objects per page would make the emulator the bottleneck.
        batches = [job.as_batch(now) for job in jobs.values() if not wanted_state or job.state(now) == wanted_state]
        filters: dict[str, Callable[[dict[str, Any], str], bool]] = {
            "job_name": lambda b, v: JOB_NAME_FILTERS[call.readings.job_name_filter](b["name"], v),
            "queue_name": lambda b, v: b["queue"] == v,
            "cluster_name": lambda b, v: b["cluster_name"] == v,
            "state": lambda b, v: b["state"] == v.lower(),
            "owner": lambda b, v: b["owner"] == v,
            "job-id": lambda b, v: b["id"] == v,
        }
        for name, keep in filters.items():
            wanted = one(name)
            if wanted is not None:
                batches = [b for b in batches if keep(b, wanted)]
        if window[0]:
            batches = [b for b in batches if b["create_time"] >= window[0]]
        if window[1]:
            batches = [b for b in batches if b["create_time"] <= window[1]]
        batches.sort(key=lambda b: b["create_time"], reverse=(one("order") or "CREATE_TIME_DESC").endswith("DESC"))
        page = {
            "from": start,
            "total": len(batches),
            # req_body only for the page: a project with a long history stays cheap to list
            "sessions": [
                jobs[b["id"]].as_listed_batch(now, call.readings, listed=True) for b in batches[start : start + size]
            ],
            "create_time": int(now * 1000),  # milliseconds, like every DLI time
        }
        return 200, page, {}

    def _details(self, call: Call) -> Answer:
        return 200, self._job(call.object_id, call.readings).as_listed_batch(time.time(), call.readings), {}

    def _cancel(self, call: Call) -> Answer:
        batch_id, now = call.object_id, time.time()
        with self._lock:
            job = self._job(batch_id, call.readings)
            state = job.state(now)
            if state in TERMINAL or job.cancelled_at is not None:
                raise Reject(
                    400,
                    call.readings.cancel_finished_code,
                    f"The batch job {batch_id} is in state {state} and cannot be canceled",
                )
            job.cancelled_at = now
            self.cancel_events.append(CancelEvent(batch_id, now, state, call.user_agent))
        return 200, {"msg": "deleted"}, {}

    def _state(self, call: Call) -> Answer:
        return 200, {"id": call.object_id, "state": self._job(call.object_id, call.readings).state(time.time())}, {}

    def _log(self, call: Call) -> Answer:
        batch_id, query = call.object_id, call.query
        # Like DLI, the first driver's log unless the query names another attempt with index.
        lines = self._job(batch_id, call.readings).log_lines(time.time(), query_int(query, "index", 0))
        start, size = query_int(query, "from", 0), query_int(query, "size", 100)
        if start < 0 or size < 1:
            raise Reject(400, "DLI.0001", "Parameter check error: from >= 0 and size >= 1")
        # The real service sends "from" back as a string at times: clients must cope.
        sent_from = str(start) if call.readings.log_from == "string" else start
        return 200, {"id": batch_id, "from": sent_from, "total": len(lines), "log": lines[start : start + size]}, {}

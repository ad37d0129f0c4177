"""A local DLI: the Spark batch-job and SQL-job APIs, IAM tokens, AK/SK verification, and fault injection.

Standard library only (``http.server``), so it adds no dependency and starts in milliseconds. :class:`DLIEmulator`
is the facade over its parts: the API areas (:mod:`.jobs`, :mod:`.sql_jobs`), who may call (:mod:`.auth`),
failures on purpose (:mod:`.faults`), the HTTP framing (:mod:`.http`) and the readings of DLI it plays
(:mod:`.readings`).

Control endpoints under ``/_emulator/`` let another process read the jobs and cancel events and script faults,
the same as the Python methods of :class:`DLIEmulator`. They have no auth: the emulator binds to loopback, and
its command line refuses another address without ``--allow-remote``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_dli.emulator.api import Answer, Area, Call, Counters, Reject, Request, json_or_none
from airflow_provider_dli.emulator.auth import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_USER,
    Auth,
)
from airflow_provider_dli.emulator.faults import Fault, RateLimit
from airflow_provider_dli.emulator.http import CONTROL_PREFIX, RequestRecord, serve
from airflow_provider_dli.emulator.jobs import BatchJobs, CancelEvent, Job
from airflow_provider_dli.emulator.readings import Readings
from airflow_provider_dli.emulator.sql_jobs import SqlJob, SqlJobs

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_DOMAIN",
    "DEFAULT_PASSWORD",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_SECRET_KEY",
    "DEFAULT_USER",
    "CancelEvent",
    "DLIEmulator",
    "Fault",
    "Job",
    "Readings",
    "RequestRecord",
    "SqlJob",
]


class DLIEmulator:
    """A DLI service on ``http://{host}:{port}``; use as a context manager or call :meth:`start` / :meth:`stop`.

    :param access_keys: AK -> SK accepted for AK/SK signing.
    :param temporary_keys: AK -> (SK, security token) for temporary credentials (``X-Security-Token``).
    :param users: ``(domain, user)`` -> password accepted by the IAM token endpoint.
    :param latency: seconds added to every API request, to model a remote service.
    :param starting_seconds: how long a new job stays ``starting`` (a SQL job: ``LAUNCHING``).
    :param running_seconds: how long it then stays ``running`` (``RUNNING``) before it ends by itself.
    :param cancel_lag: seconds a cancelled job keeps its old state before turning ``dead`` (``CANCELLED``).
    :param lockout_seconds: how long an access key stays locked (every request with it gets a 401) after
        ``LOCKOUT_FAILURES`` (5) failed AK/SK authentications in a row, as the real gateway does.
    :param rate_limit: requests per second allowed per API (``DELETE batches/{id}``...), as the gateway's
        throttling does (200/s by default there; here no limit unless given): past it, 429 ``APIGW.0308``.
    :param rate_limit_retry_after: whether those 429s carry ``Retry-After`` (whole seconds).
    :param readings: how to behave where DLI's documentation leaves it open (:class:`Readings`, or a mapping
        of reading names to values); every reading not given plays its default.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        project_id: str = DEFAULT_PROJECT_ID,
        access_keys: Mapping[str, str] | None = None,
        temporary_keys: Mapping[str, tuple[str, str]] | None = None,
        users: Mapping[tuple[str, str], str] | None = None,
        token_ttl: float = 24 * 3600,
        starting_seconds: float = 1.0,
        running_seconds: float = 5.0,
        latency: float = 0.0,
        cancel_lag: float = 0.0,
        lockout_seconds: float = 300.0,
        rate_limit: float | None = None,
        rate_limit_retry_after: bool = True,
        readings: Readings | Mapping[str, str] | None = None,
    ) -> None:
        self.readings = Readings.of(readings)
        self.latency = latency
        self.counters = Counters()
        self.request_log: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self.auth = Auth(
            project_id=project_id,
            access_keys=access_keys,
            temporary_keys=temporary_keys,
            users=users,
            token_ttl=token_ttl,
            lockout_seconds=lockout_seconds,
            counters=self.counters,
            lock=self._lock,
        )
        self.throttle = RateLimit(rate_limit, rate_limit_retry_after, self.counters, self._lock)
        self.batches = BatchJobs(
            starting_seconds=starting_seconds, running_seconds=running_seconds, cancel_lag=cancel_lag, lock=self._lock
        )
        self.sql = SqlJobs(
            launching_seconds=starting_seconds,
            running_seconds=running_seconds,
            cancel_lag=cancel_lag,
            cancel_events=self.batches.cancel_events,
            lock=self._lock,
        )
        self.areas: tuple[Area, ...] = (self.batches.area, self.sql.area)
        """The routing table: an API area serves every path its pattern matches."""
        self._server = serve(host, port, self)
        self._thread: threading.Thread | None = None

    # The parts' state, where tests and tools read (and change) it

    @property
    def project_id(self) -> str:
        return self.auth.project_id

    @property
    def access_keys(self) -> dict[str, str]:
        return self.auth.access_keys

    @property
    def users(self) -> dict[tuple[str, str], str]:
        return self.auth.users

    @property
    def token_ttl(self) -> float:
        return self.auth.token_ttl

    @token_ttl.setter
    def token_ttl(self, seconds: float) -> None:
        self.auth.token_ttl = seconds

    @property
    def _tokens(self) -> Mapping[str, object]:
        """The tokens issued and not revoked (tests check what a client stored against it)."""
        return self.auth.tokens

    @property
    def jobs(self) -> dict[str, Job]:
        """The batch jobs by id, as of now: a copy, since the handler threads add jobs while a test reads."""
        with self._lock:
            return dict(self.batches.jobs)

    @property
    def sql_jobs(self) -> dict[str, SqlJob]:
        """The SQL jobs by id, as of now (a copy, as :attr:`jobs`)."""
        with self._lock:
            return dict(self.sql.jobs)

    @property
    def cancel_events(self) -> list[CancelEvent]:
        """Every accepted cancel, of batch and SQL jobs alike (``batch_id`` is the job's id)."""
        return self.batches.cancel_events

    # Life cycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"http://{host}:{port}"

    def start(self) -> DLIEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="dli-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> DLIEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def connection(self, *, auth_type: str = "aksk", conn_id: str = "dli_default") -> dict[str, Any]:
        """An Airflow connection that points at this emulator, as a dict: ``json.dumps`` of it is an
        ``AIRFLOW_CONN_...`` value."""
        extra: dict[str, Any] = {"project_id": self.project_id}
        if auth_type == "aksk":
            login, password = next(iter(self.access_keys.items()))
        elif auth_type == "password":
            (domain, login), password = next(iter(self.users.items()))
            extra.update(auth_type="password", domain_name=domain, iam_endpoint=self.url)
        else:
            raise ValueError(f"auth_type must be 'aksk' or 'password' for an emulator connection; got {auth_type!r}")
        return {"conn_type": "dli", "host": self.url, "login": login, "password": password, "extra": extra}

    # Scripting and inspection

    def add_fault(self, path: str, **kwargs: Any) -> Fault:
        fault = Fault(path=path, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def revoke_tokens(self) -> None:
        self.auth.revoke_tokens()

    def issue_token(self, project_id: str | None = None) -> str:
        """A token valid for ``token_ttl``, as IAM would issue it (for ``auth_type: token`` tests)."""
        return self.auth.issue_token(project_id)

    def seed_jobs(self, count: int, body: Mapping[str, Any] | None = None) -> list[str]:
        """Create ``count`` jobs at once, as if submitted: for benchmarks and bulk tests."""
        body = dict(body or {"file": "obs://emulator/seed.jar", "className": "Seed", "name": "seed"})
        recovers = self.readings.recovering == "mid-run"
        return [self.batches.create(DEFAULT_USER, dict(body), recovers=recovers)["id"] for _ in range(count)]

    def finish(self, job_id: str, state: str | None = None) -> None:
        """End a live job now: a batch job ``success`` (default) or ``dead``, a SQL job ``FINISHED`` (default) or
        ``FAILED``. Tests end jobs on an event, never on a timer."""
        if job_id in self.sql.jobs:
            self.sql.finish(job_id, state or "FINISHED")
        else:
            self.batches.finish(job_id, state or "success")

    def state_of(self, job_id: str) -> str:
        """A batch job's state, or a SQL job's status."""
        with self._lock:
            if job_id in self.sql.jobs:
                return self.sql.jobs[job_id].status(time.time())
            return self.batches.jobs[job_id].state(time.time())

    def snapshot(self) -> dict[str, Any]:
        """Jobs, cancel events and counters as JSON-ready data."""
        now = time.time()
        with self._lock:
            return {
                "jobs": [job.as_batch(now) for job in self.batches.jobs.values()],
                "sql_jobs": [job.as_listed(now) for job in self.sql.jobs.values()],
                "cancel_events": [asdict(event) for event in self.cancel_events],
                "token_requests": self.counters.token_requests,
                "throttled": self.counters.throttled,
                "requests": self.counters.requests,
                "by_route": dict(self.counters.by_route),
                "readings": asdict(self.readings),
            }

    # Request handling (called from the handler's threads)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.request_log.append(record)

    def _count(self, route: str) -> None:
        with self._lock:
            self.counters.requests += 1
            self.counters.by_route[route] = self.counters.by_route.get(route, 0) + 1

    def answer(self, request: Request) -> Answer:
        """Route ``request``: IAM, the control endpoints, or the API area whose path it is, once the gateway's
        rate limit and the credentials let it through."""
        parts = urlsplit(request.target)
        path = parts.path.rstrip("/")
        payload = json_or_none(request.body)
        if path == "/v3/auth/tokens" and request.method == "POST":
            self._count("iam.tokens")
            return self.auth.iam_tokens(payload)
        if path.startswith(CONTROL_PREFIX):
            return self._control(request.method, path, payload)
        for area in self.areas:
            match = area.path.fullmatch(path)
            if match:
                break
        else:
            raise Reject(404, "APIGW.0101", "The API does not exist or has not been published in the environment")
        route = area.route(request.method, match)
        self.throttle.take(route, round_down=self.readings.retry_after == "rounded-down")
        owner = self.auth.authenticate(request, match["project"])
        header_project = request.headers.get("X-Project-Id")
        if header_project and header_project != match["project"]:
            raise Reject(400, "DLI.0001", "Parameter check error: X-Project-Id does not match the path")
        self._count(route)
        endpoint = area.endpoints.get(route)
        if endpoint is None:
            raise Reject(404, "APIGW.0101", "The API does not exist")  # the gateway's answer to an unknown method
        query = parse_qs(parts.query, keep_blank_values=True)
        user_agent = request.headers.get("User-Agent", "")
        return endpoint(Call(request.method, match, query, payload, owner, user_agent, self.readings))

    def _control(self, method: str, path: str, payload: Any) -> Answer:
        if path == "/_emulator/state" and method == "GET":
            return 200, self.snapshot(), {}
        try:
            if path == "/_emulator/faults" and method == "POST" and isinstance(payload, dict):
                fault = self.add_fault(**payload)
                return 200, asdict(fault), {}
            if path == "/_emulator/jobs" and method == "POST" and isinstance(payload, dict):
                return 200, {"ids": self.seed_jobs(int(payload.get("count", 1)), payload.get("body"))}, {}
        except (TypeError, ValueError) as error:
            raise Reject(400, "DLI.0001", f"Parameter check error: {error}") from None
        if path == "/_emulator/faults" and method == "DELETE":
            self.clear_faults()
            return 200, {}, {}
        raise Reject(404, "DLI.0023", f"No emulator control endpoint {method} {path}")

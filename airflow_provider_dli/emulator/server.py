"""A local DLI: the Spark batch-job API, IAM tokens, AK/SK verification, and fault injection.

Standard library only (``http.server``), so it adds no dependency and starts in milliseconds. Job states are
derived from the clock on every read (``starting`` -> ``running`` -> ``success``), so no background thread
moves them; a job's Spark ``conf`` can change its timing or make it end ``dead``:

- ``dli.emulator.final_state``: ``success`` (default) or ``dead``
- ``dli.emulator.starting_seconds`` / ``dli.emulator.running_seconds``: override the emulator's defaults
- ``dli.emulator.driver_attempts``: how many drivers ran (``auto_recovery`` restarts); each has its own log,
  read with the log API's ``index`` (0, the default, is the first; past the last, an empty log)

Control endpoints under ``/_emulator/`` let another process read the jobs and cancel events and script faults,
the same as the Python methods of :class:`DLIEmulator`. They have no auth: the emulator binds to loopback, and
its command line refuses another address without ``--allow-remote``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_dli import signing

DEFAULT_ACCESS_KEY = "EMULATORACCESSKEY000"
DEFAULT_SECRET_KEY = "emulator-secret-key-not-a-real-one-000000"  # noqa: S105 - the emulator's own test key
DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_DOMAIN = "emulator"
DEFAULT_USER = "airflow"
DEFAULT_PASSWORD = "emulator-password"  # noqa: S105 - the emulator's own test user
MAX_CLOCK_SKEW = 15 * 60
LOCKOUT_FAILURES = 5
"""Failed AK/SK authentications in a row after which the gateway locks the access key (``lockout_seconds``)."""
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?")
"""A ``Host`` header (RFC 9110): a name or an IPv4 address, or an IPv6 address in brackets; then the port."""
MAX_REQUEST_BODY = 12 * 1024 * 1024
"""The API gateway's limit on a request body; a larger one gets 413 ``APIGW.0201``."""
TERMINAL = frozenset({"success", "dead"})
CONF_PREFIX = "dli.emulator."


_FAULT_CODES = {401: "APIGW.0301", 404: "DLI.0023", 429: "APIGW.0308"}
"""The error code of an injected fault by status; other 4xx: DLI.0001, 5xx: DLI.0999."""


class _Reject(Exception):
    """An error answer: HTTP status and a DLI (or gateway) error body."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


@dataclass
class Fault:
    """A scripted failure for requests whose method and path match (``path`` is a regular expression).

    ``status`` answers with that status (and ``Retry-After`` when given) and a DLI error body with
    ``error_code`` (by default the code DLI or its gateway uses for that status), or ``body`` as it is (HTML
    when it starts with ``<``; ``""`` for an empty body); ``drop`` closes the connection without an answer;
    ``lose_answer`` carries the request out, then closes the connection without an answer (DLI did it, the
    client never hears);
    ``delay`` sleeps first. ``times`` is how many matching requests it hits (None: all).
    """

    path: str
    method: str | None = None
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    lose_answer: bool = False
    body: str | None = None
    error_code: str | None = None
    times: int | None = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method.upper() == method) and re.fullmatch(self.path, path) is not None


@dataclass
class CancelEvent:
    batch_id: str
    at: float  # epoch seconds
    state_before: str
    user_agent: str


@dataclass
class RequestRecord:
    at: float  # epoch seconds, when the request arrived
    method: str
    path: str
    status: int = -1  # -1: still being answered; 0: the connection was dropped


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

    def state(self, now: float) -> str:
        if self.cancelled_at is not None and now >= self.cancelled_at + self.cancel_lag:
            return "dead"
        elapsed = now - self.created
        if elapsed < self.starting_seconds:
            return "starting"
        if elapsed < self.starting_seconds + self.running_seconds or self.cancelled_at is not None:
            return "running"
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

    def as_listed_batch(self, now: float) -> dict[str, Any]:
        """The batch object as list and details answer it: with ``req_body``, the create request as a JSON string."""
        return {**self.as_batch(now), "req_body": json.dumps(self.body)}


@dataclass
class _Token:
    project_id: str
    expires: float  # epoch seconds


@dataclass
class _Counters:
    token_requests: int = 0
    requests: int = 0
    throttled: int = 0
    by_route: dict[str, int] = field(default_factory=dict)


class DLIEmulator:
    """A DLI service on ``http://{host}:{port}``; use as a context manager or call :meth:`start` / :meth:`stop`.

    :param access_keys: AK -> SK accepted for AK/SK signing.
    :param temporary_keys: AK -> (SK, security token) for temporary credentials (``X-Security-Token``).
    :param users: ``(domain, user)`` -> password accepted by the IAM token endpoint.
    :param latency: seconds added to every API request, to model a remote service.
    :param cancel_lag: seconds a cancelled job keeps its old state before turning ``dead``.
    :param lockout_seconds: how long an access key stays locked (every request with it gets a 401) after
        ``LOCKOUT_FAILURES`` (5) failed AK/SK authentications in a row, as the real gateway does.
    :param rate_limit: requests per second allowed per API (``DELETE batches/{id}``...), as the gateway's
        throttling does (200/s by default there; here no limit unless given): past it, 429 ``APIGW.0308``.
    :param rate_limit_retry_after: whether those 429s carry ``Retry-After`` (whole seconds).
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
    ) -> None:
        self.project_id = project_id
        self.access_keys = dict(access_keys or {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY})
        self.temporary_keys = dict(temporary_keys or {})
        self.users = dict(users or {(DEFAULT_DOMAIN, DEFAULT_USER): DEFAULT_PASSWORD})
        self.token_ttl = token_ttl
        self.starting_seconds = starting_seconds
        self.running_seconds = running_seconds
        self.latency = latency
        self.cancel_lag = cancel_lag
        self.lockout_seconds = lockout_seconds
        self.rate_limit = rate_limit
        self.rate_limit_retry_after = rate_limit_retry_after
        self._auth_failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}  # access key -> time.monotonic()
        self._buckets: dict[str, tuple[float, float]] = {}  # API -> (tokens, time.monotonic() of the count)
        self.jobs: dict[str, Job] = {}
        self.cancel_events: list[CancelEvent] = []
        self.request_log: list[RequestRecord] = []
        self.counters = _Counters()
        self._faults: list[Fault] = []
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.RLock()
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer  # "::1" is an IPv6 address
        self._server = server_class((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

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
        with self._lock:
            self._tokens.clear()

    def issue_token(self, project_id: str | None = None) -> str:
        """A token valid for ``token_ttl``, as IAM would issue it (for ``auth_type: token`` tests)."""
        token = "MIIEMU" + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = _Token(project_id or self.project_id, time.time() + self.token_ttl)
        return token

    def seed_jobs(self, count: int, body: Mapping[str, Any] | None = None) -> list[str]:
        """Create ``count`` jobs at once, as if submitted: for benchmarks and bulk tests."""
        body = dict(body or {"file": "obs://emulator/seed.jar", "className": "Seed", "name": "seed"})
        return [self._create(DEFAULT_USER, dict(body))["id"] for _ in range(count)]

    def finish(self, batch_id: str, state: str = "success") -> None:
        """End a live job now, ``success`` or ``dead``: tests end jobs on an event, never on a timer."""
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

    def state_of(self, batch_id: str) -> str:
        with self._lock:
            return self.jobs[batch_id].state(time.time())

    def snapshot(self) -> dict[str, Any]:
        """Jobs, cancel events and counters as JSON-ready data."""
        now = time.time()
        with self._lock:
            return {
                "jobs": [job.as_batch(now) for job in self.jobs.values()],
                "cancel_events": [asdict(event) for event in self.cancel_events],
                "token_requests": self.counters.token_requests,
                "throttled": self.counters.throttled,
                "requests": self.counters.requests,
                "by_route": dict(self.counters.by_route),
            }

    # Request handling (called from the handler's threads)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.request_log.append(record)

    def _count(self, route: str) -> None:
        with self._lock:
            self.counters.requests += 1
            self.counters.by_route[route] = self.counters.by_route.get(route, 0) + 1

    def _authenticate(self, request: _Handler, path_project: str, body: bytes) -> str:
        """The caller's name; a 401 unless the token or the AK/SK signature is valid for ``path_project``."""
        token_value = request.headers.get("X-Auth-Token")
        if token_value:
            with self._lock:
                token = self._tokens.get(token_value)
            if token is None or token.expires <= time.time():
                raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: token expired or invalid")
            if token.project_id != path_project:
                raise _Reject(401, "DLI.0013", f"The token is not scoped to project {path_project}")
            return DEFAULT_USER
        authorization = signing.parse_authorization(request.headers.get("Authorization", ""))
        if authorization is None:
            raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: no credentials")
        security_token = None
        if authorization.access_key in self.access_keys:
            secret_key = self.access_keys[authorization.access_key]
        elif authorization.access_key in self.temporary_keys:
            secret_key, security_token = self.temporary_keys[authorization.access_key]
        else:
            raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: unknown access key")
        access_key = authorization.access_key
        now = time.monotonic()
        with self._lock:
            locked_until = self._locked_until.get(access_key, 0.0)
        if now < locked_until:
            raise _Reject(
                401,
                "APIGW.0301",
                f"Incorrect IAM authentication information: the access key is locked for {locked_until - now:.0f} s "
                f"after {LOCKOUT_FAILURES} failed authentications in a row",
            )
        try:
            self._verify_signature(request, authorization, secret_key, security_token, body)
        except _Reject:
            with self._lock:
                failures = self._auth_failures.get(access_key, 0) + 1
                if failures >= LOCKOUT_FAILURES:
                    self._locked_until[access_key] = now + self.lockout_seconds
                    failures = 0
                self._auth_failures[access_key] = failures
            raise
        with self._lock:
            self._auth_failures.pop(access_key, None)
        if path_project != self.project_id:
            raise _Reject(401, "DLI.0013", f"The access key has no access to project {path_project}")
        return access_key

    def _verify_signature(
        self,
        request: _Handler,
        authorization: signing.Authorization,
        secret_key: str,
        security_token: str | None,
        body: bytes,
    ) -> None:
        """A 401 unless the request carries a fresh, valid ``SDK-HMAC-SHA256`` signature."""
        received = {name.lower(): value for name, value in request.headers.items()}
        date = received.get(signing.DATE_HEADER.lower(), "")
        try:
            signed_at = datetime.strptime(date, signing.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: bad X-Sdk-Date") from None
        server_time = datetime.now(UTC)
        if abs((server_time - signed_at).total_seconds()) > MAX_CLOCK_SKEW:
            raise _Reject(
                401,
                "APIGW.0301",
                f"Incorrect IAM authentication information: signature expired, signature time:{date},"
                f"server time:{signing.sdk_date(server_time)}",
            )
        if security_token is not None and (
            received.get("x-security-token") != security_token or "x-security-token" not in authorization.signed_headers
        ):
            raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: bad security token")
        missing = [name for name in authorization.signed_headers if name not in received]
        if missing or signing.DATE_HEADER.lower() not in authorization.signed_headers:
            raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: unsigned headers")
        parts = urlsplit(request.path)
        canonical = signing.canonical_request(
            request.command,
            parts.path,
            parts.query,
            {name: received[name].strip() for name in authorization.signed_headers},
            body,
            received.get(signing.CONTENT_SHA256_HEADER.lower()),
        )
        expected = signing.signature(secret_key, signing.string_to_sign(canonical, date))
        if not hmac.compare_digest(expected.encode(), authorization.signature.encode()):
            raise _Reject(401, "APIGW.0301", "Incorrect IAM authentication information: verify aksk signature fail")

    def _throttle(self, api: str) -> None:
        """A 429 ``APIGW.0308`` when ``api`` is over ``rate_limit`` requests per second (a token bucket that
        holds one second's worth), with ``Retry-After`` in whole seconds if ``rate_limit_retry_after``."""
        if self.rate_limit is None:
            return
        with self._lock:
            now = time.monotonic()
            tokens, updated = self._buckets.get(api, (self.rate_limit, now))
            tokens = min(self.rate_limit, tokens + (now - updated) * self.rate_limit)
            allowed = tokens >= 1
            self._buckets[api] = (tokens - 1 if allowed else tokens, now)
            self.counters.throttled += not allowed
        if not allowed:
            wait = (1 - tokens) / self.rate_limit
            headers = {"Retry-After": str(math.ceil(wait))} if self.rate_limit_retry_after else {}
            raise _Reject(
                429, "APIGW.0308", f"The throttling threshold has been reached: {self.rate_limit:g} requests/s", headers
            )

    def _iam_tokens(self, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.counters.token_requests += 1
        try:
            identity = body["auth"]["identity"]
            user = identity["password"]["user"]
            key = (str(user["domain"]["name"]), str(user["name"]))
            password = str(user["password"])
            project_id = str(body["auth"]["scope"]["project"]["id"])
        except (KeyError, TypeError):
            return 400, {"error": {"code": 400, "message": "The request body is invalid.", "title": "Bad Request"}}, {}
        expected = self.users.get(key)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            error = {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"}
            return 401, {"error": error}, {}
        if project_id != self.project_id:
            return (
                400,
                {"error": {"code": 400, "message": f"Project {project_id} not found", "title": "Bad Request"}},
                {},
            )
        token = self.issue_token(project_id)
        issued = datetime.now(UTC)
        expires = issued + timedelta(seconds=self.token_ttl)
        body = {
            "token": {
                "methods": ["password"],
                "issued_at": issued.isoformat().replace("+00:00", "Z"),
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
                "project": {"id": project_id, "name": "emulator"},
                "user": {"name": key[1], "domain": {"name": key[0]}},
            }
        }
        return 201, body, {"X-Subject-Token": token}

    def _create(self, owner: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Reject(400, "DLI.0001", "Parameter check error: the request body must be a JSON object")
        for name in ("file", "className"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise _Reject(400, "DLI.0001", f"Parameter check error: {name} is required")
        if len(str(body.get("name") or "")) > 128:
            raise _Reject(400, "DLI.0001", "Parameter check error: name is longer than 128 characters")
        conf = {} if body.get("conf") is None else body["conf"]
        if not isinstance(conf, dict):
            raise _Reject(400, "DLI.0001", "Parameter check error: conf must be an object")
        final_state = str(conf.get(CONF_PREFIX + "final_state", "success")).lower()
        if final_state not in TERMINAL:
            raise _Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}final_state must be success or dead")
        timings = {}
        for name, default in (("starting_seconds", self.starting_seconds), ("running_seconds", self.running_seconds)):
            try:
                timings[name] = float(conf.get(CONF_PREFIX + name, default))
            except (TypeError, ValueError):
                raise _Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}{name} must be seconds") from None
        attempts = conf.get(CONF_PREFIX + "driver_attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise _Reject(400, "DLI.0001", f"Parameter check error: {CONF_PREFIX}driver_attempts must be >= 1")
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
        )
        with self._lock:
            self.jobs[job.id] = job
        return job.as_batch(job.created)

    def _job(self, batch_id: str) -> Job:
        with self._lock:
            job = self.jobs.get(batch_id)
        if job is None:
            raise _Reject(400, "DLI.0002", f"The batch job {batch_id} does not exist")
        return job

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            return query[name][0] if query.get(name) else None

        start, size = _query_int(query, "from", 0), _query_int(query, "size", 100)
        window = (_query_int(query, "start", 0), _query_int(query, "end", 0))
        if start < 0 or not 1 <= size <= 1000:
            raise _Reject(400, "DLI.0001", "Parameter check error: from >= 0 and 1 <= size <= 1000")
        now = time.time()
        with self._lock:
            jobs = dict(self.jobs)
        wanted_state = (one("state") or "").lower()
        # The state filter first: building 10,000 batch objects per page would make the emulator the bottleneck.
        batches = [job.as_batch(now) for job in jobs.values() if not wanted_state or job.state(now) == wanted_state]
        filters: dict[str, Callable[[dict[str, Any], str], bool]] = {
            "job_name": lambda b, v: v in b["name"],
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
        return {
            "from": start,
            "total": len(batches),
            # req_body only for the page: a project with a long history stays cheap to list
            "sessions": [{**b, "req_body": json.dumps(jobs[b["id"]].body)} for b in batches[start : start + size]],
            "create_time": int(now * 1000),  # milliseconds, like every DLI time
        }

    def _cancel(self, batch_id: str, user_agent: str) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            job = self._job(batch_id)
            state = job.state(now)
            if state in TERMINAL or job.cancelled_at is not None:
                raise _Reject(400, "DLI.0007", f"The batch job {batch_id} is in state {state} and cannot be canceled")
            job.cancelled_at = now
            self.cancel_events.append(CancelEvent(batch_id, now, state, user_agent))
        return {"msg": "deleted"}

    def _route(self, request: _Handler, method: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(request.path)
        path = parts.path.rstrip("/")
        query = parse_qs(parts.query, keep_blank_values=True)
        payload = _json_or_none(body)
        if path == "/v3/auth/tokens" and method == "POST":
            self._count("iam.tokens")
            return self._iam_tokens(payload)
        if path.startswith("/_emulator/"):
            return self._control(method, path, payload)
        match = re.fullmatch(r"/v2\.0/([^/]+)/batches(?:/([^/]+)(?:/(state|log))?)?", path)
        if not match:
            raise _Reject(404, "APIGW.0101", "The API does not exist or has not been published in the environment")
        project, batch_id, leaf = match.groups()
        header_project = request.headers.get("X-Project-Id")
        route = f"{method} batches" + ("/{id}" if batch_id else "") + (f"/{leaf}" if leaf else "")
        self._throttle(route)
        owner = self._authenticate(request, project, body)
        if header_project and header_project != project:
            raise _Reject(400, "DLI.0001", "Parameter check error: X-Project-Id does not match the path")
        now = time.time()
        self._count(route)
        if batch_id is None:
            if method == "POST":
                return 200, self._create(owner, payload), {}
            if method == "GET":
                return 200, self._list(query), {}
        elif leaf is None and method == "GET":
            job = self._job(batch_id)
            return 200, job.as_listed_batch(now), {}
        elif leaf is None and method == "DELETE":
            return 200, self._cancel(batch_id, request.headers.get("User-Agent", "")), {}
        elif leaf == "state" and method == "GET":
            return 200, {"id": batch_id, "state": self._job(batch_id).state(now)}, {}
        elif leaf == "log" and method == "GET":
            # Like DLI, the first driver's log unless the query names another attempt with index.
            lines = self._job(batch_id).log_lines(now, _query_int(query, "index", 0))
            start, size = _query_int(query, "from", 0), _query_int(query, "size", 100)
            if start < 0 or size < 1:
                raise _Reject(400, "DLI.0001", "Parameter check error: from >= 0 and size >= 1")
            # The real service sends "from" back as a string at times: clients must cope.
            return (
                200,
                {"id": batch_id, "from": str(start), "total": len(lines), "log": lines[start : start + size]},
                {},
            )
        raise _Reject(404, "APIGW.0101", "The API does not exist")  # the gateway's answer to an unknown method

    def _control(self, method: str, path: str, payload: Any) -> tuple[int, Any, dict[str, str]]:
        if path == "/_emulator/state" and method == "GET":
            return 200, self.snapshot(), {}
        try:
            if path == "/_emulator/faults" and method == "POST" and isinstance(payload, dict):
                fault = self.add_fault(**payload)
                return 200, asdict(fault), {}
            if path == "/_emulator/jobs" and method == "POST" and isinstance(payload, dict):
                return 200, {"ids": self.seed_jobs(int(payload.get("count", 1)), payload.get("body"))}, {}
        except (TypeError, ValueError) as error:
            raise _Reject(400, "DLI.0001", f"Parameter check error: {error}") from None
        if path == "/_emulator/faults" and method == "DELETE":
            self.clear_faults()
            return 200, {}, {}
        raise _Reject(404, "DLI.0023", f"No emulator control endpoint {method} {path}")


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service
    server_version = "DLIEmulator"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK hold the body back ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo read the emulator's state, not its access log."""

    def _handle(self) -> None:
        emulator: DLIEmulator = self.server.emulator  # type: ignore[attr-defined]
        self.record = RequestRecord(time.time(), self.command, urlsplit(self.path).path.rstrip("/"))
        if not self.record.path.startswith("/_emulator/"):
            emulator._record(self.record)  # at arrival, so that a slow answer is counted at once
        try:
            body = self._read_body()
        except _Reject as reject:
            self.close_connection = True  # the rest of the stream cannot be framed: answer, then hang up
            self._reply(reject.status, {"error_code": reject.code, "error_msg": reject.message}, {})
            return
        self._answer(emulator, self.record.path, body)

    def _read_body(self) -> bytes:
        """The body that ``Content-Length`` announces; a 4xx, as the gateway answers, for a malformed one (or
        for a malformed ``Host``: an IPv6 address must be in brackets, ``[::1]:8080``)."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not _HOST.fullmatch(hosts[0]):
            raise _Reject(400, "APIGW.0201", "API request error: the Host header is missing or malformed")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not lengths:
            return b""
        length = lengths.pop()
        if lengths or not re.fullmatch(r"[0-9]{1,20}", length):
            raise _Reject(400, "APIGW.0201", "API request error: Content-Length is not a number of bytes")
        if int(length) > MAX_REQUEST_BODY:
            raise _Reject(413, "APIGW.0201", "Request entity too large")
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            raise _Reject(400, "APIGW.0201", "API request error: the body is shorter than Content-Length")
        return body

    def _answer(self, emulator: DLIEmulator, path: str, body: bytes) -> None:
        if emulator.latency and not path.startswith("/_emulator/"):
            time.sleep(emulator.latency)
        fault = emulator._take_fault(self.command, path)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.drop or fault.lose_answer:
                if fault.lose_answer:
                    with contextlib.suppress(_Reject):
                        emulator._route(self, self.command, body)
                self.record.status = 0
                self.close_connection = True
                return
            if fault.status is not None:
                fault_headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                if fault.body is not None:
                    content_type = "text/html" if fault.body.startswith("<") else "text/plain"
                    self._send(fault.status, fault.body.encode(), content_type, fault_headers)
                else:
                    code = (
                        fault.error_code
                        or _FAULT_CODES.get(fault.status)
                        or ("DLI.0999" if fault.status >= 500 else "DLI.0001")
                    )
                    self._reply(fault.status, {"error_code": code, "error_msg": "injected fault"}, fault_headers)
                return
        headers: dict[str, str] = {}
        try:
            status, payload, headers = emulator._route(self, self.command, body)
        except _Reject as reject:
            status, payload = reject.status, {"error_code": reject.code, "error_msg": reject.message}
            headers = reject.headers
        except Exception as error:  # a bug in the emulator: answer like the service's internal error
            status, payload = 500, {"error_code": "DLI.0999", "error_msg": f"emulator error: {error!r}"}
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        request_id = uuid.uuid4().hex
        if status >= 400 and isinstance(payload, dict) and "error_code" in payload:
            payload = {**payload, "request_id": request_id}
        self._send(status, json.dumps(payload).encode(), "application/json", {**headers, "X-Request-Id": request_id})

    def _send(self, status: int, data: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        self.record.status = status  # before the client can see the answer
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        self.send_response(status, phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _handle


def _query_int(query: Mapping[str, list[str]], name: str, default: int) -> int:
    """The whole number in query parameter ``name`` (``default`` when absent or blank); else 400 ``DLI.0001``."""
    raw = (query.get(name) or [""])[0].strip()
    if not raw:
        return default
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise _Reject(400, "DLI.0001", f"Parameter check error: {name} must be a whole number")
    return int(raw)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None

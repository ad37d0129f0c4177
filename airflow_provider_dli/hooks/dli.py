"""DLIHook: the one place that talks HTTP to DLI (endpoints, auth, timeouts, retries, error mapping).

Operators, sensors, triggers and failure callbacks stay thin and call the methods here. Everything that can
be checked before a request is sent (the connection's fields, ids) is checked first, with an error that names
the field; secrets are registered with Airflow's secrets masker as soon as they are read.
"""

from __future__ import annotations

import math
import os
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.sdk import BaseHook, Connection
from airflow.sdk.log import mask_secret
from requests.auth import AuthBase
from urllib3.exceptions import NewConnectionError

from airflow_provider_dli import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR, __version__
from airflow_provider_dli._compat import conf
from airflow_provider_dli.auth import AKSKAuth, TokenAuth
from airflow_provider_dli.endpoints import dli_endpoint, iam_endpoint
from airflow_provider_dli.exceptions import DLIAPIError, DLIConnectionError, DLIError
from airflow_provider_dli.states import LIVE_STATES, TERMINAL_STATES
from airflow_provider_dli.throttle import Throttle, ThrottleTimeout
from airflow_provider_dli.token_store import TOKEN_STORE, TokenFolder, TokenSource, token_key
from airflow_provider_dli.transport import MAX_RESPONSE_BYTES, DeadlineAdapter, ResponseTooLarge, deadline, read_body
from airflow_provider_dli.validation import (
    BATCH_ID,
    shown,
    validate_batch_id,
    validate_max_workers,
    validate_project_id,
)

AUTH_TYPES = ("aksk", "password", "token")
LOGIN_CACHES = ("disk", "memory")
"""Where password auth keeps its IAM token: shared by the machine's processes, or in each process only."""

DEFAULT_TIMEOUT = (10.0, 60.0)
"""(connect, read) seconds for every request; an attempt also ends after connect + read seconds in all."""
NOT_TRIED = "not tried: DLI refused the credentials (HTTP 401) on an earlier request of this bulk cancel"
POOL_SIZE = 32
"""Connections kept per host, and requests in flight at most: a bulk cancel's threads share them."""
TEST_CONNECTION_TIMEOUT = (3.0, 5.0)
TEST_CONNECTION_DEADLINE = 10.0
"""The connection form's Test button: a person waits for its answer (one attempt, these timeouts at most)."""
DEFAULT_MAX_RETRY_TIMES = 20
"""DLI's documented default for ``max_retry_times``: how often it restarts an ``auto_recovery`` job's driver."""
MAX_BACKOFF = 30.0
"""Longest sleep between two attempts; with ``retry_limit`` it bounds a call's total time."""
MAX_RETRY_AFTER = 60.0
"""Longest ``Retry-After`` honoured."""
MAX_THROTTLED_WAIT = 120.0
"""How long one request keeps being sent again while DLI answers 429 (it did nothing, so it is safe)."""

_FORM_TEST_ID = re.compile(r"[A-Za-z0-9]{8}")  # airflow.utils.strings.get_random_string()
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
"""What a key or token that travels in a header may hold: no whitespace, no control or non-ASCII characters."""


CancelOutcome = Literal["cancelled", "already_cancelling", "already_finished"]
"""What a cancel found: ``cancelled`` by this call (also when DLI took it but its answer was lost),
``already_cancelling`` (an earlier cancel, e.g. ``on_kill``'s, was taking the job down), ``already_finished``."""

CANCEL_SETTLE_TIMEOUT = 10.0
"""Seconds a refused cancel re-reads the job's state: after an accepted cancel DLI refuses another one while
the job is dying but its state still reads live, for a moment, before it turns ``dead``."""
_SETTLE_POLL = 0.5

_REFUSED_CANCEL: dict[tuple[bool, bool, str], CancelOutcome | None] = {
    # (an earlier attempt of this call may have reached DLI, the job was live when first read after the
    # refusal, its state once settled) -> the outcome; None: a real refusal, raised.
    (True, True, "dead"): "cancelled",
    (True, False, "dead"): "cancelled",
    (False, True, "dead"): "already_cancelling",
    (False, False, "dead"): "already_finished",
    (True, True, "success"): "already_finished",
    (True, False, "success"): "already_finished",
    (False, True, "success"): "already_finished",
    (False, False, "success"): "already_finished",
    (True, True, "live"): None,
    (False, True, "live"): None,
}
"""How a refused ``DELETE`` ends. A job that still reads live after :data:`CANCEL_SETTLE_TIMEOUT` was not
being cancelled: DLI's refusal stands."""


class BulkCancelOutcome(TypedDict):
    batch_id: str
    outcome: Literal["cancelled", "already_cancelling", "already_finished", "error", "not_tried"]
    state: str | None
    error: str | None


class CancelResult(TypedDict):
    batch_id: str
    cancelled: bool
    """True when the job was cancelled, by this call or by one still in progress; False when it had finished."""
    outcome: CancelOutcome
    state: str | None
    """The job's state as last read; None after a cancel that DLI accepted at once (it updates the state later)."""


_CANCEL_SUMMARIES: dict[CancelOutcome, str] = {
    "cancelled": "Cancelled DLI batch job {batch_id}",
    "already_cancelling": "DLI batch job {batch_id} was already being cancelled; it is now {state}",
    "already_finished": "DLI batch job {batch_id} had already finished ({state}): nothing to cancel",
}


def cancel_summary(result: CancelResult) -> str:
    """One line for a task log: what a cancel did."""
    return _CANCEL_SUMMARIES[result["outcome"]].format(**result)


def bulk_cancel_counts(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """``Cancelled 3 DLI batch jobs; 1 was already being cancelled; ...``: one line for a bulk cancel."""
    counts = Counter(outcome["outcome"] for outcome in outcomes)
    not_tried = f"; {counts['not_tried']} were not tried" if counts["not_tried"] else ""
    return (
        f"Cancelled {counts['cancelled']} DLI batch jobs; {counts['already_cancelling']} were already being "
        f"cancelled; {counts['already_finished']} had already finished; {counts['error']} could not be "
        f"cancelled{not_tried}"
    )


def bulk_cancel_table(outcomes: Sequence[BulkCancelOutcome]) -> str:
    """Every outcome of a bulk cancel, one aligned line per job, for the task log."""
    rows = [f"  {'batch id':36}  {'outcome':18}  {'state':10}  error"]
    rows += [
        f"  {o['batch_id']:36}  {o['outcome']:18}  {o['state'] or '':10}  {o['error'] or ''}".rstrip() for o in outcomes
    ]
    return "\n".join(rows)


def bulk_cancel_failure(outcomes: Sequence[BulkCancelOutcome], where: str, shown: int = 3) -> str | None:
    """A short message for a bulk cancel that left jobs uncancelled (None if none): the counts and the first few
    errors. The message stays short however many jobs failed; the full list is in the table and in XCom."""
    failed = [o for o in outcomes if o["outcome"] in ("error", "not_tried")]
    if not failed:
        return None
    first = "; ".join(f"{o['batch_id']}: {str(o['error'])[:200]}" for o in failed[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return (
        f"{len(failed)} of {len(outcomes)} DLI batch jobs were not cancelled ({bulk_cancel_counts(outcomes)}). "
        f"{first}{more}. Every job's outcome is in {where}."
    )


@dataclass(frozen=True)
class _Settings:
    """What the connection resolves to, checked once per hook."""

    base_url: str  # https://dli.../v2.0/{project_id}
    project_id: str
    auth: AuthBase
    iam_endpoint: str | None  # password auth only
    tokens: TokenSource | None  # password auth: the token to drop and fetch again on a 401


class DLIHook(BaseHook):
    """Talk to the DLI Spark batch-job API of one project.

    :param dli_conn_id: connection of type ``dli``: host = DLI endpoint URL (optional when ``region`` is
        set), login/password = AK/SK or IAM user/password, extras ``project_id``, ``region``, ``auth_type``
        (``aksk``, ``password``, ``token``), ``domain_name``, ``iam_endpoint``, ``security_token``, ``token``,
        ``login_cache`` (``disk``: share password auth's IAM token with the machine's other processes, the
        default; ``memory``: this process only; see :mod:`airflow_provider_dli.token_store`).
    :param project_id: overrides the connection's extra ``project_id``.
    :param region: overrides the connection's extra ``region``.
    :param timeout: seconds, or ``(connect, read)`` seconds, for each request. Whatever the server sends
        (a byte at a time, or nothing), an attempt ends after connect + read seconds in all.
    :param retry_limit: retries after the first attempt, on connection errors, timeouts, 5xx (and DLI's
        ``DLI.0999``, a 400). Creating a job is retried only when the request cannot have reached DLI
        (refused, connect timeout), so a retry never submits a job twice. A 429 is not counted: DLI did
        nothing, and the request is sent again, as every request of the hook slows down together, for up
        to ``MAX_THROTTLED_WAIT`` seconds.
    :param retry_delay: base of the exponential backoff, in seconds (with jitter, capped at 30 s); also the
        pause after a 429 that carries no ``Retry-After``.
    :param deadline: seconds from the hook's creation by which every call must end, retries, IAM token
        and follow-up requests included: ``on_kill`` has 5 s before SIGKILL.
    :param caller: who is calling, e.g. ``dag_id.task_id``; added to the User-Agent so that DLI's audit trail
        (and the emulator) shows which Airflow task submitted or cancelled a job.
    :param connection: the connection, already fetched; triggers fetch it with ``aget_connection`` so that
        no blocking call reaches the triggerer's event loop.
    """

    conn_name_attr = "dli_conn_id"
    default_conn_name = "dli_default"
    conn_type = CONN_TYPE
    hook_name = "Data Lake Insight (DLI)"

    def __init__(
        self,
        dli_conn_id: str = default_conn_name,
        *,
        project_id: str | None = None,
        region: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        caller: str | None = None,
        connection: Connection | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(retry_limit, bool) or not isinstance(retry_limit, int) or retry_limit < 0:
            raise ValueError(f"retry_limit must be a whole number >= 0; got {retry_limit!r}")
        if not _seconds(retry_delay) or retry_delay < 0:
            raise ValueError(f"retry_delay must be a number of seconds >= 0; got {retry_delay!r}")
        timeouts = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        if len(timeouts) != 2 or not all(_seconds(t) and t > 0 for t in timeouts):
            raise ValueError(f"timeout must be seconds > 0, or a (connect, read) pair of them; got {timeout!r}")
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0
        ):
            raise ValueError(f"deadline must be a number of seconds > 0, or None; got {deadline!r}")
        if project_id is not None and project_id != "":  # blank, like None: the connection's project
            validate_project_id(project_id, "the project_id argument")
        if region is not None and not isinstance(region, str):
            raise ValueError(f"region must be a string such as 'eu-de'; got {shown(region)}")
        self.dli_conn_id = dli_conn_id
        self.project_id_override = project_id
        self.region_override = region
        self.timeout = timeouts
        self.retry_limit = retry_limit
        self.retry_delay = float(retry_delay)
        self.caller = caller
        self._connection = connection
        self._connection_label = f"connection {dli_conn_id!r}"
        """How error messages name the connection."""
        self._environments: dict[str, dict[str, Any]] = {}
        self._throttles: dict[str, Throttle] = {}
        self._ends_at = math.inf if deadline is None else time.monotonic() + deadline

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the connection form on Airflow 3.1, which does not read ``conn-fields`` from the
        provider info: the same fields, built from the same definitions (``CONN_FIELDS``)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField
        from wtforms.validators import Optional, any_of

        widgets: dict[str, Any] = {}
        for name, field in CONN_FIELDS.items():
            schema = field["schema"]
            secret = schema.get("format") == "password"
            choices = schema.get("enum")
            widget = (PasswordField if secret else StringField)(
                lazy_gettext(field["label"]),
                validators=[any_of(choices)] if choices else [Optional()],
                description=field["description"],
                default=schema.get("default"),
                widget=BS3PasswordFieldWidget() if secret else BS3TextFieldWidget(),
            )
            # Airflow 3.1's api-server turns each field into a Param (``widget.param``) without the hints that
            # WTForms cannot carry; its UI shows them, so they are added to that Param's schema.
            hints = {key: schema[key] for key in ("examples", "values_display") if key in schema}
            param_schema = getattr(getattr(widget, "param", None), "schema", None)
            if hints and isinstance(param_schema, dict):
                param_schema.update(hints)
            widgets[name] = widget
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.1, which does not read it from the provider info."""
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    # Connection and session

    @cached_property
    def settings(self) -> _Settings:
        """The connection, validated: every problem is reported before the first request."""
        conn = self._connection or self.get_connection(self.dli_conn_id)
        extra = conn.extra_dejson

        where = self._connection_label
        if not isinstance(extra, dict):
            raise ValueError(f"the extra of {where} must be a JSON object; got a {type(extra).__name__}")

        def option(name: str) -> str | None:
            """An extra by its name or its legacy ``extra__dli__<name>`` spelling; blank counts as unset."""
            value = extra.get(name, extra.get(f"extra__{CONN_TYPE}__{name}"))
            if value is None:
                return None
            if not isinstance(value, str):  # never shown: it may be a secret
                raise ValueError(f"the extra {name!r} of {where} must be a string; got a {type(value).__name__}")
            return value.strip() or None

        def header_safe(value: str, what: str) -> str:
            """``value`` when it can travel in a header; else an error that names ``what`` but never shows it."""
            if not _VISIBLE_ASCII.fullmatch(value):
                raise ValueError(
                    f"{what} of {where} contains whitespace, a control character or a non-ASCII character; "
                    "copy it again from its source"
                )
            return value

        project_id = self.project_id_override or option("project_id")
        if not project_id:
            raise ValueError(
                f"project_id is missing: pass project_id= to the hook or operator, or set the extra "
                f"'project_id' of {where}"
            )
        validate_project_id(project_id, f"from the project_id argument or the extra 'project_id' of {where}")
        region = self.region_override or option("region")
        if conn.host:
            endpoint = _url_from_host(conn.host, conn.port, f"the host of {where}")
        elif region:
            endpoint = dli_endpoint(region)
        else:
            raise ValueError(
                f"the DLI endpoint is unknown: set the host (DLI endpoint URL) or the extra 'region' of {where}, "
                "or pass region= to the hook"
            )

        auth_type = (option("auth_type") or "aksk").lower()
        iam_url: str | None = None
        tokens: TokenSource | None = None
        auth: AuthBase
        if auth_type == "aksk":
            if conn.password:
                mask_secret(conn.password)
            # A key pasted with a newline or spaces around it: what was meant is clear.
            access_key, secret_key = (conn.login or "").strip(), (conn.password or "").strip()
            if not access_key or not secret_key:
                raise ValueError(
                    f"auth_type 'aksk' needs the access key ID as login and the secret access key as "
                    f"password of {where}"
                )
            mask_secret(secret_key)
            security_token = option("security_token")
            if security_token:
                mask_secret(security_token)
                header_safe(security_token, "the extra 'security_token'")
            header_safe(access_key, "the access key ID (login)")
            header_safe(secret_key, "the secret access key (password)")
            auth = AKSKAuth(access_key, secret_key, security_token)
        elif auth_type == "password":
            domain = option("domain_name")
            user = (conn.login or "").strip()
            if not user or not conn.password or not domain:
                raise ValueError(
                    f"auth_type 'password' needs the IAM user name as login, the password, and the extra "
                    f"'domain_name' of {where}"
                )
            iam_url = option("iam_endpoint")
            if iam_url:
                iam_url = _url_from_host(iam_url, None, f"the extra 'iam_endpoint' of {where}")
            elif region:
                iam_url = iam_endpoint(region)
            else:
                raise ValueError(f"auth_type 'password' needs the extra 'iam_endpoint' or 'region' of {where}")
            mask_secret(conn.password)
            tokens = TokenSource(
                token_key(iam_url, domain, user, project_id, conn.password),
                self._iam_token_fetch(iam_url, domain, user, project_id, conn.password),
                _token_folder(option("login_cache"), where),
                self._lock_wait,
            )
            auth = TokenAuth(tokens.token)
        elif auth_type == "token":
            token = option("token")
            if not token:
                raise ValueError(f"auth_type 'token' needs an IAM token in the extra 'token' of {where}")
            mask_secret(token)
            header_safe(token, "the extra 'token'")
            auth = TokenAuth(lambda: token)
        else:
            raise ValueError(f"the extra 'auth_type' of {where} must be one of {AUTH_TYPES}; got {auth_type!r}")
        return _Settings(f"{endpoint}/v2.0/{project_id}", project_id, auth, iam_url, tokens)

    @property
    def project_id(self) -> str:
        return self.settings.project_id

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        # requests reads proxies and CA bundles from the environment on every request; _environment reads
        # them once per host instead, a good part of a cancel's client-side cost.
        session.trust_env = False
        # Bulk cancels run requests in parallel: keep enough pooled connections for them.
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        user_agent = f"airflow-provider-dli/{__version__}" + (f" ({self.caller})" if self.caller else "")
        session.headers.update({"Content-Type": "application/json", "User-Agent": user_agent})
        return session

    def _environment(self, url: str) -> dict[str, Any]:
        """``proxies``, ``verify`` and ``cert`` from HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE... for ``url``'s host."""
        host = urlsplit(url).netloc
        settings = self._environments.get(host)
        if settings is None:
            with requests.Session() as reader:  # trust_env is on: what requests itself would use
                merged = reader.merge_environment_settings(url, {}, None, None, None)
            settings = {name: merged[name] for name in ("proxies", "verify", "cert")}
            self._environments[host] = settings
        return settings

    def _iam_token_fetch(
        self, iam_url: str, domain: str, user: str, project_id: str, password: str
    ) -> Callable[[], tuple[str, float]]:
        """Log in to IAM: ``fetch() -> (project-scoped token, seconds it is valid)``."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "password": password, "domain": {"name": domain}}},
                },
                "scope": {"project": {"id": project_id}},
            }
        }

        def fetch() -> tuple[str, float]:
            self.log.info("Requesting an IAM token for user %s of domain %s from %s", user, domain, iam_url)
            url = f"{iam_url}/v3/auth/tokens"
            response = self._send("POST", url, json=body, idempotent=True)
            token = response.headers.get("X-Subject-Token")
            if response.status_code != 201 or not token:
                raise _api_error(response, "POST", url)
            mask_secret(token)
            return token, _token_lifetime(response)

        return fetch

    def _lock_wait(self) -> float:
        """How long to wait for another process's IAM login: about one attempt, and never past the deadline."""
        return max(0.0, min(sum(self.timeout), self._ends_at - time.monotonic()))

    # HTTP: one request, retried

    def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        auth: AuthBase | None = None,
        lost: list[str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request, retrying what is safe to retry; return the last response, whatever its status.

        Each attempt ends by its deadline (connect + read timeouts, and the hook's ``deadline``). A redirect
        is an error, never followed: it could turn a cancel into a GET, or carry credentials to another
        host. An answer larger than any DLI answer can be is an error, not read.

        ``lost`` collects why each retried attempt may have reached DLI without its answer reaching us (a reset
        or timed-out connection, a 5xx): a cancel refused after such an attempt may be refusing its own success.
        """
        attempt = 0  # retries so far, of failures other than 429
        throttled_since: float | None = None
        while True:
            try:
                response = self._attempt(method, url, auth, kwargs)
            except _AttemptFailed as failed:
                if not _retryable_error(failed.error, idempotent) or not self._wait_before_retry(
                    attempt, self._backoff(attempt, None), failed.reason
                ):
                    raise DLIConnectionError(
                        f"DLI {method} {url} failed after {attempt + 1} attempt(s): {failed.reason}"
                    ) from failed.error
                if lost is not None and not _never_reached_server(failed.error):
                    lost.append(failed.reason)
                attempt += 1
                continue
            status = response.status_code
            if 300 <= status < 400:
                raise _redirect_error(response, method, url)
            if status == 429:
                # DLI did nothing and asks to slow down: sent again when the pause that every request of
                # this hook waits for has passed, for up to MAX_THROTTLED_WAIT (and within the deadline).
                throttled_since = throttled_since or time.monotonic()
                paused_until = self._throttle(url).paused_until
                if paused_until - throttled_since < MAX_THROTTLED_WAIT and paused_until < self._ends_at:
                    continue
                return response
            if not _retryable_response(response, idempotent) or not self._wait_before_retry(
                attempt, self._backoff(attempt, response.headers.get("Retry-After")), f"HTTP {status}"
            ):
                return response
            if lost is not None:  # a retried 5xx or DLI.0999: DLI may have acted before it failed
                lost.append(f"HTTP {status}")
            attempt += 1

    def _attempt(self, method: str, url: str, auth: AuthBase | None, kwargs: dict[str, Any]) -> requests.Response:
        """One attempt that ends by its deadline whatever the server does: the response, its body read."""
        # Preparing runs the auth (signing, or fetching an IAM token with its own attempts) outside this
        # attempt's deadline; each attempt signs afresh.
        prepared = self.session.prepare_request(requests.Request(method, url, auth=auth, **kwargs))
        throttle = self._throttle(url)
        try:
            with throttle.slot(self._ends_at) as slot:
                seconds = min(sum(self.timeout), self._ends_at - time.monotonic())
                response = self._exchange(prepared, url, seconds)
                if response.status_code == 429:
                    slot.throttled(self._backoff(0, response.headers.get("Retry-After")))
                else:
                    slot.answered()
        except ThrottleTimeout:
            raise DLIConnectionError(
                f"DLI {method} {url} was not sent: DLI asked to slow down (HTTP 429) past the hook's deadline"
            ) from None
        except ResponseTooLarge as too_large:
            declared = f" (Content-Length: {too_large.size})" if too_large.declared else ""
            raise DLIAPIError(
                f"DLI {method} {url} failed: HTTP {too_large.status}: the answer is larger than "
                f"{MAX_RESPONSE_BYTES // 2**20} MiB{declared}, far more than any DLI answer; it was not read",
                status_code=too_large.status,
            ) from None
        if slot.slowed_down:
            self.log.warning(
                "DLI asked to slow down (HTTP 429): every request to %s pauses %.1f s, then at most %d at once",
                urlsplit(url).netloc,
                max(throttle.paused_until - time.monotonic(), 0.0),
                int(throttle.window),
            )
        return response

    def _exchange(self, prepared: requests.PreparedRequest, url: str, seconds: float) -> requests.Response:
        """Send and read within ``seconds``; :class:`_AttemptFailed` when no complete answer came."""
        if seconds <= 0:
            raise DLIConnectionError(f"DLI {prepared.method} {url} was not sent: the hook's deadline has passed")
        connect, read = (min(limit, seconds) for limit in self.timeout)
        with deadline(seconds) as guard:
            try:
                response = self.session.send(
                    prepared,
                    timeout=(connect, read),
                    allow_redirects=False,
                    stream=True,
                    **self._environment(url),
                )
                read_body(response)
                if guard.fired:  # http.client takes a connection shut mid-headers for their end: no answer
                    raise requests.Timeout("the deadline passed while the answer was read")
            except requests.RequestException as error:
                reason = (
                    f"no complete answer within {seconds:g} s (the deadline of one attempt)"
                    if guard.fired
                    else _describe(error)
                )
                raise _AttemptFailed(error, reason) from error
        return response

    def _throttle(self, url: str) -> Throttle:
        """The throttle of ``url``'s host, shared by every thread of this hook."""
        host = urlsplit(url).netloc
        throttle = self._throttles.get(host)
        if throttle is None:
            throttle = self._throttles.setdefault(host, Throttle(max_in_flight=POOL_SIZE))
        return throttle

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """``Retry-After`` when it is a finite number or a date, else exponential backoff with jitter."""
        delay = _retry_after_seconds(retry_after)
        if delay is None:
            ceiling = min(MAX_BACKOFF, self.retry_delay * 2**attempt)
            delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
        return delay

    def _wait_before_retry(self, attempt: int, delay: float, reason: str) -> bool:
        """Sleep ``delay`` before retry ``attempt + 1``; False (no sleep) when no retry is left or time is out."""
        if attempt >= self.retry_limit or time.monotonic() + delay >= self._ends_at:
            return False
        self.log.warning(
            "DLI request failed (%s); retry %d of %d in %.1f s", reason, attempt + 1, self.retry_limit, delay
        )
        time.sleep(delay)
        return True

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
        lost: list[str] | None = None,
    ) -> dict[str, Any]:
        """Call ``{endpoint}/v2.0/{project_id}/{path}``; the decoded JSON body, or :class:`DLIAPIError`."""
        settings = self.settings
        url = f"{settings.base_url}/{path}"
        headers = {"X-Project-Id": settings.project_id}
        kwargs: dict[str, Any] = {"params": params, "json": json, "headers": headers, "lost": lost}
        response = self._send(method, url, idempotent=idempotent, auth=settings.auth, **kwargs)
        tokens = settings.tokens
        if response.status_code == 401 and tokens and tokens.refused(response.request.headers.get("X-Auth-Token", "")):
            # The IAM token was revoked or expired early: send once more with a new one (at most one new
            # token per refused token, so a 401 that a new token does not cure costs no login per request).
            response = self._send(method, url, idempotent=idempotent, auth=settings.auth, **kwargs)
        if not 200 <= response.status_code < 300:
            raise _api_error(response, method, url)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise _api_error(response, method, url, "the response body is not JSON") from None
        if not isinstance(body, dict):
            raise _api_error(response, method, url, "the response body is not a JSON object")
        return body

    # The batch-job API

    def create_batch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a Spark batch job (``POST /batches``); DLI's batch object, with its ``id``."""
        if not isinstance(body, Mapping):
            raise ValueError(f"a batch job's body must be a mapping of the create-job API's fields; got {shown(body)}")
        for field in ("file", "className"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise ValueError(f"a batch job needs '{field}', a non-empty string; got {body.get(field)!r}")
        batch = self.request("POST", "batches", json=dict(body), idempotent=False)
        validate_batch_id(batch.get("id"), "the id DLI returned for the new job")
        self.log.info("Submitted DLI batch job %s (%s)", batch["id"], batch.get("name") or body["file"])
        return batch

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch object (``GET /batches/{batch_id}``)."""
        return self.request("GET", f"batches/{validate_batch_id(batch_id)}")

    def get_batch_state(self, batch_id: str) -> str:
        """The job's state, lower-case: ``starting``, ``running``, ``recovering``, ``success`` or ``dead``."""
        body = self.request("GET", f"batches/{validate_batch_id(batch_id)}/state")
        state = body.get("state")
        if not isinstance(state, str):
            raise DLIAPIError(
                f"DLI returned no state for batch job {batch_id}", status_code=200, error_msg=str(body)[:200]
            )
        return state.lower()

    def get_batch_log(
        self, batch_id: str, *, start: int = 0, size: int = 100, attempt: int | None = None
    ) -> tuple[int, list[str]]:
        """Driver log lines ``start`` to ``start + size`` of the job, and how many lines there are in all.

        ``attempt`` is the log API's ``index``: which driver, when DLI restarted it (``auto_recovery``); DLI
        answers the first (0) without it. The log API is marked deprecated: callers treat it as best effort.
        """
        for name, value, low in (("start", start, 0), ("size", size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}; got {shown(value)}")
        params: dict[str, Any] = {"from": start, "size": size, "type": "driver"}
        if attempt is not None:
            params["index"] = attempt
        body = self.request("GET", f"batches/{validate_batch_id(batch_id)}/log", params=params)
        return int(body.get("total") or 0), [str(line) for line in body.get("log") or []]

    def last_driver_attempt(self, batch_id: str, max_attempts: int = DEFAULT_MAX_RETRY_TIMES + 1) -> int:
        """The index of the job's last driver: DLI says nothing of how many ran, so the log API is asked for
        attempt 1, 2, ... until one has no log (an empty log, or a refusal: either reading of DLI's answer)."""
        last = 0
        for attempt in range(1, max_attempts):
            try:
                total, lines = self.get_batch_log(batch_id, size=1, attempt=attempt)
            except DLIAPIError as error:
                if not 400 <= error.status_code < 500:
                    raise
                break
            if not total and not lines:
                break
            last = attempt
        return last

    def tail_batch_log(
        self, batch_id: str, lines: int = 50, *, last_attempt: bool = False, max_attempts: int | None = None
    ) -> list[str]:
        """The last ``lines`` driver log lines of the job: of its first driver, or with ``last_attempt`` of its
        last one (for ``auto_recovery`` jobs, whose driver DLI may have restarted up to ``max_attempts`` times)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
            raise ValueError(f"lines must be a whole number >= 1; got {shown(lines)}")
        attempt = None
        if last_attempt:
            attempt = self.last_driver_attempt(batch_id, max_attempts or DEFAULT_MAX_RETRY_TIMES + 1) or None
        total, first_page = self.get_batch_log(batch_id, size=lines, attempt=attempt)
        if total <= lines:
            return first_page
        return self.get_batch_log(batch_id, start=total - lines, size=lines, attempt=attempt)[1]

    def list_batches(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every batch object matching ``filters``, page by page (``from``/``size``), each job once.

        Filters are the list API's: ``job_name``, ``job_id``, ``queue_name``, ``cluster_name``, ``state``,
        ``owner``, ``start``/``end`` (epoch milliseconds) and ``order``; all are checked before any request.
        """
        params = _list_params(filters)  # checked here, at the call, not at the first next()
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be a whole number from 1 to 100; got {page_size!r}")
        return self._pages(params, page_size)

    def _pages(self, params: dict[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
        """Pages until a short or empty one. ``total`` is not trusted to stop: vendors disagree on whether it
        counts every matching job or the jobs of the page (the vendor's Terraform provider ignores it)."""
        seen: set[str] = set()
        start = 0
        while True:
            page = self.request("GET", "batches", params={**params, "from": start, "size": page_size})
            sessions = _page_sessions(page, start)
            # Jobs created while paging shift the pages: a job may show up twice.
            new = [batch for batch in sessions if batch["id"] not in seen]
            for batch in new:
                seen.add(batch["id"])
                yield batch
            if len(sessions) < page_size:
                return
            if not new:
                self.log.warning(
                    "DLI answered the job list's page from=%d with jobs already listed: stopping here, since "
                    "the server seems to ignore 'from'",
                    start,
                )
                return
            start += len(sessions)

    def cancel_batch(self, batch_id: str, *, settle_timeout: float = CANCEL_SETTLE_TIMEOUT) -> CancelResult:
        """Cancel the job (``DELETE /batches/{batch_id}``); idempotent, and says what it found.

        DLI refuses to cancel a job that has finished, and one that an earlier cancel is taking down (its state
        reads live for a moment before it turns ``dead``), with an undocumented error code. So a refusal is
        judged by the job's state, re-read for up to ``settle_timeout`` seconds (:data:`_REFUSED_CANCEL`): the
        result's ``outcome`` is ``cancelled``, ``already_cancelling`` or ``already_finished``. Raises
        :class:`DLIAPIError` for anything else (unknown id, auth, server errors, a live job that stays live).
        """
        batch_id = validate_batch_id(batch_id)
        lost: list[str] = []
        try:
            self.request("DELETE", f"batches/{batch_id}", lost=lost)
        except DLIAPIError as refused:
            if refused.status_code not in (400, 404):
                raise
            return self._judge_refused_cancel(batch_id, refused, bool(lost), settle_timeout)
        # Debug, not info: bulk cancels call this hundreds of times, and a log line costs more than the
        # rest of the client's work. Callers log the outcome (cancel_summary) where a person reads it.
        self.log.debug("Cancelled DLI batch job %s", batch_id)
        return {"batch_id": batch_id, "cancelled": True, "outcome": "cancelled", "state": None}

    def _judge_refused_cancel(
        self, batch_id: str, refused: DLIAPIError, answer_lost: bool, settle_timeout: float
    ) -> CancelResult:
        try:
            state = self.get_batch_state(batch_id)
        except DLIAPIError:
            raise refused from None
        was_live = state not in TERMINAL_STATES
        deadline = time.monotonic() + settle_timeout
        while state not in TERMINAL_STATES and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(_SETTLE_POLL, remaining))
            state = self.get_batch_state(batch_id)
        settled = state if state in TERMINAL_STATES else "live"
        outcome = _REFUSED_CANCEL.get((answer_lost, was_live, settled))
        if outcome is None:
            raise DLIAPIError(
                f"{refused} - the job is still {state!r} after {settle_timeout:g} s, so no cancel was under way",
                status_code=refused.status_code,
                error_code=refused.error_code,
                error_msg=refused.error_msg,
                request_id=refused.request_id,
            ) from refused
        self.log.debug("DLI batch job %s: cancel refused, judged %s (%s)", batch_id, outcome, state)
        return {"batch_id": batch_id, "cancelled": outcome != "already_finished", "outcome": outcome, "state": state}

    def cancel_batches(self, batch_ids: Iterable[str], *, max_workers: int = 16) -> list[BulkCancelOutcome]:
        """Cancel many jobs at once: one outcome per distinct id, in order; one failure never stops the others,
        except a refusal of the credentials.

        Every id is checked before the first request. Each outcome is ``cancelled``, ``already_cancelling``
        or ``already_finished`` (see :meth:`cancel_batch`; with the state), ``error`` (any exception, as one
        line), or ``not_tried``: after DLI refused the credentials (HTTP 401), no further request is sent. The
        gateway locks an access key for 5 minutes after 5 failed authentications in a row, for every DAG that
        uses it; for the same reason the first cancel goes alone, so a wrong key or a skewed clock fails once,
        not once per worker.
        """
        if isinstance(batch_ids, str | bytes | Mapping) or not isinstance(batch_ids, Iterable):
            raise ValueError(f"batch_ids must be a list of DLI batch job ids; got {shown(batch_ids)}")
        ids = list(dict.fromkeys(batch_ids))
        bad = [shown(batch_id) for batch_id in ids if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id)]
        if bad:
            raise ValueError(f"batch_ids must be DLI batch job ids (UUIDs); not: {', '.join(bad[:5])}")
        validate_max_workers(max_workers)

        refused: list[DLIAPIError] = []  # the first refusal of the credentials stops every other request

        def cancel_one(batch_id: str) -> BulkCancelOutcome:
            if refused:
                return {"batch_id": batch_id, "outcome": "not_tried", "state": None, "error": NOT_TRIED}
            try:
                result = self.cancel_batch(batch_id)
            except Exception as error:  # any failure (even a RecursionError from a freak body) is this id's only
                if isinstance(error, DLIAPIError) and error.status_code == 401:
                    refused.append(error)
                return {"batch_id": batch_id, "outcome": "error", "state": None, "error": _error_text(error)}
            return {"batch_id": batch_id, "outcome": result["outcome"], "state": result["state"], "error": None}

        if not ids:
            return []
        # Resolving the project here reads and checks the connection once, before the threads start.
        self.log.info("Cancelling %d DLI batch jobs of project %s", len(ids), self.project_id)
        outcomes = [cancel_one(ids[0])]
        if len(ids) > 1:
            with ThreadPoolExecutor(
                max_workers=min(max_workers, len(ids) - 1), thread_name_prefix="dli-cancel"
            ) as pool:
                outcomes += pool.map(cancel_one, ids[1:])
        if refused:
            not_tried = sum(outcome["outcome"] == "not_tried" for outcome in outcomes)
            self.log.error(
                "DLI refused the credentials (%s): %d of %d jobs were not tried, so that the access key is not "
                "locked by repeated failures",
                refused[0],
                not_tried,
                len(ids),
            )
        self.log.info("%s", bulk_cancel_counts(outcomes))
        return outcomes

    def test_connection(self) -> tuple[bool, str]:
        """Read-only check (``GET /batches?size=1``), for the connection form's Test button.

        A person is waiting: one attempt with short timeouts, the IAM token included, answered within
        about 10 s even by an endpoint that accepts connections and never answers.
        """
        probe = DLIHook(
            self.dli_conn_id,
            project_id=self.project_id_override,
            region=self.region_override,
            caller=self.caller,
            connection=self._connection,
            timeout=(
                min(self.timeout[0], TEST_CONNECTION_TIMEOUT[0]),
                min(self.timeout[1], TEST_CONNECTION_TIMEOUT[1]),
            ),
            retry_limit=0,
            deadline=TEST_CONNECTION_DEADLINE,
        )
        probe._connection_label = "this connection" if _is_form_test_id(self.dli_conn_id) else self._connection_label
        try:
            probe.request("GET", "batches", params={"size": 1})
        except (ValueError, DLIAPIError, DLIConnectionError) as error:
            return False, str(error)
        return True, f"Connected to DLI project {probe.project_id}"


def _page_sessions(page: dict[str, Any], start: int) -> list[dict[str, Any]]:
    """The batch objects of one page of the job list, each with a string ``id``; DLIAPIError if malformed."""

    def malformed(problem: str) -> DLIAPIError:
        return DLIAPIError(
            f"DLI answered the job list (from={start}) with a malformed page: {problem}",
            status_code=200,
            error_msg=problem,
        )

    total = page.get("total")
    if total is not None and not (
        (isinstance(total, int) and not isinstance(total, bool) and total >= 0)
        or (isinstance(total, str) and total.isdigit())
    ):
        raise malformed(f"'total' is not a count: {str(total)[:50]!r}")
    sessions = page.get("sessions")
    if sessions is None:
        return []
    if not isinstance(sessions, list):
        raise malformed(f"'sessions' is not a list but {type(sessions).__name__}")
    for batch in sessions:
        if not isinstance(batch, dict) or not isinstance(batch.get("id"), str):
            raise malformed(f"a job without a string 'id': {str(batch)[:80]}")
    return sessions


def _is_form_test_id(conn_id: str) -> bool:
    """True for the throwaway id under which Airflow's Test button tests a form: 8 random letters and digits,
    defined only for the test by an ``AIRFLOW_CONN_*`` variable. Naming it would send the user looking for a
    connection they never made, so errors then say "this connection"."""
    return bool(_FORM_TEST_ID.fullmatch(conn_id)) and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ


LIST_FILTERS = {
    "job_name": "job_name",
    "job_id": "job-id",
    "queue_name": "queue_name",
    "cluster_name": "cluster_name",
    "state": "state",
    "owner": "owner",
    "start": "start",
    "end": "end",
    "order": "order",
}
LIST_ORDERS = ("CREATE_TIME_DESC", "CREATE_TIME_ASC", "DURATION_DESC", "DURATION_ASC")


def _list_params(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The list API's query parameters for ``filters``; a ValueError names the first bad one."""
    params: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if name not in LIST_FILTERS:
            raise ValueError(f"unknown batch job filter {name!r}; the filters are {sorted(LIST_FILTERS)}")
        if name in ("start", "end"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"filter {name!r} must be epoch milliseconds, a whole number; got {value!r}")
        elif name == "state":
            if str(value).lower() not in LIVE_STATES | TERMINAL_STATES:
                states = sorted(LIVE_STATES | TERMINAL_STATES)
                raise ValueError(f"filter 'state' must be one of {states}; got {value!r}")
            value = str(value).lower()
        elif name == "order":
            if value not in LIST_ORDERS:
                raise ValueError(f"filter 'order' must be one of {LIST_ORDERS}; got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise ValueError(f"filter {name!r} must be a non-empty string; got {value!r}")
        params[LIST_FILTERS[name]] = value
    return params


def _token_folder(extra: str | None, where: str) -> TokenFolder | None:
    """The folder that shares IAM tokens between processes; None when the extra or Airflow's config turns it off."""
    configured = conf.get("dli", "login_cache", fallback="disk").strip().lower() or "disk"
    if configured not in LOGIN_CACHES:
        raise ValueError(
            f"Airflow's option [dli] login_cache (AIRFLOW__DLI__LOGIN_CACHE) must be one of {LOGIN_CACHES}; "
            f"got {configured!r}"
        )
    chosen = (extra or "disk").lower()
    if chosen not in LOGIN_CACHES:
        raise ValueError(f"the extra 'login_cache' of {where} must be one of {LOGIN_CACHES}; got {extra!r}")
    if "memory" in (configured, chosen):
        return None
    path = conf.get("dli", "login_cache_path", fallback="").strip()
    if path and not Path(path).expanduser().is_absolute():
        raise ValueError(
            f"Airflow's option [dli] login_cache_path (AIRFLOW__DLI__LOGIN_CACHE_PATH) must be an absolute path; "
            f"got {path!r}"
        )
    return TOKEN_STORE.folder(Path(path) if path else None)


def _error_text(error: Exception, limit: int = 500) -> str:
    """An error as one bounded line: a bulk outcome keeps it, and thousands of them go to XCom."""
    text = " ".join(f"{type(error).__name__}: {error}".split()) if not isinstance(error, DLIError) else str(error)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _url_from_host(host: str, port: int | None, where: str) -> str:
    """A base URL from a connection host: https unless a scheme is given; the port field when set.

    A user name or password in the URL (``https://user:secret@host``) is refused without being shown: it
    would be sent to DLI and printed in every error message. A bare IPv6 address gets its brackets.
    """
    url = host.strip().rstrip("/")
    if "://" not in url and url.count(":") > 1 and not url.startswith("["):
        url = f"[{url}]"  # "::1" is an IPv6 address, not a host and a port
    authority = re.split(r"[/?#]", url.split("://", 1)[-1], maxsplit=1)[0]
    if "@" in authority:
        raise ValueError(
            f"{where} must not hold a user name or password (user:password@host): put the access key or user "
            "name in the connection's login and the secret in its password"
        )
    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        has_port = parts.port is not None
    except ValueError:  # a bad port or IPv6 literal
        parts, has_port = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where} must be an http:// or https:// URL; got {host!r}")
    netloc = f"{parts.netloc}:{port}" if port and not has_port else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _AttemptFailed(Exception):
    """An attempt that got no (complete) answer; ``reason`` says why in words."""

    def __init__(self, error: requests.RequestException, reason: str) -> None:
        super().__init__(reason)
        self.error, self.reason = error, reason


def _retryable_error(error: requests.RequestException, idempotent: bool) -> bool:
    """A failure without an answer is retried when it may heal, and for a submit only when DLI cannot
    have received the request (a retry must never submit a job twice)."""
    if _caused_by(error, ssl.SSLCertVerificationError):
        return False  # a certificate that fails verification does not heal by asking again
    if not isinstance(error, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError):
        return False
    return idempotent or _never_reached_server(error)


def _retryable_response(response: requests.Response, idempotent: bool) -> bool:
    """429 always (DLI did not act on it); 5xx and DLI's own server error ``DLI.0999``, which DLI
    documents as HTTP 400, for idempotent calls only."""
    status = response.status_code
    if status == 429:
        return True
    if not idempotent:
        return False
    return status >= 500 or (status == 400 and _error_code(response) == "DLI.0999")


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("error_code")) if isinstance(body, dict) and body.get("error_code") else None


def _redirect_error(response: requests.Response, method: str, url: str) -> DLIAPIError:
    location = response.headers.get("Location") or "nowhere (no Location header)"
    shown = location if len(location) <= 200 else location[:197] + "..."
    return DLIAPIError(
        f"DLI {method} {url} failed: HTTP {response.status_code}: redirected to {shown}. Redirects are never "
        "followed (one could turn a cancel into a GET, or carry credentials to another host); if that "
        "address is the right endpoint, set it in the connection",
        status_code=response.status_code,
        error_msg=f"redirected to {shown}",
        request_id=response.headers.get("X-Request-Id"),
    )


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """True when ``kind`` is anywhere among the causes: ``reason`` (urllib3), arguments (requests wraps
    urllib3's errors in its own), ``__cause__`` and ``__context__``."""
    pending: list[object] = [error]
    seen: set[int] = set()
    while pending:
        cause = pending.pop()
        if not isinstance(cause, BaseException) or id(cause) in seen:
            continue
        if isinstance(cause, kind):
            return True
        seen.add(id(cause))
        pending += [getattr(cause, "reason", None), cause.__cause__, cause.__context__, *cause.args]
    return False


def _seconds(value: object) -> bool:
    """True for a finite number that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _never_reached_server(error: requests.RequestException) -> bool:
    """True when the request cannot have been received: refused, unresolvable, or a connect timeout."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


def _describe(error: requests.RequestException) -> str:
    """``ConnectTimeout: Connection to ... timed out``: the type and the innermost cause's own words."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    return f"{type(error).__name__}: {str(cause).rsplit(': ', 1)[-1]}"


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None  # "NaN" or "inf" is no delay: back off as without the header
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _token_lifetime(response: requests.Response) -> float:
    """Seconds the IAM token is valid, measured on IAM's clock (issued_at to expires_at) when it says both."""
    try:
        token = response.json()["token"]
        expires = datetime.fromisoformat(token["expires_at"])
        issued = datetime.fromisoformat(token["issued_at"]) if token.get("issued_at") else datetime.now(UTC)
        return max((expires - issued).total_seconds(), 0.0)
    except (ValueError, KeyError, TypeError):
        return 3600.0  # IAM always sends expires_at; an hour is a safe guess if a proxy ate it


def _api_error(response: requests.Response, method: str, url: str, problem: str | None = None) -> DLIAPIError:
    """Map an error response (DLI, API gateway or IAM body; JSON, HTML or empty) to :class:`DLIAPIError`."""
    error_code = error_msg = request_id = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        nested = body.get("error") if isinstance(body.get("error"), dict) else None
        if nested:  # IAM: {"error": {"code": 401, "message": "...", "title": "Unauthorized"}}
            error_code, error_msg = str(nested.get("code") or "") or None, nested.get("message")
        else:
            error_code, error_msg = body.get("error_code"), body.get("error_msg") or body.get("message")
        request_id = body.get("request_id")
    elif response.content:
        text = re.sub(r"<[^>]+>", " ", response.text)
        content_type = response.headers.get("Content-Type", "unknown type")
        error_msg = f"non-JSON body ({content_type}): {' '.join(text.split())[:200]}"
    else:
        error_msg = "empty body"
    request_id = request_id or response.headers.get("X-Request-Id")
    error_code = str(error_code) if error_code else None
    error_msg = str(problem or error_msg) if (problem or error_msg) else None
    detail = " - ".join(filter(None, [error_code, error_msg]))
    message = f"DLI {method} {url} failed: HTTP {response.status_code}" + (f": {detail}" if detail else "")
    if request_id:
        message += f" (request id {request_id})"
    return DLIAPIError(
        message,
        status_code=response.status_code,
        error_code=error_code,
        error_msg=error_msg,
        request_id=request_id,
    )

"""DLIHook: DLI for Airflow. A connection parsed once into the client's settings, the connection form, the Test
button, and the masking of secrets; the conversation with DLI is the client's (:mod:`airflow_provider_dli.client`).

Operators, sensors, triggers and failure callbacks stay thin and call the methods here. Everything that can
be checked before a request is sent (the connection's fields, ids) is checked first, with an error that names
the field; secrets are registered with Airflow's secrets masker as soon as they are read, and every IAM token
as soon as the client learns it.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook, Connection
from airflow.sdk.log import mask_secret

from airflow_provider_dli import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_dli._compat import conf
from airflow_provider_dli.client import (
    AKSK,
    Auth,
    BulkCancelOutcome,
    CancelResult,
    ClientSettings,
    DLIAPIError,
    DLIClient,
    DLIConnectionError,
    DLIError,
    IAMPassword,
    IAMToken,
)
from airflow_provider_dli.client.batches import DEFAULT_MAX_RETRY_TIMES
from airflow_provider_dli.client.cancels import CANCEL_SETTLE_TIMEOUT
from airflow_provider_dli.client.endpoints import dli_endpoint, iam_endpoint
from airflow_provider_dli.client.settings import DEFAULT_TIMEOUT, LOGIN_CACHES, absolute_once_expanded, checked_limits
from airflow_provider_dli.metrics import count
from airflow_provider_dli.validation import shown, validate_project_id

AUTH_TYPES = ("aksk", "password", "token")
TEST_CONNECTION_TIMEOUT = (3.0, 5.0)
TEST_CONNECTION_DEADLINE = 10.0
"""The connection form's Test button: a person waits for its answer (one attempt, these timeouts at most)."""

_FORM_TEST_ID = re.compile(r"[A-Za-z0-9]{8}")  # airflow.utils.strings.get_random_string()
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
"""What a key or token that travels in a header may hold: no whitespace, no control or non-ASCII characters."""


class DLIHook(BaseHook):
    """Talk to the DLI Spark batch-job API of one project, through a :class:`~airflow_provider_dli.client.DLIClient`.

    :param dli_conn_id: connection of type ``dli``: host = DLI endpoint URL (optional when ``region`` is
        set), login/password = AK/SK or IAM user/password, extras ``project_id``, ``region``, ``auth_type``
        (``aksk``, ``password``, ``token``), ``domain_name``, ``iam_endpoint``, ``security_token``, ``token``,
        ``login_cache`` (``disk``: share password auth's IAM token with the machine's other processes, the
        default; ``memory``: this process only; see :mod:`airflow_provider_dli.client.token_store`).
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
        self.timeout, self.retry_limit, self.retry_delay, self.deadline = checked_limits(
            timeout, retry_limit, retry_delay, deadline
        )
        if project_id is not None and project_id != "":  # blank, like None: the connection's project
            validate_project_id(project_id, "the project_id argument")
        if region is not None and not isinstance(region, str):
            raise ValueError(f"region must be a string such as 'eu-de'; got {shown(region)}")
        self.dli_conn_id = dli_conn_id
        self.project_id_override = project_id
        self.region_override = region
        self.caller = caller
        self._connection = connection
        self._connection_label = f"connection {dli_conn_id!r}"
        """How error messages name the connection."""
        self._created = time.monotonic()
        """Where ``deadline`` counts from."""

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

    # The connection

    @cached_property
    def settings(self) -> ClientSettings:
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
        login_cache: Literal["disk", "memory"] = "disk"
        login_cache_path: Path | None = None
        auth: Auth
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
            auth = AKSK(access_key, secret_key, security_token)
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
            login_cache, login_cache_path = _login_cache(option("login_cache"), where)
            auth = IAMPassword(iam_url, domain, user, conn.password)
        elif auth_type == "token":
            token = option("token")
            if not token:
                raise ValueError(f"auth_type 'token' needs an IAM token in the extra 'token' of {where}")
            mask_secret(token)
            header_safe(token, "the extra 'token'")
            auth = IAMToken(token)
        else:
            raise ValueError(f"the extra 'auth_type' of {where} must be one of {AUTH_TYPES}; got {auth_type!r}")
        return ClientSettings(
            endpoint,
            project_id,
            auth,
            timeout=self.timeout,
            retry_limit=self.retry_limit,
            retry_delay=self.retry_delay,
            deadline=self.deadline,
            caller=self.caller,
            login_cache=login_cache,
            login_cache_path=login_cache_path,
        )

    @property
    def project_id(self) -> str:
        return self.settings.project_id

    @cached_property
    def client(self) -> DLIClient:
        """The conversation with DLI: its logs go to this hook's logger, every secret it learns to the masker."""
        return DLIClient(self.settings, log=self.log, on_secret=mask_secret, started_at=self._created)

    # The batch-job API, as the client offers it

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
        return self.client.request(method, path, params=params, json=json, idempotent=idempotent, lost=lost)

    def create_batch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a Spark batch job (``POST /batches``); DLI's batch object, with its ``id``."""
        return self.client.create_batch(body)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch object (``GET /batches/{batch_id}``)."""
        return self.client.get_batch(batch_id)

    def get_batch_state(self, batch_id: str) -> str:
        """The job's state, lower-case: ``starting``, ``running``, ``recovering``, ``success`` or ``dead``."""
        return self.client.get_batch_state(batch_id)

    def get_batch_log(
        self, batch_id: str, *, start: int = 0, size: int = 100, attempt: int | None = None
    ) -> tuple[int, list[str]]:
        """Driver log lines ``start`` to ``start + size``, and how many there are (see the client's)."""
        return self.client.get_batch_log(batch_id, start=start, size=size, attempt=attempt)

    def last_driver_attempt(self, batch_id: str, max_attempts: int = DEFAULT_MAX_RETRY_TIMES + 1) -> int:
        """The index of the job's last driver (``auto_recovery`` jobs may have had several)."""
        return self.client.last_driver_attempt(batch_id, max_attempts)

    def tail_batch_log(
        self, batch_id: str, lines: int = 50, *, last_attempt: bool = False, max_attempts: int | None = None
    ) -> list[str]:
        """The last ``lines`` driver log lines of the job (of its last driver with ``last_attempt``)."""
        return self.client.tail_batch_log(batch_id, lines, last_attempt=last_attempt, max_attempts=max_attempts)

    def list_batches(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every batch object matching ``filters`` (``job_name``, ``queue_name``, ``state``...), page by page."""
        return self.client.list_batches(page_size=page_size, **filters)

    def cancel_batch(self, batch_id: str, *, settle_timeout: float = CANCEL_SETTLE_TIMEOUT) -> CancelResult:
        """Cancel the job; idempotent, and says what it found (``cancelled``, ``already_cancelling``,
        ``already_finished``); see :meth:`airflow_provider_dli.client.batches.BatchJobs.cancel_batch`."""
        try:
            result = self.client.cancel_batch(batch_id, settle_timeout=settle_timeout)
        except DLIError:
            count("dli.cancel.error")
            raise
        count(f"dli.cancel.{result['outcome']}")
        return result

    def cancel_batches(self, batch_ids: Iterable[str], *, max_workers: int = 16) -> list[BulkCancelOutcome]:
        """Cancel many jobs at once, one outcome per distinct id; a refusal of the credentials (HTTP 401) stops
        the rest (``not_tried``), so that the gateway does not lock the access key."""
        outcomes = self.client.cancel_batches(batch_ids, max_workers=max_workers)
        for outcome, jobs in Counter(outcome["outcome"] for outcome in outcomes).items():
            count(f"dli.cancel.{outcome}", jobs)
        return outcomes

    # The SQL-job API (see :class:`airflow_provider_dli.client.sql_jobs.SqlJobs`)

    def submit_sql_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a SQL job (``POST /v1.0/{project_id}/jobs/submit-job``); DLI's answer, with its ``job_id``."""
        return self.client.submit_sql_job(body)

    def get_sql_job_status(self, job_id: str) -> dict[str, Any]:
        """The job's status object: ``status`` (upper-case), ``detail``, ``result_count``..."""
        return self.client.get_sql_job_status(job_id)

    def get_sql_job_state(self, job_id: str) -> str:
        """The job's status: ``LAUNCHING``, ``RUNNING``, ``FINISHED``, ``FAILED`` or ``CANCELLED``."""
        return self.client.get_sql_job_state(job_id)

    def preview_sql_job(self, job_id: str, *, queue_name: str | None = None) -> dict[str, Any]:
        """The first rows (at most 1,000) of a finished query's result: ``schema``, ``rows``."""
        return self.client.preview_sql_job(job_id, queue_name=queue_name)

    def list_sql_jobs(
        self, *, page_size: int = 100, tags: Mapping[str, str] | None = None, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every SQL job matching ``tags`` (each of them) and ``filters`` (``status``, ``queue_name``...)."""
        return self.client.list_sql_jobs(page_size=page_size, tags=tags, **filters)

    def cancel_sql_job(self, job_id: str, *, settle_timeout: float = CANCEL_SETTLE_TIMEOUT) -> CancelResult:
        """Cancel the SQL job; idempotent, and says what it found, as :meth:`cancel_batch` does."""
        return self.client.cancel_sql_job(job_id, settle_timeout=settle_timeout)

    def cancel_sql_jobs(self, job_ids: Iterable[str], *, max_workers: int = 16) -> list[BulkCancelOutcome]:
        """Cancel many SQL jobs at once, as :meth:`cancel_batches` does."""
        return self.client.cancel_sql_jobs(job_ids, max_workers=max_workers)

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


def _is_form_test_id(conn_id: str) -> bool:
    """True for the throwaway id under which Airflow's Test button tests a form: 8 random letters and digits,
    defined only for the test by an ``AIRFLOW_CONN_*`` variable. Naming it would send the user looking for a
    connection they never made, so errors then say "this connection"."""
    return bool(_FORM_TEST_ID.fullmatch(conn_id)) and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ


def _login_cache(extra: str | None, where: str) -> tuple[Literal["disk", "memory"], Path | None]:
    """Where password auth keeps its IAM token, from the extra and Airflow's config: ``memory``, or ``disk`` in a
    folder (None: the default one)."""
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
        return "memory", None
    path = conf.get("dli", "login_cache_path", fallback="").strip()
    if path and not absolute_once_expanded(Path(path)):
        raise ValueError(
            f"Airflow's option [dli] login_cache_path (AIRFLOW__DLI__LOGIN_CACHE_PATH) must be an absolute path; "
            f"got {path!r}"
        )
    return "disk", Path(path) if path else None


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

"""What a :class:`~airflow_provider_dli.client.dli.DLIClient` is built from: plain, frozen values.

Whoever builds them (the hook from an Airflow connection, a script from its own configuration) has checked
where they came from; the checks here are the ones every caller needs, with messages that name the argument.
Secrets are held in fields left out of ``repr``, so that printing the settings never shows one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from airflow_provider_dli.validation import shown, validate_project_id

DEFAULT_TIMEOUT = (10.0, 60.0)
"""(connect, read) seconds for every request; an attempt also ends after connect + read seconds in all."""
LOGIN_CACHES = ("disk", "memory")
"""Where password auth keeps its IAM token: shared by the machine's processes, or in each process only."""


@dataclass(frozen=True)
class AKSK:
    """An access key and its secret key (temporary ones with their security token): each request is signed."""

    access_key: str
    secret_key: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class IAMPassword:
    """An IAM user: the client logs in to ``iam_endpoint`` for a project-scoped token, cached and shared."""

    iam_endpoint: str
    domain: str
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class IAMToken:
    """A ready project-scoped IAM token (valid 24 h), sent as is."""

    token: str = field(repr=False)


Auth = AKSK | IAMPassword | IAMToken


def checked_limits(
    timeout: float | tuple[float, float], retry_limit: int, retry_delay: float, deadline: float | None
) -> tuple[tuple[float, float], int, float, float | None]:
    """The request limits as the client uses them; a ValueError names the first bad one.

    The hook checks them when it is built, before it reads its connection; the settings check them again.
    """
    if isinstance(retry_limit, bool) or not isinstance(retry_limit, int) or retry_limit < 0:
        raise ValueError(f"retry_limit must be a whole number >= 0; got {retry_limit!r}")
    if not _seconds(retry_delay) or retry_delay < 0:
        raise ValueError(f"retry_delay must be a number of seconds >= 0; got {retry_delay!r}")
    timeouts = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if len(timeouts) != 2 or not all(_seconds(t) and t > 0 for t in timeouts):
        raise ValueError(f"timeout must be seconds > 0, or a (connect, read) pair of them; got {timeout!r}")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0):
        raise ValueError(f"deadline must be a number of seconds > 0, or None; got {deadline!r}")
    return (float(timeouts[0]), float(timeouts[1])), retry_limit, float(retry_delay), deadline


@dataclass(frozen=True)
class ClientSettings:
    """One DLI project, how to reach it and how patiently.

    :param endpoint: the DLI endpoint URL, e.g. ``https://dli.eu-de.otc.t-systems.com`` (see
        :mod:`airflow_provider_dli.client.endpoints` for each region's).
    :param timeout: ``(connect, read)`` seconds for each attempt, which also ends after their sum in all.
    :param retry_limit: retries after the first attempt of a request whose answer is transient (see
        :mod:`airflow_provider_dli.client.answers`); a 429 is not counted.
    :param retry_delay: base of the exponential backoff, in seconds; also the pause after a 429 without
        ``Retry-After``.
    :param deadline: seconds from the client's creation by which every call must end, retries included.
    :param caller: added to the User-Agent, so that DLI's audit trail shows who submitted or cancelled a job.
    :param login_cache: password auth only: ``disk`` shares the IAM token with the machine's other processes
        through the private folder ``login_cache_path`` (None: the default folder), ``memory`` keeps it in
        this process.
    """

    endpoint: str
    project_id: str
    auth: Auth
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    retry_limit: int = 3
    retry_delay: float = 1.0
    deadline: float | None = None
    caller: str | None = None
    login_cache: Literal["disk", "memory"] = "disk"
    login_cache_path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http:// or https:// URL; got {shown(self.endpoint)}")
        validate_project_id(self.project_id, "the client settings")
        if not isinstance(self.auth, AKSK | IAMPassword | IAMToken):
            raise ValueError(f"auth must be AKSK, IAMPassword or IAMToken; got {type(self.auth).__name__}")
        checked_limits(self.timeout, self.retry_limit, self.retry_delay, self.deadline)
        if self.login_cache not in LOGIN_CACHES:
            raise ValueError(f"login_cache must be one of {LOGIN_CACHES}; got {self.login_cache!r}")
        if self.login_cache_path is not None and not absolute_once_expanded(self.login_cache_path):
            raise ValueError(f"login_cache_path must be an absolute path; got {str(self.login_cache_path)!r}")

    @property
    def base_url(self) -> str:
        """Where the Spark batch-job API (v2.0) of the project lives."""
        return self.api_url("v2.0")

    def api_url(self, version: str) -> str:
        """``{endpoint}/{version}/{project_id}``: the batch API is v2.0, the SQL job API v1.0."""
        return f"{self.endpoint.rstrip('/')}/{version}/{self.project_id}"

    @property
    def iam_endpoint(self) -> str | None:
        """Where password auth logs in; None for the other ways to authenticate."""
        return self.auth.iam_endpoint if isinstance(self.auth, IAMPassword) else None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret the settings hold: what a log must never show."""
        auth = self.auth
        if isinstance(auth, AKSK):
            return tuple(filter(None, (auth.secret_key, auth.security_token)))
        return (auth.password,) if isinstance(auth, IAMPassword) else (auth.token,)


def _seconds(value: object) -> bool:
    """True for a finite number that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def absolute_once_expanded(path: Path) -> bool:
    """Whether ``path`` names the same folder from any working folder: absolute, or under a home folder (``~``,
    ``~user``). Checked without expanding: a worker may have no home folder, and the token store then keeps
    tokens in memory (:meth:`~airflow_provider_dli.client.token_store.TokenStore.folder`) instead of failing."""
    return path.is_absolute() or str(path).startswith("~")

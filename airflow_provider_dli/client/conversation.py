"""The request layer every DLI API of the client shares: auth, IAM tokens, deadlines, the throttle, retries.

:class:`Conversation` sends one request to ``{endpoint}/{version}/{project_id}/{path}`` and returns the decoded
answer or raises; the APIs (:mod:`.batches`, and the SQL job API beside it) build on :meth:`Conversation.request`.
Each attempt ends by its deadline whatever the server does (:mod:`.transport`); a redirect is never followed;
an answer larger than any DLI answer is not read; and when DLI asks to slow down, every thread of the client
slows down together (:mod:`.throttle`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from airflow_provider_dli import __version__
from airflow_provider_dli.client.answers import (
    NOT_SENT,
    OVERSIZED,
    REDIRECTED,
    SUCCESS,
    THROTTLED,
    UNAUTHENTICATED,
    Answer,
    Reading,
    ask_again,
    failure_answer,
    read,
)
from airflow_provider_dli.client.auth import AKSKAuth, TokenAuth
from airflow_provider_dli.client.errors import DLIAPIError, DLIConnectionError, api_error, redirect_error
from airflow_provider_dli.client.settings import AKSK, ClientSettings, IAMPassword
from airflow_provider_dli.client.throttle import Throttle, ThrottleTimeout
from airflow_provider_dli.client.token_store import TOKEN_STORE, TokenSource, token_key
from airflow_provider_dli.client.transport import (
    MAX_RESPONSE_BYTES,
    DeadlineAdapter,
    ResponseTooLarge,
    deadline,
    read_body,
)

POOL_SIZE = 32
"""Connections kept per host, and requests in flight at most: a bulk cancel's threads share them."""
MAX_BACKOFF = 30.0
"""Longest sleep between two attempts; with ``retry_limit`` it bounds a call's total time."""
MAX_RETRY_AFTER = 60.0
"""Longest ``Retry-After`` honoured."""
MAX_THROTTLED_WAIT = 120.0
"""How long one request keeps being sent again while DLI answers 429 (it did nothing, so it is safe)."""

LOG = logging.getLogger("airflow_provider_dli.client")


class Log(Protocol):
    """What the client logs through: a ``logging.Logger``, or Airflow's task logger."""

    def debug(self, msg: str, /, *args: Any) -> Any: ...
    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...
    def error(self, msg: str, /, *args: Any) -> Any: ...


class Conversation:
    """One project's requests: signed or token-authenticated, deadline-bound, retried when that is safe.

    :param log: where the client reports retries and slow-downs (the hook passes its own logger, so that the
        lines reach the task log).
    :param on_secret: told of every secret the client holds or learns (the settings' keys and passwords, each
        IAM token): the hook passes Airflow's ``mask_secret``.
    :param started_at: the ``time.monotonic()`` from which ``settings.deadline`` counts (default: now).
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        log: Log | None = None,
        on_secret: Callable[[str], None] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.settings = settings
        self.log: Log = log or LOG
        self._on_secret = on_secret or (lambda secret: None)
        for secret in settings.secrets:
            self._on_secret(secret)
        start = time.monotonic() if started_at is None else started_at
        self._ends_at = math.inf if settings.deadline is None else start + settings.deadline
        self._environments: dict[str, dict[str, Any]] = {}
        self._throttles: dict[str, Throttle] = {}
        self.tokens = self._token_source()
        """Password auth's IAM token (dropped and fetched again on a 401); None for the other ways."""
        self.auth = self._requests_auth()

    @property
    def project_id(self) -> str:
        return self.settings.project_id

    def _token_source(self) -> TokenSource | None:
        auth = self.settings.auth
        if not isinstance(auth, IAMPassword):
            return None
        memory_only = self.settings.login_cache == "memory"
        return TokenSource(
            token_key(auth.iam_endpoint, auth.domain, auth.user, self.project_id, auth.password),
            self._iam_token_fetch(auth),
            None if memory_only else TOKEN_STORE.folder(self.settings.login_cache_path),
            self._lock_wait,
            self._on_secret,
        )

    def _requests_auth(self) -> AuthBase:
        auth = self.settings.auth
        if isinstance(auth, AKSK):
            return AKSKAuth(auth.access_key, auth.secret_key, auth.security_token)
        if self.tokens is not None:
            return TokenAuth(self.tokens.token)
        token: str = auth.token  # type: ignore[union-attr]  # IAMToken: the last of the three
        return TokenAuth(lambda: token)

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
        caller = self.settings.caller
        user_agent = f"airflow-provider-dli/{__version__}" + (f" ({caller})" if caller else "")
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

    def _iam_token_fetch(self, auth: IAMPassword) -> Callable[[], tuple[str, float]]:
        """Log in to IAM: ``fetch() -> (project-scoped token, seconds it is valid)``."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": auth.user, "password": auth.password, "domain": {"name": auth.domain}}
                    },
                },
                "scope": {"project": {"id": self.project_id}},
            }
        }

        def fetch() -> tuple[str, float]:
            self.log.info(
                "Requesting an IAM token for user %s of domain %s from %s", auth.user, auth.domain, auth.iam_endpoint
            )
            url = f"{auth.iam_endpoint}/v3/auth/tokens"
            response = self._send("POST", url, json=body, idempotent=True).response
            token = response.headers.get("X-Subject-Token")
            if response.status_code != 201 or not token:
                raise api_error(response, "POST", url)
            self._on_secret(token)
            return token, _token_lifetime(response)

        return fetch

    def _lock_wait(self) -> float:
        """How long to wait for another process's IAM login: about one attempt, and never past the deadline."""
        return max(0.0, min(sum(self.settings.timeout), self._ends_at - time.monotonic()))

    # One request, retried

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
        lost: list[str] | None = None,
        version: str = "v2.0",
    ) -> dict[str, Any]:
        """Call ``{endpoint}/{version}/{project_id}/{path}``; the decoded JSON body, or :class:`DLIAPIError`.

        ``lost`` collects why each retried attempt may have reached DLI without its answer reaching us (a reset
        or timed-out connection, a 5xx): a cancel refused after such an attempt may be refusing its own success.
        """
        url = f"{self.settings.api_url(version)}/{path}"
        headers = {"X-Project-Id": self.project_id}
        kwargs: dict[str, Any] = {"params": params, "json": json, "headers": headers, "lost": lost}
        exchange = self._send(method, url, idempotent=idempotent, auth=self.auth, **kwargs)
        tokens = self.tokens
        if (
            exchange.reading.answer is UNAUTHENTICATED
            and tokens
            and tokens.refused(exchange.response.request.headers.get("X-Auth-Token", ""))
        ):
            # The IAM token was revoked or expired early: send once more with a new one (at most one new
            # token per refused token, so a 401 that a new token does not cure costs no login per request).
            exchange = self._send(method, url, idempotent=idempotent, auth=self.auth, **kwargs)
        answer, body, problem = exchange.reading
        if answer is not SUCCESS or body is None:
            raise api_error(exchange.response, method, url, problem, answer)
        return body

    def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        auth: AuthBase | None = None,
        lost: list[str] | None = None,
        **kwargs: Any,
    ) -> Exchange:
        """Send one request, again while :func:`~.answers.ask_again` allows; the last response, read, whatever
        its answer (a redirect, and no answer at all, raise).

        Each attempt ends by its deadline (connect + read timeouts, and the client's ``deadline``). A redirect
        is an error, never followed: it could turn a cancel into a GET, or carry credentials to another
        host. An answer larger than any DLI answer can be is an error, not read.
        """
        attempt = 0  # retries so far, of answers other than 429
        throttled_since: float | None = None
        while True:
            try:
                response = self._attempt(method, url, auth, kwargs)
            except _AttemptFailed as failed:
                answer, reason = failed.answer, failed.reason
                if not ask_again(answer, idempotent) or not self._wait_before_retry(
                    attempt, self._backoff(attempt, None), reason
                ):
                    raise DLIConnectionError(
                        f"DLI {method} {url} failed after {attempt + 1} attempt(s): {reason}", answer=answer
                    ) from failed.error
            else:
                reading = read(response)
                answer = reading.answer
                if answer is REDIRECTED:
                    raise redirect_error(response, method, url)
                if answer is THROTTLED:
                    # DLI did nothing and asks to slow down: sent again when the pause that every request of
                    # this client waits for has passed, for up to MAX_THROTTLED_WAIT (and within the deadline).
                    throttled_since = throttled_since or time.monotonic()
                    paused_until = self._throttle(url).paused_until
                    if paused_until - throttled_since < MAX_THROTTLED_WAIT and paused_until < self._ends_at:
                        continue
                    return Exchange(response, reading)
                reason = f"HTTP {response.status_code}" + (f": {reading.problem}" if reading.problem else "")
                if not ask_again(answer, idempotent) or not self._wait_before_retry(
                    attempt, self._backoff(attempt, response.headers.get("Retry-After")), reason
                ):
                    return Exchange(response, reading)
            if lost is not None and answer.may_have_acted:  # DLI may have acted before its answer failed us
                lost.append(reason)
            attempt += 1

    def _attempt(self, method: str, url: str, auth: AuthBase | None, kwargs: dict[str, Any]) -> requests.Response:
        """One attempt that ends by its deadline whatever the server does: the response, its body read."""
        # Preparing runs the auth (signing, or fetching an IAM token with its own attempts) outside this
        # attempt's deadline; each attempt signs afresh.
        prepared = self.session.prepare_request(requests.Request(method, url, auth=auth, **kwargs))
        throttle = self._throttle(url)
        try:
            with throttle.slot(self._ends_at) as slot:
                seconds = min(sum(self.settings.timeout), self._ends_at - time.monotonic())
                response = self._exchange(prepared, url, seconds)
                if response.status_code == 429:
                    slot.throttled(self._backoff(0, response.headers.get("Retry-After")))
                else:
                    slot.answered()
        except ThrottleTimeout:
            raise DLIConnectionError(
                f"DLI {method} {url} was not sent: DLI asked to slow down (HTTP 429) past the client's deadline",
                answer=NOT_SENT,
            ) from None
        except ResponseTooLarge as too_large:
            declared = f" (Content-Length: {too_large.size})" if too_large.declared else ""
            raise DLIAPIError(
                f"DLI {method} {url} failed: HTTP {too_large.status}: the answer is larger than "
                f"{MAX_RESPONSE_BYTES // 2**20} MiB{declared}, far more than any DLI answer; it was not read",
                status_code=too_large.status,
                answer=OVERSIZED,
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
            raise DLIConnectionError(
                f"DLI {prepared.method} {url} was not sent: the client's deadline has passed", answer=NOT_SENT
            )
        connect, read = (min(limit, seconds) for limit in self.settings.timeout)
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
        """The throttle of ``url``'s host, shared by every thread of this client."""
        host = urlsplit(url).netloc
        throttle = self._throttles.get(host)
        if throttle is None:
            throttle = self._throttles.setdefault(host, Throttle(max_in_flight=POOL_SIZE))
        return throttle

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """``Retry-After`` when it is a finite number or a date, else exponential backoff with jitter; never less
        than the backoff's minimum: a ``Retry-After`` of 0, a negative one or a date past is no reason to send
        again at once (against a throttled API, that is dozens of requests a second)."""
        ceiling: float = min(MAX_BACKOFF, self.settings.retry_delay * 2**attempt)
        delay = _retry_after_seconds(retry_after)
        if delay is None:
            return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
        return max(delay, ceiling / 2)

    def _wait_before_retry(self, attempt: int, delay: float, reason: str) -> bool:
        """Sleep ``delay`` before retry ``attempt + 1``; False (no sleep) when no retry is left or time is out."""
        retry_limit = self.settings.retry_limit
        if attempt >= retry_limit or time.monotonic() + delay >= self._ends_at:
            return False
        self.log.warning("DLI request failed (%s); retry %d of %d in %.1f s", reason, attempt + 1, retry_limit, delay)
        time.sleep(delay)
        return True


class Exchange(NamedTuple):
    """A request's last response and what it meant."""

    response: requests.Response
    reading: Reading


class _AttemptFailed(Exception):
    """An attempt that got no (complete) answer; ``reason`` says why in words."""

    def __init__(self, error: requests.RequestException, reason: str) -> None:
        super().__init__(reason)
        self.error, self.reason = error, reason
        self.answer: Answer = failure_answer(error)


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

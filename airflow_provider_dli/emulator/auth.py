"""Who may call: AK/SK signatures (``SDK-HMAC-SHA256``) with the gateway's lockout, and IAM tokens (the
``/v3/auth/tokens`` endpoint and the ``X-Auth-Token`` checks)."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dli.client import signing
from airflow_provider_dli.emulator.api import Answer, Counters, Reject, Request

DEFAULT_ACCESS_KEY = "EMULATORACCESSKEY000"
DEFAULT_SECRET_KEY = "emulator-secret-key-not-a-real-one-000000"  # noqa: S105 - the emulator's own test key
DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_DOMAIN = "emulator"
DEFAULT_USER = "airflow"
DEFAULT_PASSWORD = "emulator-password"  # noqa: S105 - the emulator's own test user
MAX_CLOCK_SKEW = 15 * 60
LOCKOUT_FAILURES = 5
"""Failed AK/SK authentications in a row after which the gateway locks the access key (``lockout_seconds``)."""


@dataclass
class Token:
    project_id: str
    expires: float  # epoch seconds


class Auth:
    """The credentials the emulator accepts, the tokens it issued, and each access key's failures in a row."""

    def __init__(
        self,
        *,
        project_id: str,
        access_keys: Mapping[str, str] | None,
        temporary_keys: Mapping[str, tuple[str, str]] | None,
        users: Mapping[tuple[str, str], str] | None,
        token_ttl: float,
        lockout_seconds: float,
        counters: Counters,
        lock: threading.RLock,
    ) -> None:
        self.project_id = project_id
        self.access_keys = dict(access_keys or {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY})
        self.temporary_keys = dict(temporary_keys or {})
        self.users = dict(users or {(DEFAULT_DOMAIN, DEFAULT_USER): DEFAULT_PASSWORD})
        self.token_ttl = token_ttl
        self.lockout_seconds = lockout_seconds
        self.tokens: dict[str, Token] = {}
        self._counters, self._lock = counters, lock
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}  # access key -> time.monotonic()

    def issue_token(self, project_id: str | None = None) -> str:
        token = "MIIEMU" + secrets.token_urlsafe(48)
        with self._lock:
            self.tokens[token] = Token(project_id or self.project_id, time.time() + self.token_ttl)
        return token

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def authenticate(self, request: Request, path_project: str) -> str:
        """The caller's name; a 401 unless the token or the AK/SK signature is valid for ``path_project``."""
        token_value = request.headers.get("X-Auth-Token")
        if token_value:
            with self._lock:
                token = self.tokens.get(token_value)
            if token is None or token.expires <= time.time():
                raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: token expired or invalid")
            if token.project_id != path_project:
                raise Reject(401, "DLI.0013", f"The token is not scoped to project {path_project}")
            return DEFAULT_USER
        authorization = signing.parse_authorization(request.headers.get("Authorization", ""))
        if authorization is None:
            raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: no credentials")
        security_token = None
        if authorization.access_key in self.access_keys:
            secret_key = self.access_keys[authorization.access_key]
        elif authorization.access_key in self.temporary_keys:
            secret_key, security_token = self.temporary_keys[authorization.access_key]
        else:
            raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: unknown access key")
        access_key = authorization.access_key
        now = time.monotonic()
        with self._lock:
            locked_until = self._locked_until.get(access_key, 0.0)
        if now < locked_until:
            raise Reject(
                401,
                "APIGW.0301",
                f"Incorrect IAM authentication information: the access key is locked for {locked_until - now:.0f} s "
                f"after {LOCKOUT_FAILURES} failed authentications in a row",
            )
        try:
            _verify_signature(request, authorization, secret_key, security_token)
        except Reject:
            with self._lock:
                failures = self._failures.get(access_key, 0) + 1
                if failures >= LOCKOUT_FAILURES:
                    self._locked_until[access_key] = now + self.lockout_seconds
                    failures = 0
                self._failures[access_key] = failures
            raise
        with self._lock:
            self._failures.pop(access_key, None)
        if path_project != self.project_id:
            raise Reject(401, "DLI.0013", f"The access key has no access to project {path_project}")
        return access_key

    def iam_tokens(self, body: Any) -> Answer:
        """``POST /v3/auth/tokens``: a project-scoped token for a known user and password."""
        with self._lock:
            self._counters.token_requests += 1
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


def _verify_signature(
    request: Request, authorization: signing.Authorization, secret_key: str, security_token: str | None
) -> None:
    """A 401 unless the request carries a fresh, valid ``SDK-HMAC-SHA256`` signature."""
    received = {name.lower(): value for name, value in request.headers.items()}
    date = received.get(signing.DATE_HEADER.lower(), "")
    try:
        signed_at = datetime.strptime(date, signing.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: bad X-Sdk-Date") from None
    server_time = datetime.now(UTC)
    if abs((server_time - signed_at).total_seconds()) > MAX_CLOCK_SKEW:
        raise Reject(
            401,
            "APIGW.0301",
            f"Incorrect IAM authentication information: signature expired, signature time:{date},"
            f"server time:{signing.sdk_date(server_time)}",
        )
    if security_token is not None and (
        received.get("x-security-token") != security_token or "x-security-token" not in authorization.signed_headers
    ):
        raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: bad security token")
    missing = [name for name in authorization.signed_headers if name not in received]
    if missing or signing.DATE_HEADER.lower() not in authorization.signed_headers:
        raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: unsigned headers")
    parts = urlsplit(request.target)
    canonical = signing.canonical_request(
        request.method,
        parts.path,
        parts.query,
        {name: received[name].strip() for name in authorization.signed_headers},
        request.body,
        received.get(signing.CONTENT_SHA256_HEADER.lower()),
    )
    expected = signing.signature(secret_key, signing.string_to_sign(canonical, date))
    if not hmac.compare_digest(expected.encode(), authorization.signature.encode()):
        raise Reject(401, "APIGW.0301", "Incorrect IAM authentication information: verify aksk signature fail")

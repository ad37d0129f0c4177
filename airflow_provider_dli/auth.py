"""``requests`` adapters for DLI's three ways to authenticate, and the process-wide IAM token cache.

- :class:`AKSKAuth` signs each request with an access key / secret key (optionally temporary, with a
  security token), through the pure signer in :mod:`airflow_provider_dli.signing`.
- :class:`TokenAuth` sends ``X-Auth-Token``; the token comes from a callable, so one adapter serves both a
  fixed token and the cached, refreshed IAM token of password authentication.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from requests import PreparedRequest
from requests.auth import AuthBase

from airflow_provider_dli import signing

# Only these headers are signed: the ones the API defines. Signing transport headers (User-Agent,
# Accept-Encoding, Connection...) would let a proxy that rewrites them break every signature.
_SIGNED_HEADERS = ("Content-Type", "X-Project-Id", "X-Security-Token")


class AKSKAuth(AuthBase):
    """Sign requests with ``SDK-HMAC-SHA256``; send the query in canonical order so that it is what was signed."""

    def __init__(self, access_key: str, secret_key: str, security_token: str | None = None) -> None:
        self.access_key = access_key
        self._secret_key = secret_key
        self._security_token = security_token

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        if self._security_token:
            request.headers["X-Security-Token"] = self._security_token
        url = request.url or ""
        parts = urlsplit(url)
        if parts.query:
            canonical = signing.canonical_query(signing.query_pairs(parts.query))
            url = urlunsplit(parts._replace(query=canonical))
            request.url = url
        to_sign = {name: request.headers[name] for name in _SIGNED_HEADERS if name in request.headers}
        to_sign[signing.DATE_HEADER] = signing.sdk_date()
        body = request.body or b""
        signed = signing.sign_request(
            request.method or "GET",
            url,
            to_sign,
            body.encode() if isinstance(body, str) else body,
            access_key=self.access_key,
            secret_key=self._secret_key,
        )
        request.headers.update(signed)
        return request


class TokenAuth(AuthBase):
    """Send the token that ``get_token`` returns as ``X-Auth-Token``."""

    def __init__(self, get_token: Callable[[], str]) -> None:
        self._get_token = get_token

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        request.headers["X-Auth-Token"] = self._get_token()
        return request


@dataclass(frozen=True)
class IssuedToken:
    token: str
    refresh_after: float  # time.monotonic() value


TokenKey = tuple[str, str, str, str]  # (IAM endpoint, domain, user, project id)


class IAMTokenCache:
    """Project-scoped IAM tokens shared by every hook in the process.

    A token is valid for 24 h; asking IAM for one per task (or per cancel) is slow and throttled. Tokens are
    refreshed ahead of ``expires_at`` (10 minutes, or half the lifetime when that is shorter) and dropped
    on a 401. One lock per key: concurrent cancels on a cold cache make one IAM request, not one each.
    """

    def __init__(self) -> None:
        self._tokens: dict[TokenKey, IssuedToken] = {}
        self._locks: dict[TokenKey, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, key: TokenKey, fetch: Callable[[], tuple[str, float]]) -> str:
        """The cached token for ``key``, else ``fetch()`` -> ``(token, seconds until it expires)``."""
        issued = self._tokens.get(key)
        if issued and time.monotonic() < issued.refresh_after:
            return issued.token
        with self._lock_for(key):
            issued = self._tokens.get(key)
            if issued and time.monotonic() < issued.refresh_after:
                return issued.token
            token, lifetime = fetch()
            margin = min(600.0, lifetime / 2)
            self._tokens[key] = IssuedToken(token, time.monotonic() + lifetime - margin)
            return token

    def invalidate(self, key: TokenKey, token: str) -> None:
        """Forget ``token`` (a 401 said it is expired or revoked) unless another thread already replaced it."""
        with self._lock_for(key):
            issued = self._tokens.get(key)
            if issued and issued.token == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._locks_guard:
            self._tokens.clear()

    def _lock_for(self, key: TokenKey) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())


TOKEN_CACHE = IAMTokenCache()

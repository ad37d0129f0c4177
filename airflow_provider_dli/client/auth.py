"""``requests`` adapters for DLI's three ways to authenticate (IAM tokens are cached in :mod:`.token_store`).

- :class:`AKSKAuth` signs each request with an access key / secret key (optionally temporary, with a
  security token), through the pure signer in :mod:`airflow_provider_dli.client.signing`.
- :class:`TokenAuth` sends ``X-Auth-Token``; the token comes from a callable, so one adapter serves both a
  fixed token and the cached, refreshed IAM token of password authentication.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from requests import PreparedRequest
from requests.auth import AuthBase

from airflow_provider_dli.client.signing import DATE_HEADER, canonical_query, query_pairs, sdk_date, sign_request

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
            canonical = canonical_query(query_pairs(parts.query))
            url = urlunsplit(parts._replace(query=canonical))
            request.url = url
        to_sign = {name: request.headers[name] for name in _SIGNED_HEADERS if name in request.headers}
        to_sign[DATE_HEADER] = sdk_date()
        body = request.body or b""
        signed = sign_request(
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

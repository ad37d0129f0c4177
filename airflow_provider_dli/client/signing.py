"""AK/SK request signing (``SDK-HMAC-SHA256``), the algorithm of the Huawei Cloud / T Cloud Public SDKs.

Pure functions over plain values, standard library only, so that the client (through a ``requests`` auth
adapter), the emulator (to verify) and the tests (against the vendor SDK's signer) share one definition.
The canonical form follows the vendor SDK's ``huaweicloudsdkcore.signer.Signer`` step by step: segments and
query pairs are URL-decoded, then re-encoded leaving only ``A-Za-z0-9-_.~``; the path always ends in ``/``;
query pairs are sorted as decoded ``(key, value)`` tuples; header names with ``_`` are never signed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
CONTENT_SHA256_HEADER = "X-Sdk-Content-Sha256"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


class Authorization(NamedTuple):
    """The parts of an ``Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`` value."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def sdk_date(now: datetime | None = None) -> str:
    """The ``X-Sdk-Date`` value for ``now`` (default: the current UTC time)."""
    return (now or datetime.now(UTC)).strftime(DATE_FORMAT)


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_path(path: str) -> str:
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def query_pairs(query: str) -> list[tuple[str, str]]:
    """Decoded ``(key, value)`` pairs of a raw query string, blank values kept."""
    return parse_qsl(query, keep_blank_values=True)


def signable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased names to trimmed values, leaving out the names the algorithm never signs."""
    return {name.lower(): str(value).strip() for name, value in headers.items() if "_" not in name}


def canonical_request(
    method: str, path: str, query: str, signed: Mapping[str, str], body: bytes, content_sha256: str | None
) -> str:
    """The six-line canonical request; ``signed`` maps lower-case header names to trimmed values."""
    names = sorted(signed)
    body_hash = (content_sha256 or hashlib.sha256(body).hexdigest()) if body else EMPTY_BODY_SHA256
    return "\n".join(
        [
            method.upper(),
            canonical_path(path),
            canonical_query(query_pairs(query)),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            body_hash,
        ]
    )


def string_to_sign(canonical: str, date: str) -> str:
    return f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret_key: str, text: str) -> str:
    return hmac.new(secret_key.encode(), text.encode(), hashlib.sha256).hexdigest()


def host_header(url: str) -> str:
    """``Host`` as an HTTP client sends it: the port only when it is not the scheme's default; an IPv6 address
    in brackets (``[::1]:8080``)."""
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return host if parts.port in (None, default_port) else f"{host}:{parts.port}"


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
) -> dict[str, str]:
    """Return ``headers`` plus ``Host`` (when absent) and ``Authorization``, signing every signable header.

    ``headers`` must carry ``X-Sdk-Date`` (see :func:`sdk_date`); passing it in keeps this function pure.
    """
    headers = dict(headers)
    if not any(name.lower() == "host" for name in headers):
        headers["Host"] = host_header(url)
    signed = signable_headers(headers)
    if DATE_HEADER.lower() not in signed:
        raise ValueError(f"the {DATE_HEADER} header is required to sign a request")
    parts = urlsplit(url)
    canonical = canonical_request(
        method, parts.path, parts.query, signed, body, signed.get(CONTENT_SHA256_HEADER.lower())
    )
    text = string_to_sign(canonical, signed[DATE_HEADER.lower()])
    headers["Authorization"] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(sorted(signed))}, "
        f"Signature={signature(secret_key, text)}"
    )
    return headers


def parse_authorization(value: str) -> Authorization | None:
    """Split an ``Authorization`` header value; ``None`` when it is not an ``SDK-HMAC-SHA256`` one."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
    access_key, names, sig = fields.get("Access"), fields.get("SignedHeaders"), fields.get("Signature")
    if not (access_key and names and sig):
        return None
    return Authorization(access_key, tuple(names.split(";")), sig)

"""The AK/SK signer: the contract's test vector, and agreement with the vendor SDK's signer."""

from __future__ import annotations

import hashlib
import random
from urllib.parse import quote, urlencode

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from airflow_provider_dli.client import signing

VECTOR_URL = (
    "https://dli.eu-de.otc.t-systems.com/v2.0/0123456789abcdef0123456789abcdef/"
    "batches/0a324461-d9d9-45da-a52a-3b3c7a3d809e"
)
VECTOR_HEADERS = {
    "Content-Type": "application/json",
    "X-Project-Id": "0123456789abcdef0123456789abcdef",
    "X-Sdk-Date": "20240101T120000Z",
}
VECTOR_AK = "AKTESTEXAMPLE0000000"
VECTOR_SK = "SKtestexample0000000000000000000000000000"


def test_contract_vector() -> None:
    headers = signing.sign_request(
        "DELETE", VECTOR_URL, VECTOR_HEADERS, b"", access_key=VECTOR_AK, secret_key=VECTOR_SK
    )
    assert headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000000, "
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=340c45bb556edff8cb626fca47dee40199055852c756b639ca85c2ec4d38cf42"
    )
    assert headers["Host"] == "dli.eu-de.otc.t-systems.com"
    signed = signing.signable_headers(headers | {"Authorization": ""})
    del signed["authorization"]
    canonical = signing.canonical_request("DELETE", VECTOR_URL.split(".com", 1)[1], "", signed, b"", None)
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "a0eb424affe7a4e705793d8823bcca3a4de7bdff3f15f9634a15abbbb41a2a5e"
    )


def test_canonical_forms() -> None:
    assert signing.canonical_path("/v2.0/p/batches") == "/v2.0/p/batches/"
    assert signing.canonical_path("/a%20b/c~d/e+f") == "/a%20b/c~d/e%2Bf/"
    assert signing.canonical_query([("b", "2"), ("a", "x y"), ("a", "é")]) == "a=x%20y&a=%C3%A9&b=2"
    assert signing.query_pairs("size=1&from=&q=a+b") == [("size", "1"), ("from", ""), ("q", "a b")]
    assert signing.host_header("https://h.example:443/x") == "h.example"
    assert signing.host_header("http://127.0.0.1:8080/x") == "127.0.0.1:8080"


def test_headers_with_underscore_are_not_signed() -> None:
    headers = dict(VECTOR_HEADERS, X_Custom_Header="anything")
    signed = signing.sign_request("GET", VECTOR_URL, headers, b"", access_key=VECTOR_AK, secret_key=VECTOR_SK)
    assert "x_custom_header" not in signed["Authorization"]
    assert (
        signed["Authorization"]
        == signing.sign_request("GET", VECTOR_URL, VECTOR_HEADERS, b"", access_key=VECTOR_AK, secret_key=VECTOR_SK)[
            "Authorization"
        ]
    )


def test_date_header_is_required() -> None:
    with pytest.raises(ValueError, match="X-Sdk-Date"):
        signing.sign_request("GET", VECTOR_URL, {}, b"", access_key=VECTOR_AK, secret_key=VECTOR_SK)


def test_parse_authorization() -> None:
    value = signing.sign_request("GET", VECTOR_URL, VECTOR_HEADERS, b"", access_key=VECTOR_AK, secret_key=VECTOR_SK)[
        "Authorization"
    ]
    parsed = signing.parse_authorization(value)
    assert parsed is not None
    assert parsed.access_key == VECTOR_AK
    assert parsed.signed_headers == ("content-type", "host", "x-project-id", "x-sdk-date")
    assert signing.parse_authorization("Bearer abc") is None
    assert signing.parse_authorization("SDK-HMAC-SHA256 Access=AK") is None


ALPHABET = "abcXYZ019 -_.~+%/&=?é漢😀'\"!*()"


def _text(rng: random.Random, low: int = 1, high: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))


@pytest.mark.parametrize("seed", range(300))
def test_matches_vendor_sdk_signer(seed: int) -> None:
    rng = random.Random(seed)
    method = rng.choice(["GET", "POST", "DELETE", "PUT", "get"])
    segments = ["v2.0", "0123456789abcdef", "batches"] + [_text(rng).replace("/", "") or "x" for _ in range(2)]
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    pairs = [(_text(rng), _text(rng, 0)) for _ in range(rng.randint(0, 5))]
    if pairs and rng.random() < 0.3:
        pairs.append((pairs[0][0], _text(rng, 0)))  # a repeated key
    host = rng.choice(["dli.eu-de.otc.t-systems.com", "127.0.0.1:8080", "dli.cn-north-4.myhuaweicloud.com"])
    headers = {
        "Content-Type": "application/json;charset=UTF-8" if rng.random() < 0.2 else "application/json",
        "X-Project-Id": "0123456789abcdef",
        "X-Sdk-Date": f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}0000Z",
        "Host": host,
        "X-Custom": f"  {_text(rng)}  ",
        "X_Unsigned": _text(rng),
    }
    if rng.random() < 0.3:
        headers["X-Security-Token"] = _text(rng, 20, 40)
    body = rng.choice([b"", b'{"file": "obs://b/a.jar"}', _text(rng, 0, 50).encode()])
    if body and rng.random() < 0.2:
        headers["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD"
    ak, sk = _text(rng, 20, 20), _text(rng, 40, 40)

    request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=path,
        query_params=list(pairs),
        header_params=dict(headers),
        body=body,
    )
    vendor = Signer(BasicCredentials(ak, sk)).sign(request).header_params["Authorization"]

    query = urlencode(pairs, quote_via=quote)
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    ours = signing.sign_request(method, url, headers, body, access_key=ak, secret_key=sk)["Authorization"]
    assert ours == vendor

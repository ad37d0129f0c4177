"""Errors raised by the DLI client: one type for the API's refusals, one for a server that could not be reached.

Each carries the :class:`~airflow_provider_dli.client.answers.Answer` it ended on (``error.answer``): callers ask
it (``error.answer.transient``, ``.may_have_acted``) and never compare status codes themselves. Plain
exceptions, free of Airflow: a task that fails with one fails (and is retried) as with an ``AirflowException``.
``airflow_provider_dli.exceptions`` re-exports them under the names users import.
"""

from __future__ import annotations

import re

import requests

from airflow_provider_dli.client.answers import LOCAL, NO_ANSWER, SUCCESS, UNREADABLE, Answer, status_answer


class DLIError(Exception):
    """Base class of this provider's errors; ``answer`` is what DLI's last answer meant."""

    def __init__(self, *args: object, answer: Answer = LOCAL) -> None:
        super().__init__(*args)
        self.answer = answer


class DLIAPIError(DLIError):
    """DLI (or IAM, or the API gateway in front of them) answered with an error status.

    ``error_code``/``error_msg`` come from the body (``DLI.0002``, ``APIGW.0308``...) when it has them;
    ``request_id`` from the body or the ``X-Request-Id`` header, for the vendor's support. ``answer`` defaults to
    the status's (a 2xx that ends in an error is one that could not be used: unreadable).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
        answer: Answer | None = None,
    ) -> None:
        if answer is None:
            answer = status_answer(status_code, error_code)
        super().__init__(message, answer=UNREADABLE if answer is SUCCESS else answer)
        self.status_code = status_code
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id


class DLIConnectionError(DLIError):
    """No answer after every retry: connection refused or reset, DNS failure, or a timeout."""

    def __init__(self, message: str, *, answer: Answer = NO_ANSWER) -> None:
        super().__init__(message, answer=answer)


def api_error(
    response: requests.Response, method: str, url: str, problem: str | None = None, answer: Answer | None = None
) -> DLIAPIError:
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
        answer=answer,
    )


def redirect_error(response: requests.Response, method: str, url: str) -> DLIAPIError:
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


def error_text(error: Exception, limit: int = 500) -> str:
    """An error as one bounded line: a bulk outcome keeps it, and thousands of them go to XCom."""
    text = " ".join(f"{type(error).__name__}: {error}".split()) if not isinstance(error, DLIError) else str(error)
    return text if len(text) <= limit else text[: limit - 3] + "..."

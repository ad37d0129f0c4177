"""What an answer from DLI means: the one classification that every caller asks.

Every exchange ends in an :class:`Answer`: DLI's response, or the failed attempt that got none. The tables
below decide it, the first matching row winning, in the spirit of botocore's ``retries/standard.py``; callers
never compare status codes themselves. Each client error carries the answer it ended on (``error.answer``), so:

- the request layer sends again what :func:`ask_again` allows (transient, and safe to repeat);
- a wait (the trigger's, the worker's) keeps waiting through an answer that ``wait_goes_on`` (a transient one,
  and a redirect or a gateway without the API: a maintenance or a deploy, which no retry of one call outlasts);
- a create whose answer ``may_have_acted`` looks for the job it may have made instead of submitting another;
- a refused cancel is judged by the job's state only when the answer is a ``refusal``;
- a bulk cancel stops at the first answer that ``locks_key`` (the gateway locks an access key for 5 minutes
  after 5 failed authentications in a row).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import requests
from urllib3.exceptions import NewConnectionError


@dataclass(frozen=True)
class Answer:
    """One kind of answer, and what it tells a caller."""

    kind: str
    transient: bool
    """Asking again may get another answer: a retry of a call that is safe to repeat, the next poll of a wait."""
    may_have_acted: bool
    """DLI may have carried the request out: a create's job may exist although its answer never said so."""
    refusal: bool = False
    """DLI read the request and declined it (a 4xx of its own): it did nothing."""
    locks_key: bool = False
    """A failed authentication: the gateway counts it towards locking the access key."""
    wait_goes_on: bool = False
    """A wait on a job goes on through it: DLI may tell the job's state at a later poll (see
    :class:`~airflow_provider_dli.states.Outage`). Only a state DLI reports, or the wait's deadline, ends the
    wait of a healthy job."""


#                        kind                   transient  may_have_acted
SUCCESS = Answer("success", False, True)
# refused connection, no DNS, connect timeout, no time left to send
NOT_SENT = Answer("not sent", True, False, wait_goes_on=True)
# reset, read timeout, a body broken off: it may have arrived
NO_ANSWER = Answer("no answer", True, True, wait_goes_on=True)
UNVERIFIED = Answer("certificate failed verification", False, False)  # asking again does not heal it
BROKEN = Answer("broken exchange", False, True)  # any other failure of the exchange
# 5xx, and DLI.0999 (which DLI sends as HTTP 400)
SERVER_ERROR = Answer("server error", True, True, wait_goes_on=True)
# a 2xx that is not DLI's: an HTML page, a job without id
UNREADABLE = Answer("unreadable answer", True, True, wait_goes_on=True)
OVERSIZED = Answer("oversized answer", False, True)  # not read: asking again brings the same
THROTTLED = Answer("throttled", True, False, wait_goes_on=True)  # 429: DLI did nothing and asks to slow down
# never followed; a maintenance page's redirect passes
REDIRECTED = Answer("redirected", False, False, wait_goes_on=True)
# 404 APIGW.0101: the gateway does not route the API (yet, or for now: a deploy); DLI did nothing
NO_ROUTE = Answer("no route at the gateway", False, False, wait_goes_on=True)
UNAUTHENTICATED = Answer("credentials refused", False, False, locks_key=True)  # 401
FORBIDDEN = Answer("forbidden", False, False)  # 403: the credentials are good, this request is not allowed
REFUSED = Answer("refused", False, False, refusal=True)  # any other 4xx: a bad request, an unknown job...
LOCAL = Answer("not an answer", False, False)  # an error of this provider's own, after an answer was read

STATUS_TABLE: tuple[tuple[range, str | None, Answer], ...] = (
    # (HTTP statuses, DLI error code (None: any), answer)
    (range(200, 300), None, SUCCESS),
    (range(300, 400), None, REDIRECTED),
    (range(400, 401), "DLI.0999", SERVER_ERROR),  # DLI's "server-side error", documented as HTTP 400
    (range(401, 402), None, UNAUTHENTICATED),
    (range(404, 405), "APIGW.0101", NO_ROUTE),
    (range(403, 404), None, FORBIDDEN),
    (range(429, 430), None, THROTTLED),
    (range(400, 500), None, REFUSED),
    (range(500, 1000), None, SERVER_ERROR),
    (range(0, 1000), None, BROKEN),  # 1xx as a final answer: no HTTP server of DLI's says that
)
"""A response's answer by its status and DLI error code."""


def _never_reached_server(error: requests.RequestException) -> bool:
    """True when the request cannot have been received: refused, unresolvable, or a connect timeout."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


def _certificate_failed(error: requests.RequestException) -> bool:
    return _caused_by(error, ssl.SSLCertVerificationError)


def _answer_cut_off(error: requests.RequestException) -> bool:
    return isinstance(error, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError)


FAILURE_TABLE: tuple[tuple[Callable[[requests.RequestException], bool], Answer], ...] = (
    # (what happened to the attempt, answer)
    (_certificate_failed, UNVERIFIED),
    (_never_reached_server, NOT_SENT),
    (_answer_cut_off, NO_ANSWER),
    (lambda error: True, BROKEN),
)
"""A failed attempt's answer by what failed."""


class Reading(NamedTuple):
    """A response as read: its answer, the decoded body of a success, and what was wrong with an unreadable one."""

    answer: Answer
    body: dict[str, Any] | None
    problem: str | None


def status_answer(status: int, error_code: str | None = None) -> Answer:
    """The answer of a response with ``status`` and DLI ``error_code``, from :data:`STATUS_TABLE`."""
    for statuses, code, answer in STATUS_TABLE:
        if status in statuses and code in (None, error_code):
            return answer
    return BROKEN


def failure_answer(error: requests.RequestException) -> Answer:
    """The answer of an attempt that got no complete response, from :data:`FAILURE_TABLE`."""
    return next(answer for matches, answer in FAILURE_TABLE if matches(error))


def read(response: requests.Response) -> Reading:
    """A response's answer, and a success's body (an empty body reads as ``{}``); a 2xx whose body is not a JSON
    object is :data:`UNREADABLE`."""
    problem: str | None = None
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body, problem = None, "the response body is not JSON"
    else:
        if not isinstance(body, dict):
            problem = "the response body is not a JSON object"
    answer = status_answer(response.status_code, _error_code(body))
    if answer is not SUCCESS:
        return Reading(answer, None, None)
    if problem is not None:
        return Reading(UNREADABLE, None, problem)
    return Reading(SUCCESS, body, None)


def ask_again(answer: Answer, idempotent: bool) -> bool:
    """Whether sending the request again is worth it and safe: a call that is not idempotent (a create) is sent
    again only when DLI cannot have acted, so that a retry never submits a job twice."""
    return answer.transient and (idempotent or not answer.may_have_acted)


def _error_code(body: object) -> str | None:
    return str(body["error_code"]) if isinstance(body, dict) and body.get("error_code") else None


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

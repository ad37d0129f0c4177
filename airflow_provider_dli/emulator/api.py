"""What every API area of the emulator shares: the error answer, the request an area answers, and the shape of
an area (a path and the endpoints under it).

An API area (the batch jobs in :mod:`.jobs`; the SQL jobs next) is one module that builds an :class:`Area`;
:class:`~airflow_provider_dli.emulator.server.DLIEmulator` lists its areas in one routing table, and authenticates,
throttles and counts every call before the area sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from airflow_provider_dli.emulator.readings import Readings

Answer = tuple[int, Any, dict[str, str]]
"""An HTTP status, a JSON-ready body and extra response headers."""


class Reject(Exception):
    """An error answer: HTTP status and a DLI (or gateway) error body."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Request:
    """An HTTP request as the handler read it."""

    method: str
    target: str
    """The path and query, as sent."""
    headers: Message
    body: bytes


@dataclass(frozen=True)
class Call:
    """One authenticated API request, as an area's endpoint sees it."""

    method: str
    match: re.Match[str]
    """The path matched against the area's pattern: its named groups (``project``, ``id``, ...)."""
    query: dict[str, list[str]]
    payload: Any
    """The body as JSON, or None when it is empty or not JSON."""
    owner: str
    """Who the credentials say the caller is."""
    user_agent: str
    readings: Readings

    @property
    def object_id(self) -> str:
        """The id of the object the path names (its ``id`` group); endpoints without one never ask."""
        return self.match["id"]


Endpoint = Callable[[Call], Answer]


@dataclass(frozen=True)
class Area:
    """One API area: the paths it serves and an endpoint per route.

    ``path`` must name the project in a group ``project`` and the object, when the path names one, in a group
    ``id``; the route of a request is its method and the path after the project with the id replaced by ``{id}``
    (``GET batches/{id}/state``): the key in ``endpoints``, the API the rate limit counts, and the name in
    :attr:`Counters.by_route`.
    """

    path: re.Pattern[str]
    endpoints: Mapping[str, Endpoint]

    def route(self, method: str, match: re.Match[str]) -> str:
        path, after_project = match.string, match.end("project") + 1
        if match["id"] is None:
            return f"{method} {path[after_project:]}"
        start, end = match.span("id")
        return f"{method} {path[after_project:start]}{{id}}{path[end:]}"


@dataclass
class Counters:
    token_requests: int = 0
    requests: int = 0
    throttled: int = 0
    by_route: dict[str, int] = field(default_factory=dict)


def query_int(query: Mapping[str, list[str]], name: str, default: int) -> int:
    """The whole number in query parameter ``name`` (``default`` when absent or blank); else 400 ``DLI.0001``."""
    raw = (query.get(name) or [""])[0].strip()
    if not raw:
        return default
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise Reject(400, "DLI.0001", f"Parameter check error: {name} must be a whole number")
    return int(raw)


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None

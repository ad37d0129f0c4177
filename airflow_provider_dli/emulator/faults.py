"""Failures on purpose: scripted faults (a status, a dropped or lost answer, a delay) and the gateway's rate limit."""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass

from airflow_provider_dli.emulator.api import Counters, Reject

FAULT_CODES = {401: "APIGW.0301", 404: "DLI.0023", 429: "APIGW.0308"}
"""The error code of an injected fault by status; other 4xx: DLI.0001, 5xx: DLI.0999."""


@dataclass
class Fault:
    """A scripted failure for requests whose method and path match (``path`` is a regular expression).

    ``status`` answers with that status (and ``Retry-After`` when given) and a DLI error body with
    ``error_code`` (by default the code DLI or its gateway uses for that status), or ``body`` as it is (HTML
    when it starts with ``<``; ``""`` for an empty body); ``drop`` closes the connection without an answer;
    ``lose_answer`` carries the request out, then closes the connection without an answer (DLI did it, the
    client never hears); ``acted`` carries it out, then answers with ``status``/``body`` (DLI did it, and says
    ``DLI.0999``, or a proxy's HTML page arrives instead of its answer); ``delay`` sleeps first. ``times`` is
    how many matching requests it hits (None: all).
    """

    path: str
    method: str | None = None
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    lose_answer: bool = False
    acted: bool = False
    body: str | None = None
    error_code: str | None = None
    times: int | None = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method.upper() == method) and re.fullmatch(self.path, path) is not None

    def error_code_for(self, status: int) -> str:
        return self.error_code or FAULT_CODES.get(status) or ("DLI.0999" if status >= 500 else "DLI.0001")


class RateLimit:
    """The gateway's throttling: ``rate`` requests per second per API (a token bucket that holds one second's
    worth); past it, 429 ``APIGW.0308``, with ``Retry-After`` in whole seconds if ``retry_after``."""

    def __init__(self, rate: float | None, retry_after: bool, counters: Counters, lock: threading.RLock) -> None:
        self.rate, self.retry_after = rate, retry_after
        self._counters, self._lock = counters, lock
        self._buckets: dict[str, tuple[float, float]] = {}  # API -> (tokens, time.monotonic() of the count)

    def take(self, api: str, *, round_down: bool = False) -> None:
        """Count one request to ``api``; a 429 when it is over the limit (``Retry-After`` rounded up to whole
        seconds, or down with ``round_down``)."""
        if self.rate is None:
            return
        with self._lock:
            now = time.monotonic()
            tokens, updated = self._buckets.get(api, (self.rate, now))
            tokens = min(self.rate, tokens + (now - updated) * self.rate)
            allowed = tokens >= 1
            self._buckets[api] = (tokens - 1 if allowed else tokens, now)
            self._counters.throttled += not allowed
        if not allowed:
            wait = (1 - tokens) / self.rate
            seconds = math.floor(wait) if round_down else math.ceil(wait)
            headers = {"Retry-After": str(seconds)} if self.retry_after else {}
            raise Reject(
                429, "APIGW.0308", f"The throttling threshold has been reached: {self.rate:g} requests/s", headers
            )

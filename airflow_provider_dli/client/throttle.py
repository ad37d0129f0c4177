"""A throttle shared by one client's concurrent requests: when DLI answers 429, the whole pool slows down.

DLI's gateway limits requests per second per API (429 ``APIGW.0308``). A bulk cancel sends from many
threads at once; if each backed off alone, the others would keep hitting the limit, each thread would spend
its retries on 429s, and jobs would be left running. Here every thread of the client waits together:

- a 429 pauses every sender until ``Retry-After`` (or the client's backoff) has passed;
- the number of requests in flight halves, once per round (a 429 answering a request sent before the last
  slow-down does not slow down again), and grows back by one per window of successes: additive increase,
  multiplicative decrease, as TCP does with its congestion window.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class ThrottleTimeout(Exception):
    """The caller's deadline passed while it waited for the throttle."""


class Slot:
    """One request's place in the throttle; the sender reports how the request was answered."""

    __slots__ = ("pause", "round", "slowed_down", "succeeded")

    def __init__(self, round_: int) -> None:
        self.round = round_
        self.pause: float | None = None
        self.succeeded = False
        self.slowed_down = False
        """Set when the slot is given back: this request's 429 slowed the throttle down (a new round)."""

    def throttled(self, pause: float) -> None:
        """A 429: pause every sender for ``pause`` seconds."""
        self.pause = pause

    def answered(self) -> None:
        """Any other answer: the limit was not hit."""
        self.succeeded = True


class Throttle:
    """At most ``window`` requests in flight, none before ``paused_until`` (``time.monotonic()``)."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.window = float(max_in_flight)
        self.paused_until = 0.0
        self._in_flight = 0
        self._round = 0
        self._condition = threading.Condition()

    @contextmanager
    def slot(self, ends_at: float) -> Iterator[Slot]:
        """Wait for a place to send; :class:`ThrottleTimeout` if ``ends_at`` (monotonic) passes first."""
        with self._condition:
            while True:
                now = time.monotonic()
                pause = self.paused_until - now
                if pause <= 0 and self._in_flight < int(self.window):
                    break
                if now >= ends_at or (pause > 0 and self.paused_until >= ends_at):
                    raise ThrottleTimeout
                limit = min(pause if pause > 0 else math.inf, ends_at - now)
                self._condition.wait(None if limit == math.inf else limit)
            self._in_flight += 1
            slot = Slot(self._round)
        try:
            yield slot
        finally:
            with self._condition:
                self._in_flight -= 1
                if slot.pause is not None and slot.round == self._round:
                    slot.slowed_down = True
                    self._round += 1
                    self.window = max(1.0, self.window / 2)
                    self.paused_until = max(self.paused_until, time.monotonic() + slot.pause)
                elif slot.succeeded:
                    self.window = min(float(self.max_in_flight), self.window + 1 / self.window)
                self._condition.notify_all()

"""The transport under the DLI client: an overall deadline for each HTTP attempt, and a cap on an answer's size.

``requests`` bounds each socket operation (the connect, one read), not a request: a server or proxy that
trickles a byte every quarter second keeps a request, and an ``on_kill`` waiting on it, alive as long as
it likes. Here each attempt runs under :func:`deadline`: a watchdog thread shuts the attempt's socket down
when the deadline passes, which ends whatever connect, TLS handshake, send or read is in progress. Only
name resolution escapes it (the system resolver takes no timeout).

The request layer (:mod:`.conversation`) decides what to send and when to send it again; this module only
makes the socket obey a deadline and stops reading an answer that is larger than any DLI answer can be.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.poolmanager import PoolManager

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The largest answer read: a page of 100 batch objects is well under 1 MiB."""


class ResponseTooLarge(Exception):
    """The answer is larger than :data:`MAX_RESPONSE_BYTES`; it was not read further."""

    def __init__(self, status: int, size: int, declared: bool) -> None:
        super().__init__(status, size, declared)
        self.status, self.size, self.declared = status, size, declared


class _Guard:
    """One attempt's deadline; :meth:`fire` shuts down the socket that :meth:`attach` gave it."""

    __slots__ = ("_handle", "_lock", "expires", "fired")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.fired = False
        self._handle: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, handle: socket.socket) -> None:
        with self._lock:
            self._handle = handle
            if self.fired:
                _shut_down(handle)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._handle is not None:
                _shut_down(self._handle)


def _shut_down(handle: socket.socket) -> None:
    # shutdown(2) acts on the connection, not on this descriptor: the read or write blocked on the
    # connection's own (possibly TLS-wrapped) socket in another thread returns at once.
    with suppress(OSError):
        handle.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread per process that fires the guards whose deadline passed."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._guards: set[_Guard] = set()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def add(self, guard: _Guard) -> None:
        with self._condition:
            self._guards.add(guard)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dli-request-deadlines", daemon=True)
                self._thread.start()
            if guard.expires < self._wake_at:
                self._condition.notify()

    def remove(self, guard: _Guard) -> None:
        with self._condition:
            self._guards.discard(guard)

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for guard in [guard for guard in self._guards if guard.expires <= now]:
                    self._guards.discard(guard)
                    guard.fire()
                self._wake_at = min((guard.expires for guard in self._guards), default=math.inf)
                self._condition.wait(None if self._wake_at == math.inf else self._wake_at - now)


_WATCHDOG = _Watchdog()
_current = threading.local()


def _new_watchdog_after_fork() -> None:
    # A forked child has no watchdog thread, and its copy of the lock may be held by the parent's.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_new_watchdog_after_fork)


@contextmanager
def deadline(seconds: float) -> Iterator[_Guard]:
    """Run one HTTP attempt of this thread (through :class:`DeadlineAdapter`) under a deadline.

    When it passes, the attempt's connection is shut down and the attempt fails with a ``requests``
    error; ``guard.fired`` then tells the caller why.
    """
    guard = _Guard(time.monotonic() + seconds)
    _WATCHDOG.add(guard)
    _current.guard = guard
    try:
        yield guard
    finally:
        _current.guard = None
        _WATCHDOG.remove(guard)


def _attach_to_current_guard(handle: socket.socket) -> None:
    guard: _Guard | None = getattr(_current, "guard", None)
    if guard is not None:
        guard.attach(handle)


if TYPE_CHECKING:
    _ConnectionBase = HTTPConnection
else:
    _ConnectionBase = object


class _GuardedConnectionMixin(_ConnectionBase):
    """Keeps a duplicate of the connection's socket, so the watchdog can shut it down in any phase
    (even in the TLS handshake, after ``ssl`` has taken over the original socket object)."""

    _deadline_handle: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        self._close_deadline_handle()
        sock = super()._new_conn()
        self._deadline_handle = sock.dup()
        _attach_to_current_guard(self._deadline_handle)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self._deadline_handle is not None:  # a pooled connection, connected by an earlier attempt
            _attach_to_current_guard(self._deadline_handle)
        super().request(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._close_deadline_handle()

    def _close_deadline_handle(self) -> None:
        if self._deadline_handle is not None:
            self._deadline_handle.close()
            self._deadline_handle = None


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOL_CLASSES = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections (direct or through a proxy) obey :func:`deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


def read_body(response: requests.Response, limit: int = MAX_RESPONSE_BYTES) -> None:
    """Read a streamed answer into ``response.content``; :class:`ResponseTooLarge` past ``limit`` bytes
    (decoded: a small compressed answer that inflates past it counts at its inflated size)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise ResponseTooLarge(response.status_code, int(declared), declared=True)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()
            raise ResponseTooLarge(response.status_code, size, declared=False)
        chunks.append(chunk)
    response._content = b"".join(chunks)

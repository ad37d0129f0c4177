"""IAM tokens shared by every process of one OS user on a machine: an in-process cache in front of files.

Airflow 3 runs each task and each callback in a process of its own, so a cache that lives in one process logs
in to IAM once per task. IAM throttles token requests and asks clients to reuse a token for its 24-hour life.
Like botocore's credential cache and the Azure CLI's token cache, tokens therefore also live on local disk:

- One file per key. The key is a SHA-256 of (IAM endpoint, domain, user, project id, password), so a file name
  carries no user name or secret, and a changed password never meets the old password's token. Whoever can
  list the folder can read the connection itself, so a plain hash gives away nothing new.
- A file holds the token, when to refresh it and when it expires: nothing else (no password).
- The folder is private: created ``0700``, and on every read it must be a real directory owned by this user
  and closed to others; a file must be a regular ``0600`` file of this user (no symbolic links).
- Writes are atomic (a temporary file renamed over the old one). A lock file per key (``fcntl.flock``) makes
  processes that start together fetch once: the first logs in, the others wait, then read its token.
- A token is refreshed ahead of its expiry (10 minutes, or half its lifetime when that is shorter; the
  lifetime measured on IAM's clock), dropped on a 401, and never read after it expires.
- A folder that cannot be used (missing and not creatable, unwritable, another user's, open to others) turns
  the disk off for this process with one warning; the in-process cache still serves, and nothing fails.
  A corrupt file is reported once and replaced.

The disk part needs ``fcntl``, i.e. Linux or macOS, where Airflow workers run; elsewhere only the in-process
cache is used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airflow.sdk.log import mask_secret

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows, where Airflow does not run workers
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

REFRESH_MARGIN = 600.0
"""Seconds before ``expires_at`` a token is replaced (half its lifetime when that is shorter)."""
REFUSED_AGAIN_PAUSE = 300.0
"""A token fetched because its predecessor got a 401 is not replaced on a 401 of its own for this long: the
new token is fresh, so the 401 is about something else (permissions, project), and logging in again for every
request would only get the account throttled by IAM."""
MAX_FILE_BYTES = 1 << 20
"""Token files are a few KiB; anything larger is not ours."""

Fetch = Callable[[], tuple[str, float]]
"""Log in to IAM: ``(token, seconds it is valid, on IAM's clock)``."""


def token_key(iam_endpoint: str, domain: str, user: str, project_id: str, password: str) -> str:
    """The cache key of a token: a hex SHA-256 of everything that decides which token IAM issues."""
    fields = json.dumps(["airflow-provider-dli iam token v1", iam_endpoint, domain, user, project_id, password])
    return hashlib.sha256(fields.encode()).hexdigest()


def default_folder() -> Path:
    """``~/Library/Caches/airflow-provider-dli/iam-tokens`` on macOS; else under ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "airflow-provider-dli" / "iam-tokens"


@dataclass(frozen=True)
class CachedToken:
    """A token and its two moments, in epoch seconds of this machine's clock."""

    token: str
    refresh_at: float
    expires_at: float

    @classmethod
    def issued(cls, token: str, lifetime: float) -> CachedToken:
        """A token IAM has just issued, valid for ``lifetime`` seconds (measured on IAM's clock)."""
        now = time.time()
        return cls(token, now + lifetime - min(REFRESH_MARGIN, lifetime / 2), now + lifetime)

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at <= self.expires_at

    def to_json(self) -> bytes:
        return json.dumps({"token": self.token, "refresh_at": self.refresh_at, "expires_at": self.expires_at}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedToken:
        """Parse a file's bytes; ValueError when they are not a token file."""
        fields = json.loads(data)
        if not isinstance(fields, dict) or set(fields) != {"token", "refresh_at", "expires_at"}:
            raise ValueError("not a token file")
        token, refresh_at, expires_at = fields["token"], fields["refresh_at"], fields["expires_at"]
        if not isinstance(token, str) or not token.isascii() or not token.isprintable() or not token:
            raise ValueError("the token is not a header value")
        times = (refresh_at, expires_at)
        if not all(isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in times):
            raise ValueError("the times are not numbers")
        return cls(token, float(refresh_at), float(expires_at))


class FolderUnusable(Exception):
    """The cache folder cannot be trusted or written: the disk is off for this process."""


Rules = tuple[tuple[str, Callable[[os.stat_result], bool]], ...]

# What makes a folder or a file untrustworthy, checked in this order on every read: (problem, test of its
# fstat). Reading a token that another user could have written would send their token as ours.
FOLDER_RULES: Rules = (
    ("is not a directory", lambda st: not stat.S_ISDIR(st.st_mode)),
    ("belongs to another user", lambda st: st.st_uid != os.geteuid()),
    ("is open to other users (it must be mode 700)", lambda st: bool(st.st_mode & 0o077)),
)
FILE_RULES: Rules = (
    ("is not a regular file", lambda st: not stat.S_ISREG(st.st_mode)),
    ("belongs to another user", lambda st: st.st_uid != os.geteuid()),
    ("is open to other users (it must be mode 600)", lambda st: bool(st.st_mode & 0o077)),
)


def _check(what: str, status: os.stat_result, rules: Rules) -> None:
    for problem, broken in rules:
        if broken(status):
            raise FolderUnusable(f"{what} {problem}")


class TokenFolder:
    """One folder of token files, shared by the processes of one OS user.

    Every method raises :class:`FolderUnusable` when the folder cannot be used; :class:`TokenStore` then turns
    it off for the process.
    """

    def __init__(self, path: Path, *, usable: bool = True) -> None:
        self.path = path
        self.usable = usable
        """False once this process found the folder unusable (and warned): then it is never touched again."""

    def _open(self) -> int:
        """A descriptor of the checked folder (created 0700 when missing); files are opened relative to it."""
        try:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.mkdir(mode=0o700)
            except FileExistsError:
                pass
            folder = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as error:
            raise FolderUnusable(f"cannot be created or opened ({error.strerror})") from None
        try:
            _check("the folder", os.fstat(folder), FOLDER_RULES)
        except BaseException:
            os.close(folder)
            raise
        return folder

    def read(self, folder: int, key: str) -> CachedToken | None:
        """The token stored for ``key``; None when there is none; ValueError when the file is corrupt."""
        try:
            descriptor = os.open(f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FolderUnusable(f"{key}.json is a symbolic link") from None
            raise FolderUnusable(f"cannot be read ({error.strerror})") from None
        with os.fdopen(descriptor, "rb") as file:
            _check(f"{key}.json", os.fstat(descriptor), FILE_RULES)
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError("larger than any token file")
        return CachedToken.from_json(data)

    def write(self, folder: int, key: str, cached: CachedToken) -> None:
        """Replace the file for ``key`` atomically: a reader sees the old token or the new one, never a part."""
        temporary = f".{key}.{secrets.token_hex(8)}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(cached.to_json())
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, f"{key}.json", src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=folder)
                raise
        except OSError as error:
            raise FolderUnusable(f"cannot be written ({error.strerror})") from None

    def remove(self, folder: int, key: str) -> None:
        try:
            os.unlink(f"{key}.json", dir_fd=folder)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise FolderUnusable(f"cannot be written ({error.strerror})") from None

    def locked(self, key: str, wait: float) -> _FolderLock:
        return _FolderLock(self, key, wait)


class _FolderLock:
    """``with folder.locked(key, wait) as fd``: the folder's descriptor, with the key's lock file held.

    Waits at most ``wait`` seconds for another process; after that it goes on without the lock (the worst case
    is one more token request, never a task stuck behind a hung process).
    """

    def __init__(self, folder: TokenFolder, key: str, wait: float) -> None:
        self._folder, self._key, self._wait = folder, key, wait
        self._descriptors: list[int] = []

    def __enter__(self) -> int:
        folder = self._folder._open()
        self._descriptors.append(folder)
        try:
            lock = os.open(f"{self._key}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=folder)
        except OSError as error:
            self.__exit__(None, None, None)
            raise FolderUnusable(f"cannot be written ({error.strerror})") from None
        self._descriptors.append(lock)
        deadline = time.monotonic() + self._wait
        pause = 0.002
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return folder
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("Waited %.1f s for another process's IAM token request; requesting one", self._wait)
                    return folder
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            except OSError as error:  # e.g. ENOLCK: a network file system without locks
                self.__exit__(None, None, None)
                raise FolderUnusable(f"cannot be locked ({error.strerror})") from None

    def __exit__(self, *exc: object) -> None:
        for descriptor in reversed(self._descriptors):
            os.close(descriptor)  # closing the lock file releases the lock
        self._descriptors.clear()


@dataclass(frozen=True)
class _Held:
    """A token in this process's memory; ``final_401_until``: a 401 is the answer, not a reason to log in."""

    cached: CachedToken
    final_401_until: float = 0.0


class TokenStore:
    """The process's tokens by key, in front of any number of :class:`TokenFolder`.

    One thread lock per key: threads of one process (a bulk cancel's pool) fetch once. The key's file lock
    does the same across processes.
    """

    def __init__(self) -> None:
        self._memory: dict[str, _Held] = {}
        self._replacing: set[str] = set()  # keys whose token got a 401: the next token is on probation
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._folders: dict[Path, TokenFolder] = {}

    def folder(self, path: Path | None) -> TokenFolder:
        """The folder at ``path`` (``None``: :func:`default_folder`), one object per path and process."""
        path = (path or default_folder()).expanduser().absolute()
        with self._guard:
            if path not in self._folders:
                self._folders[path] = TokenFolder(path, usable=fcntl is not None)
            return self._folders[path]

    def get(self, key: str, fetch: Fetch, folder: TokenFolder | None, lock_wait: Callable[[], float]) -> str:
        """The token for ``key``: from memory, else from ``folder``, else from ``fetch()`` (and then stored).

        ``lock_wait()``: how long to wait for another process's login, asked only when it comes to that.
        """
        held = self._memory.get(key)
        if held is not None and held.cached.fresh(time.time()):
            return held.cached.token
        with self._lock_for(key):
            held = self._memory.get(key)
            if held is not None and held.cached.fresh(time.time()):
                return held.cached.token
            cached = self._through_folder(key, fetch, folder, lock_wait()) if folder and folder.usable else None
            if cached is not None:
                mask_secret(cached.token)  # read from disk: the process that fetched it masked it, not this one
            else:
                cached = CachedToken.issued(*fetch())
            final_401_until = 0.0
            if key in self._replacing:
                self._replacing.discard(key)
                final_401_until = time.time() + REFUSED_AGAIN_PAUSE
            self._memory[key] = _Held(cached, final_401_until)
            return cached.token

    def refused(self, key: str, token: str, folder: TokenFolder | None, lock_wait: float) -> bool:
        """``token`` got a 401: drop it; True when the request may be sent once more, with another token.

        False for a token that was itself fetched because its predecessor got a 401 (for
        :data:`REFUSED_AGAIN_PAUSE`): at most one new token per refused token.
        """
        with self._lock_for(key):
            held = self._memory.get(key)
            if held is not None and held.cached.token != token:
                return True  # another thread already replaced it
            if held is not None and time.time() < held.final_401_until:
                return False
            self._memory.pop(key, None)
            self._replacing.add(key)
            if folder is not None and folder.usable:
                try:
                    with folder.locked(key, lock_wait) as descriptor:
                        try:
                            stored = folder.read(descriptor, key)
                        except ValueError:
                            stored = None
                        if stored is None or stored.token == token:
                            folder.remove(descriptor, key)
                except FolderUnusable as problem:
                    self._turn_off(folder, problem)
            return True

    def clear(self) -> None:
        """Forget this process's tokens and folders (the files stay): for tests."""
        with self._guard:
            self._memory.clear()
            self._replacing.clear()
            self._folders.clear()

    def _through_folder(self, key: str, fetch: Fetch, folder: TokenFolder, lock_wait: float) -> CachedToken | None:
        """Under the key's file lock: the folder's fresh token, else a fetched one, written for the others.
        None when the folder turns out unusable before anything was fetched (then the caller fetches)."""
        try:
            with folder.locked(key, lock_wait) as descriptor:
                try:
                    stored = folder.read(descriptor, key)
                except ValueError as corrupt:
                    log.warning("Replacing the corrupt IAM token file %s (%s)", folder.path / f"{key}.json", corrupt)
                    stored = None
                if stored is not None and stored.fresh(time.time()):
                    return stored
                cached = CachedToken.issued(*fetch())
                try:
                    folder.write(descriptor, key, cached)
                except FolderUnusable as problem:
                    self._turn_off(folder, problem)
                return cached
        except FolderUnusable as problem:
            self._turn_off(folder, problem)
            return None

    def _turn_off(self, folder: TokenFolder, problem: FolderUnusable) -> None:
        """One warning per folder and process; the in-process cache carries on."""
        with self._guard:
            if not folder.usable:
                return
            folder.usable = False
        log.warning(
            "Not sharing IAM tokens through the folder %s: %s. This process keeps its token in memory only; "
            "fix or remove the folder, or turn the disk cache off ([dli] login_cache = memory)",
            folder.path,
            problem,
        )

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


TOKEN_STORE = TokenStore()


@dataclass(frozen=True)
class TokenSource:
    """One connection's IAM token: what the hook's auth and its 401 handling call."""

    key: str
    fetch: Fetch
    folder: TokenFolder | None  # None: the disk cache is off
    lock_wait: Callable[[], float]  # seconds to wait for another process's login, asked at each wait
    store: TokenStore = TOKEN_STORE

    def token(self) -> str:
        return self.store.get(self.key, self.fetch, self.folder, self.lock_wait)

    def refused(self, token: str) -> bool:
        """A 401 answered ``token``: True when the request may be sent again (with a new token)."""
        return self.store.refused(self.key, token, self.folder, self.lock_wait())

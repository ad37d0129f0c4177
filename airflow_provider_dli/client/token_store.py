"""IAM tokens shared by every process of one OS user on a machine: an in-process cache in front of files.

Airflow 3 runs each task and each callback in a process of its own, so a cache that lives in one process logs
in to IAM once per task. IAM throttles token requests and asks clients to reuse a token for its 24-hour life.
Like botocore's credential cache and the Azure CLI's token cache, tokens therefore also live on local disk:

- One file per key. The key is a SHA-256 of (IAM endpoint, domain, user, project id, password), so a file name
  carries no user name or secret, and a changed password never meets the old password's token. Whoever can
  list the folder can read the connection itself, so a plain hash gives away nothing new.
- A file holds the token, when to refresh it, when it expires, and until when a 401 on it is final (see
  below): nothing else (no password).
- The folder is private: created ``0700``, and on every read it must be a real directory owned by this user
  and closed to others; a file must be a regular ``0600`` file of this user (no symbolic links). What is
  opened is checked after opening (``fstat``), and opened so that nothing can block: a FIFO or a directory in
  place of a file is refused like a symbolic link. Reads are bounded in size and in JSON nesting.
- Writes are atomic (a temporary file renamed over the old one). A lock file per key (``fcntl.flock``) makes
  processes that start together fetch once: the first logs in, the others wait, then read its token.
- A token is refreshed ahead of its expiry (10 minutes, or half its lifetime when that is shorter; the
  lifetime measured on IAM's clock), dropped on a 401, and never read after it expires. A token fetched
  because its predecessor got a 401 carries, in its file, the moment until which a 401 of its own is the
  answer rather than a reason to log in: every process of the machine keeps to it, not only the one that
  fetched it.
- A folder that cannot be used (missing and not creatable, unwritable, another user's, open to others, no
  home folder to put it in) turns the disk off for this process with one warning; the in-process cache still
  serves, and nothing fails. A corrupt file is reported once and replaced.

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
import re
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

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
MAX_NESTING = 1
"""A token file is one flat JSON object: anything nested deeper is not ours (and is never handed to the JSON
parser, which recurses once per level)."""
KEY_VERSION = "airflow-provider-dli iam token v2"
"""Part of every key: v2 files carry ``final_401_until``, so they never share a name with v1 files."""
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
"""Opening never follows a link, never waits for a FIFO's writer, never acquires a terminal."""

Fetch = Callable[[], tuple[str, float]]
"""Log in to IAM: ``(token, seconds it is valid, on IAM's clock)``."""


def token_key(iam_endpoint: str, domain: str, user: str, project_id: str, password: str) -> str:
    """The cache key of a token: a hex SHA-256 of everything that decides which token IAM issues."""
    fields = json.dumps([KEY_VERSION, iam_endpoint, domain, user, project_id, password])
    return hashlib.sha256(fields.encode()).hexdigest()


class NoHomeFolder(Exception):
    """The folder lives in the home folder (the default one, or a ``login_cache_path`` of ``~/...``), and there
    is none: the disk is off for this process."""


def default_folder() -> Path:
    """``~/Library/Caches/airflow-provider-dli/iam-tokens`` on macOS; else under ``$XDG_CACHE_HOME`` (``~/.cache``).

    A relative ``$XDG_CACHE_HOME`` is ignored, as the XDG spec says (it would resolve against whatever folder
    the process started in). :class:`NoHomeFolder` when the home folder is needed and unknown.
    """
    xdg_cache = Path(os.environ.get("XDG_CACHE_HOME", ""))
    if sys.platform != "darwin" and xdg_cache.is_absolute():
        base = xdg_cache
    else:
        home = _expanded(Path("~"), "the default folder")
        base = home / "Library" / "Caches" if sys.platform == "darwin" else home / ".cache"
    return base / "airflow-provider-dli" / "iam-tokens"


def _expanded(path: Path, what: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded: from ``$HOME``, else the passwd entry, which a
    container's uid may lack. :class:`NoHomeFolder`, naming ``what`` needed it, when they are unknown. A ``~user``
    this machine does not know is the same case, not an error: one setting serves every component of a
    deployment, and the user may exist on the workers alone (a typo gets the same warning, which names it)."""
    try:
        return path.expanduser()
    except (RuntimeError, KeyError):
        head = path.parts[0]
        why = "HOME is unset and the user has no passwd entry" if head == "~" else f"no user {head[1:]!r} here"
        raise NoHomeFolder(f"{what} is under {head!r}, and no home folder is known ({why})") from None


@dataclass(frozen=True)
class CachedToken:
    """A token and its moments, in epoch seconds of this machine's clock.

    ``final_401_until``: a 401 on this token before then is DLI's answer, not a reason to log in again (the
    token was fetched because its predecessor got a 401; see :data:`REFUSED_AGAIN_PAUSE`).
    """

    token: str
    refresh_at: float
    expires_at: float
    final_401_until: float = 0.0

    @classmethod
    def issued(cls, token: str, lifetime: float, *, replaces_refused: bool) -> CachedToken:
        """A token IAM has just issued, valid for ``lifetime`` seconds (measured on IAM's clock)."""
        now = time.time()
        final_401_until = now + REFUSED_AGAIN_PAUSE if replaces_refused else 0.0
        return cls(token, now + lifetime - min(REFRESH_MARGIN, lifetime / 2), now + lifetime, final_401_until)

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at <= self.expires_at

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "token": self.token,
                "refresh_at": self.refresh_at,
                "expires_at": self.expires_at,
                "final_401_until": self.final_401_until,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedToken:
        """Parse a file's bytes; ValueError when they are not a token file."""
        if _nesting(data) > MAX_NESTING:
            raise ValueError("nested deeper than a token file")
        fields = json.loads(data)
        if not isinstance(fields, dict) or set(fields) != {"token", "refresh_at", "expires_at", "final_401_until"}:
            raise ValueError("not a token file")
        token = fields["token"]
        if not isinstance(token, str) or not token.isascii() or not token.isprintable() or not token:
            raise ValueError("the token is not a header value")
        times = (fields["refresh_at"], fields["expires_at"], fields["final_401_until"])
        if not all(isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in times):
            raise ValueError("the times are not numbers")
        return cls(token, *(float(t) for t in times))


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _nesting(data: bytes) -> int:
    """How deeply the JSON in ``data`` nests arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in re.findall(rb"[\[\]{}]", _JSON_STRING.sub(b"", data)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


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
LOCK_RULES: Rules = FILE_RULES[:1]
"""A lock file holds nothing: only what it is matters (a FIFO or a device is no lock)."""


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
            descriptor = _open_checked(folder, f"{key}.json", os.O_RDONLY, FILE_RULES, "cannot be read")
        except FileNotFoundError:
            return None
        with os.fdopen(descriptor, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError("larger than any token file")
        return CachedToken.from_json(data)

    def read_unlocked(self, key: str) -> CachedToken | None:
        """:meth:`read` without the key's file lock (a reader sees a whole file: writes are atomic renames)."""
        folder = self._open()
        try:
            return self.read(folder, key)
        finally:
            os.close(folder)

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


def _open_checked(folder: int, name: str, flags: int, rules: Rules, failing: str) -> int:
    """A descriptor of ``name`` in ``folder``, once it has passed ``rules``.

    FileNotFoundError when there is none (and ``flags`` do not create it); else :class:`FolderUnusable`, whose
    message says what ``failing`` to open it means. Opening cannot block (a FIFO), follow a link, or fail on a
    directory in the file's place: what was opened is checked after opening, so it is what is used.
    """
    try:
        descriptor = os.open(name, flags | _OPEN_FLAGS, 0o600, dir_fd=folder)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise FolderUnusable(f"{name} is a symbolic link") from None
        if error.errno == errno.EISDIR:
            raise FolderUnusable(f"{name} is not a regular file") from None
        raise FolderUnusable(f"{failing} ({error.strerror})") from None
    try:
        _check(name, os.fstat(descriptor), rules)
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


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
            lock = _open_checked(folder, f"{self._key}.lock", os.O_RDWR | os.O_CREAT, LOCK_RULES, "cannot be written")
        except OSError as error:  # FileNotFoundError: the folder vanished under us
            self.__exit__(None, None, None)
            raise FolderUnusable(f"cannot be written ({error.strerror})") from None
        except FolderUnusable:
            self.__exit__(None, None, None)
            raise
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


class _KeyLock:
    """A thread lock that knows its holder, and is never waited on without a time limit.

    Airflow runs ``on_kill`` in its SIGTERM handler, in the thread the signal interrupted: when that thread was
    logging in, it holds this lock, and waiting for it would wait forever. So the holder's own thread gets
    False at once, and another thread after ``timeout`` seconds; either then goes on without the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None

    def acquire(self, timeout: float) -> bool:
        if self._holder == threading.get_ident() or not self._lock.acquire(timeout=max(timeout, 0.0)):
            return False
        self._holder = threading.get_ident()
        return True

    def release(self) -> None:
        self._holder = None
        self._lock.release()


class TokenStore:
    """The process's tokens by key, in front of any number of :class:`TokenFolder`.

    One thread lock per key: threads of one process (a bulk cancel's pool) fetch once. The key's file lock
    does the same across processes. Neither is waited on for longer than the caller's ``lock_wait``, and the
    thread lock not at all by the thread that holds it (a signal handler that interrupted a login): see
    :meth:`_without_lock`.
    """

    def __init__(self) -> None:
        self._memory: dict[str, CachedToken] = {}
        self._replacing: set[str] = set()  # keys whose token got a 401: the next token is on probation
        self._locks: dict[str, _KeyLock] = {}
        self._guard = threading.RLock()  # held for a dictionary update only; re-entrant for a signal handler
        self._folders: dict[Path, TokenFolder] = {}
        self._warned_homeless = False

    def folder(self, path: Path | None) -> TokenFolder | None:
        """The folder at ``path`` (``None``: :func:`default_folder`), one object per path and process; None
        (memory only, with one warning) when the folder is in the home folder and there is none."""
        try:
            path = (_expanded(path, f"login_cache_path {str(path)!r}") if path else default_folder()).absolute()
        except NoHomeFolder as problem:
            with self._guard:
                warned, self._warned_homeless = self._warned_homeless, True
            if not warned:
                _warn_memory_only("through a folder", problem)
            return None
        with self._guard:
            if path not in self._folders:
                self._folders[path] = TokenFolder(path, usable=fcntl is not None)
            return self._folders[path]

    def get(
        self,
        key: str,
        fetch: Fetch,
        folder: TokenFolder | None,
        lock_wait: Callable[[], float],
        on_secret: Callable[[str], None] = lambda token: None,
    ) -> str:
        """The token for ``key``: from memory, else from ``folder``, else from ``fetch()`` (and then stored).

        ``lock_wait()``: how long to wait for another thread's or process's login.
        ``on_secret``: told of a token read from the folder (the hook masks it in Airflow's logs).
        """
        held = self._memory.get(key)
        if held is not None and held.fresh(time.time()):
            return held.token
        lock = self._lock_for(key)
        if not lock.acquire(lock_wait()):
            return self._without_lock(key, fetch, folder, on_secret)
        try:
            held = self._memory.get(key)
            if held is not None and held.fresh(time.time()):
                return held.token
            replacing = key in self._replacing
            cached = None
            if folder and folder.usable:
                cached = self._through_folder(key, fetch, folder, lock_wait(), replacing, on_secret)
            if cached is None:
                cached = CachedToken.issued(*fetch(), replaces_refused=replacing)
            if replacing:  # whoever fetched it, it is newer than the refused token: a 401 of its own is final
                self._replacing.discard(key)
                final_401_until = max(cached.final_401_until, time.time() + REFUSED_AGAIN_PAUSE)
                cached = replace(cached, final_401_until=final_401_until)
            self._memory[key] = cached
            return cached.token
        finally:
            lock.release()

    def refused(self, key: str, token: str, folder: TokenFolder | None, lock_wait: float) -> bool:
        """``token`` got a 401: drop it; True when the request may be sent once more, with another token.

        False for a token that was itself fetched because its predecessor got a 401 (for
        :data:`REFUSED_AGAIN_PAUSE`), by whichever process of the machine: at most one new token per refused
        token. False also when another thread's login holds the key's lock past ``lock_wait``, or this thread's
        own (a signal handler that interrupted it): no time to spend on a second try then.
        """
        lock = self._lock_for(key)
        if not lock.acquire(lock_wait):
            return False
        try:
            held = self._memory.get(key)
            if held is not None and held.token != token:
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
        finally:
            lock.release()

    def clear(self) -> None:
        """Forget this process's tokens and folders (the files stay): for tests."""
        with self._guard:
            self._memory.clear()
            self._replacing.clear()
            self._folders.clear()
            self._warned_homeless = False

    def _without_lock(
        self, key: str, fetch: Fetch, folder: TokenFolder | None, on_secret: Callable[[str], None]
    ) -> str:
        """A token while another login holds the key's lock: one that has not expired yet (it may be due for
        refresh: the holder is refreshing it), from memory or the folder (read without the file lock: writes are
        atomic renames), else a login of this caller's own, kept in memory."""
        now = time.time()
        held = self._memory.get(key)
        if held is not None and now < held.expires_at:
            return held.token
        if folder is not None and folder.usable:
            with contextlib.suppress(FolderUnusable, ValueError):
                stored = folder.read_unlocked(key)
                if stored is not None and now < stored.expires_at:
                    on_secret(stored.token)
                    return stored.token
        cached = CachedToken.issued(*fetch(), replaces_refused=False)
        self._memory[key] = cached
        return cached.token

    def _through_folder(
        self,
        key: str,
        fetch: Fetch,
        folder: TokenFolder,
        lock_wait: float,
        replacing: bool,
        on_secret: Callable[[str], None],
    ) -> CachedToken | None:
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
                    on_secret(stored.token)  # the process that fetched it masked it, not this one
                    return stored
                cached = CachedToken.issued(*fetch(), replaces_refused=replacing)
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
        _warn_memory_only(f"through the folder {folder.path}", problem)

    def _lock_for(self, key: str) -> _KeyLock:
        with self._guard:
            return self._locks.setdefault(key, _KeyLock())


def _warn_memory_only(where: str, problem: Exception) -> None:
    log.warning(
        "Not sharing IAM tokens %s: %s. This process keeps its token in memory only; fix or remove the folder, "
        "set another one ([dli] login_cache_path), or turn the disk cache off ([dli] login_cache = memory)",
        where,
        problem,
    )


TOKEN_STORE = TokenStore()


@dataclass(frozen=True)
class TokenSource:
    """One connection's IAM token: what the client's auth and its 401 handling call."""

    key: str
    fetch: Fetch
    folder: TokenFolder | None  # None: the disk cache is off
    lock_wait: Callable[[], float]  # seconds to wait for another process's login, asked at each wait
    on_secret: Callable[[str], None] = lambda token: None  # told of each token read from the folder
    store: TokenStore = TOKEN_STORE

    def token(self) -> str:
        return self.store.get(self.key, self.fetch, self.folder, self.lock_wait, self.on_secret)

    def refused(self, token: str) -> bool:
        """A 401 answered ``token``: True when the request may be sent again (with a new token)."""
        return self.store.refused(self.key, token, self.folder, self.lock_wait())

"""The IAM token store: one token per machine, shared by separate processes through a private folder.

Cross-process cases run real Python processes that use the hook (``CHILD``), started together on a signal, against
the emulator over HTTP; the emulator counts the token requests. Each test has its own folder (``token_folder``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.client import token_store
from airflow_provider_dli.client.token_store import TOKEN_STORE, token_key
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.emulator.server import DEFAULT_DOMAIN, DEFAULT_PASSWORD, DEFAULT_PROJECT_ID, DEFAULT_USER
from airflow_provider_dli.exceptions import DLIAPIError
from airflow_provider_dli.hooks.dli import DLIHook
from tests.conftest import SUBMIT_BODY, MakeHook

REPO = Path(__file__).resolve().parent.parent
UNKNOWN_ID = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"

# A task process in miniature: build the hook, check the connection, say "ready", wait for "go", make one call.
CHILD = """
import json, sys
from airflow_provider_dli.hooks.dli import DLIHook
hook = DLIHook(retry_delay=0.01)
hook.settings
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(hook.test_connection()), flush=True)
"""


def password_connection(emulator: DLIEmulator, **extra: str) -> dict[str, Any]:
    connection = emulator.connection(auth_type="password")
    connection["extra"] = dict(connection["extra"], **extra)
    return connection


def run_together(connection: dict[str, Any], count: int, **env: str) -> list[tuple[bool, str, str]]:
    """Start ``count`` processes that each make one call with ``connection``, all released at once when every
    one is ready; their ``(ok, message, stderr)``."""
    environment = {**os.environ, "AIRFLOW_CONN_DLI_DEFAULT": json.dumps(connection), "PYTHONPATH": str(REPO), **env}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None
        line = "?"
        while line not in ("ready\n", ""):  # Airflow may print to stdout as it starts
            line = child.stdout.readline()
        assert line, child.communicate(timeout=60)[1][-3000:]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err[-3000:]
        ok, message = json.loads(out.splitlines()[-1])
        results.append((ok, message, err))
    return results


def key_of(emulator: DLIEmulator, password: str = DEFAULT_PASSWORD) -> str:
    return token_key(emulator.url, DEFAULT_DOMAIN, DEFAULT_USER, DEFAULT_PROJECT_ID, password)


def stored(folder: Path, key: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{key}.json").read_text())
    return data


def write_file(path: Path, content: bytes, mode: int = 0o600) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    os.chmod(path, mode)


def plant(folder: Path, key: str, token: str, *, refresh_in: float, expires_in: float, mode: int = 0o600) -> None:
    """A token file as another process would have left it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = time.time()
    body = {"token": token, "refresh_at": now + refresh_in, "expires_at": now + expires_in, "final_401_until": 0}
    write_file(folder / f"{key}.json", json.dumps(body).encode(), mode)


def token_auth_statuses(emulator: DLIEmulator) -> list[int]:
    return [record.status for record in emulator.request_log if record.path.startswith("/v2.0")]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == token_store.__name__ and r.levelno == logging.WARNING]


def connection_checked_within(hook: DLIHook, seconds: float, unblock: Callable[[], None]) -> bool:
    """``hook.test_connection()``'s ok, failing the test when it has not returned after ``seconds`` (a blocked
    ``open()``); ``unblock`` then frees the stuck thread."""
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(hook.test_connection()[0])
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        raise AssertionError(f"test_connection() still blocked after {seconds:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return bool(outcome[0])


# Across processes


@pytest.mark.parametrize(("cache", "expected_requests"), [("disk", 1), ("memory", 3)])
def test_processes_starting_together_log_in_once(
    dli_emulator: DLIEmulator, token_folder: Path, cache: str, expected_requests: int
) -> None:
    dli_emulator.add_fault(r"/v3/auth/tokens", delay=0.5, times=None)  # a slow IAM: the others must wait for it
    processes = 4 if cache == "disk" else 3
    results = run_together(password_connection(dli_emulator, login_cache=cache), processes)
    assert [ok for ok, _, _ in results] == [True] * processes
    assert dli_emulator.counters.token_requests == expected_requests
    assert token_auth_statuses(dli_emulator) == [200] * processes
    assert [path.name for path in token_folder.glob("*.json")] == ([f"{key_of(dli_emulator)}.json"] * (cache == "disk"))


def test_revoked_token_costs_one_more_request_across_processes(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path
) -> None:
    connection = password_connection(dli_emulator)
    in_process = make_hook(connection)
    batch_id = in_process.create_batch(SUBMIT_BODY)["id"]  # logs in: the token is in memory and on disk
    assert [ok for ok, _, _ in run_together(connection, 3)] == [True] * 3  # read it from disk
    assert dli_emulator.counters.token_requests == 1
    dli_emulator.revoke_tokens()
    assert [ok for ok, _, _ in run_together(connection, 3)] == [True] * 3  # 401 each, one of them logs in
    assert dli_emulator.counters.token_requests == 2
    assert in_process.get_batch_state(batch_id) == "starting"  # 401, then the other processes' new token
    assert dli_emulator.counters.token_requests == 2
    assert token_auth_statuses(dli_emulator)[-2:] == [401, 200]


def test_a_process_waits_for_the_lock_only_about_one_request_long(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_folder.mkdir(mode=0o700)
    with open(token_folder / f"{key_of(dli_emulator)}.lock", "w") as held:  # a process that hangs mid-fetch
        fcntl.flock(held, fcntl.LOCK_EX)
        hook = make_hook(password_connection(dli_emulator), timeout=(0.2, 0.3))
        assert hook.test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    assert any("s for another process's IAM token request" in message for message in warnings_of(caplog))


# What is on disk


def test_files_hold_the_token_and_its_moments_only(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path
) -> None:
    make_hook(password_connection(dli_emulator)).test_connection()
    [token] = dli_emulator._tokens
    key = key_of(dli_emulator)
    assert stat.S_IMODE(token_folder.stat().st_mode) == 0o700
    assert sorted(path.name for path in token_folder.iterdir()) == [f"{key}.json", f"{key}.lock"]
    assert stat.S_IMODE((token_folder / f"{key}.json").stat().st_mode) == 0o600
    content = stored(token_folder, key)
    assert set(content) == {"token", "refresh_at", "expires_at", "final_401_until"}
    assert content["token"] == token
    assert 0 < content["expires_at"] - content["refresh_at"] <= 600  # refreshed 10 minutes ahead
    assert content["final_401_until"] == 0  # not fetched after a 401
    everything = " ".join(path.name + path.read_text() for path in token_folder.iterdir())
    for secret_or_name in (DEFAULT_PASSWORD, DEFAULT_USER, DEFAULT_DOMAIN):
        assert secret_or_name not in everything


@pytest.mark.parametrize("cache", ["disk", "memory"])
def test_a_changed_password_never_reuses_the_old_token(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path, cache: str
) -> None:
    connection = password_connection(dli_emulator, login_cache=cache)
    assert make_hook(connection).test_connection()[0]
    wrong = {**connection, "password": "not-the-password"}
    with pytest.raises(DLIAPIError, match="HTTP 401: 401 - The username or password is wrong"):
        make_hook(wrong).get_batch_state(UNKNOWN_ID)  # a warm cache does not make a wrong password work
    dli_emulator.users[(DEFAULT_DOMAIN, DEFAULT_USER)] = "the-new-password"
    assert make_hook({**connection, "password": "the-new-password"}).test_connection()[0]
    assert dli_emulator.counters.token_requests == 3
    expected = sorted(f"{key_of(dli_emulator, p)}.json" for p in (DEFAULT_PASSWORD, "the-new-password"))
    assert sorted(path.name for path in token_folder.glob("*.json")) == (expected if cache == "disk" else [])


@pytest.mark.parametrize(
    ("refresh_in", "expires_in"),
    [(-10.0, -5.0), (-10.0, 3600.0), (-10.0, 0.0)],
    ids=["expired", "due-for-refresh", "expiring-now"],
)
def test_a_token_is_not_read_when_due_or_expired(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path, refresh_in: float, expires_in: float
) -> None:
    old = dli_emulator.issue_token()  # still accepted by the emulator: only its stored times say "replace me"
    plant(token_folder, key_of(dli_emulator), old, refresh_in=refresh_in, expires_in=expires_in)
    assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    new = stored(token_folder, key_of(dli_emulator))
    assert new["token"] != old
    assert new["refresh_at"] > time.time()


def test_a_fresh_token_on_disk_is_used(dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path) -> None:
    plant(token_folder, key_of(dli_emulator), dli_emulator.issue_token(), refresh_in=3000, expires_in=3600)
    assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    assert dli_emulator.counters.token_requests == 0


# A cache that cannot be used: the in-process cache serves, with one warning


def test_a_corrupt_file_is_reported_once_and_replaced(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_of(dli_emulator)
    token_folder.mkdir(mode=0o700)
    write_file(token_folder / f"{key}.json", b'{"token": "half-writ')
    connection = password_connection(dli_emulator)
    assert make_hook(connection).test_connection()[0]
    [warning] = warnings_of(caplog)
    assert "Replacing the corrupt IAM token file" in warning
    TOKEN_STORE.clear()  # as a new process: the repaired file serves
    assert make_hook(connection).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    assert stored(token_folder, key)["token"] in dli_emulator._tokens


def release_fifo(path: Path) -> None:
    """Give a reader blocked on the FIFO at ``path`` its end of file (nothing to do for anything else)."""
    if stat.S_ISFIFO(path.stat().st_mode):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("name", ["{key}.json", "{key}.lock"], ids=["token-file", "lock-file"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_fifo_or_a_folder_in_place_of_a_file_neither_blocks_nor_fails(
    dli_emulator: DLIEmulator,
    make_hook: MakeHook,
    token_folder: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    kind: str,
) -> None:
    key = key_of(dli_emulator)
    token_folder.mkdir(mode=0o700)
    odd = token_folder / name.format(key=key)
    if kind == "fifo":
        os.mkfifo(odd, 0o600)
    else:
        odd.mkdir(mode=0o700)
    connection = password_connection(dli_emulator)
    for _ in range(3):
        assert connection_checked_within(make_hook(connection), 60, lambda: release_fifo(odd))
    assert dli_emulator.counters.token_requests == 1
    [warning] = warnings_of(caplog)
    assert f"{odd.name} is not a regular file" in warning
    assert "keeps its token in memory only" in warning
    assert stat.S_ISFIFO(odd.stat().st_mode) if kind == "fifo" else odd.is_dir()  # left alone


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[" * 500_000 + b"]" * 500_000, "nested deeper than a token file"),
        (b'{"token": "' + b"[" * 900_000 + b'"}', "not a token file"),  # brackets in a string are no nesting
        (b" " * (2 << 20), "larger than any token file"),
    ],
    ids=["deeply-nested", "brackets-in-a-string", "too-large"],
)
def test_a_file_that_is_no_token_file_is_replaced(
    dli_emulator: DLIEmulator,
    make_hook: MakeHook,
    token_folder: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    problem: str,
) -> None:
    key = key_of(dli_emulator)
    token_folder.mkdir(mode=0o700)
    write_file(token_folder / f"{key}.json", content)
    assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    [warning] = warnings_of(caplog)
    assert "Replacing the corrupt IAM token file" in warning
    assert problem in warning
    assert stored(token_folder, key)["token"] in dli_emulator._tokens


def open_folder(folder: Path, key: str) -> str:
    os.chmod(folder, 0o755)  # noqa: S103 - the defect under test
    return "the folder is open to other users"


def open_file(folder: Path, key: str) -> str:
    os.chmod(folder / f"{key}.json", 0o644)
    return f"{key}.json is open to other users"


def symlinked_file(folder: Path, key: str) -> str:
    target = folder.parent / "elsewhere.json"
    (folder / f"{key}.json").rename(target)
    (folder / f"{key}.json").symlink_to(target)
    return f"{key}.json is a symbolic link"


def foreign_folder(folder: Path, key: str) -> str:
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user")
    os.chown(folder, 65534, 65534)
    return "the folder belongs to another user"


@pytest.mark.parametrize("spoil", [open_folder, open_file, symlinked_file, foreign_folder])
def test_an_untrusted_cache_is_not_read(
    dli_emulator: DLIEmulator,
    make_hook: MakeHook,
    token_folder: Path,
    caplog: pytest.LogCaptureFixture,
    spoil: Callable[[Path, str], str],
) -> None:
    key = key_of(dli_emulator)
    planted = dli_emulator.issue_token()  # valid: had it been read, no token request would be made
    plant(token_folder, key, planted, refresh_in=3000, expires_in=3600)
    problem = spoil(token_folder, key)
    connection = password_connection(dli_emulator)
    for _ in range(3):  # new hooks, as new tasks in one process would create
        assert make_hook(connection).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    [warning] = warnings_of(caplog)
    assert problem in warning
    assert "keeps its token in memory only" in warning
    assert json.loads((token_folder / f"{key}.json").read_text())["token"] == planted  # left alone


def test_a_foreign_folder_is_not_used(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without root, a folder of another user: ``/``, which belongs to root."""
    if os.geteuid() == 0:
        pytest.skip("for root, test_an_untrusted_cache_is_not_read[foreign_folder] covers it")
    monkeypatch.setenv("AIRFLOW__DLI__LOGIN_CACHE_PATH", "/")
    assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    [warning] = warnings_of(caplog)
    assert "the folder belongs to another user" in warning


def test_a_folder_that_cannot_be_created(
    dli_emulator: DLIEmulator,
    make_hook: MakeHook,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Like a worker whose home is not writable: the folder's parent is a file."""
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("AIRFLOW__DLI__LOGIN_CACHE_PATH", str(tmp_path / "not-a-folder" / "iam-tokens"))
    connection = password_connection(dli_emulator)
    for _ in range(3):
        assert make_hook(connection).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    [warning] = warnings_of(caplog)
    assert "cannot be created or opened (Not a directory)" in warning


def test_a_read_only_folder(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; test_a_folder_that_cannot_be_created covers root")
    token_folder.mkdir(mode=0o500)
    try:
        for _ in range(3):
            assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    finally:
        token_folder.chmod(0o700)
    assert dli_emulator.counters.token_requests == 1
    [warning] = warnings_of(caplog)
    assert "cannot be written" in warning


# Turning it off, and its settings


@pytest.mark.parametrize("where", ["extra", "config"])
def test_the_disk_cache_can_be_turned_off(
    dli_emulator: DLIEmulator, make_hook: MakeHook, token_folder: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "config":
        monkeypatch.setenv("AIRFLOW__DLI__LOGIN_CACHE", "memory")
        connection = password_connection(dli_emulator)
    else:
        connection = password_connection(dli_emulator, login_cache="memory")
    for _ in range(3):
        assert make_hook(connection).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1  # the in-process cache still serves
    assert not token_folder.exists()


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (
            {"login_cache": "shared"},
            {},
            r"the extra 'login_cache' of connection .* must be one of \('disk', 'memory'\)",
        ),
        ({}, {"AIRFLOW__DLI__LOGIN_CACHE": "off"}, r"\[dli\] login_cache \(AIRFLOW__DLI__LOGIN_CACHE\) must be one"),
        ({}, {"AIRFLOW__DLI__LOGIN_CACHE_PATH": "relative/dir"}, r"\[dli\] login_cache_path .* an absolute path"),
    ],
)
def test_bad_login_cache_settings_are_named(
    dli_emulator: DLIEmulator,
    make_hook: MakeHook,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        make_hook(password_connection(dli_emulator, **extra)).get_batch_state(UNKNOWN_ID)
    assert dli_emulator.request_log == []


def test_default_folder_is_under_the_users_cache(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sys.platform == "darwin":
        pytest.skip("~/Library/Caches on macOS: this test would write into the user's real cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__DLI__LOGIN_CACHE_PATH")
    assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    folder = tmp_path / "airflow-provider-dli" / "iam-tokens"
    assert token_store.default_folder() == folder
    assert [path.name for path in folder.glob("*.json")] == [f"{key_of(dli_emulator)}.json"]


def test_no_home_folder_keeps_the_token_in_memory(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A container's uid with neither ``HOME`` nor a passwd entry: where ``Path.home()`` fails."""
    import pwd

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "XDG_CACHE_HOME", "AIRFLOW__DLI__LOGIN_CACHE_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for _ in range(3):
        assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    [warning] = warnings_of(caplog)
    assert "no home folder is known" in warning
    assert "keeps its token in memory only" in warning


def test_a_login_cache_path_of_an_unknown_user_keeps_the_token_in_memory_and_names_the_user(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``[dli] login_cache_path = ~etl/...`` is one setting for every component, and ``etl`` may exist on the
    workers alone: on a machine without that user (a DAG processor, the triggerer, or a typo) the hook works, with
    the token in memory and a warning naming the user, never an error that would stop a cancel."""
    monkeypatch.setenv("AIRFLOW__DLI__LOGIN_CACHE_PATH", "~no-such-user-dli/tokens")
    for _ in range(3):
        assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    assert dli_emulator.counters.token_requests == 1
    [warning] = warnings_of(caplog)
    assert "login_cache_path '~no-such-user-dli/tokens' is under '~no-such-user-dli'" in warning
    assert "no user 'no-such-user-dli' here" in warning
    assert "keeps its token in memory only" in warning


HOMELESS_CHILD = """
import json
from airflow_provider_dli.hooks.dli import DLIHook
print(json.dumps([DLIHook(retry_delay=0.01).test_connection()[0] for _ in range(3)]), flush=True)
"""
"""Three checks of the connection in one task process: the second and third take the token from memory."""


def uid_without_passwd_entry() -> int:
    import pwd

    known = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(4242, 65534) if uid not in known)


def test_a_login_cache_path_under_a_missing_home_keeps_the_token_in_memory(
    dli_emulator: DLIEmulator, tmp_path: Path
) -> None:
    """``[dli] login_cache_path = ~/...`` on a worker whose uid has neither ``HOME`` nor a passwd entry (a
    container's): a process that really has no home folder (a user namespace maps it to a uid without a passwd
    entry) checks its connection, with the token in memory and one warning that names the setting."""
    uid = uid_without_passwd_entry()
    unshare = ["unshare", "--user", f"--map-user={uid}"]
    if shutil.which("unshare") is None or subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare and user namespaces, to run a process whose uid has no passwd entry")
    environment = {name: value for name, value in os.environ.items() if name not in ("HOME", "XDG_CACHE_HOME")}
    environment |= {
        "AIRFLOW_CONN_DLI_DEFAULT": json.dumps(password_connection(dli_emulator)),
        "AIRFLOW__DLI__LOGIN_CACHE_PATH": "~/dli-tokens",
        "PYTHONPATH": str(REPO),
    }
    child = subprocess.run(
        [*unshare, sys.executable, "-c", HOMELESS_CHILD],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.splitlines()[-1]) == [True, True, True]
    assert dli_emulator.counters.token_requests == 1
    [warning] = [line for line in (child.stdout + child.stderr).splitlines() if "Not sharing IAM tokens" in line]
    assert "login_cache_path '~/dli-tokens' is under '~', and no home folder is known" in warning
    assert "keeps its token in memory only" in warning
    assert list(tmp_path.iterdir()) == []


def test_a_relative_xdg_cache_home_is_ignored(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The XDG spec: a relative path in ``$XDG_CACHE_HOME`` is invalid and ignored (not resolved against
    whatever folder the process started in)."""
    if sys.platform == "darwin":
        pytest.skip("macOS keeps caches under ~/Library/Caches, whatever XDG_CACHE_HOME says")
    (tmp_path / "home").mkdir()
    (tmp_path / "started-in").mkdir()
    monkeypatch.chdir(tmp_path / "started-in")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative-cache")
    monkeypatch.delenv("AIRFLOW__DLI__LOGIN_CACHE_PATH")
    assert make_hook(password_connection(dli_emulator)).test_connection()[0]
    folder = tmp_path / "home" / ".cache" / "airflow-provider-dli" / "iam-tokens"
    assert token_store.default_folder() == folder
    assert [path.name for path in folder.glob("*.json")] == [f"{key_of(dli_emulator)}.json"]
    assert list((tmp_path / "started-in").iterdir()) == []


# 401s: at most one new token per refused token


def test_a_401_that_a_new_token_did_not_cure_is_final_for_every_process(
    dli_emulator: DLIEmulator, token_folder: Path
) -> None:
    """The pause after a 401 that a brand-new token did not cure lives in the token's file: a process started
    later keeps to it too, instead of dropping the shared token and logging in once more."""
    dli_emulator.add_fault(r".*/batches", method="GET", status=401, times=None)
    connection = password_connection(dli_emulator)
    for started in range(1, 5):
        [(ok, message, _)] = run_together(connection, 1)
        assert not ok
        assert "HTTP 401" in message
        assert dli_emulator.counters.token_requests == 2, f"after {started} process(es)"
    assert stored(token_folder, key_of(dli_emulator))["final_401_until"] > time.time()


def test_a_persistent_401_logs_in_once_more_not_once_per_request(
    dli_emulator: DLIEmulator, make_hook: MakeHook
) -> None:
    hook = make_hook(password_connection(dli_emulator))
    dli_emulator.add_fault(r".*/state", status=401, times=None)
    for _ in range(50):
        with pytest.raises(DLIAPIError, match="HTTP 401"):
            hook.get_batch_state(UNKNOWN_ID)
    assert dli_emulator.counters.token_requests == 2  # the first token, and one after the first 401
    ids = dli_emulator.seed_jobs(40)
    dli_emulator.add_fault(r".*/batches/[^/]+", method="DELETE", status=401, times=None)
    outcomes = make_hook(password_connection(dli_emulator)).cancel_batches(ids)
    # the first refusal stops the bulk cancel (issue 10, item 5): the rest are not tried
    assert [outcome["outcome"] for outcome in outcomes] == ["error"] + ["not_tried"] * 39
    assert dli_emulator.counters.token_requests == 2


def test_a_401_long_after_the_last_new_token_logs_in_again(
    dli_emulator: DLIEmulator, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_store, "REFUSED_AGAIN_PAUSE", 0.0)  # as if the pause had passed
    hook = make_hook(password_connection(dli_emulator))
    dli_emulator.add_fault(r".*/state", status=401, times=None)
    for _ in range(3):
        with pytest.raises(DLIAPIError, match="HTTP 401"):
            hook.get_batch_state(UNKNOWN_ID)
    assert dli_emulator.counters.token_requests == 4  # the first, then one per request

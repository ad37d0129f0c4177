"""A real Airflow deployment on loopback, for end-to-end tests, pointed at a DLI emulator, in one of two
topologies:

- ``local``: api-server, scheduler (LocalExecutor), dag-processor and triggerer, on SQLite;
- ``celery``: the same on PostgreSQL, with the CeleryExecutor, Redis as its broker, and two Celery workers
  started as two machines (:class:`Machine`: each its own ``HOME``, so its own IAM token store, its own
  hostname as Airflow sees it, and a queue of its own).

Reusable by any test module (start it once per module or session; scenarios use their own DAG runs):

    with Deployment(home, dags_folder, emulator) as airflow:
        run_id = airflow.trigger("my_dag")
        airflow.wait_for_task_state("my_dag", run_id, "submit", "running")
        airflow.kill(airflow.task_pid("my_dag", run_id, "submit"))

Everything is event-driven: start-up waits for the api-server's health, a JWT, and the DAGs being parsed;
scenarios wait for states through the REST API and for requests the emulator saw, with generous bounds for a
busy 2-core machine. Every process gets a session (process group) of its own and is ended by its PID (the
group: the LocalExecutor's workers and task processes die with their scheduler), even when a test fails. The
Celery topology's PostgreSQL and Redis listen on loopback only, keep their data in a temporary folder, and are
ended by PID too.

Facts that shape the configuration:
- SimpleAuthManager with all users admins hands out a JWT at ``GET /auth/token``; one ``[api_auth] jwt_secret``
  is shared by all components so that the execution API accepts the workers' tokens.
- ``--skip-serve-logs``: the scheduler's and triggerer's log servers would bind every interface.
- ``[scheduler] task_instance_heartbeat_timeout`` is lowered so that a lost worker is noticed in ~30 s.
- ``[triggerer] triggerer_health_check_threshold`` is lowered so that a second triggerer takes over the
  triggers of a stalled one in ~15 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests

from airflow_provider_dli.emulator import DLIEmulator
from tests.e2e.machines import HOSTNAME_VARIABLE, MACHINES

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_TIMEOUT = 30
"""``[scheduler] task_instance_heartbeat_timeout``: how long a lost worker goes unnoticed."""
TRIGGERER_HEALTH_THRESHOLD = 15
"""``[triggerer] triggerer_health_check_threshold``: how long a stalled triggerer keeps its triggers."""
START_TIMEOUT = 300.0
WAIT_TIMEOUT = 240.0
TOPOLOGIES = ("local", "celery")
CELERY_CONCURRENCY = 4
"""Task slots per Celery worker: 8 mapped tasks cannot all land on one machine."""

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = WAIT_TIMEOUT, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, which is returned; ``timeout`` only bounds a test
    that would otherwise hang."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def parent_pid(pid: int) -> int:
    """The parent of a live process, from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the PID, it names one process, not a reused PID."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc). Task processes and the triggerer's runner get process
    groups of their own, so ending a component's group does not reach them: they are ended by PID too."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                children.setdefault(parent_pid(int(entry.name)), []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid`` and all its descendants, parents first (SIGSTOP a whole component)."""
    for target in [pid, *descendants(pid)]:
        with suppress(ProcessLookupError):
            os.kill(target, sig)


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH, under /usr/lib/postgresql)."""
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return candidates[-1].parent if candidates else None


def celery_topology_missing() -> list[str]:
    """What the Celery topology needs that this machine lacks (``make test`` installs it where it can)."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (the Debian package redis-server)")
    if postgres_bin() is None:
        missing.append("PostgreSQL's server (the Debian package postgresql)")
    for module, distribution in (
        ("airflow.providers.celery", "apache-airflow-providers-celery"),
        ("psycopg2", "psycopg2-binary"),
        ("asyncpg", "asyncpg"),
    ):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{distribution} (the package's 'celery' extra)")
    return missing


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@dataclass
class Component:
    """One started Airflow process (the leader of its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stop_signal: signal.Signals = signal.SIGTERM
    """PostgreSQL's fast shutdown is SIGINT (its SIGTERM waits for every client to leave)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_contains(self, needle: str) -> bool:
        return self.log.exists() and needle in self.log.read_text(errors="replace")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process, then SIGKILL it and every descendant that is left; reap it."""
        family = descendants(self.pid)
        if self.process.poll() is None:
            signal_tree(self.pid, signal.SIGCONT)  # a SIGSTOPped component cannot handle SIGTERM
            with suppress(ProcessLookupError):
                os.killpg(self.pid, self.stop_signal)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        for pid in [*family, *descendants(self.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@dataclass
class Machine:
    """A worker host of the Celery topology: its own ``HOME`` (so its own IAM token store, at the token store's
    default place under ``~/.cache``), ``AIRFLOW_HOME`` and task logs, its own hostname as Airflow sees it
    (``[core] hostname_callable``), and a Celery queue named after it besides ``default``."""

    name: str
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def token_folder(self) -> Path:
        return self.home / ".cache" / "airflow-provider-dli" / "iam-tokens"

    @property
    def component(self) -> str:
        return f"worker-{self.name}"

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "logs"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.machines.hostname",
            HOSTNAME_VARIABLE: self.name,
        }


@dataclass
class Deployment:
    """An Airflow deployment under ``home`` running the DAGs of ``dags_folder`` against ``emulator``."""

    home: Path
    dags_folder: Path
    emulator: DLIEmulator
    extra_config: Mapping[str, str] = field(default_factory=dict)
    topology: str = "local"
    machines: list[Machine] = field(default_factory=list)
    """The Celery workers' machines (none on the local topology, where everything runs on this one)."""
    services: list[Component] = field(default_factory=list)
    _service_urls: dict[str, str] = field(default_factory=dict)
    _scratch: list[Path] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    components: list[Component] = field(default_factory=list)
    task_pids: list[tuple[int, int | None]] = field(default_factory=list)
    """Task processes seen by :meth:`task_pid`: an orphan (its supervisor killed) is ended at :meth:`stop`."""
    _token: str | None = None
    _session: requests.Session = field(default_factory=requests.Session)

    # Life cycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        config = {
            "CORE__DAGS_FOLDER": str(self.dags_folder),
            "CORE__LOAD_EXAMPLES": "False",
            "CORE__EXECUTOR": "LocalExecutor",
            "CORE__PARALLELISM": "8",
            "CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "API__HOST": "127.0.0.1",
            "API__PORT": str(self.port),
            "API__BASE_URL": self.url,
            "API__WORKERS": "1",
            "API_AUTH__JWT_SECRET": self.jwt_secret,
            "SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD),
            "DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "LOGGING__LOGGING_LEVEL": "INFO",
            **self.extra_config,
        }
        if self.topology == "celery":
            config.update(
                CORE__EXECUTOR="CeleryExecutor",
                DATABASE__SQL_ALCHEMY_CONN=self._service_urls["postgres"],
                CELERY__BROKER_URL=self._service_urls["redis"],
                CELERY__RESULT_BACKEND=f"db+{self._service_urls['postgres']}",
                CELERY__WORKER_CONCURRENCY=str(CELERY_CONCURRENCY),
                CELERY__SYNC_PARALLELISM="1",
            )
        env.update({f"AIRFLOW__{key}": value for key, value in config.items()})
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW_CONN_DLI_DEFAULT=json.dumps(self.emulator.connection()),
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> Deployment:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            if self.topology == "celery":
                self._start_services()
            migrate = subprocess.run(
                [AIRFLOW, "db", "migrate"], env=self.env(), capture_output=True, text=True, timeout=600, check=False
            )
            if migrate.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
            self.start_component("api-server", "api-server")
            self.start_component("scheduler", "scheduler", "--skip-serve-logs")
            self.start_component("dag-processor", "dag-processor")
            self.start_component("triggerer", "triggerer", "--skip-serve-logs")
            if self.topology == "celery":
                self.machines = [Machine(name, self.home / name) for name in MACHINES]
                for machine in self.machines:
                    self.start_worker(machine)
            wait_for(self._healthy, "the api-server's health endpoint", START_TIMEOUT, interval=1.0)
            for machine in self.machines:
                self.wait_for_worker(machine)
            self._token = self._new_token()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_services(self) -> None:
        """PostgreSQL and Redis on loopback, their data in a temporary folder; PostgreSQL refuses to run as root,
        so as root it runs as the ``postgres`` user that Debian's package creates."""
        if missing := celery_topology_missing():
            raise RuntimeError(f"the Celery topology needs {', '.join(missing)}")
        postgres = postgres_bin()
        assert postgres is not None
        # Not under pytest's own temporary folder, which only its owner may enter.
        data = Path(tempfile.mkdtemp(prefix="dli-e2e-postgres-"))
        self._scratch.append(data)
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            os.chown(data, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        initdb = [str(postgres / "initdb"), "-D", str(data / "db"), "-U", "airflow", "--auth=trust", "--no-sync"]
        done = subprocess.run(initdb, user=user, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        port = str(free_port())
        settings = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300")
        command = [str(postgres / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1", "-p", port, "-k", str(data)]
        command += [arg for setting in settings for arg in ("-c", setting)]
        self.services.append(self._spawn("postgres", command, dict(os.environ), user, signal.SIGINT))
        ready = [str(postgres / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port]
        wait_for(
            lambda: self._service_ok("postgres") and subprocess.run(ready, check=False).returncode == 0, "PostgreSQL"
        )
        createdb = [str(postgres / "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "airflow", "airflow"]
        subprocess.run(createdb, check=True, capture_output=True, timeout=60)
        self._service_urls["postgres"] = f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"

        redis_port = free_port()
        (self.home / "redis").mkdir()
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(self.home / "redis")]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.services.append(self._spawn("redis", command, dict(os.environ)))
        wait_for(lambda: self._service_ok("redis") and self._accepts(redis_port), "Redis")
        self._service_urls["redis"] = f"redis://127.0.0.1:{redis_port}/0"

    def _service_ok(self, name: str) -> bool:
        [service] = [s for s in self.services if s.name == name]
        if service.process.poll() is not None:
            raise RuntimeError(f"{name} exited at start-up:\n{service.tail()}")
        return True

    @staticmethod
    def _accepts(port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _spawn(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> Component:
        log = self.home / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                env=env,
                user=user,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: ended by PID, with its children
            )
        return Component(name, process, log, stop_signal)

    def start_component(self, name: str, *command: str, machine: Machine | None = None) -> Component:
        env = self.env()
        if machine is not None:
            env.pop("AIRFLOW__DLI__LOGIN_CACHE_PATH", None)  # the token store's default place, under HOME
            env.pop("XDG_CACHE_HOME", None)
            env.update(machine.env())
        component = self._spawn(name, [AIRFLOW, *command], env)
        self.components.append(component)
        return component

    def start_worker(self, machine: Machine) -> Component:
        """A Celery worker on ``machine``: it serves ``default`` and the machine's own queue; no log server (it
        would bind every interface)."""
        machine.home.mkdir(parents=True, exist_ok=True)
        pid_file = machine.root / "worker.pid"
        pid_file.unlink(missing_ok=True)  # a worker killed with SIGKILL leaves it behind
        return self.start_component(
            machine.component,
            *("celery", "worker", "--skip-serve-logs", "--queues", f"default,{machine.name}"),
            *("--concurrency", str(CELERY_CONCURRENCY), "--celery-hostname", f"{machine.name}@e2e"),
            *("--pid", str(pid_file), "--without-gossip", "--without-mingle"),
            machine=machine,
        )

    def wait_for_worker(self, machine: Machine) -> None:
        component = self.component(machine.component)

        def ready() -> bool:
            if component.process.poll() is not None:
                raise RuntimeError(f"{component.name} exited at start-up:\n{component.tail()}")
            return component.log_contains(" ready.")

        wait_for(ready, f"the Celery worker on {machine.name}", START_TIMEOUT, interval=0.5)

    def component(self, name: str) -> Component:
        [component] = [c for c in self.components if c.name == name]
        return component

    def stop_component(self, name: str) -> None:
        component = self.component(name)
        component.stop()
        self.components.remove(component)

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()
        self.components.clear()
        for pid, started in self.task_pids:
            if started is not None and start_time(pid) == started:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
        self._session.close()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def diagnostics(self) -> str:
        """The last lines of every component's log: for a failing test's report."""
        return "\n".join(f"----- {c.name} (pid {c.pid}) -----\n{c.tail()}" for c in self.components)

    @property
    def token_folders(self) -> list[Path]:
        """Where each machine that runs tasks keeps its IAM tokens."""
        if self.machines:
            return [machine.token_folder for machine in self.machines]
        return [Path(self.extra_config["DLI__LOGIN_CACHE_PATH"])]

    def machine_running(self, pid: int) -> Machine | None:
        """The Celery worker machine that runs this (task) process; None on the local topology."""
        for machine in self.machines:
            if pid in descendants(self.component(machine.component).pid):
                return machine
        return None

    def lose_worker_of(self, task_pid: int) -> None:
        """The worker that runs this task is lost at once (SIGKILL, a machine gone): on the local topology the
        task's supervisor and the task process; on the Celery topology the whole worker, its children too."""
        machine = self.machine_running(task_pid)
        if machine is None:
            self.kill(parent_pid(task_pid), task_pid)
        else:
            signal_tree(self.component(machine.component).pid, signal.SIGKILL)

    def restore_workers(self) -> None:
        """Start again every Celery worker that a scenario ended, and wait until it serves."""
        for machine in self.machines:
            worker = self.component(machine.component)
            if worker.process.poll() is None:
                continue
            self.stop_component(machine.component)
            self.start_worker(machine)
            self.wait_for_worker(machine)

    # REST API

    def _healthy(self) -> bool:
        for component in self.components:
            if component.process.poll() is not None:
                raise RuntimeError(f"{component.name} exited at start-up:\n{component.tail()}")
        try:
            return self._session.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _new_token(self) -> str:
        response = self._session.get(f"{self.url}/auth/token", timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        """One REST API call (``/api/v2`` + ``path``) with the JWT; a fresh token when it expired."""
        for attempt in range(2):
            response = self._session.request(
                method,
                f"{self.url}/api/v2{path}",
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=60,
            )
            if response.status_code == 401 and attempt == 0:
                self._token = self._new_token()
                continue
            break
        if response.status_code not in expect:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dags(self, *dag_ids: str) -> None:
        """Until the DAG processor has parsed these DAGs and they are unpaused."""

        for dag_id in dag_ids:

            def parsed(dag_id: str = dag_id) -> bool:
                return bool(self.api("GET", f"/dags/{dag_id}", expect=(200, 404)).get("dag_id") == dag_id)

            wait_for(parsed, f"DAG {dag_id} to be parsed", START_TIMEOUT, 1.0)
            self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str | None = None, conf: Mapping[str, Any] | None = None) -> str:
        run_id = run_id or f"e2e_{int(time.time() * 1000)}_{secrets.token_hex(2)}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        self.api("POST", f"/dags/{dag_id}/dagRuns", body)
        return run_id

    def delete_run(self, dag_id: str, run_id: str) -> None:
        """What a person does in the UI: delete a DAG run (Airflow deletes only a run that is queued or ended)."""
        self.api("DELETE", f"/dags/{dag_id}/dagRuns/{run_id}", expect=(204,))

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return result

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        state: str | None = self.task_instance(dag_id, run_id, task_id)["state"]
        return state

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, *states: str, timeout: float = WAIT_TIMEOUT
    ) -> str:
        def reached() -> str | None:
            state = self.task_state(dag_id, run_id, task_id)
            return state if state in states else None

        return wait_for(reached, f"{dag_id}/{run_id}/{task_id} to be {' or '.join(states)}", timeout)

    def wait_for_run_state(self, dag_id: str, run_id: str, *states: str, timeout: float = WAIT_TIMEOUT) -> str:
        def reached() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in states else None

        return wait_for(reached, f"DAG run {dag_id}/{run_id} to be {' or '.join(states)}", timeout)

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What a person does in the UI: mark a task instance failed or success."""
        self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state})

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        body = {"dag_run_id": run_id, "task_ids": [task_id], "dry_run": False, "only_failed": False}
        self.api("POST", f"/dags/{dag_id}/clearTaskInstances", body)

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", {"state": state})

    def wait_for_deferral_processed(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Until the scheduler has processed the executor's report of the worker that deferred this task.

        The report comes seconds after the deferral (the supervisor notices its task process's exit up to
        ``[workers] min_heartbeat_interval`` late). A trigger that fires before then lets Airflow 3.3.2 fail the
        resumed task on that stale report ("state mismatch", apache/airflow#67287 and #72716; the README's
        known limits): a scenario that ends a deferred job on purpose waits for this first."""
        line = re.compile(
            rf"TaskInstance Finished: dag_id={re.escape(dag_id)}, task_id={re.escape(task_id)}, "
            rf"run_id={re.escape(run_id)}, .*? state=deferred, executor="
        )
        scheduler = self.component("scheduler")
        wait_for(
            lambda: any(line.search(text) for text in iter_lines(scheduler.log)),
            f"the scheduler to process the deferral of {dag_id}/{run_id}/{task_id}",
            interval=0.5,
        )

    def audit_events(self, dag_id: str, run_id: str, event: str) -> list[dict[str, Any]]:
        """The audit log's entries of one kind for one DAG run (what the UI's "Audit Log" shows)."""
        query = urlencode({"dag_id": dag_id, "run_id": run_id, "event": event, "limit": 100})
        entries: list[dict[str, Any]] = self.api("GET", f"/eventLogs?{query}")["event_logs"]
        return entries

    # Processes

    def task_pid(self, dag_id: str, run_id: str, task_id: str) -> int:
        """The PID of the task process (the one that runs the operator); its parent is the supervisor."""

        def pid() -> int | None:
            value = self.task_instance(dag_id, run_id, task_id).get("pid")
            return None if value is None else int(value)

        found = wait_for(pid, f"the pid of {dag_id}/{run_id}/{task_id}")
        self.task_pids.append((found, start_time(found)))
        return found

    @staticmethod
    def kill(*pids: int, sig: signal.Signals = signal.SIGKILL) -> None:
        for pid in pids:
            os.kill(pid, sig)


def cancels_of(emulator: DLIEmulator, batch_id: str) -> list[float]:
    """When DLI received each accepted DELETE of this job (epoch seconds)."""
    return [event.at for event in emulator.cancel_events if event.batch_id == batch_id]


def state_reads_of(emulator: DLIEmulator, batch_id: str, since: float = 0.0) -> int:
    """How many state reads of this job DLI has answered since ``since`` (epoch seconds)."""
    path = f"/batches/{batch_id}/state"
    return sum(r.path.endswith(path) and r.status == 200 and r.at >= since for r in emulator.request_log)


def jobs_named(emulator: DLIEmulator, prefix: str) -> list[str]:
    """Ids of the jobs whose name starts with ``prefix``, oldest first."""
    jobs = sorted(emulator.jobs.values(), key=lambda job: job.created)
    return [job.id for job in jobs if str(job.body.get("name") or "").startswith(prefix)]


def iter_lines(path: Path) -> Iterator[str]:
    if path.exists():
        yield from path.read_text(errors="replace").splitlines()

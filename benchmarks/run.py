"""``make bench``: the provider's costs, each measured in the same run beside what it is compared with.

Every figure runs against the local DLI emulator, in its own process so that the server does not share the
client's interpreter. Timings are medians after a warm-up; memory is the client's peak of Python
allocations (tracemalloc), measured in separate, shorter runs, since tracing slows the timed ones.
The results go to stdout and to ``.bench/results.md``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = REPO / ".bench"
IMPORT_RUNS = 15
CALLS = 1000
ROUNDS = 5  # the calls of each contender are split into rounds, interleaved, so drift hits all alike
BULK_JOBS = 500
SEED = {"file": "obs://emulator/seed.jar", "className": "Seed", "name": "seed"}
LATENCY = 0.020
RATE_LIMIT = 50.0

os.environ.setdefault("AIRFLOW_HOME", str(OUT / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@dataclass
class Row:
    figure: str
    ours: str
    compared_with: str
    ratio: str
    target: str
    met: bool | None


@dataclass
class Emulator:
    url: str
    connection: dict[str, Any]

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urlopen(request, timeout=60) as response:
            return json.load(response)

    def seed(self, count: int) -> list[str]:
        ids: list[str] = self.control("POST", "/_emulator/jobs", {"count": count})["ids"]
        return ids


@contextmanager
def emulator(*args: str) -> Iterator[Emulator]:
    process = subprocess.Popen(
        [str(BIN / "dli-emulator"), "--port", "0", "--running-seconds", "36000", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().split()[4]
    connection = json.loads(process.stdout.readline().split("=", 1)[1].strip().strip("'"))
    try:
        yield Emulator(url, connection)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def use_connection(connection: dict[str, Any]) -> None:
    os.environ["AIRFLOW_CONN_DLI_DEFAULT"] = json.dumps(connection)


def call_each(call: Callable[[Any], None], jobs: list[Any]) -> None:
    for job in jobs:
        call(job)


def peak_kib(action: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


# 1. Import cost of the operator module, on top of airflow.sdk, beside Livy's

IMPORT_PROBE = """
import time, tracemalloc
from airflow.sdk import DAG, BaseOperator  # what a DAG file imports anyway
if {traced}:
    tracemalloc.start()
started = time.perf_counter()
import {module}
print(tracemalloc.get_traced_memory()[1] if {traced} else time.perf_counter() - started)
"""


def import_cost(module: str) -> tuple[float, float]:
    """Median seconds and peak KiB that importing ``module`` adds, each in a fresh interpreter."""

    def probe(traced: bool) -> float:
        code = IMPORT_PROBE.format(module=module, traced=traced)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(result.stdout.split()[-1])

    probe(traced=False)  # warms the disk cache
    seconds = statistics.median(probe(traced=False) for _ in range(IMPORT_RUNS))
    return seconds, probe(traced=True) / 1024


def bench_imports(rows: list[Row]) -> None:
    ours, ours_kib = import_cost("airflow_provider_dli.operators.dli")
    livy, livy_kib = import_cost("airflow.providers.apache.livy.operators.livy")
    rows.append(
        Row(
            "import the operator module after airflow.sdk",
            f"{ours * 1000:.1f} ms",
            f"Livy's operator: {livy * 1000:.1f} ms",
            f"{ours / livy:.3f}",
            "<= 0.10",
            ours / livy <= 0.10,
        )
    )
    rows.append(Row("  peak memory of that import", f"{ours_kib:.0f} KiB", f"Livy: {livy_kib:.0f} KiB", "", "", None))


# 2. Per-call cost of cancel_batch beside a raw pre-signed DELETE and the vendor SDK


def bench_per_call(rows: list[Row]) -> None:
    import requests
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkdli.v1 import CancelSparkJobRequest, DliClient

    from airflow_provider_dli.client import signing
    from airflow_provider_dli.hooks.dli import DLIHook

    with emulator() as dli:
        use_connection(dli.connection)
        project = dli.connection["extra"]["project_id"]
        hook = DLIHook()
        raw = requests.Session()
        credentials = BasicCredentials(dli.connection["login"], dli.connection["password"], project)
        vendor = DliClient.new_builder().with_credentials(credentials).with_endpoints([dli.url]).build()

        def presigned(batch_id: str) -> tuple[str, dict[str, str]]:
            url = f"{dli.url}/v2.0/{project}/batches/{batch_id}"
            headers = {"Content-Type": "application/json", "X-Project-Id": project, "X-Sdk-Date": signing.sdk_date()}
            login, password = dli.connection["login"], dli.connection["password"]
            return url, signing.sign_request("DELETE", url, headers, b"", access_key=login, secret_key=password)

        def call_raw(job: tuple[str, dict[str, str]]) -> None:
            raw.delete(job[0], headers=job[1], timeout=10).raise_for_status()

        def call_ours(batch_id: str) -> None:
            hook.cancel_batch(batch_id)

        def call_vendor(batch_id: str) -> None:
            vendor.cancel_spark_job(CancelSparkJobRequest(batch_id=batch_id))

        contenders: dict[str, tuple[Callable[[Any], None], Callable[[str], Any]]] = {
            "raw": (call_raw, presigned),
            "ours": (call_ours, str),
            "vendor": (call_vendor, str),
        }
        timings: dict[str, list[float]] = {name: [] for name in contenders}
        for call, prepare in contenders.values():  # warm-up: connections, caches, lazy imports
            for batch_id in dli.seed(50):
                call(prepare(batch_id))
        per_round = CALLS // ROUNDS
        for _ in range(ROUNDS):
            for name, (call, prepare) in contenders.items():
                jobs = [prepare(batch_id) for batch_id in dli.seed(per_round)]  # signing is outside the timer
                for job in jobs:
                    started = time.perf_counter()
                    call(job)
                    timings[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) for name, values in timings.items()}
        memory = {}
        for name, (call, prepare) in contenders.items():
            jobs = [prepare(batch_id) for batch_id in dli.seed(200)]
            memory[name] = peak_kib(partial(call_each, call, jobs))
    us = {name: value * 1e6 for name, value in medians.items()}
    rows.append(
        Row(
            f"cancel_batch, median of {CALLS} calls",
            f"{us['ours']:.0f} us",
            f"raw pre-signed requests DELETE: {us['raw']:.0f} us",
            f"{medians['ours'] / medians['raw']:.2f}",
            "<= 1.10",
            medians["ours"] / medians["raw"] <= 1.10,
        )
    )
    rows.append(
        Row(
            "",
            "",
            f"vendor SDK cancel_spark_job: {us['vendor']:.0f} us",
            f"{medians['ours'] / medians['vendor']:.2f}",
            "<= 0.90",
            medians["ours"] / medians["vendor"] <= 0.90,
        )
    )
    rows.append(
        Row(
            "  peak memory of 200 of those calls",
            f"{memory['ours']:.0f} KiB",
            f"raw: {memory['raw']:.0f} KiB, vendor SDK: {memory['vendor']:.0f} KiB",
            "",
            "",
            None,
        )
    )


# 3. IAM token requests: across fresh processes (each Airflow task is one), and the cost of a token look-up

TOKEN_PROCESSES = 200
TOKEN_WAVE = 8  # processes alive at once, as a worker's concurrent task slots
LOOKUPS = 2000
LOGINS = 200


def password_connection(dli: Emulator, cache: str = "disk") -> dict[str, Any]:
    extra = dict(dli.connection["extra"], auth_type="password", domain_name="emulator", iam_endpoint=dli.url)
    if cache != "disk":  # the default
        extra["login_cache"] = cache
    return dict(dli.connection, login="airflow", password="emulator-password", extra=extra)


def cancel_in_a_new_process(connection: dict[str, Any], batch_id: str) -> None:
    """A task process in miniature: a new hook, one cancel (run in a process forked from the fork server)."""
    from airflow_provider_dli.hooks.dli import DLIHook

    use_connection(connection)
    DLIHook().cancel_batch(batch_id)


def token_requests_of_processes(dli: Emulator, cache: str) -> int:
    """IAM token requests for TOKEN_PROCESSES processes that each cancel one job, TOKEN_WAVE at a time."""
    import multiprocessing

    connection = password_connection(dli, cache)
    # Each process is forked from a server that imported the hook but never asked for a token, as Airflow's
    # supervisor forks task processes: a fresh process whose in-process cache is empty.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["airflow_provider_dli.hooks.dli"])
    before = int(dli.control("GET", "/_emulator/state")["token_requests"])
    ids = dli.seed(TOKEN_PROCESSES)
    for wave in range(0, len(ids), TOKEN_WAVE):
        processes = [
            context.Process(target=cancel_in_a_new_process, args=(connection, i)) for i in ids[wave : wave + TOKEN_WAVE]
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
            assert process.exitcode == 0, f"a cancel failed in its process (exit code {process.exitcode})"
    return int(dli.control("GET", "/_emulator/state")["token_requests"]) - before


def median_us(action: Callable[[], object], prepare: Callable[[], object] = lambda: None, runs: int = LOOKUPS) -> float:
    timings = []
    for _ in range(runs):
        prepare()
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def bench_tokens(rows: list[Row]) -> None:
    import tempfile

    from airflow_provider_dli.client.token_store import TOKEN_STORE
    from airflow_provider_dli.hooks.dli import DLIHook

    # A folder of this run's own: from a cold cache, and never the user's real one. Set before the fork server
    # starts, which passes its environment on to every process.
    os.environ["AIRFLOW__DLI__LOGIN_CACHE_PATH"] = tempfile.mkdtemp(prefix="dli-bench-tokens-")
    with emulator() as dli:
        shared = token_requests_of_processes(dli, "disk")
        alone = token_requests_of_processes(dli, "memory")

        use_connection(password_connection(dli))
        os.environ["AIRFLOW__DLI__LOGIN_CACHE_PATH"] = tempfile.mkdtemp(prefix="dli-bench-tokens-")  # cold again
        TOKEN_STORE.clear()
        ids = dli.seed(CALLS)
        before = int(dli.control("GET", "/_emulator/state")["token_requests"])
        for batch_id in ids:
            DLIHook().cancel_batch(batch_id)  # a new hook per cancel, one process
        one_process = int(dli.control("GET", "/_emulator/state")["token_requests"]) - before

        tokens = DLIHook().client.tokens
        assert tokens is not None
        tokens.token()
        in_memory = median_us(tokens.token)
        from_disk = median_us(tokens.token, prepare=TOKEN_STORE.clear)  # as a new process's first call
        login = median_us(tokens.fetch, runs=LOGINS)
    rows.append(
        Row(
            f"IAM token requests of {TOKEN_PROCESSES} fresh processes, one cancel each (password auth)",
            str(shared),
            f"disk cache off (login_cache: memory): {alone}",
            "",
            "exactly 1",
            shared == 1,
        )
    )
    rows.append(
        Row(
            f"  IAM token requests of {CALLS} cancels in one process, a new hook each",
            str(one_process),
            "",
            "",
            "exactly 1",
            one_process == 1,
        )
    )
    rows.append(
        Row(
            f"IAM token look-up, median of {LOOKUPS}: in-process cache (every call)",
            f"{in_memory:.1f} us",
            f"a login to the local emulator (median of {LOGINS}): {login:.0f} us",
            "",
            "",
            None,
        )
    )
    rows.append(
        Row(
            "  from the disk cache (once per process: its first call)",
            f"{from_disk:.0f} us",
            f"a login to the local emulator: {login:.0f} us",
            f"{from_disk / login:.4f}",
            "<= 0.05",
            from_disk / login <= 0.05,
        )
    )


# 4. Bulk cancel of 500 jobs with 20 ms of latency per request


def bench_bulk(rows: list[Row]) -> None:
    from airflow_provider_dli.hooks.dli import DLIHook

    with emulator("--latency", str(LATENCY)) as dli:
        use_connection(dli.connection)
        hook = DLIHook()
        hook.cancel_batch(dli.seed(1)[0])  # warm-up
        ids = dli.seed(BULK_JOBS)
        started = time.perf_counter()
        outcomes = hook.cancel_batches(ids)
        concurrent = time.perf_counter() - started
        assert all(outcome["outcome"] == "cancelled" for outcome in outcomes)
        ids = dli.seed(BULK_JOBS)
        started = time.perf_counter()
        for batch_id in ids:
            hook.cancel_batch(batch_id)
        one_by_one = time.perf_counter() - started
        concurrent_kib = peak_kib(lambda: hook.cancel_batches(dli.seed(BULK_JOBS)))
    rows.append(
        Row(
            f"cancel_batches of {BULK_JOBS} jobs, {LATENCY * 1000:.0f} ms latency",
            f"{concurrent:.2f} s",
            f"one by one: {one_by_one:.2f} s",
            f"{concurrent / one_by_one:.3f}",
            "< 1.5 s",
            concurrent < 1.5,
        )
    )
    rows.append(Row("  peak memory of the concurrent cancel", f"{concurrent_kib:.0f} KiB", "", "", "", None))


# 5. One orphan sweep of a project with 10,000 jobs in its history, 1,000 of them live

SWEEP_HISTORY = 10_000
SWEEP_LIVE = 1_000
SWEEP_DAGS = 50  # the live jobs' owners: 50 DAGs x 20 runs, one submit task each
SWEEP_ORPHANS = 100  # owners whose task failed


class AirflowAnswers:
    """What Airflow's execution API answers the sweeper's Task SDK calls with, from a table: this figure
    measures the sweep's DLI side and its own work; each call is counted (on a worker, each is one request
    from the supervisor to the API server)."""

    def __init__(self, task_states: dict[str, dict[str, dict[str, str]]]) -> None:
        self.states = task_states
        self.calls = 0

    def get_task_states(
        self,
        dag_id: str,
        *,
        map_index: int | None = None,
        task_ids: list[str] | None = None,
        run_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        self.calls += 1
        runs = self.states.get(dag_id, {})
        return {run_id: runs[run_id] for run_id in run_ids or runs if run_id in runs}

    def get_dr_count(self, dag_id: str, *, run_ids: list[str] | None = None, states: list[str] | None = None) -> int:
        self.calls += 1
        return 0

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        self.calls += 1
        return "running"


def bench_sweep(rows: list[Row]) -> None:
    from datetime import timedelta

    from airflow_provider_dli.hooks.dli import DLIHook
    from airflow_provider_dli.identity import OWNER_CONF_KEY, JobOwner
    from airflow_provider_dli.reconcile import sweep

    finished = {"conf": {"dli.emulator.starting_seconds": 0, "dli.emulator.running_seconds": 0}}
    states: dict[str, dict[str, dict[str, str]]] = {}
    with emulator("--latency", str(LATENCY)) as dli:
        use_connection(dli.connection)
        dli.control("POST", "/_emulator/jobs", {"count": SWEEP_HISTORY - SWEEP_LIVE, "body": {**SEED, **finished}})
        for n in range(SWEEP_LIVE):
            dag_id, run_id = f"dag_{n % SWEEP_DAGS}", f"scheduled__2026-01-{n // SWEEP_DAGS + 1:02d}T00:00:00+00:00"
            owner = JobOwner("airflow", dag_id, run_id, "submit", -1, 1, True)
            states.setdefault(dag_id, {})[run_id] = {"submit": "failed" if n < SWEEP_ORPHANS else "running"}
            body = {**SEED, "name": f"airflow.{dag_id}.{run_id}.submit", "conf": {OWNER_CONF_KEY: owner.conf_value()}}
            dli.control("POST", "/_emulator/jobs", {"count": 1, "body": body})

        def one_sweep(list_only: bool) -> tuple[float, int, int]:
            airflow = AirflowAnswers(states)
            before = dli.control("GET", "/_emulator/state")["requests"]
            started = time.perf_counter()
            report = sweep(DLIHook(), airflow, instance_id="airflow", grace_period=timedelta(0), list_only=list_only)
            seconds = time.perf_counter() - started
            assert report.live_jobs == SWEEP_LIVE, (report.live_jobs, report.not_ours, len(report.orphans))
            assert len(report.orphans) == SWEEP_ORPHANS
            return seconds, dli.control("GET", "/_emulator/state")["requests"] - before, airflow.calls

        timings = [one_sweep(list_only=True) for _ in range(3)]
        dry_seconds = statistics.median(t[0] for t in timings)
        dry_kib = peak_kib(
            lambda: sweep(
                DLIHook(), AirflowAnswers(states), instance_id="airflow", grace_period=timedelta(0), list_only=True
            )
        )
        seconds, requests_sent, airflow_calls = one_sweep(list_only=False)
        naive_pages = SWEEP_HISTORY // 100
    lists = requests_sent - SWEEP_ORPHANS
    rows.append(
        Row(
            f"one sweep: {SWEEP_HISTORY:,} jobs in history, {SWEEP_LIVE:,} live, {SWEEP_ORPHANS} orphans, "
            f"{LATENCY * 1000:.0f} ms latency",
            f"{seconds:.2f} s",
            f"dry run (no cancels): {dry_seconds:.2f} s",
            "",
            "< 3 s",
            seconds < 3,
        )
    )
    rows.append(
        Row(
            "  DLI requests of that sweep",
            f"{requests_sent} ({lists} list pages + {SWEEP_ORPHANS} cancels)",
            f"paging through the history: {naive_pages} list pages",
            f"{lists / naive_pages:.2f}",
            f"<= {SWEEP_LIVE // 100 + 3} list pages",
            lists <= SWEEP_LIVE // 100 + 3,
        )
    )
    rows.append(
        Row(
            "  Task SDK calls to Airflow",
            f"{airflow_calls}",
            f"one per job: {SWEEP_LIVE}",
            f"{airflow_calls / SWEEP_LIVE:.2f}",
            f"<= {SWEEP_DAGS} (one per DAG)",
            airflow_calls <= SWEEP_DAGS,
        )
    )
    rows.append(
        Row("  peak memory of a dry-run sweep", f"{dry_kib / 1024:.1f} MiB", "", "", "< 8 MiB", dry_kib < 8 * 1024)
    )


# 6. Bulk cancel under DLI's rate limit (429 APIGW.0308), with and without Retry-After


def bench_rate_limit(rows: list[Row]) -> None:
    from airflow_provider_dli.hooks.dli import DLIHook

    bound = BULK_JOBS / RATE_LIMIT
    for retry_after in (True, False):
        flags = ["--latency", str(LATENCY), "--rate-limit", str(RATE_LIMIT)]
        with emulator(*flags, *([] if retry_after else ["--no-retry-after"])) as dli:
            use_connection(dli.connection)
            ids = dli.seed(BULK_JOBS)
            started = time.perf_counter()
            outcomes = DLIHook().cancel_batches(ids)
            seconds = time.perf_counter() - started
            throttled = dli.control("GET", "/_emulator/state")["throttled"]
        errors = sum(outcome["outcome"] != "cancelled" for outcome in outcomes)
        rows.append(
            Row(
                f"cancel_batches of {BULK_JOBS} jobs against a {RATE_LIMIT:g} requests/s limit, "
                + ("429s with Retry-After" if retry_after else "429s without Retry-After"),
                f"{seconds:.2f} s, {errors} errors ({throttled} 429s)",
                f"the limit's bound: {bound:g} s",
                f"{seconds / bound:.2f}",
                "<= 1.15, 0 errors",
                seconds / bound <= 1.15 and errors == 0,
            )
        )


def machine() -> str:
    import airflow

    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, Airflow {airflow.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


BENCHES = {
    "imports": bench_imports,
    "per_call": bench_per_call,
    "tokens": bench_tokens,
    "bulk": bench_bulk,
    "sweep": bench_sweep,
    "rate_limit": bench_rate_limit,
}


def main() -> int:
    """``run.py [NAME ...]``: all benchmarks, or those named (imports, per_call, tokens, bulk, sweep, rate_limit)."""
    OUT.mkdir(exist_ok=True)
    rows: list[Row] = []
    for bench in [BENCHES[name] for name in sys.argv[1:]] or BENCHES.values():
        print(f"running {bench.__name__}...", file=sys.stderr, flush=True)
        bench(rows)
    lines = [
        f"`make bench` on {time.strftime('%Y-%m-%d')}, {machine()}",
        "",
        "| figure | ours | compared with | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.figure} | {row.ours} | {row.compared_with} | {row.ratio} | {row.target} | {met} |")
    report = "\n".join(lines)
    print(report)
    (OUT / "results.md").write_text(report + "\n")
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

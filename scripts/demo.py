"""``make demo``: run example DAG (a) with the real ``airflow dags test`` against the local DLI emulator.

A throwaway AIRFLOW_HOME (SQLite) under ``.demo/``, the emulator in its own process on a free port, the
connection ``dli_default`` pointed at it, and a short summary of what happened to the Spark job. The
emulator is stopped however the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.request import urlopen

REPO = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("DLI_DEMO_DIR", REPO / ".demo"))
DAG_ID = "example_dli_cancel_on_failure"
FAILING_TASK = "check_source_data"
BIN = Path(sys.executable).parent


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def airflow(*args: str, env: dict[str, str], log: Path) -> int:
    with log.open("a") as output:
        command = [str(BIN / "airflow"), *args]
        return subprocess.run(command, env=env, stdout=output, stderr=output, check=False).returncode


def start_emulator() -> tuple[subprocess.Popen[str], str, dict[str, Any]]:
    # Jobs run for 10 minutes, as real Spark jobs would: long enough that only a cancel ends them here.
    process = subprocess.Popen(
        [str(BIN / "dli-emulator"), "--port", "0", "--starting-seconds", "1", "--running-seconds", "600"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    if not ready.startswith("DLI emulator listening on "):
        process.kill()
        raise SystemExit(f"the emulator did not start: {ready!r}")
    url = ready.split()[4]
    connection = json.loads(process.stdout.readline().split("=", 1)[1].strip().strip("'"))
    return process, url, connection


def stop_emulator(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def failure_time(database: Path) -> datetime | None:
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT end_date FROM task_instance WHERE dag_id = ? AND task_id = ? AND state = 'failed'",
            (DAG_ID, FAILING_TASK),
        ).fetchone()
    return datetime.fromisoformat(row[0]).replace(tzinfo=UTC) if row and row[0] else None


def summarize(state: dict[str, Any], failed_at: datetime | None, log: Path) -> bool:
    jobs = state["jobs"]
    if len(jobs) != 1:
        print(f"Expected one batch job, found {len(jobs)}: see {log}")
        return False
    job = jobs[0]
    events = [event for event in state["cancel_events"] if event["batch_id"] == job["id"]]
    print()
    print(f"  DLI batch job     {job['id']}")
    print(f"  job name          {job['name']}")
    if not events:
        print(f"  state             {job['state']} (it was NOT cancelled: see {log})")
        return False
    event = events[0]
    caller = event["user_agent"].partition("(")[2].rstrip(")") or event["user_agent"]
    print(f"  state             {event['state_before']} before the cancel -> {job['state']} now")
    print(f"  cancelled by      {caller} (DLICancelBatchNotifier)")
    if failed_at is not None:
        delay_ms = (event["at"] - failed_at.timestamp()) * 1000
        if delay_ms >= 0:
            print(f"  cancelled         {delay_ms:.0f} ms after Airflow marked {FAILING_TASK} failed")
        else:  # the failure callback runs before the task's end is recorded
            print(f"  cancelled         during {FAILING_TASK}'s failure handling, {-delay_ms:.0f} ms before Airflow")
            print("                    had even recorded the task as failed")
    print(f"  Airflow log       {log}")
    print()
    return str(job["state"]) == "dead"


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    home = DEMO / "airflow"
    home.mkdir(parents=True)
    log = DEMO / "airflow.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    step(f"Preparing a throwaway Airflow (SQLite) in {home}")
    if airflow("db", "migrate", env=env, log=log) != 0:
        print(f"airflow db migrate failed: see {log}")
        return 1
    step("Starting the local DLI emulator")
    process, url, connection = start_emulator()
    try:
        print(f"    {url}, project {connection['extra']['project_id']}")
        env["AIRFLOW_CONN_DLI_DEFAULT"] = json.dumps(connection)
        step(f"airflow dags test {DAG_ID}  (submits a Spark job, then its input check fails)")
        started = time.monotonic()
        code = airflow("dags", "test", DAG_ID, env=env, log=log)
        print(f"    the DAG run {'failed, as designed' if code else 'succeeded'} in {time.monotonic() - started:.1f} s")
        with urlopen(f"{url}/_emulator/state", timeout=10) as response:  # noqa: S310 - the local emulator
            state = json.load(response)
        ok = summarize(state, failure_time(home / "airflow.db"), log)
    finally:
        stop_emulator(process)
        step("Emulator stopped")
    print("The batch job was cancelled by the DAG." if ok else "The demo did not end as expected.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a person reads while a job runs (a line per change of state, heartbeats with the time waited, in the
worker and in the triggerer alike), and the provider's metrics as a StatsD server receives them: each through a
real ``airflow dags test`` run against the emulator."""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.metrics import METRICS, count
from tests.airflow_cli import AirflowHome, migrated_home
from tests.conftest import state_polls, wait_until

TEST_DAGS = Path(__file__).parent / "dags"
SQL_DAGS = Path(__file__).parent / "sql_dags"


def progress_lines(output: str, batch_id: str) -> list[str]:
    """The wait's own lines about the job, each reduced to its words (``is running``, ``is still running``)."""
    pattern = re.compile(rf"DLI batch job {batch_id} (is (?:still )?\w+) \(waited \d+[smh]")
    return [match.group(1) for match in pattern.finditer(output)]


@pytest.mark.parametrize("dag_id", ["dli_test_progress", "dli_test_progress_deferred"])
def test_a_wait_logs_each_change_of_state_and_a_heartbeat(
    dag_id: str, dli_emulator: DLIEmulator, airflow_home: AirflowHome
) -> None:
    result = airflow_home.run(
        "dags", "test", dag_id, dags_folder=TEST_DAGS, emulator=dli_emulator, AIRFLOW__DLI__PROGRESS_LOG_INTERVAL="1"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    [batch_id] = dli_emulator.jobs
    lines = progress_lines(output, batch_id)
    # One line when each state begins, then heartbeats (a state lasts 3 s, a heartbeat comes every second).
    assert lines[0] == "is starting"
    assert lines.count("is starting") == lines.count("is running") == 1
    assert "is still starting" in lines
    assert "is still running" in lines
    assert lines.index("is running") > lines.index("is still starting")
    # Not a line per poll: the task polled five times a second.
    assert len(lines) < state_polls(dli_emulator) / 2
    assert f"DLI batch job {batch_id} is running\n" not in output  # the old line per poll, without the time


def test_a_bad_interval_fails_the_task_before_it_submits(dli_emulator: DLIEmulator, airflow_home: AirflowHome) -> None:
    result = airflow_home.run(
        "dags",
        "test",
        "dli_test_progress",
        dags_folder=TEST_DAGS,
        emulator=dli_emulator,
        AIRFLOW__DLI__PROGRESS_LOG_INTERVAL="often",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "[dli] progress_log_interval (AIRFLOW__DLI__PROGRESS_LOG_INTERVAL) must be a number of seconds" in output
    assert dli_emulator.jobs == {}


def test_one_short_summary_per_cancel_and_a_table_on_lines_of_its_own(
    dli_emulator: DLIEmulator, airflow_home: AirflowHome
) -> None:
    result = airflow_home.run("dags", "test", "dli_test_cancel_summary", dags_folder=TEST_DAGS, emulator=dli_emulator)
    output = result.stdout + result.stderr
    assert "ValueError: bad input" in output, output[-3000:]
    assert len(dli_emulator.cancel_events) == 2
    summaries = [line for line in output.splitlines() if "Cancelled 2 DLI batch jobs" in line]
    assert len(summaries) == 1, summaries
    assert summaries[0].rstrip().endswith("Cancelled 2 DLI batch jobs (callback of dli_test_cancel_summary.check):")
    assert "already being cancelled" not in output
    assert "could not be cancelled" not in output
    lines = output.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("  job id ")))
    rows = lines[header + 1 : header + 3]
    # Each row is the job, its outcome and its state, and nothing of the logger's (no suffix run into it).
    assert sorted(row.split() for row in rows) == sorted(
        [batch_id, "batch", "cancelled", "cancelling"] for batch_id in dli_emulator.jobs
    )
    assert "loc=" in lines[header + 3]  # the logger's suffix, on a line of its own after the table


class StatsdListener:
    """A StatsD server on loopback: a UDP socket that keeps every counter it receives."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.counters: Counter[str] = Counter()
        self.lock = threading.Lock()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                packet = self.socket.recv(65535).decode()
            except OSError:  # closed
                return
            for metric in packet.splitlines():  # name:value|c, several per packet when pipelined
                name, _, rest = metric.partition(":")
                value, _, kind = rest.partition("|")
                if kind.startswith("c"):
                    with self.lock:
                        self.counters[name] += int(float(value))

    def ours(self) -> dict[str, int]:
        with self.lock:
            return {name: value for name, value in self.counters.items() if ".dli." in f".{name}"}

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
        }


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.socket.close()


def test_every_metric_reaches_statsd_from_real_runs(
    dli_emulator: DLIEmulator, airflow_home: AirflowHome, statsd: StatsdListener
) -> None:
    dli_emulator.add_fault(r".*/batches", method="POST", lose_answer=True)  # the first submit: adopted
    dli_emulator.add_fault(r".*/state", method="GET", status=500, times=4)  # one poll, retries and all
    for dag_id in ("dli_test_metrics", "dli_test_metrics_orphan", "dli_test_metrics_sweeper"):
        result = airflow_home.run("dags", "test", dag_id, dags_folder=TEST_DAGS, emulator=dli_emulator, **statsd.env())
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]  # the sweep; the other runs fail
    dli_emulator.add_fault(r".*/jobs/submit-job", method="POST", lose_answer=True)  # the first SQL submit: adopted
    sql = airflow_home.run(
        "dags", "test", "dli_test_sql_metrics", dags_folder=SQL_DAGS, emulator=dli_emulator, **statsd.env()
    )
    assert sql.returncode == 0, (sql.stdout + sql.stderr)[-3000:]
    expected = {
        "airflow.dli.batch.adopted": 1,
        "airflow.dli.batch.submitted": 4,
        "airflow.dli.sql.adopted": 1,
        "airflow.dli.sql.submitted": 1,
        "airflow.dli.poll.failed": 1,
        "airflow.dli.cancel.cancelled": 4,  # the kill switch's three, the sweeper's one
        "airflow.dli.sweep.orphans_found": 1,
        "airflow.dli.sweep.orphans_cancelled": 1,
    }
    wait_until(lambda: statsd.ours() == expected, f"the metrics {expected}; got {statsd.ours()}", timeout=60)
    assert {name.removeprefix("airflow.") for name in expected} <= set(METRICS)


def test_the_readme_lists_every_metric() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    listed = re.findall(r"^\| `(dli\.[a-z_.]+)` \| counter \| (.+) \|$", readme, flags=re.M)
    assert dict(listed) == METRICS


def test_a_metric_never_counted_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'dli\.batch\.sumbitted'"):
        count("dli.batch.sumbitted")


def test_the_default_instance_id_warning_comes_once_per_deployment_and_says_what_to_do(
    dli_emulator: DLIEmulator, tmp_path: Path
) -> None:
    home = migrated_home(tmp_path)  # a deployment of its own: the Variable that remembers the warning is new

    def sweep(**env: str) -> str:
        result = home.run(
            "dags", "test", "dli_test_metrics_sweeper", dags_folder=TEST_DAGS, emulator=dli_emulator, **env
        )
        output = str(result.stdout + result.stderr)
        assert result.returncode == 0, output[-3000:]
        return output

    first, second = sweep(), sweep()
    warning = "Sweeping for the default Airflow instance id 'airflow'. If another Airflow deployment"
    assert warning in first
    for advice in (
        "set AIRFLOW__DLI__INSTANCE_ID (or [dli] instance_id) to the same value on ALL of its components, every "
        "worker included",
        "Jobs submitted before the change keep the id 'airflow', and this sweeper then leaves them alone",
        "airflow dli sweep --instance-id airflow --list-only",
    ):
        assert advice in first
    assert warning not in second
    assert "see the warning in the sweep of" in second
    assert "default Airflow instance id" not in sweep(AIRFLOW__DLI__INSTANCE_ID="prod-eu")

"""OpenLineage: with the real apache-airflow-providers-openlineage, a DAG run against the emulator sends the
task's lineage events to a local HTTP receiver, and the Spark conf of the job it submits names that task's run
as the parent, so the Spark job's own events link to it. Opt-in, as in the Livy and Databricks providers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from tests.airflow_cli import AirflowHome
from tests.conftest import wait_until

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")

DAG_FILE = """
from airflow.sdk import DAG
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator

with DAG("dli_lineage", schedule=None):
    DLISubmitBatchOperator(
        task_id="with_lineage",
        file="obs://bucket/app.jar",
        class_name="App",
        wait_for_completion=False,
        openlineage_inject_parent_job_info=True,  # the transport: from [openlineage] spark_inject_transport_info
    )
    DLISubmitBatchOperator(
        task_id="without_lineage",
        file="obs://bucket/app.jar",
        class_name="App",
        wait_for_completion=False,
        openlineage_inject_parent_job_info=False,
        openlineage_inject_transport_info=False,
    )
"""


class LineageReceiver(ThreadingHTTPServer):
    """An OpenLineage HTTP backend: keeps every event posted to /api/v1/lineage."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: LineageReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/api/v1/lineage"):
            self.server.events.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[LineageReceiver]:
    server = LineageReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_spark_job_names_the_airflow_task_as_its_parent(
    airflow_home: AirflowHome, tmp_path: Path, dli_emulator: DLIEmulator, receiver: LineageReceiver
) -> None:
    (tmp_path / "dli_lineage.py").write_text(DAG_FILE)
    transport = json.dumps({"type": "http", "url": receiver.url})
    run = airflow_home.run(
        "dags",
        "test",
        "dli_lineage",
        dags_folder=tmp_path,
        emulator=dli_emulator,
        AIRFLOW__OPENLINEAGE__TRANSPORT=transport,
        AIRFLOW__OPENLINEAGE__NAMESPACE="dli-test",
        AIRFLOW__OPENLINEAGE__SPARK_INJECT_TRANSPORT_INFO="true",
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = {job.body["name"].rsplit(".", 1)[-1]: job.body.get("conf") or {} for job in dli_emulator.jobs.values()}

    def task_start() -> dict[str, Any] | None:
        starts = [
            e for e in receiver.events if e["eventType"] == "START" and e["job"]["name"].endswith(".with_lineage")
        ]
        return starts[0] if starts else None

    wait_until(task_start, "the task's OpenLineage START event")
    start = task_start()
    assert start is not None
    spark = jobs["with_lineage"]
    assert spark["spark.openlineage.parentJobNamespace"] == start["job"]["namespace"] == "dli-test"
    assert spark["spark.openlineage.parentJobName"] == start["job"]["name"] == "dli_lineage.with_lineage"
    assert spark["spark.openlineage.parentRunId"] == start["run"]["runId"]
    assert spark["spark.openlineage.rootParentJobName"] == "dli_lineage"
    assert spark["spark.openlineage.transport.type"] == "http"
    assert spark["spark.openlineage.transport.url"] == receiver.url
    assert not [key for key in jobs["without_lineage"] if key.startswith("spark.openlineage.")]


PARSE_PROBE = """
import sys
from airflow.sdk import DAG
from airflow_provider_dli.operators.dli import DLISubmitBatchOperator
with DAG("probe", schedule=None):
    DLISubmitBatchOperator(
        task_id="t", file="obs://b/a.jar", class_name="A",
        openlineage_inject_parent_job_info=True, openlineage_inject_transport_info=True,
    )
# Airflow itself reads every installed provider's get_provider_info (its config defaults) at start-up.
lineage = ("airflow.providers.openlineage.utils", "airflow.providers.openlineage.plugins", "openlineage.")
print(sorted(m for m in sys.modules if m.startswith(lineage) or m == "airflow_provider_dli.lineage"))
"""


def test_parsing_a_dag_that_asks_for_lineage_imports_no_openlineage() -> None:
    result = subprocess.run([sys.executable, "-c", PARSE_PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"


WITHOUT_PROVIDER = """
import logging, sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):  # as if apache-airflow-providers-openlineage were not installed
    def find_spec(self, name, path=None, target=None):
        if name.startswith("airflow.providers.openlineage"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
from airflow_provider_dli.lineage import with_lineage
print(with_lineage({"spark.executor.cores": "2"}, {}, parent_job=True, transport=True))
"""


def test_without_the_openlineage_provider_the_job_is_submitted_and_the_log_says_why() -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_PROVIDER], capture_output=True, text=True, check=True)
    *logged, conf = result.stdout.strip().splitlines()
    [warning] = [line for line in logged + result.stderr.splitlines() if "OpenLineage information" in line]
    assert "warning" in warning.lower()
    assert "pip install 'airflow-provider-dli[openlineage]'" in warning
    assert conf == "{'spark.executor.cores': '2'}"

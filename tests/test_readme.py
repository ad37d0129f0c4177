"""Every code block of the README runs as written, so the docs cannot drift from the code.

- ``python``: the block becomes the body of ``with DAG(...)`` in a DAG file, which Airflow's DagBag must parse
  without errors (a block that is a script, e.g. the emulator example, runs its own asserts then); every DAG
  with tasks that the file made (a block may open a DAG of its own) then runs with ``airflow dags test``
  against the emulator and must succeed. A job is finished (``success``)
  once its task polls its state, so nothing races a job's lifetime.
- ``bash``/``sh``: the block runs in bash, offline, with ``dli-emulator`` and ``airflow`` on the PATH; every
  ``AIRFLOW_CONN_*`` it exports must then be a connection that DLIHook accepts (checked without a request).
- ``json``: must parse. Blocks without a language, or ``text``, are output, not code.

A block that cannot run offline says why on the line before its fence, which the rendered README hides:
``<!-- readme-test: skip - REASON -->``. ``<!-- readme-test: server -->`` marks a command that serves until
stopped: it is started, must print its first line, and is stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.states import LIVE_STATES, SQL_LIVE_STATES
from tests.airflow_cli import REPO, AirflowHome
from tests.conftest import STILL

README = REPO / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!-- readme-test: (?P<kind>skip|server)(?: - (?P<reason>.*?))? -->$")
SHELLS = ("bash", "sh", "shell")
OUTPUT = ("", "text")


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str
    marker: str | None
    reason: str | None

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.language or 'text'}"


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        code = "\n".join(lines[index + 1 : end]) + "\n"
        kind, reason = (marker["kind"], marker["reason"]) if marker else (None, None)
        blocks.append(Block(index + 1, opened.group(1), code, kind, reason))
        index = end + 1
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_has_code_blocks_and_every_skip_says_why() -> None:
    assert [block for block in BLOCKS if block.language == "python"]
    for block in BLOCKS:
        if block.marker == "skip":
            assert block.reason, f"README line {block.line}: a skipped block must say why"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's way) gives a heading."""
    return "#" + re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_reads_the_same_rendered_alone() -> None:
    """The package index shows the README without the repository: every link is absolute or to a heading."""
    text = README.read_text()
    anchors = {heading_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    for target in LINK.findall(text):
        assert target.startswith("https://") or target in anchors, f"README link {target!r}: make it absolute"


@pytest.fixture
def emulator() -> Iterator[DLIEmulator]:
    """Jobs stay ``starting`` (``LAUNCHING``) until their task polls their state; then they end ``success``
    (``FINISHED``)."""
    with DLIEmulator(starting_seconds=STILL, running_seconds=STILL) as dli:
        done = threading.Event()

        def finish_polled_jobs() -> None:
            while not done.wait(0.05):
                polled = {
                    r.path.rsplit("/", 2)[-2] for r in list(dli.request_log) if r.path.endswith(("/state", "/status"))
                }
                for batch_id in list(dli.jobs):
                    if batch_id in polled and dli.state_of(batch_id) in LIVE_STATES:
                        dli.finish(batch_id, "success")
                for job_id in list(dli.sql_jobs):
                    if job_id in polled and dli.state_of(job_id) in SQL_LIVE_STATES:
                        dli.finish(job_id, "FINISHED")

        watcher = threading.Thread(target=finish_polled_jobs, daemon=True)
        watcher.start()
        yield dli
        done.set()
        watcher.join()


def shell_env(home: AirflowHome, tmp_path: Path) -> dict[str, str]:
    env = home.env(tmp_path, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


CHECK_CONNECTIONS = """
import os
from airflow_provider_dli.hooks.dli import DLIHook
names = [name for name in os.environ if name.startswith("AIRFLOW_CONN_")]
for name in names:
    settings = DLIHook(name.removeprefix("AIRFLOW_CONN_").lower()).settings
    print(name, settings.base_url)
"""


def run_shell(block: Block, home: AirflowHome, tmp_path: Path) -> None:
    script = f"set -euo pipefail\n{block.code}\n{sys.executable} -c '{CHECK_CONNECTIONS}'\n"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=shell_env(home, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"README line {block.line}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def run_server(block: Block, home: AirflowHome, tmp_path: Path) -> None:
    # The README names a port a reader can remember; the test takes a free one, so that it never collides
    # with another run of the suite (make test runs two at once) or anything else on the machine.
    code = re.sub(r"--port \d+", "--port 0", block.code)
    process = subprocess.Popen(
        ["bash", "-c", code],
        cwd=tmp_path,
        env=shell_env(home, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first, f"README line {block.line}: the server printed nothing"
        os.killpg(process.pid, signal.SIGTERM)
        rest, errors = process.communicate(timeout=30)
        assert "Traceback" not in errors, errors[-3000:]
        assert rest.strip().splitlines()[-1] == "DLI emulator stopped"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# Airflow's own parse of the DAG file: what it could not import, and the DAGs it made with their task counts.
PARSE = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])  # AIRFLOW__CORE__LOAD_EXAMPLES is False
errors = {path: str(error) for path, error in bag.import_errors.items()}
print(json.dumps({"errors": errors, "dags": {dag_id: len(dag.tasks) for dag_id, dag in bag.dags.items()}}))
"""


def run_python(block: Block, home: AirflowHome, tmp_path: Path, emulator: DLIEmulator) -> None:
    dag_id = f"readme_{block.id.replace('-', '_')}"
    dag_file = tmp_path / f"{dag_id}.py"
    dag_file.write_text(
        f"from airflow.sdk import DAG\n\nwith DAG(dag_id={dag_id!r}, schedule=None):\n"
        + textwrap.indent(block.code, "    ")
    )
    env = home.env(tmp_path, emulator)
    parse = subprocess.run(
        [sys.executable, "-c", PARSE, str(dag_file)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert parse.returncode == 0, f"README line {block.line}:\n{parse.stderr[-3000:]}"
    parsed = json.loads(parse.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}, f"README line {block.line}: {parsed['errors']}"
    for made, tasks in parsed["dags"].items():
        if tasks:
            run = home.run("dags", "test", made, dags_folder=tmp_path, emulator=emulator)
            assert run.returncode == 0, f"README line {block.line}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert all(emulator.state_of(batch_id) not in LIVE_STATES for batch_id in emulator.jobs)
    assert all(emulator.state_of(job_id) not in SQL_LIVE_STATES for job_id in emulator.sql_jobs)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_readme_block_runs_as_written(
    block: Block, airflow_home: AirflowHome, tmp_path: Path, emulator: DLIEmulator
) -> None:
    if block.marker == "skip":
        pytest.skip(f"README line {block.line}: {block.reason}")
    if block.marker == "server":
        run_server(block, airflow_home, tmp_path)
    elif block.language in SHELLS:
        run_shell(block, airflow_home, tmp_path)
    elif block.language == "python":
        run_python(block, airflow_home, tmp_path, emulator)
    elif block.language == "json":
        json.loads(block.code)
    else:
        assert block.language in OUTPUT, (
            f"README line {block.line}: a {block.language!r} block: run it here, or mark it "
            "<!-- readme-test: skip - REASON -->"
        )

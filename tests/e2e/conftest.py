"""One real Airflow deployment for the whole end-to-end suite, and the figures it measured.

The deployment (see :mod:`tests.e2e.deployment`) starts once for this package, on first use, and stops after
its last test (it would only load the machine while the rest of the suite runs); every scenario runs its own
DAG runs in it; a scenario that changes the deployment (restarts or adds a triggerer) puts it
back as it found it. Each scenario records the time from its action to the DELETE that DLI received, and
the session prints them at the end: measured, never asserted.

A new scenario: put its DAG in ``dags/`` (and its id in ``E2E_DAG_IDS``, so that start-up waits for it to be
parsed), take the fixtures ``airflow_deployment`` and ``e2e_emulator``, trigger a run of its own and wait for
events (``Deployment.wait_for_task_state``, ``tests.e2e.deployment.wait_for`` on what the emulator saw).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_dli.emulator import DLIEmulator
from tests.e2e.deployment import Deployment

DAGS = Path(__file__).parent / "dags"
E2E_DAG_IDS = (
    "dli_e2e_recommended",
    "dli_e2e_sync",
    "dli_e2e_deferred",
    "dli_e2e_timeout_sync",
    "dli_e2e_timeout_deferred",
    "dli_e2e_retry",
    "dli_e2e_check_fails",
    "dli_e2e_kill_switch",
)
JOB_SECONDS = 600.0
"""Jobs run ten minutes: within a scenario only a cancel, or the test (``DLIEmulator.finish``), ends them."""
SKIP_REASON = (
    "the end-to-end abort matrix runs on Airflow 3.3+: it proves 3.3's paths (BaseTrigger.on_kill for a person's "
    "action on a deferred task, retry reconnection, the on_kill-on-redistribution fix); the rows that 3.1 shares "
    "are covered there by test_failure_paths.py"
)


@dataclass
class Measurement:
    row: str
    test: str
    seconds: float | None
    note: str = ""


MEASURED: list[Measurement] = []
_current: list[Deployment] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    supported = Version(airflow_version) >= Version("3.3")
    for item in items:
        if not supported and here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="package")
def e2e_emulator() -> Iterator[DLIEmulator]:
    with DLIEmulator(starting_seconds=0.2, running_seconds=JOB_SECONDS) as emulator:
        yield emulator


@pytest.fixture(scope="package")
def e2e_token_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployment's IAM token folder ([dli] login_cache_path): never the user's own cache."""
    return tmp_path_factory.mktemp("e2e-tokens") / "iam-tokens"


@pytest.fixture(scope="package")
def airflow_deployment(
    tmp_path_factory: pytest.TempPathFactory, e2e_emulator: DLIEmulator, e2e_token_folder: Path
) -> Iterator[Deployment]:
    """api-server, scheduler (LocalExecutor), dag-processor and triggerer, with the e2e DAGs parsed."""
    deployment = Deployment(
        tmp_path_factory.mktemp("e2e-airflow"),
        DAGS,
        e2e_emulator,
        extra_config={"DLI__LOGIN_CACHE_PATH": str(e2e_token_folder)},
    )
    with deployment:
        _current.append(deployment)
        try:
            deployment.wait_for_dags(*E2E_DAG_IDS)
            yield deployment
        finally:
            _current.remove(deployment)


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Iterator[list[Measurement]]:
    """``measure.append(Measurement(...))``: printed in the session's summary."""
    recorded: list[Measurement] = []
    yield recorded
    MEASURED.extend(recorded)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _current:
        report.sections.append(("Airflow deployment logs", _current[0].diagnostics()))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEASURED:
        return
    terminalreporter.section("end-to-end abort matrix: from the action to the DELETE at DLI (measured)")
    for m in MEASURED:
        seconds = "   -   " if m.seconds is None else f"{m.seconds:6.1f} s"
        terminalreporter.write_line(f"{seconds}  {m.row}  [{m.test}] {m.note}")

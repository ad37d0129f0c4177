"""Real Airflow deployments for the end-to-end suite, one per topology, and the figures they measured.

A deployment (see :mod:`tests.e2e.deployment`) starts once per topology, on first use, and stops when the
suite moves on to the other topology or ends (it would only load the machine while the rest of the suite
runs); every scenario runs its own DAG runs in it; a scenario that changes the deployment (restarts or adds a
triggerer, loses a worker) puts it back as it found it. Each scenario records the time from its action to the
DELETE that DLI received, and the session prints them at the end, per topology: measured, never asserted.

Scenarios run on the ``local`` topology (LocalExecutor, SQLite); ``@pytest.mark.topologies("local", "celery")``
runs one on the Celery topology too (PostgreSQL, Redis, two worker machines), where the executor changes the
path. Where the Celery topology cannot start (its servers or packages are missing and ``make test`` could not
install them), its scenarios are skipped with the reason and how to enable them; with ``CI=true`` they fail.

A new scenario: put its DAG in ``dags/`` (and its id in ``E2E_DAG_IDS``, so that start-up waits for it to be
parsed), take the fixtures ``airflow_deployment`` and ``e2e_emulator``, trigger a run of its own and wait for
events (``Deployment.wait_for_task_state``, ``tests.e2e.deployment.wait_for`` on what the emulator saw).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_dli.emulator import DLIEmulator
from tests.e2e.deployment import TOPOLOGIES, Deployment, celery_topology_missing

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


CELERY_HOW_TO = (
    "run make test as root on Debian (it installs redis-server and postgresql with apt-get), or install them "
    "and `pip install -e .[test,celery]`"
)


@dataclass
class Measurement:
    row: str
    test: str
    seconds: float | None
    note: str = ""
    topology: str = "local"


MEASURED: list[Measurement] = []
_current: list[Deployment] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "topologies(*names): run this e2e scenario on these topologies")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every scenario that takes ``airflow_deployment`` runs once per topology it is marked for (``local``)."""
    if "airflow_deployment" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("topologies")
        topologies = marker.args if marker else ("local",)
        assert set(topologies) <= set(TOPOLOGIES), topologies
        metafunc.parametrize("airflow_deployment", topologies, indirect=True, scope="package")


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
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    e2e_emulator: DLIEmulator,
    e2e_token_folder: Path,
) -> Iterator[Deployment]:
    """api-server, scheduler, dag-processor and triggerer (and on the Celery topology, PostgreSQL, Redis and
    two Celery workers), with the e2e DAGs parsed."""
    topology: str = request.param
    if topology == "celery" and (missing := celery_topology_missing()):
        reason = f"the Celery topology needs {'; '.join(missing)}: {CELERY_HOW_TO}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Celery topology, but {reason}")
        pytest.skip(reason)
    deployment = Deployment(
        tmp_path_factory.mktemp(f"e2e-airflow-{topology}"),
        DAGS,
        e2e_emulator,
        extra_config={"DLI__LOGIN_CACHE_PATH": str(e2e_token_folder / topology)},
        topology=topology,
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
    """``measure.append(Measurement(...))``: printed in the session's summary, under the scenario's topology."""
    recorded: list[Measurement] = []
    yield recorded
    callspec = getattr(request.node, "callspec", None)
    topology = callspec.params.get("airflow_deployment", "local") if callspec else "local"
    for measurement in recorded:
        measurement.topology = topology
        measurement.test = measurement.test.partition("[")[0]
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
    """One line per row of the abort matrix, its figure on each topology ("-": no DELETE is expected)."""
    if not MEASURED:
        return
    rows: dict[str, dict[str, Measurement]] = {}
    for m in MEASURED:
        rows.setdefault(m.row, {})[m.topology] = m
    terminalreporter.section("end-to-end abort matrix: from the action to the DELETE at DLI (measured)")
    terminalreporter.write_line("".join(f"{topology:>9}" for topology in TOPOLOGIES) + "  row")
    for row, by_topology in rows.items():
        figures = "".join(_figure(by_topology.get(topology)) for topology in TOPOLOGIES)
        tests = sorted({m.test for m in by_topology.values()})
        notes = "; ".join(f"{t}: {m.note}" for t, m in by_topology.items() if m.note)
        terminalreporter.write_line(f"{figures}  {row}  [{', '.join(tests)}] {notes}")


def _figure(measurement: Measurement | None) -> str:
    if measurement is None:
        return f"{'':>9}"
    return f"{'-':>9}" if measurement.seconds is None else f"{measurement.seconds:7.1f} s"

"""The release as PyPI and a new user get it: build the sdist from a copy of the repository and the wheel from
the sdist (what ``python -m build`` does), check both, and install the wheel alone next to Airflow.

Everything runs offline: the build uses the setuptools already installed (no build isolation), and the fresh
environment borrows this environment's Airflow (and its dependencies) without our editable install, so the
provider it lists can only have come from the wheel.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import airflow
import pytest
from packaging.requirements import Requirement

from airflow_provider_dli import __version__
from tests.airflow_cli import REPO

NAME = "airflow_provider_dli"
# Written by tools and never part of a release.
JUNK = ("__pycache__", "*.pyc", ".venv*", ".git", "*.egg-info", "build", "dist", ".*_cache", ".demo", ".bench")


@dataclass
class Release:
    sdist: Path
    wheel: Path


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (it would put this checkout on the path) and no Airflow settings of the test session."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AIRFLOW")}


def build_backend(hook: str, source: Path, out: Path) -> Path:
    """Call a PEP 517 hook of setuptools in ``source``, as ``python -m build --no-isolation`` does."""
    code = f"import setuptools.build_meta as backend; print(backend.{hook}({str(out)!r}))"
    return out / run(sys.executable, "-c", code, cwd=source, env=clean_env()).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    work = tmp_path_factory.mktemp("release")
    checkout = work / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(*JUNK))
    sdist = build_backend("build_sdist", checkout, work)
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "unpacked", filter="data")
    wheel = build_backend("build_wheel", work / "unpacked" / sdist.name.removesuffix(".tar.gz"), work)
    return Release(sdist, wheel)


def repo_files(*folders: str) -> set[str]:
    found = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*"):
            relative = path.relative_to(REPO)
            if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
                found.add(relative.as_posix())
    return found


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{NAME}-{__version__}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


def test_metadata_as_pypi_and_airflow_read_it(release: Release) -> None:
    metadata = wheel_metadata(release.wheel)
    assert metadata["Name"] == "airflow-provider-dli"
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert urls["Documentation"].startswith("https://")  # Airflow's Providers page links to it
    classifiers = metadata.get_all("Classifier") or []
    for expected in (
        "Framework :: Apache Airflow :: Provider",
        "Programming Language :: Python :: 3.11",
        "Development Status :: 4 - Beta",
        "Topic :: System :: Distributed Computing",
    ):
        assert expected in classifiers
    assert "spark" in (metadata["Keywords"] or "").split(",")
    assert metadata["Requires-Python"] == ">=3.11"
    requires = metadata.get_all("Requires-Dist") or []
    runtime = sorted(Requirement(r).name for r in requires if "extra ==" not in r)
    assert runtime == ["apache-airflow", "requests"]
    assert metadata.get_content_type() == "text/plain"  # the body is the README, typed by the header below
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_twine_check_passes(release: Release) -> None:
    """What PyPI's upload checks: valid metadata and a README that renders."""
    output = run(sys.executable, "-m", "twine", "check", "--strict", release.sdist, release.wheel)
    assert output.count("PASSED") == 2, output


def test_wheel_holds_the_package_and_the_license_and_no_tests(release: Release) -> None:
    with zipfile.ZipFile(release.wheel) as archive:
        names = set(archive.namelist())
    package = {name for name in repo_files(NAME) if name.endswith((".py", ".typed"))}
    assert package <= names, sorted(package - names)
    dist_info = f"{NAME}-{__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    with zipfile.ZipFile(release.wheel) as archive:
        assert archive.read(f"{dist_info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "provider_info = airflow_provider_dli:get_provider_info" in entry_points
    assert "dli-emulator = airflow_provider_dli.emulator.__main__:main" in entry_points
    assert not [name for name in names if name.startswith(("tests/", "example_dags/", "scripts/"))]


def test_the_wheel_ships_the_example_dags_of_the_source_tree(release: Release) -> None:
    """A user with the wheel alone finds the example DAGs in the package: the same files as ``example_dags/``."""
    shipped = f"{NAME}/example_dags/"
    with zipfile.ZipFile(release.wheel) as archive:
        in_wheel = {
            name.removeprefix(shipped): archive.read(name)
            for name in archive.namelist()
            if name.startswith(shipped) and name.endswith(".py") and not name.endswith("__init__.py")
        }
    in_tree = {path.name: path.read_bytes() for path in (REPO / "example_dags").glob("*.py")}
    assert sorted(in_wheel) == sorted(in_tree), f"copy example_dags/ to {shipped}"
    for name, content in in_tree.items():
        assert in_wheel[name] == content, f"{shipped}{name} differs from example_dags/{name}: copy it"


def test_sdist_carries_a_complete_runnable_test_tree(release: Release) -> None:
    """Every file of the test tree (and what the tests run: example DAGs, the demo script), and pytest can
    collect the suite from the unpacked sdist alone."""
    root = release.sdist.name.removesuffix(".tar.gz")
    with tarfile.open(release.sdist) as archive:
        names = {name.removeprefix(f"{root}/") for name in archive.getnames()}
    expected = repo_files(NAME, "tests", "example_dags", "scripts") | {
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "CHANGELOG.md",
    }
    assert expected <= names, sorted(expected - names)
    unpacked = release.sdist.parent / "unpacked" / root
    env = {**clean_env(), "PYTHONPATH": str(unpacked)}
    output = run(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", cwd=unpacked, env=env
    )
    collected = [line for line in output.splitlines() if "::" in line]
    assert any(line.startswith("tests/test_packaging.py::") for line in collected)
    assert len({line.split("::")[0] for line in collected}) == len(list((REPO / "tests").rglob("test_*.py")))


@pytest.fixture(scope="module")
def fresh_venv(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with only Airflow (borrowed from this one, minus our own install) and the wheel."""
    work = tmp_path_factory.mktemp("fresh")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    shared = Path(airflow.__file__).resolve().parents[1]  # this environment's site-packages
    overlay = work / "airflow-only"
    overlay.mkdir()
    for entry in shared.iterdir():
        if not entry.name.startswith((NAME, f"__editable__.{NAME}", f"__editable___{NAME}")):
            (overlay / entry.name).symlink_to(entry)
    [site_packages] = (venv / "lib").glob("python3*/site-packages")
    (site_packages / "airflow-only.pth").write_text(f"{overlay}\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", release.wheel)
    return venv


def test_the_wheel_alone_installs_the_provider(fresh_venv: Path, tmp_path: Path) -> None:
    python = fresh_venv / "bin" / "python"
    env = {**clean_env(), "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    where = run(python, "-c", f"import {NAME}; print({NAME}.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(fresh_venv)), where
    providers = json.loads(run(python, "-m", "airflow", "providers", "list", "-o", "json", cwd=tmp_path, env=env))
    [dli] = [p for p in providers if p["package_name"] == "airflow-provider-dli"]
    assert dli["version"] == __version__
    probe = "from airflow.providers_manager import ProvidersManager as P; "
    probe += "print(P().providers['airflow-provider-dli'].data['documentation-url'])"
    assert run(python, "-c", probe, cwd=tmp_path, env=env).strip().startswith("https://")
    usage = run(fresh_venv / "bin" / "dli-emulator", "--help", cwd=tmp_path, env=env)
    assert usage.startswith("usage: dli-emulator")


# What a user does with the shipped example DAGs: point Airflow at them (or copy them) and parse.
PARSE_EXAMPLES = """
import json, pathlib, airflow_provider_dli
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag
folder = pathlib.Path(airflow_provider_dli.__file__).parent / "example_dags"
bag = DagBag(dag_folder=str(folder))  # AIRFLOW__CORE__LOAD_EXAMPLES is False
files = sorted({pathlib.Path(dag.fileloc).name for dag in bag.dags.values()})
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "files": files}))
"""


def test_the_example_dags_of_the_wheel_parse(fresh_venv: Path, tmp_path: Path) -> None:
    python = fresh_venv / "bin" / "python"
    env = {**clean_env(), "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    parsed = json.loads(run(python, "-c", PARSE_EXAMPLES, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert parsed["files"] == sorted(path.name for path in (REPO / "example_dags").glob("*.py"))  # a DAG each


def make_install_commands(*settings: str) -> list[str]:
    """The pip commands that ``make install`` would run into a new venv (``make -n``: nothing runs)."""
    venv = "/nonexistent/venv"
    # Not the variables of a ``make test`` that runs this test: make exports its command line's variables (the
    # 3.1.8 pass's EXTRAS=...) to the environment, where this make would take them for its own defaults.
    settable = re.findall(r"^([A-Z_0-9]+) \?=", (REPO / "Makefile").read_text(), re.MULTILINE)
    unset = {"MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL", *settable}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    output = run("make", "--no-print-directory", "-n", "install", f"VENV={venv}", *settings, cwd=REPO, env=env)
    return [line for line in output.splitlines() if " -m pip install " in line and "--upgrade pip" not in line]


def test_make_install_applies_constraints_to_the_airflow_step_only() -> None:
    """As Airflow's constraints files ask: Airflow pinned first, then the package and its tools without them."""
    constrained = make_install_commands("CONSTRAINTS=/tmp/constraints-3.11.txt", "AIRFLOW_VERSION=3.1.8")
    assert len(constrained) == 2
    assert '"apache-airflow==3.1.8" --constraint "/tmp/constraints-3.11.txt"' in constrained[0]
    assert "--constraint" not in constrained[1]
    assert '-e ".[test,openlineage,celery]" "apache-airflow==3.1.8"' in constrained[1]
    assert ["--constraint" in command for command in make_install_commands()] == [False]

"""The provider as Airflow sees it: provider info, entry point, connection form, CLI listings."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_dli import CONN_FIELDS, get_provider_info
from airflow_provider_dli.hooks.dli import DLIHook
from tests.airflow_cli import AirflowHome


def test_provider_info_is_valid_for_airflow() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_is_the_distribution_name() -> None:
    [entry_point] = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_dli")
    ]
    assert entry_point.value == "airflow_provider_dli:get_provider_info"
    assert entry_point.dist is not None
    assert get_provider_info()["package-name"] == entry_point.dist.metadata["Name"]


def test_declared_modules_and_hook_class_exist() -> None:
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for notifier in info["notifications"]:
        module, _, name = notifier.rpartition(".")
        assert hasattr(importlib.import_module(module), name)
    [connection_type] = info["connection-types"]
    module, _, name = connection_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is DLIHook
    assert connection_type["connection-type"] == DLIHook.conn_type


def test_every_operator_is_on_the_public_import_path() -> None:
    """Each family of operators has its own module; the module the provider info names re-exports them all (not the
    abstract base they share)."""
    import importlib
    import inspect
    import pkgutil

    from airflow.sdk import BaseOperator

    import airflow_provider_dli.operators as package

    [entry] = get_provider_info()["operators"]
    [public_path] = entry["python-modules"]
    public = importlib.import_module(public_path)
    defined = {
        name
        for module in pkgutil.iter_modules(package.__path__)
        for name, value in vars(importlib.import_module(f"{package.__name__}.{module.name}")).items()
        if isinstance(value, type)
        and issubclass(value, BaseOperator)
        and value.__module__.startswith(package.__name__)
        and not inspect.isabstract(value)
    }
    assert defined == set(public.__all__)


PARSE_PROBE = """
import sys
from airflow.sdk import DAG
from airflow_provider_dli.notifications.dli import DLICancelBatchNotifier
from airflow_provider_dli.operators.dli import DLICancelBatchOperator, DLISubmitBatchOperator
from airflow_provider_dli.sensors.dli import DLIBatchSensor
with DAG("parse_probe", schedule=None, on_failure_callback=DLICancelBatchNotifier()):
    DLISubmitBatchOperator(task_id="submit", file="obs://b/a.jar", class_name="A")
    DLICancelBatchOperator(task_id="one", batch_id="{{ ti.xcom_pull('submit') }}")
    DLICancelBatchOperator(task_id="run", this_dag_run=True, states=["running"])
    DLIBatchSensor(task_id="watch", batch_id="{{ ti.xcom_pull('submit') }}")
print(sorted(m for m in ("requests", "airflow_provider_dli.hooks.dli") if m in sys.modules))
"""


def test_parsing_a_dag_file_does_not_load_the_hook() -> None:
    """DAG files are parsed over and over: building the tasks must not import the hook or requests."""
    result = subprocess.run([sys.executable, "-c", PARSE_PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"


def test_secret_extras_are_sensitive_in_the_form() -> None:
    sensitive = {name for name, field in CONN_FIELDS.items() if field["schema"].get("format") == "password"}
    assert sensitive == {"security_token", "token"}
    assert DLIHook.get_ui_field_behaviour()["relabeling"]["host"] == "DLI endpoint URL (optional)"


def test_airflow_cli_lists_the_provider_and_hook(airflow_home: AirflowHome, tmp_path: Path) -> None:
    providers = airflow_home.run("providers", "list", "--output", "json", dags_folder=tmp_path)
    assert providers.returncode == 0, providers.stderr[-2000:]
    assert "airflow-provider-dli" in providers.stdout
    hooks = airflow_home.run("providers", "hooks", "--output", "json", dags_folder=tmp_path)
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    [dli] = [hook for hook in json.loads(hooks.stdout) if hook["connection_type"] == "dli"]
    assert dli["class"] == "airflow_provider_dli.hooks.dli.DLIHook"
    assert dli["package_name"] == "airflow-provider-dli"
    assert dli["conn_id_attribute_name"] == "dli_conn_id"

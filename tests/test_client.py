"""The DLI client on its own: importable and working with Airflow absent, built from plain settings."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_dli.client import AKSK, ClientSettings, IAMPassword
from airflow_provider_dli.emulator import DLIEmulator
from airflow_provider_dli.emulator.server import DEFAULT_DOMAIN, DEFAULT_PASSWORD, DEFAULT_USER

REPO = Path(__file__).resolve().parent.parent

# A process in which any import of Airflow fails: the client must not need it, at import time or at work.
WITHOUT_AIRFLOW = """
import json, sys

class NoAirflow:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError(f"{name} is blocked: the client must work without Airflow")
        return None

sys.meta_path.insert(0, NoAirflow())

from pathlib import Path
from airflow_provider_dli.client import AKSK, ClientSettings, DLIClient, IAMPassword

url, project, ak, sk, iam_user, iam_password, domain, folder = sys.argv[1:]
learned = []
clients = [
    DLIClient(ClientSettings(url, project, AKSK(ak, sk)), on_secret=learned.append),
    DLIClient(
        ClientSettings(
            url, project, IAMPassword(url, domain, iam_user, iam_password), login_cache_path=Path(folder)
        ),
        on_secret=learned.append,
    ),
]
body = {"file": "obs://bucket/app.jar", "className": "com.example.App", "conf": {
    "dli.emulator.starting_seconds": "600"}}
results = []
for client in clients:
    batch_id = client.create_batch(body)["id"]
    results.append([client.get_batch_state(batch_id), client.cancel_batch(batch_id)["outcome"]])
print(json.dumps({
    "results": results,
    "airflow_loaded": sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow.")),
    "learned": learned,
}))
"""


def test_the_client_works_with_airflow_absent(dli_emulator: DLIEmulator, tmp_path: Path) -> None:
    connection = dli_emulator.connection()
    project = connection["extra"]["project_id"]
    arguments = [dli_emulator.url, project, connection["login"], connection["password"]]
    arguments += [DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN, str(tmp_path / "tokens")]
    finished = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIRFLOW, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["results"] == [["starting", "cancelled"], ["starting", "cancelled"]]
    assert report["airflow_loaded"] == []
    token = next(iter(dli_emulator._tokens))
    # Every secret the clients held or learned was offered to on_secret (the hook masks them in Airflow).
    assert set(report["learned"]) >= {connection["password"], DEFAULT_PASSWORD, token}
    assert len(dli_emulator.cancel_events) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "dli.example.com"}, "endpoint must be an http:// or https:// URL"),
        ({"project_id": "../x"}, "project_id must be up to 64 letters and digits"),
        ({"retry_limit": -1}, "retry_limit must be a whole number >= 0"),
        ({"timeout": (1.0, 0.0)}, "timeout must be seconds > 0"),
        ({"login_cache": "redis"}, "login_cache must be one of"),
    ],
)
def test_settings_name_what_is_wrong(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"endpoint": "https://dli.example.com", "project_id": "p1", "auth": AKSK("a", "b")}
    with pytest.raises(ValueError, match=message):
        ClientSettings(**{**fields, **change})  # type: ignore[arg-type]


def test_settings_never_show_a_secret() -> None:
    settings = ClientSettings(
        "https://dli.example.com", "p1", IAMPassword("https://iam.example.com", "d", "u", "hunter2-secret")
    )
    assert "hunter2-secret" not in repr(settings)
    assert "secret-key-value" not in repr(AKSK("AK", "secret-key-value", "token-value"))
    assert json.dumps(settings.secrets) == '["hunter2-secret"]'


def test_the_client_builds_on_nothing_above_it() -> None:
    """The client's modules import, of this package, only the client itself and the import-free floor below it
    (``states``, ``validation``, the package's version): never the hook, an operator or the emulator."""
    allowed = ("airflow_provider_dli.client", "airflow_provider_dli.states", "airflow_provider_dli.validation")
    found: dict[str, set[str]] = {}
    for module in sorted((REPO / "airflow_provider_dli" / "client").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                ours = name.startswith("airflow_provider_dli.")
                if name.split(".")[0] == "airflow" or (ours and not name.startswith(allowed)):
                    found.setdefault(module.name, set()).add(name)
    assert found == {}

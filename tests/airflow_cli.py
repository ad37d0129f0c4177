"""Run the real ``airflow`` CLI against a throwaway AIRFLOW_HOME (SQLite) and the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_dli.emulator import DLIEmulator

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
REPO = Path(__file__).resolve().parent.parent


@dataclass
class AirflowHome:
    path: Path

    def env(self, dags_folder: Path, emulator: DLIEmulator | None, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env["AIRFLOW__DLI__LOGIN_CACHE_PATH"] = os.environ["AIRFLOW__DLI__LOGIN_CACHE_PATH"]  # the test's own
        env.update(
            AIRFLOW_HOME=str(self.path),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PYTHONPATH=str(REPO),
        )
        if emulator is not None:
            env["AIRFLOW_CONN_DLI_DEFAULT"] = json.dumps(emulator.connection())
        env.update(extra)
        return env

    def run(self, *args: str, dags_folder: Path, emulator: DLIEmulator | None = None, **extra: str) -> Any:
        return subprocess.run(
            [AIRFLOW, *args],
            env=self.env(dags_folder, emulator, **extra),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def contains(self, secret: str) -> list[str]:
        """Files under this home (database, logs) whose bytes contain ``secret``."""
        needle = secret.encode()
        return [str(p) for p in self.path.rglob("*") if p.is_file() and needle in p.read_bytes()]


def migrated_home(path: Path) -> AirflowHome:
    home = AirflowHome(path)
    result = home.run("db", "migrate", dags_folder=path)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}")
    return home

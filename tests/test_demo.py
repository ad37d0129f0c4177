"""``make demo`` keeps working: its script runs the example DAG and shows the job cancelled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.airflow_cli import REPO


def test_demo_shows_the_job_cancelled_and_stops_the_emulator(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env["DLI_DEMO_DIR"] = str(tmp_path / "demo")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "The batch job was cancelled by the DAG." in lines
    assert "==> Emulator stopped" in lines
    assert any(line.strip().startswith("state") and line.endswith("-> dead now") for line in lines)
    assert any("example_dli_cancel_on_failure.check_source_data callback" in line for line in lines)

"""Run one DAG of a file with ``DAG.test`` at a given time, so under a given run id (``manual__`` and that
time): ``airflow dags test`` names its run after the current time on Airflow 3.3, and a test of two Airflow
deployments needs both to run the same DAG run.

``python dag_test_at.py DAG_FILE DAG_ID RUN_AFTER [CONF_JSON]``; exits 0 when the run succeeded, 1 otherwise.
AIRFLOW_HOME and the connections come from the environment.
"""

from __future__ import annotations

import json
import runpy
import sys
from datetime import datetime

from airflow.sdk import DAG


def main(dag_file: str, dag_id: str, run_after: str, conf: str = "{}") -> int:
    [dag] = [value for value in runpy.run_path(dag_file).values() if isinstance(value, DAG) and value.dag_id == dag_id]
    when = datetime.fromisoformat(run_after)
    run = dag.test(run_after=when, logical_date=when, run_conf=json.loads(conf))
    print(f"DAG run {run.run_id}: {run.state}")
    return 0 if run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

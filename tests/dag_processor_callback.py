"""Run failure callbacks in Airflow's real DAG processor, as the scheduler would have them run.

- ``task DAG_ID TASK_ID LOG``: a task's ``on_failure_callback`` after a heartbeat timeout. When a worker
  dies (SIGKILL, lost node), nothing runs on it: the scheduler notices the missing heartbeat and sends a
  ``TaskCallbackRequest`` to the DAG processor.
- ``dag DAG_ID LAST_TASK_ID LOG``: a DAG's ``on_failure_callback`` after a failed run, which always runs
  in the DAG processor (``airflow dags test`` does not run it).

The processor parses the DAG file in a child process and runs the callback there, with XCom reached
through its supervisor. This script builds the request as the scheduler does and hands it to
``DagFileProcessorProcess``, serviced the way the processor manager services it. AIRFLOW_HOME and the
DAGs folder come from the environment.
"""

from __future__ import annotations

import selectors
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from airflow import __version__ as airflow_version
from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
from airflow.api_fastapi.execution_api.datamodels.taskinstance import DagRun as DRDataModel
from airflow.api_fastapi.execution_api.datamodels.taskinstance import TIRunContext
from airflow.callbacks.callback_requests import DagCallbackRequest, DagRunContext, TaskCallbackRequest
from airflow.configuration import conf
from airflow.dag_processing.processor import DagFileProcessorProcess
from airflow.models.taskinstance import TaskInstance
from airflow.sdk.api.client import Client
from airflow.sdk.log import logging_processors
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from packaging.version import Version
from uuid6 import uuid7

AIRFLOW_3_2 = Version(airflow_version) >= Version("3.2")


def callback_request(kind: str, ti: TaskInstance) -> TaskCallbackRequest | DagCallbackRequest:
    if kind == "dag":
        return DagCallbackRequest(
            filepath=ti.dag_model.relative_fileloc or "",
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            bundle_name="dags-folder",
            bundle_version=None,
            context_from_server=DagRunContext(dag_run=ti.dag_run, last_ti=ti),
            is_failure_callback=True,
            msg="task_failure",
        )
    return TaskCallbackRequest(
        filepath=ti.dag_model.relative_fileloc or "",
        bundle_name="dags-folder",
        bundle_version=None,
        ti=ti,
        msg="Task instance heartbeat timed out (the worker was killed)",
        task_callback_type=TaskInstanceState.FAILED,
        context_from_server=TIRunContext(
            dag_run=DRDataModel.model_validate(ti.dag_run, from_attributes=True),
            max_tries=ti.max_tries,
            variables=[],
            connections=[],
            xcom_keys_to_clear=[],
        ),
    )


def main(kind: str, dag_id: str, task_id: str, log_path: Path) -> int:
    dags_folder = Path(conf.get("core", "dags_folder"))
    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id).one()
        request = callback_request(kind, ti)
        relative = request.filepath
    client = Client(base_url=None, token="", dry_run=True, transport=InProcessExecutionAPI().transport)
    client.base_url = "http://in-process.invalid./"  # as the processor manager sets it
    selector = selectors.DefaultSelector()
    with log_path.open("ab") as log_file:
        processors = logging_processors(json_output=True)  # as the processor manager logs
        logger = structlog.wrap_logger(
            structlog.BytesLogger(log_file), processors=processors, logger_name="processor"
        ).bind()
        # Airflow 3.2 added the bundle's name and relative path to what the manager passes.
        bundle: dict[str, Any] = {"bundle_name": "dags-folder", "dag_file_rel_path": relative} if AIRFLOW_3_2 else {}
        process = DagFileProcessorProcess.start(
            id=uuid7(),
            path=dags_folder / relative,
            bundle_path=dags_folder,
            **bundle,
            callbacks=[request],
            selector=selector,
            logger=logger,
            logger_filehandle=log_file,
            client=client,
        )
        deadline = time.monotonic() + 120
        while not process.is_ready and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                handler, on_close = key.data
                try:
                    need_more = handler(key.fileobj)
                except (BrokenPipeError, ConnectionResetError):
                    need_more = False
                if not need_more:
                    on_close(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
    return 0 if process.is_ready else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))

"""Operators for DLI Spark batch jobs.

The hook (and with it ``requests``) is imported when a task runs, not when a DAG file is parsed: the DAG
processor imports operator modules on every parse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli._compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.hooks.dli import CancelResult, DLIHook


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0; got {value!r}")
    return float(value)


class DLICancelBatchOperator(BaseOperator):
    """Cancel a DLI Spark batch job; idempotent, so safe in retries and failure paths.

    :param batch_id: the job's id (templated), e.g. ``"{{ ti.xcom_pull(task_ids='submit') }}"``.
    :param dli_conn_id: the DLI connection (templated).
    :param project_id: overrides the connection's project (templated).
    :param wait_for_termination: after the cancel, poll until the job is ``dead`` (or otherwise terminal)
        and return that state; DLI updates the state a little after it accepts the cancel.
    :param poll_interval: seconds between state polls while waiting.
    :param termination_timeout: seconds to wait for the terminal state before failing the task.
    :param fail_if_finished: fail (without retries) when the job had already finished before the cancel;
        by default that is a success with ``cancelled=False``.
    :return: ``{"batch_id": ..., "cancelled": bool, "state": str | None}`` (pushed to XCom).
    """

    template_fields: Sequence[str] = ("batch_id", "project_id", "dli_conn_id")
    ui_color = "#f4a6a6"

    def __init__(
        self,
        *,
        batch_id: str,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        wait_for_termination: bool = False,
        poll_interval: float = 5.0,
        termination_timeout: float = 300.0,
        fail_if_finished: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.wait_for_termination = wait_for_termination
        self.poll_interval = _positive_seconds("poll_interval", poll_interval)
        self.termination_timeout = _positive_seconds("termination_timeout", termination_timeout)
        self.fail_if_finished = fail_if_finished

    def hook(self) -> DLIHook:
        from airflow_provider_dli.hooks.dli import DLIHook

        return DLIHook(self.dli_conn_id, project_id=self.project_id, caller=f"{self.dag_id}.{self.task_id}")

    def execute(self, context: Context) -> CancelResult:
        hook = self.hook()
        result = hook.cancel_batch(self.batch_id)
        if not result["cancelled"]:
            if self.fail_if_finished:
                raise AirflowFailException(
                    f"DLI batch job {result['batch_id']} had already finished ({result['state']}) "
                    "before it could be cancelled"
                )
            return result
        if self.wait_for_termination:
            result["state"] = self._wait_until_terminal(hook, result["batch_id"])
        return result

    def _wait_until_terminal(self, hook: DLIHook, batch_id: str) -> str:
        from airflow_provider_dli.hooks.dli import TERMINAL_STATES

        deadline = time.monotonic() + self.termination_timeout
        while True:
            state = hook.get_batch_state(batch_id)
            if state in TERMINAL_STATES:
                self.log.info("DLI batch job %s is %s", batch_id, state)
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AirflowException(
                    f"DLI batch job {batch_id} was cancelled but is still {state!r} after "
                    f"{self.termination_timeout:g} s (termination_timeout)"
                )
            time.sleep(min(self.poll_interval, remaining))

"""DLIBatchSensor: wait for a batch job that another task (or another system) submitted."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli._compat import AirflowFailException, conf
from airflow_provider_dli.operators.arguments import CONNECTION_FIELDS, check_at_parse, one_batch_id, task_hook
from airflow_provider_dli.states import TERMINAL_STATES, UnknownStates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.hooks.dli import DLIHook


class DLIBatchSensor(BaseSensorOperator):
    """Succeed when the job ends ``success``; fail (without retries) when it ends ``dead``.

    :param batch_id: the job's id (templated).
    :param fail_on_dead: if False, a ``dead`` job also ends the wait successfully.
    :param deferrable: wait in the triggerer; ``poke_interval`` is its polling interval and ``timeout``
        its deadline. ``poke_interval`` must be > 0 in either mode: 0 would ask DLI in a busy loop.
    :param cancel_on_kill: when deferred, cancel the job if a person marks the sensor failed or success,
        or clears it (Airflow 3.3+). Off by default: a sensor watches a job it does not own.
    """

    template_fields: Sequence[str] = ("batch_id", "dli_conn_id", "project_id")
    ui_color = "#c6e6a6"

    def __init__(
        self,
        *,
        batch_id: str,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        fail_on_dead: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.fail_on_dead = fail_on_dead
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill
        if self.poke_interval <= 0:  # BaseSensorOperator allows 0, which polls DLI (or the trigger does) non-stop
            raise ValueError(f"poke_interval must be seconds > 0; got {self.poke_interval!r}")
        check_at_parse(self, {"batch_id": one_batch_id} | CONNECTION_FIELDS)

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    @cached_property
    def _unknown_states(self) -> UnknownStates:
        return UnknownStates(self.batch_id)

    def poke(self, context: Context) -> bool:
        state = self.hook.get_batch_state(self.batch_id)
        self.log.info("DLI batch job %s is %s", self.batch_id, state)
        if problem := self._unknown_states.check(state):
            raise AirflowException(problem)
        return self._ended(state)

    def _ended(self, state: str) -> bool:
        if state == "dead" and self.fail_on_dead:
            raise AirflowFailException(f"DLI batch job {self.batch_id} ended dead")
        return state in TERMINAL_STATES

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        from airflow_provider_dli.triggers.dli import DLIBatchTrigger

        self.defer(
            trigger=DLIBatchTrigger(
                batch_id=self.batch_id,
                dli_conn_id=self.dli_conn_id,
                project_id=self.project_id,
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                cancel_on_timeout=False,
                cancel_on_kill=self.cancel_on_kill,
                caller=f"{self.dag_id}.{self.task_id}",
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        status = event["status"]
        if status == "timeout":
            raise AirflowFailException(
                f"DLI batch job {self.batch_id} did not end within the sensor timeout ({self.timeout:g} s)"
            )
        if status == "error":
            raise AirflowException(f"Could not watch DLI batch job {self.batch_id}: {event['message']}")
        self._ended(status)

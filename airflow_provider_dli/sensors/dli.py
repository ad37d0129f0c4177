"""DLIBatchSensor: wait for a batch job that another task (or another system) submitted."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli import metrics
from airflow_provider_dli._compat import AirflowFailException, conf
from airflow_provider_dli.operators.arguments import CONNECTION_FIELDS, check_at_parse, one_batch_id, task_hook
from airflow_provider_dli.operators.lifecycle import outage_tolerance_seconds
from airflow_provider_dli.states import TERMINAL_STATES, Outage, UnknownStates

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
    :param outage_tolerance: how long (seconds, or a ``timedelta``) the wait goes on while the job's state
        cannot be read for an outage of DLI (no answer, a 5xx, ``DLI.0999``, a maintenance page...), as the
        submit operator's wait does. Default: Airflow's option ``[dli] outage_tolerance``, else 600.

    An outage is measured across pokes. In ``poke`` mode (and when deferrable) one sensor object makes every
    poke of a try, and remembers when the outage began. A ``reschedule`` poke runs in a new process that
    remembers nothing of the poke before: Airflow clears the task's XCom at each reschedule, and the task state
    store is Airflow 3.3+ only. So a poke in ``reschedule`` mode that meets an outage waits it out in place,
    reading the state every ``poke_interval`` (holding its worker slot for the outage, at most
    ``outage_tolerance``), rather than reschedule and forget it; and one that reads a state outside the
    documented ones reads again in place the same way, until a documented state or the error.
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
        outage_tolerance: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.fail_on_dead = fail_on_dead
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill
        self.outage_tolerance = outage_tolerance_seconds(outage_tolerance)
        if self.poke_interval <= 0:  # BaseSensorOperator allows 0, which polls DLI (or the trigger does) non-stop
            raise ValueError(f"poke_interval must be seconds > 0; got {self.poke_interval!r}")
        check_at_parse(self, {"batch_id": one_batch_id} | CONNECTION_FIELDS)

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    @cached_property
    def _unknown_states(self) -> UnknownStates:
        return UnknownStates(self.batch_id)

    @cached_property
    def _outage(self) -> Outage:
        return Outage(self.outage_tolerance)

    def poke(self, context: Context) -> bool:
        """In ``reschedule`` mode, a state outside the documented ones is read again here, ``poke_interval``
        apart: the next poke, a new process, would count such states from zero and poll the job until the
        sensor's ``timeout``. It holds the worker slot for two ``poke_interval`` at most (the third such read
        in a row is the error)."""
        while True:
            state = self._read_state()
            if state is None:
                return False
            self.log.info("DLI batch job %s is %s", self.batch_id, state)
            if problem := self._unknown_states.check(state):
                raise AirflowException(problem)
            if not (self.reschedule and self._unknown_states.seen):
                return self._ended(state)
            time.sleep(self.poke_interval)

    def _read_state(self) -> str | None:
        """The job's state; None after a failed read that the wait goes on through (judged as the trigger's and
        the operator's polls are): the next poke reads again. In ``reschedule`` mode, read again here."""
        from airflow_provider_dli.client.errors import DLIError

        while True:
            try:
                state = self.hook.get_batch_state(self.batch_id)
            except DLIError as error:
                if not self._outage.tolerate(error):
                    raise
                metrics.count("dli.poll.failed")
                self.log.warning(
                    "Could not read the state of DLI batch job %s (%s): %s",
                    self.batch_id,
                    self._outage.describe(),
                    error,
                )
                if not self.reschedule:
                    return None
                # read again when the tolerance is spent at the latest: a long poke_interval must not hold
                # the worker slot past it, nor skip a DLI that is back within it
                time.sleep(min(self.poke_interval, max(self._outage.tolerance - self._outage.seconds, 0.0)))
                continue
            self._outage.answered()
            return state

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
                outage_tolerance=self.outage_tolerance,
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

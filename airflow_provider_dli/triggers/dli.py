"""DLIBatchTrigger: wait in the triggerer until a job ends, and cancel it when the wait is abandoned: a Spark batch
job, or a SQL job (``job_kind="sql"``; :mod:`airflow_provider_dli.job_kinds` says what differs).

The hook is synchronous (one place for HTTP); its calls run in a worker thread (``asyncio.to_thread``) so
the triggerer's event loop never blocks. The connection is fetched with ``aget_connection`` for the same
reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

from airflow import __version__ as airflow_version
from airflow.triggers.base import BaseTrigger, TriggerEvent
from packaging.version import Version

from airflow_provider_dli.job_kinds import job_kind as kind_named
from airflow_provider_dli.states import OUTAGE_TOLERANCE, Outage, UnknownStates

if TYPE_CHECKING:
    from airflow_provider_dli.hooks.dli import DLIHook

T = TypeVar("T")
READS_TASK_STATE = Version(airflow_version).release >= (3, 3)
"""Airflow 3.3 calls ``on_kill`` (and on a redistribution too), and its triggerer answers Task SDK calls
made from worker threads; the 3.1 triggerer would read the answer on the wrong event loop."""
STATE_CHECK_TIMEOUT = 20.0
"""Seconds ``on_kill`` waits for the task instance's state before it cancels anyway."""
ON_KILL_HOOK_OPTIONS: dict[str, Any] = {"timeout": (1.0, 2.0), "retry_limit": 1, "retry_delay": 0.2, "deadline": 8.0}
"""``on_kill``'s cancel ends within its deadline whatever the server does or the polling thread holds (a login
to IAM, under the token store's lock, is waited for about one attempt, then the cancel logs in on its own)."""

# Strong references to work that must outlive the coroutine that started it (asyncio keeps only weak ones).
_BACKGROUND: set[asyncio.Task[Any]] = set()
_state_reads_ready = False
"""Whether this triggerer process has made its first Task SDK state read (see ``DLIBatchTrigger.run``)."""


def _in_background(coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(coroutine)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class DLIBatchTrigger(BaseTrigger):
    """Poll the job's state until it is terminal; fire one event.

    Events: ``{"status": "success" | "dead", "batch_id", "state"}`` when the job ended (a SQL job's status:
    ``FINISHED``, ``FAILED``, ``CANCELLED``; ``batch_id`` is then the SQL job's id); ``"timeout"`` when
    ``deadline`` (epoch seconds) passed first, after cancelling the job if ``cancel_on_timeout``;
    ``"error"`` with a ``message`` when DLI refused to answer (a 401 or 403, an unknown job), or its polls failed
    for longer than ``outage_tolerance`` seconds (no answer, a 5xx, ``DLI.0999``, a maintenance page...; see
    :class:`~airflow_provider_dli.states.Outage`).

    :param waiting_since: epoch seconds the task got its job: the lines logged while waiting (a line per change
        of state, and a heartbeat every ``[dli] progress_log_interval`` seconds) say how long it has waited.
    :param job_kind: ``batch`` (a Spark batch job) or ``sql`` (a SQL job).
    :param cancel_on_kill: cancel the job when a person marks the deferred task failed or success, or
        clears it (``on_kill``, Airflow 3.3+). Never on a triggerer restart or redistribution, which only
        move the wait elsewhere.
    :param outage_tolerance: seconds the wait goes on while its polls fail on answers a wait outlasts.

    Airflow 3.3 also calls ``on_kill`` when a trigger merely moved: a triggerer that stalled past
    ``[triggerer] triggerer_health_check_threshold`` and then resumes finds the trigger assigned to another
    triggerer and reports that as a user action (apache/airflow#73454). So ``on_kill`` first asks Airflow,
    through the Task SDK, about the task instance: still ``deferred`` with this job's id in its XCom means
    the trigger is being run elsewhere and the job is left alone. Any other state (failed, success,
    cleared), or a cleared task already deferred again on a new job, is a person's action and the job is
    cancelled. When Airflow cannot be asked, it cancels: a job must not outlive its task.

    Two facts of the 3.3 triggerer shape this. It repeats the cancel on every sync (about a second) until the
    trigger has finished, which would cut ``on_kill`` short: the check and the cancel run shielded, in a task
    of their own. And the first Task SDK read in a triggerer process builds its in-process execution API,
    which takes seconds on a small machine: the first trigger in a process makes one read when it starts, so
    that a person's action is answered in about a second.
    """

    def __init__(
        self,
        *,
        batch_id: str,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        poll_interval: float = 10.0,
        deadline: float | None = None,
        cancel_on_timeout: bool = True,
        cancel_on_kill: bool = True,
        outage_tolerance: float = OUTAGE_TOLERANCE,
        caller: str | None = None,
        waiting_since: float | None = None,
        job_kind: str = "batch",
    ) -> None:
        super().__init__()
        self.kind = kind_named(job_kind)
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or not poll_interval > 0:
            raise ValueError(
                f"poll_interval must be seconds > 0, or the trigger polls DLI non-stop; got {poll_interval!r}"
            )
        self.batch_id = batch_id
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.cancel_on_timeout = cancel_on_timeout
        self.cancel_on_kill = cancel_on_kill
        self.outage_tolerance = outage_tolerance
        self.caller = caller
        self.waiting_since = time.time() if waiting_since is None else waiting_since

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_id": self.batch_id,
                "dli_conn_id": self.dli_conn_id,
                "project_id": self.project_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "cancel_on_timeout": self.cancel_on_timeout,
                "cancel_on_kill": self.cancel_on_kill,
                "outage_tolerance": self.outage_tolerance,
                "caller": self.caller,
                "waiting_since": self.waiting_since,
                "job_kind": self.kind.name,
            },
        )

    async def _hook(self, **kwargs: Any) -> DLIHook:
        from airflow_provider_dli.hooks.dli import DLIHook

        connection = await DLIHook.aget_connection(self.dli_conn_id)
        return DLIHook(
            self.dli_conn_id, project_id=self.project_id, caller=self.caller, connection=connection, **kwargs
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_dli.client.cancels import cancel_summary
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.metrics import count
        from airflow_provider_dli.progress import WaitProgress, progress_log_interval_or_default

        global _state_reads_ready
        if READS_TASK_STATE and not _state_reads_ready and getattr(self, "task_instance", None) is not None:
            _state_reads_ready = True
            _in_background(self._warm_up_task_sdk())
        try:
            hook = await self._hook()
            kind = self.kind
            unknown = UnknownStates(self.batch_id, known=kind.known, noun=kind.noun.removeprefix("DLI "))
            interval = progress_log_interval_or_default(self.log.warning)
            progress = WaitProgress(self.batch_id, since=self.waiting_since, interval=interval, noun=kind.noun)
            outage = Outage(self.outage_tolerance)
            while True:
                try:
                    state: str | None = await asyncio.to_thread(getattr(hook, kind.read_state), self.batch_id)
                    outage.answered()
                except DLIError as error:
                    if not outage.tolerate(error):
                        raise
                    count("dli.poll.failed")
                    self.log.warning(
                        "Could not read the state of %s %s (%s): %s", kind.noun, self.batch_id, outage.describe(), error
                    )
                    state = None
                if state in kind.terminal:
                    yield TriggerEvent({"status": state, "batch_id": self.batch_id, "state": state})
                    return
                if state is not None and (line := progress.line(state)):
                    self.log.info("%s", line)
                if state is not None and (problem := unknown.check(state)):
                    yield TriggerEvent({"status": "error", "batch_id": self.batch_id, "message": problem})
                    return
                remaining = None if self.deadline is None else self.deadline - time.time()
                if remaining is not None and remaining <= 0:
                    if self.cancel_on_timeout:
                        self.log.warning("Timed out waiting for %s %s: cancelling it", kind.noun, self.batch_id)
                        result = await asyncio.to_thread(getattr(hook, kind.cancel), self.batch_id)
                        self.log.info("%s", cancel_summary(result, kind.noun))
                    yield TriggerEvent({"status": "timeout", "batch_id": self.batch_id, "state": state})
                    return
                await asyncio.sleep(self.poll_interval if remaining is None else min(self.poll_interval, remaining))
        except (DLIError, ValueError) as error:
            yield TriggerEvent({"status": "error", "batch_id": self.batch_id, "message": str(error)})

    async def on_kill(self) -> None:
        """A person ended the deferred task: the job must not keep running (Airflow 3.3+ calls this)."""
        if self.cancel_on_kill:
            await asyncio.shield(_in_background(self._cancel_unless_moved()))

    async def _cancel_unless_moved(self) -> None:
        from airflow_provider_dli.client.cancels import cancel_summary

        if await self._task_still_waits_on_this_job():
            self.log.info(
                "The task is still deferred on %s %s: this trigger only moved to another triggerer, "
                "which watches the job now; not cancelling it",
                self.kind.noun,
                self.batch_id,
            )
            return
        hook = await self._hook(**ON_KILL_HOOK_OPTIONS)
        self.log.info("The deferred task was ended by a person: cancelling %s %s", self.kind.noun, self.batch_id)
        result = await asyncio.to_thread(getattr(hook, self.kind.cancel), self.batch_id)
        self.log.info("%s", cancel_summary(result, self.kind.noun))

    async def _task_still_waits_on_this_job(self) -> bool:
        """Whether the task instance is still deferred on this job, read through the Task SDK from inside the
        triggerer: its state, then (a cleared task may already be deferred again, in a new try with a new
        job) the job id in its XCom. False when either cannot be read."""
        ti = getattr(self, "task_instance", None)
        if ti is None or not READS_TASK_STATE:
            return False
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._read_task, ti), timeout=STATE_CHECK_TIMEOUT)
        except Exception:
            self.log.warning("Could not read the state of task %s: cancelling to be safe", ti.task_id, exc_info=True)
            return False

    async def _warm_up_task_sdk(self) -> None:
        """One read that builds the triggerer's in-process execution API, so that on_kill's reads are quick."""
        with suppress(Exception):
            await asyncio.to_thread(self._read_task, self.task_instance)

    def _read_task(self, ti: Any) -> bool:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from airflow.sdk.execution_time.xcom import XCom

        mapped = ti.map_index is not None and ti.map_index >= 0
        states = RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index if mapped else None
        )
        key = f"{ti.task_id}_{ti.map_index}" if mapped else ti.task_id
        if states.get(ti.run_id, {}).get(key) != "deferred":
            return False
        batch_id = XCom.get_one(
            key=self.kind.xcom_key, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index
        )
        # No id at all: a deferred sensor, which pushes none; the job is not its own, and deferred is enough.
        return batch_id is None or bool(batch_id == self.batch_id)

"""DLIBatchTrigger: wait in the triggerer until a batch job ends, and cancel it when the wait is abandoned.

The hook is synchronous (one place for HTTP); its calls run in a worker thread (``asyncio.to_thread``) so
the triggerer's event loop never blocks. The connection is fetched with ``aget_connection`` for the same
reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dli.states import TERMINAL_STATES

if TYPE_CHECKING:
    from airflow_provider_dli.hooks.dli import DLIHook


class DLIBatchTrigger(BaseTrigger):
    """Poll the job's state until it is terminal; fire one event.

    Events: ``{"status": "success" | "dead", "batch_id", "state"}`` when the job ended; ``"timeout"`` when
    ``deadline`` (epoch seconds) passed first, after cancelling the job if ``cancel_on_timeout``;
    ``"error"`` with a ``message`` when DLI could not be asked.

    :param cancel_on_kill: cancel the job when a person marks the deferred task failed or success, or
        clears it (``on_kill``, Airflow 3.3+). Never on a triggerer restart or redistribution, which only
        move the wait elsewhere.
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
        caller: str | None = None,
    ) -> None:
        super().__init__()
        self.batch_id = batch_id
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.cancel_on_timeout = cancel_on_timeout
        self.cancel_on_kill = cancel_on_kill
        self.caller = caller

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
                "caller": self.caller,
            },
        )

    async def _hook(self, **kwargs: Any) -> DLIHook:
        from airflow_provider_dli.hooks.dli import DLIHook

        connection = await DLIHook.aget_connection(self.dli_conn_id)
        return DLIHook(
            self.dli_conn_id, project_id=self.project_id, caller=self.caller, connection=connection, **kwargs
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.hooks.dli import cancel_summary

        try:
            hook = await self._hook()
            while True:
                state = await asyncio.to_thread(hook.get_batch_state, self.batch_id)
                if state in TERMINAL_STATES:
                    yield TriggerEvent({"status": state, "batch_id": self.batch_id, "state": state})
                    return
                remaining = None if self.deadline is None else self.deadline - time.time()
                if remaining is not None and remaining <= 0:
                    if self.cancel_on_timeout:
                        self.log.warning("Timed out waiting for DLI batch job %s: cancelling it", self.batch_id)
                        result = await asyncio.to_thread(hook.cancel_batch, self.batch_id)
                        self.log.info("%s", cancel_summary(result))
                    yield TriggerEvent({"status": "timeout", "batch_id": self.batch_id, "state": state})
                    return
                await asyncio.sleep(self.poll_interval if remaining is None else min(self.poll_interval, remaining))
        except (DLIError, ValueError) as error:
            yield TriggerEvent({"status": "error", "batch_id": self.batch_id, "message": str(error)})

    async def on_kill(self) -> None:
        """A person ended the deferred task: the job must not keep running (Airflow 3.3+ calls this)."""
        from airflow_provider_dli.hooks.dli import cancel_summary

        if not self.cancel_on_kill:
            return
        hook = await self._hook(timeout=(2.0, 5.0), retry_limit=1, retry_delay=0.2)
        self.log.info("The deferred task was ended by a person: cancelling DLI batch job %s", self.batch_id)
        self.log.info("%s", cancel_summary(await asyncio.to_thread(hook.cancel_batch, self.batch_id)))

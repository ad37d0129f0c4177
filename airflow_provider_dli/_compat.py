"""The few names that moved or appeared between Airflow 3.1 and 3.3: one place to import them from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1: still in airflow-core
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

try:
    from airflow.sdk import conf
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[assignment]

if TYPE_CHECKING:
    from airflow.sdk import Context, ResumableJobMixin

    RETRIES_RECONNECT: bool
else:
    try:
        from airflow.sdk import ResumableJobMixin

        RETRIES_RECONNECT = True
    except ImportError:  # Airflow < 3.3 has no task_state_store to remember a job across tries
        RETRIES_RECONNECT = False

        class ResumableJobMixin:
            """Same interface as Airflow 3.3's mixin, without reconnection: a retry submits a new job."""

            external_id_key = "remote_job_id"

            def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.durable = durable

            def execute_resumable(self, context: Context) -> Any:
                external_id = self.submit_job(context)
                self.poll_until_complete(external_id, context)
                return self.get_job_result(external_id, context)


__all__ = ["RETRIES_RECONNECT", "AirflowFailException", "ResumableJobMixin", "conf"]

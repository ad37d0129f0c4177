"""DLICancelBatchNotifier: cancel a DLI job (batch or SQL) from a task's or a DAG's failure (or retry) callback.

Callbacks run on the worker after an exception or ``execution_timeout``, and in the DAG processor after a
killed task or a missed heartbeat; both give a context whose ``ti`` can pull XCom, so one code path serves.

A DAG-level ``on_failure_callback=DLICancelBatchNotifier(this_dag_run=True)`` runs in the DAG processor
whenever the run fails, however its tasks ended; it is the backstop for the path where a task process is
killed on its own (the OOM killer's way) and Airflow runs no task callback at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_provider_dli.validation import resolved_later, validate_batch_id, validate_sql_job_id
from airflow_provider_dli.xcom_keys import BATCH_ID_KEYS, XCOM_BATCH_ID, XCOM_SQL_JOB_ID

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import DAG, Context


class DLICancelBatchNotifier(BaseNotifier):
    """Cancel the batch job(s) of a task when a callback fires.

    :param batch_id: the job's id, or a list of ids (templated). Without it, the XCom ``dli_batch_id``
        (then ``return_value``) of the task instance is used: one id or a list of ids; and a SQL job's id in
        ``dli_sql_job_id`` (what :class:`~airflow_provider_dli.operators.dli.DLISqlJobOperator` pushes).
    :param source_task_id: the task that submitted the job (templated); by default the task whose callback
        fires. Needed in DAG-level callbacks.
    :param source_map_index: with ``source_task_id``, only this map index of that task (templated, e.g.
        ``"{{ ti.map_index }}"``).
    :param dli_conn_id: the DLI connection (templated).
    :param project_id: overrides the connection's project (templated).
    :param this_dag_run: instead of ids, cancel every live job that this DAG run's submit operators started, as
        the jobs' owner records say (this deployment's ``[dli] instance_id``, this DAG and run, exactly), from
        one listing per live state and with concurrent cancels; its SQL jobs too (listed by the run's tag).
        Meant for a DAG-level ``on_failure_callback``. A kind whose listing fails (an IAM user without rights on
        the batch API, an outage of one API) never stops the other kind's cancels; the error that follows names
        the kind and DLI's answer.

    Whose jobs: without ``source_task_id``, only the job(s) of the task instance whose callback fires, so the
    callback of one failed map index of a mapped task never cancels its healthy siblings' jobs. With
    ``source_task_id``, every map index of that task (one, for a task that is not mapped), unless
    ``source_map_index`` names one.

    Finding no id is not an error (the submit may have failed before DLI accepted a job): it is logged.
    Every id is tried (the same bulk cancel as :class:`~airflow_provider_dli.operators.dli.DLICancelBatchOperator`);
    then, if any could not be cancelled, the callback raises once with a short summary, and Airflow logs
    the failure beside the task's own. Each job's outcome is in the log.
    """

    template_fields: Sequence[str] = ("batch_id", "source_task_id", "source_map_index", "dli_conn_id", "project_id")

    def __init__(
        self,
        *,
        batch_id: str | Sequence[str] | None = None,
        source_task_id: str | None = None,
        source_map_index: int | str | None = None,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        this_dag_run: bool = False,
    ) -> None:
        super().__init__()
        if this_dag_run and (batch_id is not None or source_task_id is not None):
            raise ValueError("this_dag_run=True cancels the whole run's jobs: give no batch_id or source_task_id")
        if isinstance(batch_id, str) and batch_id and not resolved_later(batch_id, text=True):
            validate_batch_id(batch_id)  # a plain id is checked when the DAG file is parsed
        elif isinstance(batch_id, list | tuple) and not resolved_later(batch_id, text=True):
            for item in batch_id:
                if not resolved_later(item, text=True):
                    validate_batch_id(item)
        if source_map_index is not None and source_task_id is None:
            raise ValueError("source_map_index picks a map index of source_task_id: give source_task_id too")
        self.batch_id = batch_id
        self.source_task_id = source_task_id
        self.source_map_index = source_map_index
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.this_dag_run = this_dag_run

    def get_template_env(self, dag: DAG | None = None) -> jinja2.Environment:
        """The DAG's template environment, or Airflow's default one where the DAG has none.

        ``airflow dags test`` hands a DAG-level callback the scheduler's serialized DAG, which has no
        ``get_template_env`` (apache/airflow#64649, Airflow 3.1 to 3.3): every notifier then fails before it
        runs. That DAG has none of the DAG file's macros or filters either, so the default environment is
        what can render the fields there.
        """
        return super().get_template_env(dag=dag if hasattr(dag, "get_template_env") else None)

    def notify(self, context: Context) -> None:
        from airflow_provider_dli.cancel_records import canceller, owners_by_id, record_cancels
        from airflow_provider_dli.client.cancels import bulk_cancel_counts, bulk_cancel_failure, bulk_cancel_table
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.hooks.dli import DLIHook
        from airflow_provider_dli.identity import Scope, instance_id
        from airflow_provider_dli.job_kinds import BATCH, SQL
        from airflow_provider_dli.owned_jobs import live_jobs_of_each_kind

        if self.this_dag_run:
            dag_id, run_id = context["dag"].dag_id, context["run_id"]  # a DAG callback's context may have no dag_run
            where = f"DAG run {run_id}"
            hook = DLIHook(self.dli_conn_id, project_id=self.project_id, caller=f"{dag_id} callback")
            listed = live_jobs_of_each_kind(hook, Scope(instance_id(), dag_id, run_id))
            batch_ids = [str(job["id"]) for job in listed.of(BATCH)]
            sql_ids = [str(job["id"]) for job in listed.of(SQL)]
            listing_failure = listed.failure
        else:
            ti = context.get("ti")
            task = f"{ti.dag_id}.{ti.task_id}" if ti is not None else str(context.get("run_id", "DAG"))
            where = task + (f"[{ti.map_index}]" if ti is not None and getattr(ti, "map_index", -1) >= 0 else "")
            if isinstance(self.batch_id, str):
                batch_ids = [self.batch_id] if self.batch_id else []
            elif self.batch_id is not None:
                batch_ids = list(self.batch_id)
            else:
                batch_ids = self._batch_ids_from_xcom(context)
            sql_ids = self._sql_job_ids_from_xcom(context) if self.batch_id is None else []
            listing_failure = None
            if not batch_ids and not sql_ids:
                self.log.info("No DLI batch job id found for %s: nothing to cancel", where)
                return
            hook = DLIHook(self.dli_conn_id, project_id=self.project_id, caller=f"{task} callback")
            if ti is not None:  # a waiting task (source_task_id's) reads who cancelled its job
                by = canceller(ti, "the DLICancelBatchNotifier callback")
                record_cancels(owners_by_id(hook, batch_ids) + owners_by_id(hook, sql_ids, "sql"), by)
        outcomes = (hook.cancel_batches(batch_ids) if batch_ids else []) + (
            hook.cancel_sql_jobs(sql_ids) if sql_ids else []
        )
        self.log.info("%s (callback of %s):%s", bulk_cancel_counts(outcomes), where, bulk_cancel_table(outcomes))
        # after every cancel, one error for what failed; a callback cannot fail its task: Airflow logs the error
        failure = " ".join(filter(None, [bulk_cancel_failure(outcomes, "the log of this callback"), listing_failure]))
        if failure:
            raise DLIError(failure)

    def _sql_job_ids_from_xcom(self, context: Context) -> list[str]:
        """The SQL job ids that the task (or ``source_task_id``) pushed under ``dli_sql_job_id``."""
        ti = context.get("ti")
        if ti is None:
            return []
        task_id = self.source_task_id or ti.task_id
        value: Any = ti.xcom_pull(task_ids=task_id, key=XCOM_SQL_JOB_ID, **self._map_indexes(ti))
        values = value if isinstance(value, list) else [value]
        return [validate_sql_job_id(item, f"XCom {XCOM_SQL_JOB_ID!r} of task {task_id!r}") for item in values if item]

    def _map_indexes(self, ti: Any) -> dict[str, Any]:
        """xcom_pull without map_indexes returns every map index's value: pick this task instance's own, or the
        map index asked for, or (source_task_id alone) all of them."""
        if self.source_task_id is None:
            return {"map_indexes": getattr(ti, "map_index", -1)}
        if self.source_map_index is not None:
            return {"map_indexes": _map_index(self.source_map_index)}
        return {}

    def _batch_ids_from_xcom(self, context: Context) -> list[str]:
        ti = context.get("ti")
        if ti is None:
            self.log.warning("The callback context has no task instance: pass batch_id= to the notifier")
            return []
        task_id = self.source_task_id or ti.task_id
        pull = self._map_indexes(ti)
        for key in BATCH_ID_KEYS:
            value: Any = ti.xcom_pull(task_ids=task_id, key=key, **pull)
            values = value if isinstance(value, list) else [value]
            # One value per map index when several were pulled; each may itself be a list of ids.
            ids = [item for entry in values for item in (entry if isinstance(entry, list) else [entry]) if item]
            if not ids:
                continue
            try:
                return [validate_batch_id(item, f"XCom {key!r} of task {task_id!r}") for item in ids]
            except ValueError:
                if key == XCOM_BATCH_ID:
                    raise
                self.log.info("XCom return_value of task %s is not a DLI batch job id", task_id)
        return []


def _map_index(value: int | str) -> int:
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)  # templated values render as strings
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"source_map_index must be a map index, a whole number >= 0; got {value!r}")
    return value

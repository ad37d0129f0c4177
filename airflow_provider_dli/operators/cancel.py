"""The cancel operator: cancel DLI Spark batch jobs, one, a list, or every live job a filter matches (the
kill switch of a failed DAG run)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli._compat import AirflowFailException
from airflow_provider_dli.operators.arguments import (
    CONNECTION_FIELDS,
    batch_id_or_ids,
    check_at_parse,
    positive_seconds,
    task_hook,
)
from airflow_provider_dli.states import LIVE_STATES, TERMINAL_STATES
from airflow_provider_dli.validation import non_empty_text, validate_max_workers

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.client.cancels import CancelResult
    from airflow_provider_dli.hooks.dli import DLIHook


class DLICancelBatchOperator(BaseOperator):
    """Cancel DLI Spark batch jobs: one, a list, or every live job that matches a filter.

    Idempotent, so safe in retries and failure paths: a job that already finished is reported, not an
    error. Give either ``batch_id`` or a filter (``queue_name``, ``job_name``, ``this_dag_run``).

    :param batch_id: one job id or a list of them (templated), e.g. ``"{{ ti.xcom_pull(task_ids='submit') }}"``.
    :param queue_name: filter: jobs in this DLI queue (templated).
    :param job_name: filter: jobs whose name contains this (templated), matched here whatever DLI's list
        filter does; a job named by it is cancelled whoever submitted it.
    :param this_dag_run: filter: jobs that this DAG run's submit operators started, as their owner records say
        (this deployment's ``[dli] instance_id``, this DAG and run, exactly); the kill switch for a failed run.
    :param states: filter: which states count as live (default ``starting``, ``running``, ``recovering``).
    :param list_only: the dry run: with a filter, only list (and return) the jobs it would cancel. (Not
        ``dry_run``: that is a method of BaseOperator.)
    :param max_workers: cancels sent at once for a list or a filter.
    :param dli_conn_id: the DLI connection (templated).
    :param project_id: overrides the connection's project (templated).
    :param wait_for_termination: for one id: after the cancel, poll until the job is terminal and return
        that state; DLI updates the state a little after it accepts the cancel.
    :param poll_interval: seconds between state polls while waiting.
    :param termination_timeout: seconds to wait for the terminal state before failing the task.
    :param fail_if_finished: for one id: fail (without retries) when the job had already finished.
    :param fail_after_cancel: after cancelling (every job of a list or a filter), fail the task (without
        retries) anyway. The kill switch (``this_dag_run=True, trigger_rule="one_failed"``) runs only when
        something failed, and as a leaf that succeeds it would mark the failed DAG run ``success``.
    :return: for one id, ``{"batch_id", "cancelled", "outcome", "state"}``; otherwise one
        ``{"batch_id", "outcome", "state", "error"}`` per job. When any job could not be cancelled, the task
        fails after trying all, with a short summary; every outcome is then still in XCom (``return_value``)
        and in the task log. A filter lists each kind on its own: when one kind's listing fails (an IAM user
        without rights on the batch API, an outage of one API), the other kind's jobs are cancelled all the
        same, and then the task fails, naming the kind and DLI's answer (a dry run too).
    """

    template_fields: Sequence[str] = ("batch_id", "queue_name", "job_name", "project_id", "dli_conn_id")
    ui_color = "#f4a6a6"

    def __init__(
        self,
        *,
        batch_id: str | Sequence[str] | None = None,
        queue_name: str | None = None,
        job_name: str | None = None,
        this_dag_run: bool = False,
        states: Sequence[str] = ("starting", "running", "recovering"),
        list_only: bool = False,
        max_workers: int = 16,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        wait_for_termination: bool = False,
        poll_interval: float = 5.0,
        termination_timeout: float = 300.0,
        fail_if_finished: bool = False,
        fail_after_cancel: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        filtered = queue_name is not None or job_name is not None or this_dag_run
        if (batch_id is None) == (not filtered):
            raise ValueError("give either batch_id, or a filter (queue_name, job_name, this_dag_run), not both")
        if list_only and not filtered:
            raise ValueError("list_only lists what a filter matches: it needs queue_name, job_name or this_dag_run")
        if isinstance(states, str) or not states:
            raise ValueError(f"states must be a non-empty list of job states; got {states!r}")
        unknown = sorted(set(states) - LIVE_STATES)
        if unknown:
            raise ValueError(f"states can only be live states {sorted(LIVE_STATES)}; got {unknown}")
        self.batch_id = batch_id
        self.queue_name = queue_name
        self.job_name = job_name
        self.this_dag_run = this_dag_run
        self.states = tuple(states)
        self.list_only = list_only
        self.max_workers = validate_max_workers(max_workers)
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.wait_for_termination = wait_for_termination
        self.poll_interval = positive_seconds("poll_interval", poll_interval)
        self.termination_timeout = positive_seconds("termination_timeout", termination_timeout)
        self.fail_if_finished = fail_if_finished
        self.fail_after_cancel = fail_after_cancel
        self.filtered = filtered
        checks = {"batch_id": batch_id_or_ids, "queue_name": non_empty_text, "job_name": non_empty_text}
        check_at_parse(self, checks | CONNECTION_FIELDS)

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    def execute(self, context: Context) -> Any:
        from airflow_provider_dli.cancel_records import owners_by_id, record_cancels
        from airflow_provider_dli.client.cancels import (
            bulk_cancel_counts,
            bulk_cancel_failure,
            bulk_cancel_table,
            cancel_summary,
        )
        from airflow_provider_dli.job_kinds import BATCH, SQL
        from airflow_provider_dli.owned_jobs import job_owner, list_each_kind

        hook = self.hook
        sql_ids: list[str] = []
        listing_failure: str | None = None
        if not self.filtered:  # never the filter's branch: a batch_id that rendered to None must not cancel all
            batch_ids = batch_id_or_ids("batch_id", self.batch_id)
            if isinstance(batch_ids, str):
                record_cancels(owners_by_id(hook, [batch_ids]), self._canceller(context))
                result = self._cancel_one(hook, batch_ids)
                if self.fail_after_cancel:
                    raise AirflowFailException(f"{cancel_summary(result)}; failing (fail_after_cancel)")
                return result
            ids = batch_ids
            owners = owners_by_id(hook, ids)
        else:
            listed = list_each_kind(
                {BATCH: lambda: self.matching_jobs(hook, context), SQL: lambda: self.matching_sql_jobs(hook, context)}
            )
            matching, sql_jobs, listing_failure = listed.of(BATCH), listed.of(SQL), listed.failure
            self.log.info("%d live DLI batch job(s), %d SQL job(s) match the filter", len(matching), len(sql_jobs))
            for batch in matching:
                self.log.info("  %s  %-10s  %s", batch["id"], batch["state"], batch.get("name", ""))
            for job in sql_jobs:
                # never the statement: another task's SQL may carry a data source's password in its OPTIONS
                self.log.info("  %s  %-10s  %s", job["id"], job["state"], job.get("name", "SQL job"))
            if self.list_only:
                batches = [
                    {
                        "job_id": b["id"],
                        "kind": "batch",
                        "batch_id": b["id"],
                        "name": b.get("name"),
                        "state": b["state"],
                    }
                    for b in matching
                ]
                rows = batches + [
                    {"job_id": j["id"], "kind": "sql", "name": None, "state": j["state"]} for j in sql_jobs
                ]
                if listing_failure:  # a dry run that could not see every kind must not look complete
                    self._keep_in_xcom(context, rows)
                    raise AirflowException(f"The dry run lists only what could be listed. {listing_failure}")
                return rows
            ids = [batch["id"] for batch in matching]
            sql_ids = [str(job["id"]) for job in sql_jobs]
            owners = [(str(job["id"]), job_owner(job)) for job in [*matching, *sql_jobs]]
        record_cancels(owners, self._canceller(context))
        outcomes = hook.cancel_batches(ids, max_workers=self.max_workers)
        if sql_ids:
            outcomes += hook.cancel_sql_jobs(sql_ids, max_workers=self.max_workers)
        self.log.info("%s:%s", bulk_cancel_counts(outcomes), bulk_cancel_table(outcomes))
        # a listing that failed fails the task after every cancel it could send: it did not see all of its jobs
        failure = " ".join(
            filter(None, [bulk_cancel_failure(outcomes, "the XCom return_value and the task log"), listing_failure])
        )
        if failure or self.fail_after_cancel:
            self._keep_in_xcom(context, outcomes)
        if failure:
            raise AirflowException(failure)
        if self.fail_after_cancel:
            raise AirflowFailException(
                f"Kill switch: {bulk_cancel_counts(outcomes)}; failing (fail_after_cancel) so that the DAG run fails"
            )
        return outcomes

    @staticmethod
    def _keep_in_xcom(context: Context, result: list[Any]) -> None:
        """The task's result in XCom though the task fails: Airflow pushes a return value only on success."""
        if (ti := context.get("ti")) is not None:
            ti.xcom_push(key="return_value", value=result)

    def matching_sql_jobs(self, hook: DLIHook, context: Context) -> list[dict[str, Any]]:
        """With ``this_dag_run``, the run's live SQL jobs too: one listing filtered by the run's tag, matched on
        the owner record (``queue_name`` and ``job_name`` filters name batch jobs only)."""
        if not self.this_dag_run or self.queue_name is not None or self.job_name is not None:
            return []
        from airflow_provider_dli.identity import Scope, instance_id
        from airflow_provider_dli.owned_jobs import live_sql_jobs_of

        return live_sql_jobs_of(hook, Scope(instance_id(), context["ti"].dag_id, context["ti"].run_id))

    def _canceller(self, context: Context) -> str:
        """Who this task is, for the record the cancelled jobs' waiting tasks read."""
        from airflow_provider_dli.cancel_records import canceller

        if self.this_dag_run:
            what = "the kill switch (DLICancelBatchOperator with this_dag_run=True)"
        elif self.filtered:
            what = "DLICancelBatchOperator (a queue_name or job_name filter)"
        else:
            what = "DLICancelBatchOperator (batch_id)"
        return canceller(context.get("ti"), what)  # never an error: it would stop the cancel

    def matching_jobs(self, hook: DLIHook, context: Context) -> list[dict[str, Any]]:
        """The live jobs that the filter matches, from one listing per live state (never the project's history).
        Every filter is matched here, not by DLI: how DLI's ``job_name`` filter matches is not documented (whole
        names, parts, or not at all), and a server that ignored a filter must never widen a cancel. A DAG run's
        jobs are those whose owner record names this deployment and this run exactly."""
        from airflow_provider_dli.identity import Scope, belongs_to, instance_id, owner_of
        from airflow_provider_dli.owned_jobs import live_batches

        run = Scope(instance_id(), context["ti"].dag_id, context["ti"].run_id) if self.this_dag_run else None
        if self.job_name is not None and (not isinstance(self.job_name, str) or not self.job_name.strip()):
            raise ValueError(f"job_name must be a non-empty string; got {self.job_name!r}")
        return [
            batch
            for batch in live_batches(hook, read_owners=run is not None)
            if batch["state"] in self.states
            and (self.job_name is None or self.job_name in str(batch.get("name") or ""))
            and (self.queue_name is None or self.queue_name in (batch.get("queue"), batch.get("cluster_name")))
            and (run is None or belongs_to(owner_of(batch), run))
        ]

    def _cancel_one(self, hook: DLIHook, batch_id: str) -> CancelResult:
        from airflow_provider_dli.client.cancels import cancel_summary

        result = hook.cancel_batch(batch_id)
        self.log.info("%s", cancel_summary(result))
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

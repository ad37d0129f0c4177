"""The orphan sweep operator: one reconciliation of DLI's live jobs with Airflow, cancelling the orphans
(:mod:`airflow_provider_dli.reconcile` decides; :mod:`airflow_provider_dli.sweeper` schedules it as a DAG)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli.operators.arguments import task_hook
from airflow_provider_dli.validation import validate_max_workers

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.hooks.dli import DLIHook

DEFAULT_INSTANCE_ID_WARNED = "dli_default_instance_id_warned"
"""The Airflow Variable that records when the sweeper warned of the default instance id (it warns once)."""


class DLIOrphanSweepOperator(BaseOperator):
    """Cancel the live DLI jobs whose Airflow task no longer needs them: the last line of defence.

    Each run lists the project's live jobs, keeps those that this Airflow submitted (each job records its
    owner: instance id, DAG, run, task, map index and try), asks Airflow the state of each owner through the
    Task SDK, decides with :data:`airflow_provider_dli.reconcile.DECISION_TABLE`, cancels the orphans, and logs
    a table of every job and its decision. :func:`airflow_provider_dli.sweeper.orphan_sweeper_dag` adds a
    scheduled DAG.

    :param dli_conn_id: the DLI connection (templated).
    :param project_id: overrides the connection's project (templated).
    :param grace_period: a job younger than this is never cancelled, so that the sweeper does not race the
        failure callbacks; a timedelta or seconds.
    :param list_only: the dry run: decide and log, cancel nothing.
    :param instance_id: whose jobs to sweep; by default this Airflow's ``[dli] instance_id``.
    :param max_workers: cancels sent at once.
    :return: ``{"instance_id", "live_jobs", "not_ours", "kept", "listing_error", "orphans": [...]}``, each orphan
        with its batch id, owner, task state, reason and outcome. The task fails after the sweep if any cancel
        failed, or if a kind of job (batch or SQL) could not be listed (``listing_error`` names it and DLI's
        answer; the other kind was swept all the same).
    """

    template_fields: Sequence[str] = ("dli_conn_id", "project_id")
    ui_color = "#d8c8f4"

    def __init__(
        self,
        *,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        grace_period: timedelta | float = timedelta(minutes=5),
        list_only: bool = False,
        instance_id: str | None = None,
        max_workers: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(grace_period, int | float) and not isinstance(grace_period, bool) and grace_period >= 0:
            grace_period = timedelta(seconds=grace_period)
        if not isinstance(grace_period, timedelta) or grace_period < timedelta(0):
            raise ValueError(f"grace_period must be a timedelta or seconds >= 0; got {grace_period!r}")
        if instance_id is not None:
            from airflow_provider_dli.identity import validate_instance_id

            validate_instance_id(instance_id)
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.grace_period = grace_period
        self.list_only = list_only
        self.instance_id = instance_id
        self.max_workers = validate_max_workers(max_workers)

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_dli.cancel_records import canceller
        from airflow_provider_dli.identity import DEFAULT_INSTANCE_ID, instance_id
        from airflow_provider_dli.reconcile import sweep

        sweeping_for = self.instance_id or instance_id()
        if sweeping_for == DEFAULT_INSTANCE_ID:
            self._warn_of_the_default_instance_id(sweeping_for)
        report = sweep(
            self.hook,
            context["ti"],
            instance_id=sweeping_for,
            grace_period=self.grace_period,
            list_only=self.list_only,
            max_workers=self.max_workers,
            canceller=canceller(context["ti"], "the orphan sweeper"),
        )
        orphans = report.orphans
        self.log.info(
            "%d live DLI job(s); %d not submitted by Airflow instance %r (left alone); %d orphan(s) "
            "(%d Task SDK queries)%s:\n%s\n",
            report.live_jobs,
            report.not_ours,
            report.instance_id,
            len(orphans),
            report.airflow_queries,
            " (list_only: nothing cancelled)" if self.list_only else "",
            report.table(),
        )
        failed = report.not_cancelled
        if failed or report.listing_error:
            context["ti"].xcom_push(key="return_value", value=report.result())  # what it did, failed or not
            details = "; ".join(f"{verdict.batch_id}: {verdict.error}" for verdict in failed)
            not_cancelled = f"{len(failed)} of {len(orphans)} orphaned DLI jobs were not cancelled: {details}."
            raise AirflowException(" ".join(filter(None, [not_cancelled if failed else "", report.listing_error])))
        return report.result()

    def _warn_of_the_default_instance_id(self, default: str) -> None:
        """Once per deployment, in full: what the default risks, what to set, where, and what becomes of the jobs
        submitted before. An Airflow Variable remembers it was said; until it can be, every sweep says it."""
        from airflow.sdk import Variable

        try:
            shown_on = Variable.get(DEFAULT_INSTANCE_ID_WARNED, default=None)
        except Exception:  # Airflow cannot be asked: say it again rather than never
            shown_on = None
        if shown_on:
            self.log.info(
                "Sweeping for the default Airflow instance id %r: jobs whose DAG run is not in this Airflow are left "
                "alone (see the warning in the sweep of %s; delete the Airflow Variable %s to see it again)",
                default,
                shown_on,
                DEFAULT_INSTANCE_ID_WARNED,
            )
            return
        self.log.warning(
            "Sweeping for the default Airflow instance id %r. If another Airflow deployment submits jobs to DLI "
            "project %s with the default id too, this sweeper cannot tell its jobs from this deployment's, so it "
            "leaves alone every job whose DAG run or task instance is not in this Airflow (it may be the other's) "
            "instead of cancelling it as an orphan. Give each deployment its own id: set AIRFLOW__DLI__INSTANCE_ID (or "
            "[dli] instance_id) to the same value on ALL of its components, every worker included (a job records "
            "the id of the worker that submitted it; the sweeper sweeps the jobs of its own). Jobs submitted "
            "before the change keep the id %r, and this sweeper then leaves them alone: list the orphans among "
            "them with `airflow dli sweep --instance-id %s --list-only` (without --list-only to cancel them). "
            "This warning is shown once: the Airflow Variable %s records it.",
            default,
            self.hook.project_id,
            default,
            default,
            DEFAULT_INSTANCE_ID_WARNED,
        )
        try:
            Variable.set(
                DEFAULT_INSTANCE_ID_WARNED,
                datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                description="The DLI orphan sweeper warned of the default [dli] instance_id; delete to warn again.",
            )
        except Exception:
            self.log.debug("Could not record the warning in Variable %s", DEFAULT_INSTANCE_ID_WARNED, exc_info=True)

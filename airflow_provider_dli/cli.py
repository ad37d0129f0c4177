"""``airflow dli``: act on DLI from a terminal during an incident, with the code paths the operators use.

- ``airflow dli jobs DAG_ID RUN_ID``: every job of a DAG run, Spark batch jobs and SQL jobs, by their owner records.
- ``airflow dli cancel DAG_ID RUN_ID [--dry-run]``: cancel the run's live jobs of both kinds, as the kill switch does.
- ``airflow dli sweep [--list-only]``: one run of the orphan sweeper, asking Airflow's metadata database
  about the owners (the CLI runs beside Airflow, not in a task, so there is no Task SDK to ask).

Airflow 3.3 adds the group through the provider info's ``cli`` entry; Airflow 3.1 does not read that entry,
and ``python -m airflow_provider_dli`` takes the same commands there. Every Airflow command imports this module
when it starts: it imports nothing heavy until a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_dli.hooks.dli import DLIHook
    from airflow_provider_dli.owned_jobs import Listed


@dataclass(frozen=True)
class Option:
    """One argument of a command: argparse's flags and keywords, for Airflow's parser and for ours."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


CLI_CANCELLER = "`airflow dli cancel`, run by a person in a terminal"
"""Who cancels, in the record the jobs' waiting tasks read."""
CONN_ID = Option(("--conn-id",), {"default": "dli_default", "help": "the DLI connection (default: dli_default)"})
PROJECT_ID = Option(("--project-id",), {"help": "overrides the connection's project"})
DAG_ID = Option(("dag_id",), {"help": "the DAG id"})
RUN_ID = Option(("run_id",), {"help": "the DAG run id, e.g. scheduled__2026-11-29T00:00:00+00:00"})


def jobs(args: argparse.Namespace) -> None:
    """Print every job of the DAG run, live or ended: one listing of each kind."""
    hook = _hook(args)
    listed = _dag_run_jobs(hook, args.dag_id, args.run_id, live=False)
    found = listed.every_job
    print(f"{_counts(found)} of DAG run {args.dag_id} / {args.run_id} in project {hook.project_id}:")
    print(_job_table(found))
    _exit_if_unlisted(listed)


def cancel(args: argparse.Namespace) -> None:
    """Cancel the DAG run's live jobs with the operators' bulk cancel; ``--dry-run`` only lists them. A kind that
    could not be listed makes it exit non-zero, after the other kind's jobs were cancelled (or listed)."""
    from airflow_provider_dli.cancel_records import record_cancels, write_to_the_database
    from airflow_provider_dli.client.cancels import bulk_cancel_counts, bulk_cancel_failure, bulk_cancel_table
    from airflow_provider_dli.owned_jobs import job_owner

    hook = _hook(args)
    listed = _dag_run_jobs(hook, args.dag_id, args.run_id, live=True)
    live = listed.every_job
    if args.dry_run or not live:
        verb = "would be cancelled (dry run)" if args.dry_run else "to cancel"
        print(f"Live: {_counts(live)} of DAG run {args.dag_id} / {args.run_id} {verb}:")
        print(_job_table(live))
        _exit_if_unlisted(listed)
        return
    batch_ids = [str(job["id"]) for job in live if job.get("job_kind") != "sql"]
    sql_ids = [str(job["id"]) for job in live if job.get("job_kind") == "sql"]
    write_to_the_database()
    record_cancels([(str(job["id"]), job_owner(job)) for job in live], CLI_CANCELLER)
    outcomes = (hook.cancel_batches(batch_ids) if batch_ids else []) + (
        hook.cancel_sql_jobs(sql_ids) if sql_ids else []
    )
    print(f"{bulk_cancel_counts(outcomes)}:{bulk_cancel_table(outcomes)}", end="")
    failure = " ".join(filter(None, [bulk_cancel_failure(outcomes, "the table above"), listed.failure]))
    if failure:
        sys.exit(failure)


def sweep(args: argparse.Namespace) -> None:
    """One run of the orphan sweeper: ``sweeper.sweep``, its decision table and its cancel."""
    from airflow_provider_dli.cancel_records import write_to_the_database
    from airflow_provider_dli.identity import instance_id
    from airflow_provider_dli.reconcile import sweep as sweep_once

    hook = _hook(args)
    write_to_the_database()
    report = sweep_once(
        hook,
        MetadataDatabase(),
        instance_id=args.instance_id or instance_id(),
        grace_period=timedelta(seconds=args.grace_period),
        list_only=args.list_only,
        canceller="the orphan sweeper run by `airflow dli sweep`",
    )
    dry_run = " (list only: nothing cancelled)" if args.list_only else ""
    print(
        f"{report.live_jobs} live DLI job(s), batch and SQL; {report.not_ours} not submitted by Airflow instance "
        f"{report.instance_id!r} (left alone); {len(report.orphans)} orphan(s){dry_run}:"
    )
    print(report.table())
    not_cancelled = f"{len(report.not_cancelled)} orphan(s) could not be cancelled: see the table above."
    failure = " ".join(filter(None, [not_cancelled if report.not_cancelled else "", report.listing_error]))
    if failure:
        sys.exit(failure)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    func: Callable[[argparse.Namespace], None]
    options: Sequence[Option]


COMMANDS = (
    Command("jobs", "List a DAG run's DLI jobs (batch and SQL)", jobs, (DAG_ID, RUN_ID, CONN_ID, PROJECT_ID)),
    Command(
        "cancel",
        "Cancel a DAG run's live DLI jobs (batch and SQL)",
        cancel,
        (
            DAG_ID,
            RUN_ID,
            Option(("--dry-run",), {"action": "store_true", "help": "list the jobs that would be cancelled"}),
            CONN_ID,
            PROJECT_ID,
        ),
    ),
    Command(
        "sweep",
        "Run the orphan sweeper once",
        sweep,
        (
            Option(("--list-only",), {"action": "store_true", "help": "the dry run: decide and list, cancel nothing"}),
            Option(
                ("--grace-period",),
                {"type": float, "default": 300.0, "help": "seconds a job is left alone after its creation (300)"},
            ),
            Option(("--instance-id",), {"help": "whose jobs: by default [dli] instance_id"}),
            CONN_ID,
            PROJECT_ID,
        ),
    ),
)


GROUP_HELP = "Data Lake Insight (DLI): list and cancel a DAG run's jobs, sweep orphans"


def get_cli_commands() -> list[Any]:
    """The ``airflow dli`` group, for Airflow 3.3's ``cli`` entry of the provider info."""
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

    return [
        GroupCommand(
            name="dli",
            help=GROUP_HELP,
            subcommands=[
                ActionCommand(
                    name=command.name,
                    help=command.help,
                    func=command.func,
                    # Airflow's Arg carries no annotations.
                    args=[Arg(option.flags, **option.settings) for option in command.options],  # type: ignore[no-untyped-call]
                )
                for command in COMMANDS
            ],
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m airflow_provider_dli``: the same commands where Airflow does not add them (3.1, 3.2)."""
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_dli", description=GROUP_HELP)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        for option in command.options:
            sub.add_argument(*option.flags, **option.settings)
        sub.set_defaults(func=command.func)
    args = parser.parse_args(argv)
    args.func(args)


class MetadataDatabase:
    """The sweeper's questions to Airflow (``sweeper.OwnerStates``), answered from the metadata database as
    Airflow's execution API answers them to a task."""

    def get_task_states(
        self,
        dag_id: str,
        *,
        map_index: int | None = None,
        task_ids: list[str] | None = None,
        run_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        from airflow.models.taskinstance import TaskInstance
        from sqlalchemy import select

        query = select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
        query = query.where(TaskInstance.dag_id == dag_id)
        if map_index is not None:
            query = query.where(TaskInstance.map_index == map_index)
        if task_ids:
            query = query.where(TaskInstance.task_id.in_(task_ids))
        if run_ids:
            query = query.where(TaskInstance.run_id.in_(run_ids))
        states: dict[str, dict[str, Any]] = {}
        for run_id, task_id, index, state in _rows(query):
            states.setdefault(run_id, {})[task_id if index < 0 else f"{task_id}_{index}"] = state
        return states

    def get_dr_count(self, dag_id: str, *, run_ids: list[str] | None = None, states: list[str] | None = None) -> int:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import func, select

        query = select(func.count()).select_from(DagRun).where(DagRun.dag_id == dag_id)
        if run_ids:
            query = query.where(DagRun.run_id.in_(run_ids))
        if states:
            query = query.where(DagRun.state.in_(states))
        [(count,)] = _rows(query)
        return int(count)

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        [(state,)] = _rows(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        return str(state)


def _rows(query: Any) -> list[Any]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return list(session.execute(query).all())


def _hook(args: argparse.Namespace) -> DLIHook:
    from airflow_provider_dli.hooks.dli import DLIHook

    return DLIHook(args.conn_id, project_id=args.project_id, caller="airflow dli")


def _dag_run_jobs(hook: DLIHook, dag_id: str, run_id: str, *, live: bool) -> Listed:
    """The run's batch jobs, then its SQL jobs, as their owner records say (this deployment's instance id, the
    exact DAG and run ids), as the kill switch and the run-wide notifier find them: the live ones from one listing
    per live state; all of them (``live=False``, for a person's look) from the project's whole batch history and
    the SQL jobs tagged with the run. Each kind is listed on its own, as everywhere (``list_each_kind``)."""
    from airflow_provider_dli.identity import Scope, belongs_to, instance_id, owner_of
    from airflow_provider_dli.job_kinds import BATCH, SQL
    from airflow_provider_dli.owned_jobs import list_each_kind, live_jobs_of_each_kind, sql_jobs_of

    run = Scope(instance_id(), dag_id, run_id)
    if live:
        return live_jobs_of_each_kind(hook, run)
    return list_each_kind(
        {
            BATCH: lambda: (batch for batch in hook.list_batches() if belongs_to(owner_of(batch), run)),
            SQL: lambda: (job for job, _ in sql_jobs_of(hook, run, since_ms=None)),
        }
    )


def _exit_if_unlisted(listed: Listed) -> None:
    """Exit non-zero, naming the kind and DLI's answer, when a kind of job could not be listed: the table printed
    shows the other kind's jobs only."""
    if listed.failure:
        sys.exit(listed.failure)


def _kind(job: dict[str, Any]) -> str:
    return "sql" if job.get("job_kind") == "sql" else "batch"


def _counts(found: Sequence[dict[str, Any]]) -> str:
    """``2 DLI batch job(s) and 1 SQL job(s)``."""
    sql = sum(_kind(job) == "sql" for job in found)
    return f"{len(found) - sql} DLI batch job(s) and {sql} SQL job(s)"


def _state(job: dict[str, Any]) -> str:
    """A batch job's state as the batch API spells it (lower-case), a SQL job's as the SQL API does."""
    state = str(job.get("state", ""))
    return state if _kind(job) == "sql" else state.lower()


def _job_table(found: Sequence[dict[str, Any]]) -> str:
    rows = [f"  {'job id':36}  {'kind':5}  {'state':10}  name"]
    rows += [f"  {job['id']:36}  {_kind(job):5}  {_state(job):10}  {job.get('name') or ''}" for job in found]
    return "\n".join(rows)

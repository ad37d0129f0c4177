"""The orphan sweeper's reconciling: the DLI jobs this Airflow owns against what Airflow believes about their owners.

Every other cancel path runs once, at the moment of a failure, and can fail or never run (a task process
OOM-killed while its supervisor lives runs no provider code at all). The sweeper runs on a schedule, like a
Kubernetes controller: it lists the live jobs, batch and SQL alike, reads each job's owner from the job itself
(:mod:`airflow_provider_dli.identity`; a SQL job's from its tags), asks Airflow the state of that task instance
through the Task SDK (no database access: it works on any executor), decides with :data:`DECISION_TABLE`, and
cancels the orphans.
Each job is decided on its own: a job that cannot be read or decided is logged and kept, never the end of a
sweep. Each kind is listed on its own too: a kind whose listing fails is reported (``SweepReport.listing_error``),
and the other kind's jobs are swept all the same.

It knows nothing of operators: :class:`~airflow_provider_dli.operators.dli.DLIOrphanSweepOperator` runs
:func:`sweep`, and :mod:`airflow_provider_dli.sweeper` makes the scheduled DAG around it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from airflow_provider_dli import metrics
from airflow_provider_dli.cancel_records import record_cancels
from airflow_provider_dli.identity import DEFAULT_INSTANCE_ID, JobOwner, Scope, belongs_to
from airflow_provider_dli.job_kinds import BATCH, SQL
from airflow_provider_dli.owned_jobs import job_owner, list_each_kind, live_batches, live_sql_jobs

if TYPE_CHECKING:
    from airflow_provider_dli.hooks.dli import DLIHook

log = logging.getLogger(__name__)

Decision = Literal["cancel", "keep"]

# What Airflow can say about a job's owner, besides its task-instance state (a TaskInstanceState value, or
# "none" for a task instance that has no state yet).
NO_DAG_RUN = "no dag run"
NO_TASK_INSTANCE = "no task instance"
NOT_ASKED = "not asked"
"""For a job decided by its own facts alone (undated, too young): Airflow is not asked about its owner."""

ACTIVE = frozenset(
    {"none", "scheduled", "queued", "running", "deferred", "restarting", "up_for_reschedule", "awaiting_input"}
)
ENDED = frozenset({"success", "skipped"})
HOLDS_JOB = frozenset({"running", "deferred"})
"""Task states in which the task's live try has submitted (or taken over) its job."""
FAILED = frozenset({"failed", "upstream_failed", "removed"})


@dataclass(frozen=True)
class Facts:
    """Everything a decision depends on, for one live job."""

    dated: bool
    """DLI says when the job was created: without that, its age is unknown."""
    young: bool
    """The job is younger than the grace period: the failure callbacks may still be cancelling it."""
    superseded: bool
    """Another live job of the same task instance was created after this one."""
    owner_state: str
    """The owner's task-instance state, ``none``, ``no task instance`` or ``no dag run``."""
    wait: bool
    instance_named: bool
    """This Airflow has an instance id of its own (not the default): a DAG run it cannot find is no
    other deployment's."""
    run_failed: bool | None = None
    """Whether the owner's DAG run failed; read only where a row needs it (a task that ended)."""


ANY: None = None


@dataclass(frozen=True)
class Rule:
    """One row: when every given column matches (a set: the value is in it; a bool: equal; ANY: always)."""

    dated: bool | None
    young: bool | None
    superseded: bool | None
    owner_state: frozenset[str] | None
    wait: bool | None
    instance_named: bool | None
    run_failed: bool | None
    decision: Decision
    reason: str

    def matches(self, facts: Facts) -> bool:
        for column in ("dated", "young", "superseded", "wait", "instance_named", "run_failed"):
            wanted = getattr(self, column)
            if wanted is not ANY and getattr(facts, column) != wanted:
                return False
        return self.owner_state is ANY or facts.owner_state in self.owner_state


NO_RUN = frozenset({NO_DAG_RUN})
NO_TI = frozenset({NO_TASK_INSTANCE})
RETRY = frozenset({"up_for_retry"})
ELSEWHERE = "not in this Airflow: with the default [dli] instance_id, maybe another deployment's job"
# fmt: off
DECISION_TABLE: tuple[Rule, ...] = (
    # dated young newer owner      wait   named  run failed
    Rule(False, ANY,  ANY,  ANY,       ANY,   ANY,   ANY,   "keep", "no creation time: left alone"),
    Rule(ANY,   True, ANY,  ANY,       ANY,   ANY,   ANY,   "keep", "younger than the grace period"),
    Rule(ANY,   ANY,  True, HOLDS_JOB, ANY,   ANY,   ANY,   "cancel", "the task's live try has a newer job"),
    Rule(ANY,   ANY,  ANY,  NO_RUN,    ANY,   False, ANY,   "keep", f"its DAG run is {ELSEWHERE}"),
    Rule(ANY,   ANY,  ANY,  NO_RUN,    ANY,   ANY,   ANY,   "cancel", "its DAG run no longer exists"),
    Rule(ANY,   ANY,  ANY,  NO_TI,     ANY,   False, ANY,   "keep", f"its task instance is {ELSEWHERE}"),
    Rule(ANY,   ANY,  ANY,  NO_TI,     ANY,   ANY,   ANY,   "cancel", "its task instance no longer exists"),
    Rule(ANY,   ANY,  ANY,  FAILED,    ANY,   ANY,   ANY,   "cancel", "the task is {owner_state}"),
    Rule(ANY,   ANY,  ANY,  ACTIVE,    ANY,   ANY,   ANY,   "keep", "the task is {owner_state}"),
    Rule(ANY,   ANY,  ANY,  RETRY,     ANY,   ANY,   ANY,   "keep", "the retry takes this job over"),
    Rule(ANY,   ANY,  ANY,  ENDED,     True,  ANY,   ANY,   "cancel", "the task is {owner_state}, but meant to wait"),
    Rule(ANY,   ANY,  ANY,  ENDED,     False, ANY,   True,  "cancel", "fire-and-forget job of a failed DAG run"),
    Rule(ANY,   ANY,  ANY,  ENDED,     False, ANY,   False, "keep", "fire-and-forget job (wait_for_completion=False)"),
    Rule(ANY,   ANY,  ANY,  ANY,       ANY,   ANY,   ANY,   "keep", "unknown task state {owner_state}: left alone"),
)
# fmt: on
"""First matching row wins. The README shows the same table."""


def decide(facts: Facts) -> tuple[Decision, str]:
    for rule in DECISION_TABLE:
        if rule.matches(facts):
            return rule.decision, rule.reason.format(owner_state=facts.owner_state)
    raise AssertionError("unreachable: the last row matches everything")


class OwnerStates(Protocol):
    """The Task SDK calls the sweeper uses (``context["ti"]``, a RuntimeTaskInstance, provides them): each goes
    from the worker through its supervisor to Airflow's execution API, on any executor."""

    def get_task_states(
        self,
        dag_id: str,
        *,
        map_index: int | None = None,
        task_ids: list[str] | None = None,
        run_ids: list[str] | None = None,
    ) -> dict[str, Any]: ...

    def get_dr_count(
        self, dag_id: str, *, run_ids: list[str] | None = None, states: list[str] | None = None
    ) -> int: ...

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str: ...


RUNS_PER_QUERY = 50
"""Run ids per state query: the execution API takes them in the query string, which servers limit."""


@dataclass
class JobVerdict:
    batch_id: str
    """The job's id, a SQL job's too (``kind`` says which; the XCom calls it ``job_id``)."""
    name: str
    state: str
    age: float
    owner: JobOwner
    facts: Facts
    decision: Decision
    reason: str
    outcome: str = ""
    """After the sweep: ``kept``, ``listed`` (dry run), or the bulk cancel's outcome: ``cancelled``,
    ``already_finished``, ``error`` or ``not_tried`` (after DLI refused the credentials)."""
    error: str | None = None
    kind: str = "batch"
    """``batch`` or ``sql``."""


@dataclass
class SweepReport:
    instance_id: str
    live_jobs: int
    not_ours: int
    verdicts: list[JobVerdict] = field(default_factory=list)
    airflow_queries: int = 0
    undecided: int = 0
    """Owned jobs that could not be decided (logged, kept)."""
    listing_error: str | None = None
    """Which kind of job could not be listed, and DLI's answer (the other kind was swept all the same); the
    sweeping task fails, and its XCom keeps it."""

    @property
    def orphans(self) -> list[JobVerdict]:
        return [verdict for verdict in self.verdicts if verdict.decision == "cancel"]

    @property
    def not_cancelled(self) -> list[JobVerdict]:
        """Orphans whose cancel failed (or was not tried): the sweeping task fails, and the next run retries."""
        return [verdict for verdict in self.orphans if verdict.outcome in ("error", "not_tried")]

    def table(self) -> str:
        """One line per owned live job, for the task log."""
        lines = [
            f"{'job id':36}  {'kind':5}  {'state':10}  {'age':>7}  {'owner (dag/run/task try)':60}  {'decision':8}  why"
        ]
        for v in self.verdicts:
            lines.append(
                f"{v.batch_id:36}  {v.kind:5}  {v.state:10}  {_age(v.age):>7}  {v.owner.describe():60}  "
                f"{v.outcome or v.decision:8}  {v.reason} (task: {v.facts.owner_state})"
            )
        return "\n".join(lines)

    def result(self) -> dict[str, Any]:
        """The XCom: what was cancelled (or, in a dry run, would be) and why; counts of the rest."""
        return {
            "instance_id": self.instance_id,
            "live_jobs": self.live_jobs,
            "not_ours": self.not_ours,
            "kept": len(self.verdicts) - len(self.orphans) + self.undecided,
            "listing_error": self.listing_error,
            "orphans": [
                {
                    **({"batch_id": v.batch_id} if v.kind == "batch" else {}),
                    "job_id": v.batch_id,
                    "kind": v.kind,
                    "name": v.name,
                    "dag_id": v.owner.dag_id,
                    "run_id": v.owner.run_id,
                    "task_id": v.owner.task_id,
                    "map_index": v.owner.map_index,
                    "try_number": v.owner.try_number,
                    "task_state": v.facts.owner_state,
                    "reason": v.reason,
                    "outcome": v.outcome,
                    "error": v.error,
                }
                for v in self.orphans
            ],
        }


def sweep(
    hook: DLIHook,
    airflow: OwnerStates,
    *,
    instance_id: str,
    grace_period: timedelta,
    list_only: bool = False,
    max_workers: int = 16,
    canceller: str = "the orphan sweeper",
) -> SweepReport:
    """List, decide, cancel (unless ``list_only``): one reconciliation of DLI with Airflow. ``canceller`` says
    who sweeps, in the record each cancelled job's task instance gets (:mod:`~airflow_provider_dli.cancel_records`)."""
    now = time.time()
    owned: list[tuple[dict[str, Any], JobOwner]] = []
    live = not_ours = 0
    deployment = Scope(instance_id)
    listed = list_each_kind({BATCH: lambda: live_batches(hook), SQL: lambda: live_sql_jobs(hook, deployment)})
    for job in listed.every_job:
        live += 1
        owner = job_owner(job)
        if owner is None or not belongs_to(owner, deployment):
            not_ours += 1
            continue
        owned.append((job, owner))
    report = SweepReport(instance_id, live, not_ours, listing_error=listed.failure)
    newest = _newest_jobs(owned)
    for batch, owner in owned:
        try:
            report.verdicts.append(_verdict(batch, owner, now, grace_period, newest, instance_id))
        except Exception:  # one job never stops a sweep: it is kept, and the log says why
            log.exception("DLI job %s could not be decided: left alone", batch.get("id"))
            report.undecided += 1
    # Ask Airflow only about the owners whose decision depends on it, in as few queries as the SDK allows.
    states = _OwnerStateReader(airflow)
    undecided = [v for v in report.verdicts if v.facts.dated and not v.facts.young]
    owner_states = states.task_states(v.owner for v in undecided)
    for verdict in undecided:
        verdict.facts = replace(verdict.facts, owner_state=owner_states[verdict.owner.task_instance])
    needs_run = [v for v in undecided if v.facts.owner_state in ENDED and not v.facts.wait]
    failed_runs = states.failed_runs((v.owner.dag_id, v.owner.run_id) for v in needs_run)
    for verdict in needs_run:
        verdict.facts = replace(verdict.facts, run_failed=(verdict.owner.dag_id, verdict.owner.run_id) in failed_runs)
    for verdict in report.verdicts:
        verdict.decision, verdict.reason = decide(verdict.facts)
    report.airflow_queries = states.queries

    orphans = report.orphans
    if list_only:
        for verdict in orphans:
            verdict.outcome = "listed"
    elif orphans:
        for verdict in orphans:
            if verdict.facts.owner_state not in (NO_DAG_RUN, NO_TASK_INSTANCE):
                record_cancels([(verdict.batch_id, verdict.owner)], f"{canceller} ({verdict.reason})")
        batch_ids = [v.batch_id for v in orphans if v.kind == "batch"]
        sql_ids = [v.batch_id for v in orphans if v.kind == "sql"]
        outcomes = hook.cancel_batches(batch_ids, max_workers=max_workers) if batch_ids else []
        outcomes += hook.cancel_sql_jobs(sql_ids, max_workers=max_workers) if sql_ids else []
        by_id = {outcome["job_id"]: outcome for outcome in outcomes}
        for verdict in orphans:
            verdict.outcome, verdict.error = by_id[verdict.batch_id]["outcome"], by_id[verdict.batch_id]["error"]
    for verdict in report.verdicts:
        verdict.outcome = verdict.outcome or "kept"
    metrics.count("dli.sweep.orphans_found", len(orphans))
    metrics.count("dli.sweep.orphans_cancelled", sum(verdict.outcome == "cancelled" for verdict in orphans))
    return report


def _verdict(
    batch: Mapping[str, Any],
    owner: JobOwner,
    now: float,
    grace_period: timedelta,
    newest: Mapping[tuple[str, str, str, int], float],
    instance_id: str,
) -> JobVerdict:
    """One job's facts that need no Airflow: its age, and whether its task instance has a newer live job."""
    created = _created_seconds(batch)
    age = now - created if created is not None else 0.0
    facts = Facts(
        dated=created is not None,
        young=created is not None and age < grace_period.total_seconds(),
        superseded=created is not None and created < newest[owner.task_instance],
        owner_state=NOT_ASKED,
        wait=owner.wait,
        instance_named=instance_id != DEFAULT_INSTANCE_ID,
    )
    name, state = str(batch.get("name") or ""), str(batch["state"])
    kind = str(batch.get("job_kind") or "batch")
    return JobVerdict(str(batch["id"]), name, state, age, owner, facts, "keep", "", kind=kind)


def _created_seconds(batch: Mapping[str, Any]) -> float | None:
    created = batch.get("create_time")
    if isinstance(created, bool) or not isinstance(created, int | float) or created <= 0:
        return None
    return float(created) / 1000


def _newest_jobs(owned: Iterable[tuple[Mapping[str, Any], JobOwner]]) -> dict[tuple[str, str, str, int], float]:
    """When each task instance's newest live job was created (the task's latest try submitted or took it over)."""
    newest: dict[tuple[str, str, str, int], float] = defaultdict(float)
    for batch, owner in owned:
        created = _created_seconds(batch)
        if created is not None:
            newest[owner.task_instance] = max(newest[owner.task_instance], created)
    return newest


class _OwnerStateReader:
    """Batches the Task SDK calls: one task-state query per DAG, map index and chunk of runs."""

    def __init__(self, airflow: OwnerStates) -> None:
        self.airflow = airflow
        self.queries = 0

    def task_states(self, owners: Iterable[JobOwner]) -> dict[tuple[str, str, str, int], str]:
        groups: dict[tuple[str, int], set[JobOwner]] = defaultdict(set)
        for owner in owners:
            groups[(owner.dag_id, owner.map_index)].add(owner)
        states: dict[tuple[str, str, str, int], str] = {}
        for (dag_id, map_index), members in groups.items():
            run_ids = sorted({owner.run_id for owner in members})
            task_ids = sorted({owner.task_id for owner in members})
            by_run: dict[str, Mapping[str, Any]] = {}
            for chunk in _chunks(run_ids, RUNS_PER_QUERY):
                self.queries += 1
                # With map_index given, every key is f"{task_id}_{map_index}" (or task_id for -1): unambiguous.
                by_run.update(
                    self.airflow.get_task_states(dag_id, map_index=map_index, task_ids=task_ids, run_ids=chunk)
                )
            for owner in members:
                key = owner.task_id if map_index < 0 else f"{owner.task_id}_{map_index}"
                if owner.run_id not in by_run:
                    states[owner.task_instance] = NO_DAG_RUN
                elif key not in by_run[owner.run_id]:
                    states[owner.task_instance] = NO_TASK_INSTANCE
                else:
                    states[owner.task_instance] = str(by_run[owner.run_id][key] or "none")
        return states

    def failed_runs(self, runs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (existing) DAG runs failed: one count per DAG, and a state read per run only for
        DAGs where some did."""
        by_dag: dict[str, set[str]] = defaultdict(set)
        for dag_id, run_id in runs:
            by_dag[dag_id].add(run_id)
        failed: set[tuple[str, str]] = set()
        for dag_id, run_ids in by_dag.items():
            ordered = sorted(run_ids)
            count = 0
            for chunk in _chunks(ordered, RUNS_PER_QUERY):
                self.queries += 1
                count += self.airflow.get_dr_count(dag_id, run_ids=chunk, states=["failed"])
            if not count:
                continue
            for run_id in ordered:
                self.queries += 1
                if self.airflow.get_dagrun_state(dag_id, run_id) == "failed":
                    failed.add((dag_id, run_id))
        return failed


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"

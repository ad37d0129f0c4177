"""Finding the jobs of a deployment, DAG run or task instance at DLI: bounded listings, matched on owner records.

Two ways to list, both of which never depend on how DLI's ``job_name`` filter matches (the docs do not say:
whole names, parts of names, or not at all):

- :func:`live_batches`: every live job, one listing per live state, so a project's long history of finished
  jobs is never paged through. The kill switch, the run-wide notifier and the orphan sweeper use it.
- :func:`jobs_of`: a task instance's jobs in any state, for the submit operator's look-up after an answer that
  may hide a created job, and for a retry's take-over. Its listing asks DLI for the job's name (a hint that
  narrows the listing wherever DLI honours it) and stops at jobs older than the run of the task.

SQL jobs are found the same two ways (:func:`live_sql_jobs`, and :func:`tries_jobs` with the SQL kind), listed by
their tags instead (the deployment's or the run's, :mod:`airflow_provider_dli.owner_tags`, a hint as a name is)
and seen as a batch job is (:func:`sql_job_view`: ``id``, ``name``, ``state``, ``create_time``), with
``job_kind`` ``sql``. Either way the owner record decides (:func:`~airflow_provider_dli.identity.belongs_to`),
never the name or a tag, and :func:`take_over` says what a retry does with its earlier tries' jobs, of either kind.

Whoever lists both kinds (the kill switch, the run-wide notifier, the sweeper, the CLI) lists them through
:func:`list_each_kind`: one kind's failed listing never keeps the other kind's jobs from being acted on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from airflow_provider_dli.client.errors import DLIError
from airflow_provider_dli.identity import JobOwner, Scope, belongs_to, owner_of
from airflow_provider_dli.job_kinds import BATCH, SQL, JobKind
from airflow_provider_dli.owner_tags import INSTANCE_TAG, RUN_TAG, owner_from_tags, run_digest
from airflow_provider_dli.states import LIVE_STATES, SQL_LIVE_STATES

log = logging.getLogger(__name__)

LIVE_ORDER = ("starting", "running", "recovering")
"""The order jobs move in: a job that leaves a state between two listings shows up in a later one. Newest
first, a job leaving a listing's state (the oldest go first) never shifts a page that is still to be read."""
CLOCK_MARGIN_MS = 15 * 60 * 1000
"""How far DLI's clock may be from Airflow's: DLI refuses a request signed more than 15 minutes off."""
SEARCH_LIMIT = 5000
"""Jobs a task instance's look-up reads at most, should DLI ignore both the name and the order asked for."""


class BatchLister(Protocol):
    """What these listings need from a hook (or a client)."""

    def list_batches(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]: ...
    def get_batch(self, batch_id: str) -> dict[str, Any]: ...


class SqlLister(Protocol):
    def list_sql_jobs(
        self, *, page_size: int = 100, tags: Mapping[str, str] | None = None, **filters: Any
    ) -> Iterator[dict[str, Any]]: ...


class JobLister(BatchLister, SqlLister, Protocol):
    """Both kinds (a hook)."""


def live_batches(hook: BatchLister, *, read_owners: bool = True) -> Iterator[dict[str, Any]]:
    """Every live job (``state`` lower-case): one filtered listing per live state. A job missed because it
    changed state against the listings' order is found by the next run. Should DLI ignore the state filter, the
    first listing holds every job and the others are skipped. With ``read_owners``, a job whose listing lacks
    ``req_body`` (older T Cloud docs) and whose name has this provider's form is read in full (its details
    carry ``req_body``)."""
    seen: set[str] = set()
    for state in LIVE_ORDER:
        filter_ignored = False
        for batch in hook.list_batches(state=state, order="CREATE_TIME_DESC"):
            batch_id, batch_state = str(batch.get("id")), str(batch.get("state", "")).lower()
            filter_ignored = filter_ignored or batch_state != state
            if batch_id in seen or batch_state not in LIVE_STATES:
                continue
            seen.add(batch_id)
            if read_owners and str(batch.get("name") or "").startswith("airflow."):
                batch = _with_request(hook, batch)
            yield {**batch, "state": batch_state}
        if filter_ignored:
            return


def live_jobs_of(hook: BatchLister, scope: Scope) -> list[dict[str, Any]]:
    """The live jobs that belong to ``scope``."""
    return [batch for batch in live_batches(hook) if belongs_to(owner_of(batch), scope)]


Found = list[tuple[dict[str, Any], JobOwner]]
"""Jobs with their owner records."""


def jobs_of(hook: BatchLister, scope: Scope, *, name: str, since_ms: int | None) -> Found:
    """``scope``'s jobs in any state, newest first, with their owners. ``name`` (the name the scope's jobs were
    given) is sent as DLI's ``job_name`` filter, a hint only; reading stops at the first job created before
    ``since_ms`` (epoch ms) while the listing comes newest first, and after :data:`SEARCH_LIMIT` jobs."""
    found: Found = []
    newest_first, previous = True, None
    for read, batch in enumerate(hook.list_batches(job_name=name, order="CREATE_TIME_DESC"), start=1):
        created = _created_ms(batch)
        if created is not None:
            newest_first = newest_first and (previous is None or created <= previous)
            previous = created
            if newest_first and since_ms is not None and created < since_ms:
                break
        if batch.get("name") == name:
            batch = _with_request(hook, batch)
        owner = owner_of(batch)
        if owner is not None and belongs_to(owner, scope):
            found.append(({**batch, "state": str(batch.get("state", "")).lower()}, owner))
        if read >= SEARCH_LIMIT:
            log.warning("Stopped looking for the jobs of %s after %d jobs of the listing", name, read)
            break
    return sorted(found, key=lambda pair: _created_ms(pair[0]) or 0, reverse=True)


def tries_jobs(
    hook: JobLister, owner: JobOwner, tries: range, *, name: str, since_ms: int | None, kind: JobKind = BATCH
) -> Found:
    """The jobs (of ``kind``) of these tries of ``owner``'s task instance, in this run of the task, newest first;
    for this try alone, the job of its exact task-instance id."""
    this_try = owner.ti_id if owner.try_number in tries else ""
    scope = Scope(
        owner.instance,
        owner.dag_id,
        owner.run_id,
        owner.task_id,
        owner.map_index,
        first_try=owner.first_try,
        tries=tries,
        ti_id=this_try or None,
    )
    if kind is SQL:
        return sql_jobs_of(hook, scope, since_ms=since_ms)
    return jobs_of(hook, scope, name=name, since_ms=since_ms)


def take_over(found: Found, kind: JobKind) -> tuple[tuple[dict[str, Any], JobOwner] | None, list[str]]:
    """What a retry does with its earlier tries' jobs (newest first): the job it takes over, and the older live
    ones it cancels (one task instance never keeps two jobs running). It takes the newest over when that one is
    live (the retry waits for it) or succeeded (the retry succeeds with it); none when there is none, or the
    newest failed or was cancelled (the retry submits the job anew, and still cancels the older live ones)."""
    if not found:
        return None, []
    (newest, owner), older = found[0], found[1:]
    older_live = [str(job["id"]) for job, _ in older if job["state"] in kind.live]
    if newest["state"] not in kind.live and newest["state"] != kind.succeeded:
        return None, older_live
    return (newest, owner), older_live


# SQL jobs

SQL_LIVE_ORDER = ("LAUNCHING", "RUNNING")


def sql_job_view(job: Mapping[str, Any]) -> dict[str, Any]:
    """A SQL job as the tools read a batch job: ``id``, ``name`` (the statement's kind: a SQL job has no name),
    ``state`` (DLI's upper-case status), ``create_time`` (its start, epoch ms) and ``job_kind`` ``sql``."""
    return {
        **job,
        "id": str(job["job_id"]),
        "name": f"SQL {job.get('job_type') or ''} job".replace("  ", " "),
        "state": str(job.get("status", "")).upper(),
        "create_time": job.get("start_time"),
        "job_kind": SQL.name,
    }


def job_owner(job: Mapping[str, Any]) -> JobOwner | None:
    """The owner record a job carries: a SQL job's in its tags, a batch job's in its Spark conf."""
    return owner_from_tags(job.get("tags")) if job.get("job_kind") == SQL.name else owner_of(job)


def scope_tags(scope: Scope) -> dict[str, str]:
    """The narrowest tag filter that holds every SQL job of ``scope``: its run's, else its deployment's."""
    if scope.dag_id is not None and scope.run_id is not None:
        return {RUN_TAG: run_digest(scope.instance, scope.dag_id, scope.run_id)}
    return {INSTANCE_TAG: scope.instance}


def live_sql_jobs(hook: SqlLister, scope: Scope) -> Iterator[dict[str, Any]]:
    """Every live SQL job tagged for ``scope`` (:func:`sql_job_view`), one listing per live status, as
    :func:`live_batches`; the tag narrows the listing, and the caller matches each owner record."""
    seen: set[str] = set()
    for status in SQL_LIVE_ORDER:
        filter_ignored = False
        for job in hook.list_sql_jobs(status=status, tags=scope_tags(scope), order="start_time_desc"):
            view = sql_job_view(job)
            filter_ignored = filter_ignored or view["state"] != status
            if view["id"] in seen or view["state"] not in SQL_LIVE_STATES:
                continue
            seen.add(view["id"])
            yield view
        if filter_ignored:
            return


def live_sql_jobs_of(hook: SqlLister, scope: Scope) -> list[dict[str, Any]]:
    """The live SQL jobs that belong to ``scope``."""
    return [job for job in live_sql_jobs(hook, scope) if belongs_to(job_owner(job), scope)]


def sql_jobs_of(hook: SqlLister, scope: Scope, *, since_ms: int | None) -> Found:
    """``scope``'s SQL jobs in any state (a scope within one DAG run), newest first, with their owners: one
    listing filtered by the run's tag and started since ``since_ms``, at most :data:`SEARCH_LIMIT` jobs."""
    found: Found = []
    listing = hook.list_sql_jobs(tags=scope_tags(scope), order="start_time_desc", start=since_ms)
    for read, job in enumerate(listing, start=1):
        view = sql_job_view(job)
        owner = job_owner(view)
        if owner is not None and belongs_to(owner, scope):
            found.append((view, owner))
        if read >= SEARCH_LIMIT:
            log.warning("Stopped looking for the SQL jobs of %s after %d jobs of the listing", scope, read)
            break
    return sorted(found, key=lambda pair: _created_ms(pair[0]) or 0, reverse=True)


# Both kinds: one kind's failed listing never stops the other's

Listing = Callable[[], Iterable[dict[str, Any]]]
"""One kind's listing, run when :func:`list_each_kind` comes to it."""


@dataclass(frozen=True)
class Listed:
    """The jobs of each kind, as far as each kind could be listed."""

    jobs: dict[JobKind, list[dict[str, Any]]]
    unlisted: dict[JobKind, DLIError]
    """The kinds whose listing failed, with DLI's answer (or the connection's failure), which names the request
    and never a secret."""

    def of(self, kind: JobKind) -> list[dict[str, Any]]:
        return self.jobs.get(kind, [])

    @property
    def every_job(self) -> list[dict[str, Any]]:
        """Every kind's jobs, batch jobs first."""
        return [job for jobs in self.jobs.values() for job in jobs]

    @property
    def failure(self) -> str | None:
        """What could not be listed, one sentence per kind (``The DLI batch jobs could not be listed: DLI GET ...
        failed: HTTP 403 ...``); None when every kind was."""
        sentences = (f"The {kind.noun}s could not be listed: {error}." for kind, error in self.unlisted.items())
        return " ".join(sentences) or None


def list_each_kind(listings: Mapping[JobKind, Listing]) -> Listed:
    """Each kind's jobs, from each kind's own listing. A listing that DLI refuses or that fails (an IAM user with
    rights on SQL jobs alone gets 403 from the batch API; one API is down) is logged and kept in
    :attr:`Listed.unlisted`, and the next kind is listed all the same: a caller acts on every job it could see,
    then reports what it could not see. The one rule of every tool that lists both kinds. Credentials that DLI
    refused (401) are not sent again for the next kind: the same ones sign every listing, and each refusal counts
    towards the gateway's lock of the access key (as a bulk cancel stops at a 401)."""
    jobs: dict[JobKind, list[dict[str, Any]]] = {}
    unlisted: dict[JobKind, DLIError] = {}
    refused_credentials: DLIError | None = None
    for kind, listing in listings.items():
        if refused_credentials is not None:
            jobs[kind], unlisted[kind] = [], refused_credentials
            continue
        try:
            jobs[kind] = list(listing())
        except DLIError as error:
            log.error("The %ss could not be listed (the other kinds' are listed all the same): %s", kind.noun, error)
            jobs[kind], unlisted[kind] = [], error
            if error.answer.locks_key:
                refused_credentials = DLIError(
                    f"not asked, since DLI refused the credentials when listing the {kind.noun}s", answer=error.answer
                )
    return Listed(jobs, unlisted)


def live_jobs_of_each_kind(hook: JobLister, scope: Scope) -> Listed:
    """The live jobs of both kinds that belong to ``scope`` (:func:`live_jobs_of`, :func:`live_sql_jobs_of`)."""
    return list_each_kind({BATCH: lambda: live_jobs_of(hook, scope), SQL: lambda: live_sql_jobs_of(hook, scope)})


def search_floor(dag_run: object) -> int | None:
    """Epoch ms before which no job of this DAG run can have been created (DLI's clock may be off by a margin)."""
    started = getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)
    if not isinstance(started, datetime):
        return None
    return int(started.timestamp() * 1000) - CLOCK_MARGIN_MS


def _with_request(hook: BatchLister, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch with its ``req_body``, read from its details when the listing left it out; as it is when even
    that fails (one job's details must not end a listing: the job then has no owner record to act on)."""
    if "req_body" in batch:
        return dict(batch)
    try:
        return {**batch, "req_body": hook.get_batch(str(batch.get("id"))).get("req_body")}
    except Exception as error:
        log.warning("Could not read the details of DLI batch job %s: %s", batch.get("id"), error)
        return dict(batch)


def _created_ms(batch: Mapping[str, Any]) -> int | None:
    """The job's creation time (epoch ms); None when DLI gave none, or something else."""
    created = batch.get("create_time")
    if isinstance(created, bool) or not isinstance(created, int | float) or created <= 0:
        return None
    return int(created)

"""The SQL-job API (``/v1.0/{project_id}/jobs``): submit, status, preview, list, cancel one or many.

Everything that can be checked before a request is sent (ids, bodies, filters) is checked first, with an error
that names the field. Statuses come back upper-case, as DLI documents them (``LAUNCHING``, ``RUNNING``,
``FINISHED``, ``FAILED``, ``CANCELLED``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_dli.client.answers import REFUSED, UNREADABLE
from airflow_provider_dli.client.cancels import (
    CANCEL_SETTLE_TIMEOUT,
    SQL_SETTLED,
    BulkCancelOutcome,
    CancelResult,
    cancel_many,
    judge_refused_cancel,
)
from airflow_provider_dli.client.conversation import Conversation
from airflow_provider_dli.client.errors import DLIAPIError
from airflow_provider_dli.states import SQL_KNOWN_STATES
from airflow_provider_dli.validation import BATCH_ID, shown, validate_sql_job_id

VERSION = "v1.0"
SQL_LIST_FILTERS = {
    "status": "job-status",
    "job_id": "job-id",
    "job_type": "job-type",
    "queue_name": "queue_name",
    "db_name": "db_name",
    "owner": "owner",
    "sql_pattern": "sql_pattern",
    "start": "start",
    "end": "end",
    "order": "order",
}
"""Filter -> the list API's query parameter (DLI spells some with ``-``, some with ``_``)."""
SQL_LIST_ORDERS = ("start_time_desc", "start_time_asc", "duration_desc", "duration_asc")
MAX_PAGE_SIZE = 100


class SqlJobs(Conversation):
    """The SQL-job API of one project, on the shared request layer."""

    def submit_sql_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a SQL job (``POST /jobs/submit-job``); DLI's answer: ``job_id``, ``job_type``, ``job_mode``
        (``sync``: it has ended, ``is_success`` and ``message`` say how, and a query's ``schema`` and ``rows``
        come with it), ``is_success``, ``message``."""
        if not isinstance(body, Mapping):
            raise ValueError(f"a SQL job's body must be a mapping of the submit API's fields; got {shown(body)}")
        if not isinstance(body.get("sql"), str) or not body["sql"].strip():
            raise ValueError(f"a SQL job needs 'sql', a non-empty string; got {shown(body.get('sql'))}")
        answer = self.request("POST", "jobs/submit-job", json=dict(body), idempotent=False, version=VERSION)
        job_id = answer.get("job_id")
        if job_id is None and answer.get("is_success") is False:
            raise DLIAPIError(
                f"DLI refused the SQL job: {str(answer.get('message'))[:300]}",
                status_code=200,
                error_msg=str(answer.get("message")),
                answer=REFUSED,
            )
        if not isinstance(job_id, str) or not BATCH_ID.fullmatch(job_id):
            # DLI may have made the job: the caller looks for it, as after a lost answer.
            raise DLIAPIError(
                f"DLI answered the SQL job's submit without a job id: {str(answer)[:200]}",
                status_code=200,
                error_msg="no job_id in the answer",
                answer=UNREADABLE,
            )
        self.log.info(
            "Submitted DLI SQL job %s (%s, %s)", job_id, answer.get("job_type") or "?", answer.get("job_mode") or "?"
        )
        return answer

    def get_sql_job_status(self, job_id: str) -> dict[str, Any]:
        """The job's status object (``GET /jobs/{job_id}/status``): ``status`` (upper-case), ``detail``,
        ``duration``, ``result_count``, ``job_type``, ``tags``..."""
        body = self.request("GET", f"jobs/{validate_sql_job_id(job_id)}/status", version=VERSION)
        status = body.get("status")
        if not isinstance(status, str):
            raise DLIAPIError(
                f"DLI returned no status for SQL job {job_id}",
                status_code=200,
                error_msg=str(body)[:200],
                answer=UNREADABLE,
            )
        return {**body, "status": status.upper()}

    def get_sql_job_state(self, job_id: str) -> str:
        """The job's status: ``LAUNCHING``, ``RUNNING``, ``FINISHED``, ``FAILED`` or ``CANCELLED``."""
        return str(self.get_sql_job_status(job_id)["status"])

    def preview_sql_job(self, job_id: str, *, queue_name: str | None = None) -> dict[str, Any]:
        """The first rows (at most 1,000) of a finished query's result (``GET /jobs/{job_id}/preview``):
        ``schema``, ``rows``, ``row_count``."""
        params = {"queue-name": queue_name} if queue_name else None
        body = self.request("GET", f"jobs/{validate_sql_job_id(job_id)}/preview", params=params, version=VERSION)
        if not isinstance(body.get("rows", []), list):
            raise DLIAPIError(
                f"DLI's preview of SQL job {job_id} has no list of rows",
                status_code=200,
                error_msg=str(body)[:200],
                answer=UNREADABLE,
            )
        return body

    def list_sql_jobs(
        self, *, page_size: int = MAX_PAGE_SIZE, tags: Mapping[str, str] | None = None, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every SQL job matching the filters, page by page (``page-size``/``current-page``), each job once.

        ``tags`` keeps the jobs that carry each of these tags (sent as ``key=value`` pairs joined by ``,``); the
        other filters are the list API's: ``status``, ``job_id``, ``job_type``, ``queue_name``, ``db_name``,
        ``owner``, ``sql_pattern``, ``start``/``end`` (epoch milliseconds) and ``order``. All are checked before
        any request.
        """
        params = _list_params(filters, tags)  # checked here, at the call, not at the first next()
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}; got {page_size!r}")
        return self._sql_pages(params, page_size)

    def _sql_pages(self, params: dict[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
        """Pages until a short or empty one (``job_count`` is not trusted to stop, as for batch jobs); a page of
        jobs already listed means the server ignores ``current-page``, and ends the listing."""
        seen: set[str] = set()
        page = 1
        while True:
            body = self.request(
                "GET", "jobs", params={**params, "page-size": page_size, "current-page": page}, version=VERSION
            )
            jobs = _page_jobs(body, page)
            new = [job for job in jobs if job["job_id"] not in seen]
            for job in new:
                seen.add(job["job_id"])
                yield {**job, "status": str(job.get("status", "")).upper()}
            if len(jobs) < page_size:
                return
            if not new:
                self.log.warning(
                    "DLI answered the SQL job list's page %d with jobs already listed: stopping here, since the "
                    "server seems to ignore 'current-page'",
                    page,
                )
                return
            page += 1

    def cancel_sql_job(self, job_id: str, *, settle_timeout: float = CANCEL_SETTLE_TIMEOUT) -> CancelResult:
        """Cancel the job (``DELETE /jobs/{job_id}``); idempotent, and says what it found, as
        :meth:`~airflow_provider_dli.client.batches.BatchJobs.cancel_batch` does: DLI refuses to cancel a job
        that has ended, so a refusal is judged by the job's status (``already_finished`` when it had ended by
        itself). The result's ``batch_id`` is the SQL job's id."""
        job_id = validate_sql_job_id(job_id)
        lost: list[str] = []
        try:
            self.request("DELETE", f"jobs/{job_id}", lost=lost, version=VERSION)
        except DLIAPIError as refused:
            if not refused.answer.refusal:
                raise
            return judge_refused_cancel(
                self, job_id, refused, bool(lost), settle_timeout, self.get_sql_job_state, SQL_SETTLED
            )
        self.log.debug("Cancelled DLI SQL job %s", job_id)
        return {"batch_id": job_id, "cancelled": True, "outcome": "cancelled", "state": None}

    def cancel_sql_jobs(self, job_ids: Iterable[str], *, max_workers: int = 16) -> list[BulkCancelOutcome]:
        """Cancel many SQL jobs at once, as :meth:`cancel_batches` cancels batch jobs."""
        return cancel_many(self, job_ids, self.cancel_sql_job, BATCH_ID, "DLI SQL job", max_workers, "job_ids", "sql")


def _page_jobs(body: dict[str, Any], page: int) -> list[dict[str, Any]]:
    """The jobs of one page of the SQL job list, each with a string ``job_id``; DLIAPIError if malformed."""
    jobs: Any = body.get("jobs")
    if jobs is None:
        return []
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and isinstance(j.get("job_id"), str) for j in jobs):
        raise DLIAPIError(
            f"DLI answered the SQL job list (page {page}) with a malformed page: not a list of jobs with ids",
            status_code=200,
            error_msg=str(jobs)[:200],
            answer=UNREADABLE,
        )
    return jobs


def _list_params(filters: Mapping[str, Any], tags: Mapping[str, str] | None) -> dict[str, Any]:
    """The list API's query parameters; a ValueError names the first bad filter."""
    params: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if name not in SQL_LIST_FILTERS:
            raise ValueError(f"unknown SQL job filter {name!r}; the filters are {sorted([*SQL_LIST_FILTERS, 'tags'])}")
        if name in ("start", "end"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"filter {name!r} must be epoch milliseconds, a whole number; got {value!r}")
        elif name == "status":
            if str(value).upper() not in SQL_KNOWN_STATES:
                raise ValueError(f"filter 'status' must be one of {sorted(SQL_KNOWN_STATES)}; got {value!r}")
            value = str(value).upper()
        elif name == "order":
            if value not in SQL_LIST_ORDERS:
                raise ValueError(f"filter 'order' must be one of {SQL_LIST_ORDERS}; got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise ValueError(f"filter {name!r} must be a non-empty string; got {value!r}")
        params[SQL_LIST_FILTERS[name]] = value
    if tags:
        if not isinstance(tags, Mapping):
            raise ValueError(f"filter 'tags' must be a mapping of tag keys to values; got {shown(tags)}")
        for key, text in tags.items():
            if not isinstance(key, str) or not key or not isinstance(text, str) or {"=", ","} & set(key + text):
                raise ValueError(
                    f"filter 'tags': keys and values are strings without '=' or ','; got {key!r}: {text!r}"
                )
        params["tags"] = ",".join(f"{key}={text}" for key, text in tags.items())  # the client escapes = and ,
    return params

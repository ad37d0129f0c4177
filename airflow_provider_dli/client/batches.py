"""The Spark batch-job API (``/v2.0/{project_id}/batches``): create, read, list, log, cancel one or many.

Everything that can be checked before a request is sent (ids, bodies, filters) is checked first, with an error
that names the field.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_dli.client.answers import UNREADABLE
from airflow_provider_dli.client.cancels import (
    BATCH_SETTLED,
    CANCEL_SETTLE_TIMEOUT,
    BulkCancelOutcome,
    CancelResult,
    cancel_many,
    judge_refused_cancel,
)
from airflow_provider_dli.client.conversation import Conversation
from airflow_provider_dli.client.errors import DLIAPIError
from airflow_provider_dli.states import LIVE_STATES, TERMINAL_STATES
from airflow_provider_dli.validation import BATCH_ID, shown, validate_batch_id

DEFAULT_MAX_RETRY_TIMES = 20
"""DLI's documented default for ``max_retry_times``: how often it restarts an ``auto_recovery`` job's driver."""

LIST_FILTERS = {
    "job_name": "job_name",
    "job_id": "job-id",
    "queue_name": "queue_name",
    "cluster_name": "cluster_name",
    "state": "state",
    "owner": "owner",
    "start": "start",
    "end": "end",
    "order": "order",
}
LIST_ORDERS = ("CREATE_TIME_DESC", "CREATE_TIME_ASC", "DURATION_DESC", "DURATION_ASC")


def _created_ms(batch: Mapping[str, Any]) -> float:
    created = batch.get("create_time")
    return float(created) if isinstance(created, int | float | str) and str(created).isdigit() else float("nan")


EDITION_PARAMETERS: dict[str, Callable[[Mapping[str, Any], Any], bool] | None] = {
    "owner": lambda batch, owner: batch.get("owner") == owner,
    "start": lambda batch, ms: not _created_ms(batch) < ms,  # a job without a readable time is kept
    "end": lambda batch, ms: not _created_ms(batch) > ms,
    "order": None,
}
"""The list parameters that only one edition documents (T Cloud: ``owner``; Huawei's SDK: ``start``, ``end``,
``order``), and how a listing keeps its meaning when DLI refuses them (400 ``DLI.0001``) and they are left out:
a test of each listed job, or nothing for an order (the caller gets every job all the same)."""
_REFUSED: set[tuple[str, str]] = set()
"""(API address, parameter) that DLI refused in this process: left out from then on, without asking again."""
_REFUSED_GUARD = threading.Lock()


class BatchJobs(Conversation):
    """The batch-job API of one project, on the shared request layer."""

    def create_batch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a Spark batch job (``POST /batches``); DLI's batch object, with its ``id``."""
        if not isinstance(body, Mapping):
            raise ValueError(f"a batch job's body must be a mapping of the create-job API's fields; got {shown(body)}")
        for field in ("file", "className"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise ValueError(f"a batch job needs '{field}', a non-empty string; got {body.get(field)!r}")
        batch = self.request("POST", "batches", json=dict(body), idempotent=False)
        try:
            validate_batch_id(batch.get("id"), "the id DLI returned for the new job")
        except ValueError as problem:  # the job may exist all the same: the caller looks for it
            raise DLIAPIError(
                f"DLI answered the job's creation with HTTP 200 but no usable id: {problem}",
                status_code=200,
                error_msg=str(problem),
                answer=UNREADABLE,
            ) from None
        self.log.info("Submitted DLI batch job %s (%s)", batch["id"], batch.get("name") or body["file"])
        return batch

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch object (``GET /batches/{batch_id}``)."""
        return self.request("GET", f"batches/{validate_batch_id(batch_id)}")

    def get_batch_state(self, batch_id: str) -> str:
        """The job's state, lower-case: ``starting``, ``running``, ``recovering``, ``success`` or ``dead``."""
        body = self.request("GET", f"batches/{validate_batch_id(batch_id)}/state")
        state = body.get("state")
        if not isinstance(state, str):
            raise DLIAPIError(
                f"DLI returned no state for batch job {batch_id}", status_code=200, error_msg=str(body)[:200]
            )
        return state.lower()

    def get_batch_log(
        self, batch_id: str, *, start: int = 0, size: int = 100, attempt: int | None = None
    ) -> tuple[int, list[str]]:
        """Driver log lines ``start`` to ``start + size`` of the job, and how many lines there are in all.

        ``attempt`` is the log API's ``index``: which driver, when DLI restarted it (``auto_recovery``); DLI
        answers the first (0) without it. The log API is marked deprecated: callers treat it as best effort.
        """
        for name, value, low in (("start", start, 0), ("size", size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}; got {shown(value)}")
        params: dict[str, Any] = {"from": start, "size": size, "type": "driver"}
        if attempt is not None:
            params["index"] = attempt
        body = self.request("GET", f"batches/{validate_batch_id(batch_id)}/log", params=params)
        return int(body.get("total") or 0), [str(line) for line in body.get("log") or []]

    def last_driver_attempt(self, batch_id: str, max_attempts: int = DEFAULT_MAX_RETRY_TIMES + 1) -> int:
        """The index of the job's last driver: DLI says nothing of how many ran, so the log API is asked for
        attempt 1, 2, ... until one has no log (an empty log, or a refusal: either reading of DLI's answer)."""
        last = 0
        for attempt in range(1, max_attempts):
            try:
                total, lines = self.get_batch_log(batch_id, size=1, attempt=attempt)
            except DLIAPIError as error:
                if not error.answer.refusal:
                    raise
                break
            if not total and not lines:
                break
            last = attempt
        return last

    def tail_batch_log(
        self, batch_id: str, lines: int = 50, *, last_attempt: bool = False, max_attempts: int | None = None
    ) -> list[str]:
        """The last ``lines`` driver log lines of the job: of its first driver, or with ``last_attempt`` of its
        last one (for ``auto_recovery`` jobs, whose driver DLI may have restarted up to ``max_attempts`` times)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
            raise ValueError(f"lines must be a whole number >= 1; got {shown(lines)}")
        attempt = None
        if last_attempt:
            attempt = self.last_driver_attempt(batch_id, max_attempts or DEFAULT_MAX_RETRY_TIMES + 1) or None
        total, first_page = self.get_batch_log(batch_id, size=lines, attempt=attempt)
        if total <= lines:
            return first_page
        return self.get_batch_log(batch_id, start=total - lines, size=lines, attempt=attempt)[1]

    def list_batches(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every batch object matching ``filters``, page by page (``from``/``size``), each job once.

        Filters are the list API's: ``job_name``, ``job_id``, ``queue_name``, ``cluster_name``, ``state``,
        ``owner``, ``start``/``end`` (epoch milliseconds) and ``order``; all are checked before any request.
        """
        params = _list_params(filters)  # checked here, at the call, not at the first next()
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be a whole number from 1 to 100; got {page_size!r}")
        return self._pages(params, page_size)

    def _pages(self, params: dict[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
        """Pages until a short or empty one. ``total`` is not trusted to stop: vendors disagree on whether it
        counts every matching job or the jobs of the page (the vendor's Terraform provider ignores it).

        A parameter of one edition only (:data:`EDITION_PARAMETERS`) that DLI refuses is left out, for this and
        every later listing of the process (logged once), and applied to each listed job instead."""
        seen: set[str] = set()
        start = 0
        sent, kept = self._documented(params)
        while True:
            try:
                page = self.request("GET", "batches", params={**sent, "from": start, "size": page_size})
            except DLIAPIError as refused:
                if not self._refuse(refused, sent):
                    raise
                sent, kept = self._documented(params)
                continue
            sessions = _page_sessions(page, start)
            # Jobs created while paging shift the pages: a job may show up twice.
            new = [batch for batch in sessions if batch["id"] not in seen]
            for batch in new:
                seen.add(batch["id"])
                if all(keep(batch, params[name]) for name, keep in kept):
                    yield batch
            if len(sessions) < page_size:
                return
            if not new:
                self.log.warning(
                    "DLI answered the job list's page from=%d with jobs already listed: stopping here, since "
                    "the server seems to ignore 'from'",
                    start,
                )
                return
            start += len(sessions)

    def _documented(
        self, params: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, Callable[[Mapping[str, Any], Any], bool]]]]:
        """The parameters to send (those DLI has not refused in this process), and the tests of each listed job
        that stand in for the refused ones."""
        api = self.settings.api_url("v2.0")
        refused = {name for name in params if (api, name) in _REFUSED}
        tests = [(name, keep) for name in sorted(refused) if (keep := EDITION_PARAMETERS[name]) is not None]
        return {name: value for name, value in params.items() if name not in refused}, tests

    def _refuse(self, refused: DLIAPIError, sent: Mapping[str, Any]) -> bool:
        """True when ``refused`` is DLI refusing a parameter of one edition only that ``sent`` holds: those are
        remembered as refused, with one warning per process."""
        edition_only = sorted(name for name in sent if name in EDITION_PARAMETERS)
        if not edition_only or not refused.answer.refusal or refused.error_code != "DLI.0001":
            return False
        api = self.settings.api_url("v2.0")
        with _REFUSED_GUARD:
            new = [name for name in edition_only if (api, name) not in _REFUSED]
            _REFUSED.update((api, name) for name in edition_only)
        if new:
            self.log.warning(
                "DLI refused the job list's parameter(s) %s, which only one edition of DLI documents (%s): listing "
                "without them from now on, filtering the listed jobs here instead",
                ", ".join(new),
                refused.error_msg or refused,
            )
        return True

    def cancel_batch(self, batch_id: str, *, settle_timeout: float = CANCEL_SETTLE_TIMEOUT) -> CancelResult:
        """Cancel the job (``DELETE /batches/{batch_id}``); idempotent, and says what it found.

        DLI refuses to cancel a job that has finished, and one that an earlier cancel is taking down (its state
        reads live for a moment before it turns ``dead``), with an undocumented error code. So a refusal is
        judged by the job's state, re-read for up to ``settle_timeout`` seconds (:data:`REFUSED_CANCEL`): the
        result's ``outcome`` is ``cancelled``, ``already_cancelling`` or ``already_finished``. Raises
        :class:`DLIAPIError` for anything else (unknown id, auth, server errors, a live job that stays live).
        """
        batch_id = validate_batch_id(batch_id)
        lost: list[str] = []
        try:
            self.request("DELETE", f"batches/{batch_id}", lost=lost)
        except DLIAPIError as refused:
            if not refused.answer.refusal:
                raise
            return self._judge_refused_cancel(batch_id, refused, bool(lost), settle_timeout)
        # Debug, not info: bulk cancels call this hundreds of times, and a log line costs more than the
        # rest of the client's work. Callers log the outcome (cancel_summary) where a person reads it.
        self.log.debug("Cancelled DLI batch job %s", batch_id)
        return {"batch_id": batch_id, "cancelled": True, "outcome": "cancelled", "state": None}

    def cancel_batches(self, batch_ids: Iterable[str], *, max_workers: int = 16) -> list[BulkCancelOutcome]:
        """Cancel many jobs at once: one outcome per distinct id, in order; one failure never stops the others,
        except a refusal of the credentials (see :func:`~airflow_provider_dli.client.cancels.cancel_many`)."""
        return cancel_many(
            self, batch_ids, self.cancel_batch, BATCH_ID, "DLI batch job", max_workers, "batch_ids", "batch"
        )

    def _judge_refused_cancel(
        self, batch_id: str, refused: DLIAPIError, answer_lost: bool, settle_timeout: float
    ) -> CancelResult:
        return judge_refused_cancel(
            self, batch_id, refused, answer_lost, settle_timeout, self.get_batch_state, BATCH_SETTLED
        )


def _page_sessions(page: dict[str, Any], start: int) -> list[dict[str, Any]]:
    """The batch objects of one page of the job list, each with a string ``id``; DLIAPIError if malformed."""

    def malformed(problem: str) -> DLIAPIError:
        return DLIAPIError(
            f"DLI answered the job list (from={start}) with a malformed page: {problem}",
            status_code=200,
            error_msg=problem,
            answer=UNREADABLE,
        )

    total = page.get("total")
    if total is not None and not (
        (isinstance(total, int) and not isinstance(total, bool) and total >= 0)
        or (isinstance(total, str) and total.isdigit())
    ):
        raise malformed(f"'total' is not a count: {str(total)[:50]!r}")
    sessions = page.get("sessions")
    if sessions is None:
        return []
    if not isinstance(sessions, list):
        raise malformed(f"'sessions' is not a list but {type(sessions).__name__}")
    for batch in sessions:
        if not isinstance(batch, dict) or not isinstance(batch.get("id"), str):
            raise malformed(f"a job without a string 'id': {str(batch)[:80]}")
    return sessions


def _list_params(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The list API's query parameters for ``filters``; a ValueError names the first bad one."""
    params: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if name not in LIST_FILTERS:
            raise ValueError(f"unknown batch job filter {name!r}; the filters are {sorted(LIST_FILTERS)}")
        if name in ("start", "end"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"filter {name!r} must be epoch milliseconds, a whole number; got {value!r}")
        elif name == "state":
            if str(value).lower() not in LIVE_STATES | TERMINAL_STATES:
                states = sorted(LIVE_STATES | TERMINAL_STATES)
                raise ValueError(f"filter 'state' must be one of {states}; got {value!r}")
            value = str(value).lower()
        elif name == "order":
            if value not in LIST_ORDERS:
                raise ValueError(f"filter 'order' must be one of {LIST_ORDERS}; got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise ValueError(f"filter {name!r} must be a non-empty string; got {value!r}")
        params[LIST_FILTERS[name]] = value
    return params

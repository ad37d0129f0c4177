"""DLISqlJobOperator: run a SQL statement on a DLI queue, wait for it, and cancel it on every failure path.

The hook (and with it ``requests``) is imported when a task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli import metrics
from airflow_provider_dli._compat import AirflowFailException, ResumableJobMixin, conf
from airflow_provider_dli.job_kinds import SQL
from airflow_provider_dli.operators.arguments import CONNECTION_FIELDS, Check, task_hook
from airflow_provider_dli.operators.batch import ON_KILL_HOOK_OPTIONS, ON_KILL_SETTLE_TIMEOUT, outage_tolerance_seconds
from airflow_provider_dli.states import (
    SQL_KNOWN_STATES,
    SQL_LIVE_STATES,
    SQL_TERMINAL_STATES,
    Outage,
    UnknownStates,
)
from airflow_provider_dli.validation import non_empty_text, resolved_later, shown
from airflow_provider_dli.xcom_keys import XCOM_SQL_JOB_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.hooks.dli import DLIHook
    from airflow_provider_dli.identity import JobOwner

MAX_PREVIEW_ROWS = 1000
"""DLI's preview returns at most the first 1,000 rows of a result."""
MAX_TAGS = 20
"""Tags DLI keeps on one job; the owner record takes some of them."""

_DLI_NAME = re.compile(r"(?![0-9]+$)(?!_)[A-Za-z0-9_]{1,128}")
_TAG_TEXT = re.compile(r"[\w .:=+\-@]*")
_CONF_KEY = re.compile(r"[^=\s]+")


def _dli_name(name: str, value: object) -> str:
    """A database or queue name as DLI documents them."""
    if not isinstance(value, str) or not _DLI_NAME.fullmatch(value):
        raise ValueError(
            f"{name} must be letters, digits and '_', not only digits and not starting with '_' (DLI's names); "
            f"got {shown(value)}"
        )
    return value


def _sql_conf(name: str, value: object) -> list[str]:
    """A mapping of settings, sent as DLI's ``key=value`` strings."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of setting names to values; got {shown(value)}")
    entries = []
    for key, setting in value.items():
        if not isinstance(key, str) or not _CONF_KEY.fullmatch(key):
            raise ValueError(f"{name} keys must be setting names without '=' or spaces; got {shown(key)}")
        if isinstance(setting, bool):
            setting = str(setting).lower()
        if not isinstance(setting, str | int | float):
            raise ValueError(f"{name}[{key!r}] must be a string or a number; got {shown(setting)}")
        entries.append(f"{key}={setting}")
    return entries


def _user_tags(name: str, value: object) -> list[dict[str, str]]:
    """A mapping of tag keys to values, as DLI's tag rules allow them; ``airflow.dli.*`` keys are the owner's."""
    from airflow_provider_dli.owner_tags import TAG_PREFIX

    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of tag keys to values; got {shown(value)}")
    tags = []
    for key, text in value.items():
        for part, limit in ((key, 128), (text, 255)):
            if not isinstance(part, str) or len(part) > limit or not _TAG_TEXT.fullmatch(part) or part != part.strip():
                raise ValueError(
                    f"{name} keys (1 to 128 characters) and values (up to 255) may hold only letters, digits, "
                    f"spaces and _ . : = + - @, not at either end a space; got {shown(part)}"
                )
        if not key or key.startswith(TAG_PREFIX):
            raise ValueError(f"{name}: the key {key!r} is empty or starts with {TAG_PREFIX!r}, kept for the owner")
        tags.append({"key": key, "value": text})
    return tags


def _preview_rows(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PREVIEW_ROWS:
        raise ValueError(f"{name} must be a whole number from 0 to {MAX_PREVIEW_ROWS}; got {shown(value)}")
    return value


def _resolved_later(field: str, value: object) -> bool:
    """Whether a field's value is only known once the task runs: a template, an XComArg, or (``conf``, ``tags``)
    a mapping with a template among its keys and values."""
    if isinstance(value, Mapping):
        return any(resolved_later(part, text=True) for item in value.items() for part in item)
    return resolved_later(value, text=field in TEXT_FIELDS)


# (parameter, submit API field, check): the checks run when the DAG file is parsed for the values known then,
# and on the rendered values before the request.
SQL_FIELDS: tuple[tuple[str, str, Check], ...] = (
    ("sql", "sql", non_empty_text),
    ("database", "currentdb", _dli_name),
    ("queue_name", "queue_name", _dli_name),
    ("conf", "conf", _sql_conf),
    ("tags", "tags", _user_tags),
)
TEXT_FIELDS = frozenset({"sql", "database", "queue_name", *CONNECTION_FIELDS})
"""Fields whose value renders into text: a plain string there is known while the DAG file is parsed."""


class DLISqlJobOperator(ResumableJobMixin, BaseOperator):
    """Run a SQL statement as a DLI SQL job and, by default, wait until it ends.

    The job's id is pushed to XCom (key ``dli_sql_job_id``) as soon as DLI accepts the job, before any
    waiting, so that failure callbacks (:class:`~airflow_provider_dli.notifications.dli.DLICancelBatchNotifier`)
    can always find it. The job is cancelled when the task is killed or times out while waiting (``on_kill``),
    and when a deferred wait ends by timeout or is ended by a person (the trigger). Its owner record travels
    in its tags (:mod:`airflow_provider_dli.owner_tags`), so the kill switch and the orphan sweeper find it.

    DDL and DCL statements are synchronous at DLI: finished when the submit is answered. At most one job per try,
    by the rules of :class:`DLISubmitBatchOperator`: a retry takes over the newest job of its earlier tries (live:
    it waits; finished: it succeeds; failed or cancelled: it submits anew), and a try whose submit answer was lost
    adopts the job that the answer hid; whose job it is, the owner record in the job's tags says.

    :param sql: the statement (templated); a path ending in ``.sql`` is read as a template file.
    :param database: the database the statement runs in (DLI's ``currentdb``; templated).
    :param queue_name: the DLI queue (templated). Not ``queue``: that is BaseOperator's executor queue.
    :param conf: settings of the job, a mapping (templated), sent as DLI's ``key=value`` strings.
    :param tags: the job's tags, a mapping of keys to values (templated); ``airflow.dli.*`` keys are the
        owner record's.
    :param wait_for_completion: wait until the job ends; fail if it ends ``FAILED`` or ``CANCELLED``.
    :param poll_interval: seconds between status polls.
    :param outage_tolerance: how long (seconds, or a ``timedelta``) the wait goes on while DLI cannot be reached
        or answers server errors, as :class:`DLISubmitBatchOperator`'s (default: ``[dli] outage_tolerance``).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param result_preview_rows: the first rows of a query's result to put in the return value (0 to 1,000).
    :return: ``{"job_id", "job_type", "status", "result_count"}`` (``status`` None when the task did not wait),
        with ``schema`` and ``rows`` when ``result_preview_rows`` asked for them.
    """

    template_fields: Sequence[str] = ("sql", "database", "queue_name", "conf", "tags", "dli_conn_id", "project_id")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "conf": "json", "tags": "json"}
    ui_color = "#c8e6a6"
    external_id_key = XCOM_SQL_JOB_ID

    def __init__(
        self,
        *,
        sql: str,
        database: str | None = None,
        queue_name: str | None = None,
        conf: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 10.0,
        outage_tolerance: float | timedelta | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        result_preview_rows: int = 0,
        durable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if durable is not None:  # named here so that default_args reaches it
            kwargs["durable"] = durable
        super().__init__(**kwargs)
        self.sql = sql
        self.database = database
        self.queue_name = queue_name
        self.conf = conf
        self.tags = tags
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.wait_for_completion = wait_for_completion
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a number of seconds > 0; got {poll_interval!r}")
        self.poll_interval = float(poll_interval)
        self.outage_tolerance = outage_tolerance_seconds(outage_tolerance)
        self.deferrable = deferrable
        self.result_preview_rows = _preview_rows("result_preview_rows", result_preview_rows)
        self.job_id: str | None = None
        self.taken_over = False
        """This try adopted an earlier try's job (rather than submitting its own)."""
        self._answer: dict[str, Any] = {}
        """DLI's answer to the submit (empty for an adopted job)."""
        self._status: dict[str, Any] = {}
        """The job's status as last read."""
        self.waiting_since: float | None = None
        """When this try got its job: the wait's progress lines say how long it has waited."""
        if sql is None:
            non_empty_text("sql", None)
        checks = {field: check for field, _, check in SQL_FIELDS} | CONNECTION_FIELDS
        for field, check in checks.items():  # now, unless the value is only known when the task runs
            value = getattr(self, field)
            if value is not None and not _resolved_later(field, value):
                check(field, value)

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    def job_body(self, context: Context) -> dict[str, Any]:
        """The submit request from the rendered parameters; a ValueError names any bad one."""
        from airflow_provider_dli.owner_tags import owner_tags

        body: dict[str, Any] = {}
        for field, key, check in SQL_FIELDS:
            value = getattr(self, field)
            if value is not None or field == "sql":
                body[key] = check(field, value)
        own = owner_tags(self._owner(context))
        if len(body.get("tags", [])) + len(own) > MAX_TAGS:
            raise ValueError(
                f"tags: DLI keeps at most {MAX_TAGS} tags on a job, and the owner record takes {len(own)} of them; "
                f"give at most {MAX_TAGS - len(own)}"
            )
        body["tags"] = [*body.get("tags", []), *own]
        return body

    def _owner(self, context: Context) -> JobOwner:
        from airflow_provider_dli.identity import JobOwner, first_try, instance_id

        ti = context["ti"]
        return JobOwner(
            instance=instance_id(),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index if ti.map_index is not None else -1,
            try_number=ti.try_number,
            wait=bool(self.wait_for_completion),
            first_try=first_try(ti.try_number, getattr(ti, "max_tries", None), self.retries or 0),
            ti_id=str(getattr(ti, "id", "") or ""),
        )

    def execute(self, context: Context) -> Any:
        self.job_id, self._answer, self._status = None, {}, {}  # per try: an in-process retry may reuse this instance
        self.taken_over = False
        if not self.wait_for_completion:
            job_id = self.submit_job(context)
            if self._answer.get("job_mode") == "sync":  # it has ended already: a failure fails the task
                self._finish_sync(job_id)
                return self._result(job_id, "FINISHED")
            return self._result(job_id, None)
        if self.deferrable:
            return self._submit_and_defer(context)
        owner, store = self._owner(context), context.get("task_state_store")
        if store is not None and owner.try_number > 1 and owner.first_try == owner.try_number:
            # A person cleared the task: run its job again, not the job Airflow 3.3 remembers from before.
            store.delete(self.external_id_key)
        return self.execute_resumable(context) or self._result(str(self.job_id), "FINISHED")

    # ResumableJobMixin: how to submit, check and wait for one job

    def submit_job(self, context: Context) -> str:
        """Submit the job, or take over the one this task instance already has: at most one job per try, by the
        rules of :meth:`DLISubmitBatchOperator.submit_job` (:func:`~airflow_provider_dli.owned_jobs.take_over`),
        with the owner record read from the job's tags."""
        from airflow_provider_dli.client.errors import DLIError

        body = self.job_body(context)
        owner = self._owner(context)
        job_id = self._earlier_tries_job(owner, context) if owner.try_number > owner.first_try else None
        if job_id is None:
            try:
                self._answer = self.hook.submit_sql_job(body)
                job_id = str(self._answer["job_id"])
                metrics.count("dli.sql.submitted")
            except DLIError as lost:
                if not lost.answer.may_have_acted:
                    raise  # refused, or never sent: DLI created nothing
                job_id = self._this_tries_job(owner, context, lost)
        self._remember(job_id, context)
        return job_id

    def _earlier_tries_job(self, owner: JobOwner, context: Context) -> str | None:
        """The newest SQL job of the earlier tries, to take over, unless it failed or was cancelled; older live
        ones are cancelled."""
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.job_kinds import SQL
        from airflow_provider_dli.owned_jobs import search_floor, take_over, tries_jobs

        earlier = range(owner.first_try, owner.try_number)
        floor = search_floor(context.get("dag_run"))
        try:
            found = tries_jobs(self.hook, owner, earlier, name="", since_ms=floor, kind=SQL)
        except DLIError as error:
            raise DLIError(
                f"The SQL jobs of this task's earlier tries could not be looked for ({error}), so no job was "
                "submitted, lest it run twice: a retry looks for them again"
            ) from error
        taken = take_over(found, SQL)
        if taken is None:
            if found:
                job_id, status = found[0][0]["id"], found[0][0]["state"]
                self.log.info("The earlier try's DLI SQL job %s ended %s: submitting the job anew", job_id, status)
            return None
        newest, newest_owner, duplicates = taken
        job_id = str(newest["id"])
        self.log.info(
            "Adopting DLI SQL job %s (%s), submitted by try %d", job_id, newest["state"], newest_owner.try_number
        )
        if duplicates:
            from airflow_provider_dli.client.cancels import bulk_cancel_counts

            self.log.warning(
                "Cancelling %d older live SQL job(s) of this task instance: %s", len(duplicates), duplicates
            )
            self.log.info("%s", bulk_cancel_counts(self.hook.cancel_sql_jobs(duplicates)))
        metrics.count("dli.sql.adopted")
        self.taken_over = True
        return job_id

    def _this_tries_job(self, owner: JobOwner, context: Context, lost: Exception) -> str:
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.job_kinds import SQL
        from airflow_provider_dli.owned_jobs import search_floor, tries_jobs

        self.log.warning(
            "DLI may have created the SQL job although its answer said otherwise (%s): looking for it", lost
        )
        try:
            this_try = range(owner.try_number, owner.try_number + 1)
            floor = search_floor(context.get("dag_run"))
            found = tries_jobs(self.hook, owner, this_try, name="", since_ms=floor, kind=SQL)
        except DLIError as listing:
            raise DLIError(
                f"{lost}. DLI may have created the SQL job anyway; it could not be looked for ({listing}): a retry "
                "looks for it before submitting"
            ) from lost
        if not found:
            raise DLIError(f"{lost}. No SQL job of this try was found at DLI, so none was adopted") from lost
        job_id = str(found[0][0]["id"])
        self.log.info("Adopting DLI SQL job %s, created by this try", job_id)
        metrics.count("dli.sql.adopted")
        return job_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return self.hook.get_sql_job_state(str(external_id))

    def is_job_active(self, status: str) -> bool:
        return status in SQL_LIVE_STATES

    def is_job_succeeded(self, status: str) -> bool:
        return status == "FINISHED"

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        job_id = str(external_id)
        if self.job_id != job_id:  # reconnected on a retry: this try's XCom is empty
            self.log.info("Reconnecting to DLI SQL job %s submitted by an earlier try", job_id)
            self._remember(job_id, context)
            self.taken_over = True
        status = self._wait(job_id)
        if status != SQL.succeeded and self.taken_over:
            job_id = self._submit_anew(job_id, status, context)
            if (store := context.get("task_state_store")) is not None:
                store.set(self.external_id_key, job_id)  # a later retry reconnects to this one
            status = self._wait(job_id)
        self._finish(job_id, status, context)

    def _wait(self, job_id: str) -> str:
        """The job's final status, polled; a sync job's from its submit answer (the task fails if it failed)."""
        if self._answer.get("job_mode") == "sync":
            self._finish_sync(job_id)
            return SQL.succeeded
        from airflow_provider_dli.progress import WaitProgress

        unknown, outage = UnknownStates(job_id, known=SQL_KNOWN_STATES, noun="SQL job"), Outage(self.outage_tolerance)
        progress = WaitProgress(job_id, since=self.waiting_since, noun="DLI SQL job")
        while (status := self._poll(job_id, outage)) not in SQL_TERMINAL_STATES:
            if status is not None and (line := progress.line(status)):
                self.log.info("%s", line)
            if status is not None and (problem := unknown.check(status)):
                self._cancel_before_failing(job_id)
                raise AirflowException(problem + "; it was cancelled")
            time.sleep(self.poll_interval)
        return status

    def _submit_anew(self, ended_job_id: str, status: str, context: Context) -> str:
        """A retry that took over an earlier try's job which then failed or was cancelled runs the job again, as a
        retry that found it so would have."""
        self.log.warning(
            "DLI SQL job %s, taken over from an earlier try, ended %s: this retry submits the job anew",
            ended_job_id,
            status,
        )
        self.taken_over = False
        return self.submit_job(context)

    def _poll(self, job_id: str, outage: Outage) -> str | None:
        """The job's status; None after a failed poll that the wait goes on through (as the trigger's does)."""
        from airflow_provider_dli.client.errors import DLIError

        try:
            status = self._read_status(job_id)
        except DLIError as error:
            if not outage.tolerate(error):
                raise
            self.log.warning("Could not read the status of DLI SQL job %s (%s): %s", job_id, outage.describe(), error)
            return None
        outage.answered()
        return status

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        return self._result(str(external_id), "FINISHED")

    # Deferrable waiting

    def _submit_and_defer(self, context: Context) -> Any:
        job_id = self.submit_job(context)
        if self._answer.get("job_mode") == "sync":
            self._finish_sync(job_id)  # nothing to wait for
            return self._result(job_id, "FINISHED")
        self._defer_on(job_id)

    def _defer_on(self, job_id: str) -> NoReturn:
        from airflow_provider_dli.triggers.dli import DLIBatchTrigger

        deadline = None
        backstop: timedelta | None = None
        if self.execution_timeout is not None:
            # The trigger cancels the job at the deadline; Airflow's own deferral timeout is only a backstop.
            deadline = time.time() + self.execution_timeout.total_seconds()
            backstop = self.execution_timeout + timedelta(minutes=1)
        self.defer(
            trigger=DLIBatchTrigger(
                batch_id=job_id,
                job_kind="sql",
                dli_conn_id=self.dli_conn_id,
                project_id=self.project_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
                caller=f"{self.dag_id}.{self.task_id}",
                waiting_since=self.waiting_since,
                outage_tolerance=self.outage_tolerance,
            ),
            method_name="execute_complete",
            kwargs={"taken_over": self.taken_over},
            timeout=backstop,
        )

    def execute_complete(self, context: Context, event: dict[str, Any], taken_over: bool = False) -> dict[str, Any]:
        job_id = str(event["batch_id"])
        self.job_id = job_id
        status = event["status"]
        if status == "timeout":
            raise AirflowException(
                f"DLI SQL job {job_id} did not finish within execution_timeout ({self.execution_timeout}); "
                "it was cancelled"
            )
        if status == "error":
            self._cancel_before_failing(job_id)  # the job must not outlive the task
            raise AirflowException(f"Lost track of DLI SQL job {job_id}, so it was cancelled: {event['message']}")
        if status != SQL.succeeded and taken_over:
            self._defer_on(self._submit_anew(job_id, status, context))
        self._finish(job_id, status, context)
        return self._result(job_id, status)

    # Shared

    def _remember(self, job_id: str, context: Context) -> None:
        self.job_id = job_id
        self.waiting_since = time.time()
        context["ti"].xcom_push(key=XCOM_SQL_JOB_ID, value=job_id)

    def _finish_sync(self, job_id: str) -> None:
        """A sync statement ended when DLI answered: its answer says how."""
        if self._answer.get("is_success") is False:
            raise AirflowException(f"DLI SQL job {job_id} ended FAILED: {self._answer.get('message') or 'no detail'}")

    def _finish(self, job_id: str, status: str, context: Context) -> None:
        """Fail the task unless the job finished, with DLI's ``detail`` in the message; a cancelled job's names
        who cancelled it (a canceller of this provider, which recorded itself: no retry, which would run the job
        again; or someone outside it)."""
        from airflow_provider_dli.cancel_records import ended_cancelled, recorded_cancel

        if self._answer.get("job_mode") == "sync":
            return  # it ended when DLI answered the submit, and _finish_sync judged that answer
        if self._status.get("status") != status:  # the trigger saw it end: read what DLI says of it
            self._read_status(job_id)
        if status == "FINISHED":
            self.log.info("DLI SQL job %s ended FINISHED (%s result rows)", job_id, self._status.get("result_count"))
            return
        detail = self._status.get("detail") or "no detail"
        if status != "CANCELLED":
            raise AirflowException(f"DLI SQL job {job_id} ended {status}: {detail}")
        record = recorded_cancel(context["ti"], job_id)
        raise (AirflowFailException if record else AirflowException)(ended_cancelled(job_id, record, detail))

    def _read_status(self, job_id: str) -> str:
        self._status = self.hook.get_sql_job_status(job_id)
        return str(self._status["status"])

    def _result(self, job_id: str, status: str | None) -> dict[str, Any]:
        """The return value: the job, and the first ``result_preview_rows`` rows of a finished query's result."""
        result: dict[str, Any] = {
            "job_id": job_id,
            "job_type": self._answer.get("job_type") or self._status.get("job_type"),
            "status": status,
            "result_count": self._status.get("result_count"),
        }
        if status != "FINISHED" or not self.result_preview_rows:
            return result
        if self._answer.get("job_mode") == "sync":
            schema, rows = self._answer.get("schema") or [], self._answer.get("rows") or []
        elif result["job_type"] in ("QUERY", None):
            preview = self.hook.preview_sql_job(job_id, queue_name=self.queue_name)
            result["job_type"] = preview.get("job_type") or result["job_type"]
            schema, rows = preview.get("schema") or [], preview.get("rows") or []
        else:
            self.log.info("DLI SQL job %s is a %s job: it has no result rows to preview", job_id, result["job_type"])
            return result
        result.update(schema=schema, rows=rows[: self.result_preview_rows])
        return result

    def _cancel_before_failing(self, job_id: str) -> None:
        from airflow_provider_dli.client.cancels import cancel_summary

        try:
            self.log.info("%s", cancel_summary(self.hook.cancel_sql_job(job_id), "DLI SQL job"))
        except Exception:
            self.log.exception("Could not cancel DLI SQL job %s", job_id)

    def on_kill(self) -> None:
        """SIGTERM or execution_timeout: cancel the job within the 5 s before SIGKILL."""
        if self.job_id is None:
            return
        from airflow_provider_dli.client.cancels import cancel_summary

        self.log.warning("Task killed: cancelling DLI SQL job %s", self.job_id)
        try:
            hook = task_hook(self, **ON_KILL_HOOK_OPTIONS)
            result = hook.cancel_sql_job(self.job_id, settle_timeout=ON_KILL_SETTLE_TIMEOUT)
            self.log.info("%s", cancel_summary(result, "DLI SQL job"))
        except Exception:
            self.log.exception("Could not cancel DLI SQL job %s", self.job_id)

"""DLISqlJobOperator: run a SQL statement on a DLI queue, wait for it, and cancel it on every failure path.

The hook (and with it ``requests``) is imported when a task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli._compat import AirflowFailException, conf
from airflow_provider_dli.job_kinds import SQL
from airflow_provider_dli.operators.arguments import CONNECTION_FIELDS, Check
from airflow_provider_dli.operators.lifecycle import DLIJobOperator, outage_tolerance_seconds
from airflow_provider_dli.validation import non_empty_text, resolved_later, shown
from airflow_provider_dli.xcom_keys import XCOM_SQL_JOB_ID

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk import Context

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


class DLISqlJobOperator(DLIJobOperator):
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
    kind = SQL
    what = "SQL job"
    state_word = "status"

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
        self._answer: dict[str, Any] = {}
        """DLI's answer to the submit (empty for an adopted job)."""
        self._status: dict[str, Any] = {}
        """The job's status as last read."""
        self.waiting_since: float | None = None
        if sql is None:
            non_empty_text("sql", None)
        checks = {field: check for field, _, check in SQL_FIELDS} | CONNECTION_FIELDS
        for field, check in checks.items():  # now, unless the value is only known when the task runs
            value = getattr(self, field)
            if value is not None and not _resolved_later(field, value):
                check(field, value)

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

    def execute(self, context: Context) -> Any:
        self._start_try()
        self._answer, self._status = {}, {}
        if not self.wait_for_completion:
            job_id = self.submit_job(context)
            if self._answer.get("job_mode") == "sync":  # it has ended already: a failure fails the task
                self._finish_sync(job_id)
                return self._result(job_id, "FINISHED")
            return self._result(job_id, None)
        if self.deferrable:
            return self._submit_and_defer(context)
        return self._wait_resumably(context) or self._result(str(self.job_id), "FINISHED")

    # DLIJobOperator: what a SQL job is

    def _request_body(self, context: Context) -> dict[str, Any]:
        return self.job_body(context)

    def _send(self, body: dict[str, Any]) -> str:
        self._answer = self.hook.submit_sql_job(body)
        return str(self._answer["job_id"])

    def _read_state(self, job_id: str) -> str:
        return self._read_status(job_id)

    def _wait(self, job_id: str) -> str:
        """The job's final status, polled; a sync job's from its submit answer (the task fails if it failed)."""
        if self._answer.get("job_mode") == "sync":
            self._finish_sync(job_id)
            return SQL.succeeded
        return super()._wait(job_id)

    def _completed(self, job_id: str, state: str) -> dict[str, Any]:
        return self._result(job_id, state)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        return self._result(str(external_id), "FINISHED")

    def _submit_and_defer(self, context: Context) -> Any:
        job_id = self.submit_job(context)
        if self._answer.get("job_mode") == "sync":
            self._finish_sync(job_id)  # nothing to wait for
            return self._result(job_id, "FINISHED")
        self._defer_on(job_id)

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

"""The submit operator: submit one DLI Spark batch job and, by default, watch it to its end.

The hook (and with it ``requests``) is imported when a task runs, not when a DAG file is parsed: the DAG
processor imports operator modules on every parse.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli import metrics
from airflow_provider_dli._compat import AirflowFailException, ResumableJobMixin, conf
from airflow_provider_dli.operators.arguments import (
    CONNECTION_FIELDS,
    Check,
    check_at_parse,
    job_name_text,
    memory_size,
    positive_int,
    positive_seconds,
    spark_sc_type,
    string_list,
    string_mapping,
    task_hook,
)
from airflow_provider_dli.states import LIVE_STATES, OUTAGE_TOLERANCE, TERMINAL_STATES, Outage, UnknownStates
from airflow_provider_dli.validation import non_empty_text
from airflow_provider_dli.xcom_keys import XCOM_BATCH_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.hooks.dli import DLIHook
    from airflow_provider_dli.identity import JobOwner

# SIGTERM gives a task 5 s before SIGKILL: the cancel in on_kill must fit in that whatever the server does
# (an attempt ends after connect + read timeouts in all; every request of the call ends within the deadline).
ON_KILL_HOOK_OPTIONS: dict[str, Any] = {"timeout": (1.0, 2.0), "retry_limit": 0, "deadline": 4.0}
ON_KILL_SETTLE_TIMEOUT = 1.0
"""Seconds on_kill re-reads the state after a refused cancel (an earlier cancel may be under way)."""

# (parameter, create-job API field, check): the request body, in the order DLI documents it. The checks run
# when the DAG file is parsed for the values known then, and on the rendered values before the request.
BODY_FIELDS: tuple[tuple[str, str | None, Check], ...] = (
    ("file", "file", non_empty_text),
    ("class_name", "className", non_empty_text),
    ("queue_name", "queue", non_empty_text),
    ("args", "args", string_list),
    ("jars", "jars", string_list),
    ("py_files", "pyFiles", string_list),
    ("files", "files", string_list),
    ("conf", "conf", string_mapping),
    ("name", "name", job_name_text),
    ("driver_memory", "driverMemory", memory_size),
    ("driver_cores", "driverCores", positive_int),
    ("executor_memory", "executorMemory", memory_size),
    ("executor_cores", "executorCores", positive_int),
    ("num_executors", "numExecutors", positive_int),
    ("spark_version", "spark_version", non_empty_text),
    ("sc_type", "sc_type", spark_sc_type),
    ("extra_body", None, string_mapping),  # merged into the body
)


def outage_tolerance_seconds(value: object) -> float:
    """A task's ``outage_tolerance`` in seconds; None: ``[dli] outage_tolerance``, else the default."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if value is not None:
        return positive_seconds("outage_tolerance", value)
    configured = conf.get("dli", "outage_tolerance", fallback="").strip()
    try:
        return positive_seconds("outage_tolerance", float(configured)) if configured else OUTAGE_TOLERANCE
    except ValueError:
        raise ValueError(
            "Airflow's option [dli] outage_tolerance (AIRFLOW__DLI__OUTAGE_TOLERANCE) must be a number of "
            f"seconds > 0; got {configured!r}"
        ) from None


class DLISubmitBatchOperator(ResumableJobMixin, BaseOperator):
    """Submit a Spark batch job to DLI and, by default, wait until it ends.

    The job's id is pushed to XCom (key ``dli_batch_id``) as soon as DLI accepts the job, before any
    waiting, so that failure callbacks (:class:`~airflow_provider_dli.notifications.dli.DLICancelBatchNotifier`)
    can always find it. The job is cancelled when the task is killed or times out while waiting (``on_kill``),
    and when a deferred wait ends by timeout or is ended by a person (the trigger).

    At most one job per try: a retry takes over the newest job of its earlier tries (on Airflow 3.3+ it
    reconnects through ``task_state_store``; otherwise, and for a job whose create answer was lost, it finds the
    job by the owner record the job carries), waits for it if it is live, succeeds with it if it succeeded, and
    submits anew only after it failed. A person's clear runs the job again.

    :param file: the application: an OBS path or a DLI package name (templated).
    :param class_name: the main class (templated).
    :param queue_name: the DLI queue (templated). Not ``queue``: that is BaseOperator's executor queue,
        which ``default_args`` often sets for Celery and which must not become the DLI queue silently.
    :param args, jars, py_files, files: lists of strings (templated).
    :param conf: Spark configuration (templated).
    :param name: the job name (<= 128 characters); by default ``airflow.{dag_id}.{run_id}.{task_id}`` in DLI's
        documented characters. A name is a hint for people and for DLI's list filter: whose job it is, every
        tool reads from the owner record (``spark.airflow.dli.owner`` in the Spark conf), whatever the name.
    :param driver_memory, executor_memory: like ``"2G"``; ``driver_cores``, ``executor_cores``,
        ``num_executors``: whole numbers; ``spark_version``; ``sc_type``: ``A``, ``B`` or ``C`` (templated).
    :param extra_body: any other field of the create-job API (``modules``, ``image``, ``obs_bucket``,
        ``auto_recovery``, ``max_retry_times``...), passed as is (templated).
    :param wait_for_completion: wait until the job ends; fail if it ends ``dead``. If False, return at once.
    :param poll_interval: seconds between state polls.
    :param outage_tolerance: how long (seconds, or a ``timedelta``) the wait goes on while DLI cannot be reached
        or answers server errors, gateway errors or maintenance pages, before the task fails (and a deferred
        wait's job is cancelled). An authorization refusal (401, 403) ends the wait at once. Default: Airflow's
        option ``[dli] outage_tolerance``, else 600.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param log_tail_lines: how many of the job's last driver log lines to copy into the task log.
    :param openlineage_inject_parent_job_info: put this task's OpenLineage job and run into the job's Spark conf
        (``spark.openlineage.parent*``), so the Spark job's lineage events link to the task. Default: Airflow's
        ``[openlineage] spark_inject_parent_job_info``. Needs the ``openlineage`` extra.
    :param openlineage_inject_transport_info: also put the OpenLineage transport (where events go) into the
        Spark conf. Default: ``[openlineage] spark_inject_transport_info``.
    :return: the batch id.
    """

    template_fields: Sequence[str] = (
        "file",
        "class_name",
        "queue_name",
        "args",
        "jars",
        "py_files",
        "files",
        "conf",
        "name",
        "driver_memory",
        "driver_cores",
        "executor_memory",
        "executor_cores",
        "num_executors",
        "spark_version",
        "sc_type",
        "extra_body",
        "dli_conn_id",
        "project_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"conf": "json", "extra_body": "json"}
    ui_color = "#a6c8f4"
    external_id_key = XCOM_BATCH_ID

    def __init__(
        self,
        *,
        file: str,
        class_name: str,
        queue_name: str | None = None,
        args: Sequence[str] | None = None,
        jars: Sequence[str] | None = None,
        py_files: Sequence[str] | None = None,
        files: Sequence[str] | None = None,
        conf: Mapping[str, Any] | None = None,
        name: str | None = None,
        driver_memory: str | None = None,
        driver_cores: int | None = None,
        executor_memory: str | None = None,
        executor_cores: int | None = None,
        num_executors: int | None = None,
        spark_version: str | None = None,
        sc_type: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        dli_conn_id: str = "dli_default",
        project_id: str | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 10.0,
        outage_tolerance: float | timedelta | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        log_tail_lines: int = 50,
        openlineage_inject_parent_job_info: bool = conf.getboolean(
            "openlineage", "spark_inject_parent_job_info", fallback=False
        ),
        openlineage_inject_transport_info: bool = conf.getboolean(
            "openlineage", "spark_inject_transport_info", fallback=False
        ),
        durable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if durable is not None:  # named here so that default_args reaches it
            kwargs["durable"] = durable
        super().__init__(**kwargs)
        self.file = file
        self.class_name = class_name
        self.queue_name = queue_name
        self.args = args
        self.jars = jars
        self.py_files = py_files
        self.files = files
        self.conf = conf
        self.name = name
        self.driver_memory = driver_memory
        self.driver_cores = driver_cores
        self.executor_memory = executor_memory
        self.executor_cores = executor_cores
        self.num_executors = num_executors
        self.spark_version = spark_version
        self.sc_type = sc_type
        self.extra_body = extra_body
        self.dli_conn_id = dli_conn_id
        self.project_id = project_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = positive_seconds("poll_interval", poll_interval)
        self.outage_tolerance = outage_tolerance_seconds(outage_tolerance)
        self.deferrable = deferrable
        self.log_tail_lines = positive_int("log_tail_lines", log_tail_lines)
        self.openlineage_inject_parent_job_info = openlineage_inject_parent_job_info
        self.openlineage_inject_transport_info = openlineage_inject_transport_info
        self.batch_id: str | None = None
        self.taken_over = False
        """This try adopted an earlier try's job (rather than submitting its own)."""
        self.waiting_since: float | None = None
        """Epoch seconds this try got its job: the wait's lines say how long it has waited since."""
        for field in ("file", "class_name"):
            if getattr(self, field) is None:  # required: check_at_parse passes over None
                non_empty_text(field, None)
        check_at_parse(self, {field: check for field, _, check in BODY_FIELDS} | CONNECTION_FIELDS)

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    def batch_body(self, context: Context) -> dict[str, Any]:
        """The create-job request from the rendered parameters; a ValueError names any bad one."""
        body: dict[str, Any] = {}
        for field, key, check in BODY_FIELDS:
            value = getattr(self, field)
            if value is None and field not in ("file", "class_name"):
                continue
            checked = check(field, value)
            if key is not None:
                body[key] = checked
                continue
            operator_sets = {*body, "conf", *(("name",) if self.name is None else ())}
            for extra_key, extra_value in checked.items():
                if extra_key in operator_sets:
                    raise ValueError(f"extra_body[{extra_key!r}] repeats a field that a parameter of the operator sets")
                body[extra_key] = extra_value
        if self.name is None:
            from airflow_provider_dli.identity import batch_job_name

            ti = context["ti"]
            body["name"] = batch_job_name(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        body["conf"] = {**body.get("conf", {}), **self._owner_conf(context)}
        if self.openlineage_inject_parent_job_info or self.openlineage_inject_transport_info:
            from airflow_provider_dli.lineage import with_lineage

            body["conf"] = with_lineage(
                body["conf"],
                context,
                parent_job=self.openlineage_inject_parent_job_info,
                transport=self.openlineage_inject_transport_info,
            )
        return body

    def _owner_conf(self, context: Context) -> dict[str, str]:
        """The Spark conf entry that tells every tool exactly which task instance, and which try, owns the job."""
        from airflow_provider_dli.identity import OWNER_CONF_KEY

        if self.conf is not None and OWNER_CONF_KEY in self.conf:
            raise ValueError(f"conf[{OWNER_CONF_KEY!r}] is set by the operator, to record the job's owner")
        return {OWNER_CONF_KEY: self._owner(context).conf_value()}

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
        from airflow_provider_dli.progress import progress_log_interval

        self.batch_id = None  # per try: an in-process retry may reuse this instance
        self.taken_over = False
        progress_log_interval()  # a bad [dli] option fails the task before it submits, not while it waits
        if not self.wait_for_completion:
            return self.submit_job(context)
        if self.deferrable:
            return self._submit_and_defer(context)
        owner, store = self._owner(context), context.get("task_state_store")
        if store is not None and owner.try_number > 1 and owner.first_try == owner.try_number:
            # A person cleared the task: run its job again, not the job Airflow 3.3 remembers from before.
            store.delete(self.external_id_key)
        # Airflow 3.3's mixin returns poll_until_complete's None when a retry reconnects: the batch id still.
        return self.execute_resumable(context) or self.batch_id

    # ResumableJobMixin: how to submit, check and wait for one job

    def submit_job(self, context: Context) -> str:
        """Submit the job, or take over the one this task instance already has: at most one job per try.

        Whose job it is, the owner record says (:func:`~airflow_provider_dli.identity.belongs_to`), never the
        name. A retry first looks for the newest job of the earlier tries since the task's first try (a person's
        clear starts anew): one still live is adopted, one that succeeded is this task's success, and after one
        that failed or was cancelled the retry submits anew. After a create whose answer may hide a job (no
        answer, a reset, a server error, an answer that cannot be read), this try's job is looked for.
        """
        from airflow_provider_dli.client.errors import DLIError

        body = self.batch_body(context)
        owner = self._owner(context)
        batch_id = self._earlier_tries_job(body["name"], owner, context) if owner.try_number > owner.first_try else None
        if batch_id is None:
            try:
                batch_id = str(self.hook.create_batch(body)["id"])
                metrics.count("dli.batch.submitted")
            except DLIError as lost:
                if not lost.answer.may_have_acted:
                    raise  # refused, or never sent: DLI created nothing
                batch_id = self._this_tries_job(body["name"], owner, context, lost)
        self._remember(batch_id, context)
        return batch_id

    def _earlier_tries_job(self, name: str, owner: JobOwner, context: Context) -> str | None:
        """The newest job of the earlier tries, to take over, unless it failed; older live ones are cancelled."""
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.job_kinds import BATCH
        from airflow_provider_dli.owned_jobs import search_floor, take_over, tries_jobs

        earlier = range(owner.first_try, owner.try_number)
        try:
            found = tries_jobs(self.hook, owner, earlier, name=name, since_ms=search_floor(context.get("dag_run")))
        except DLIError as error:
            raise DLIError(
                f"The jobs of this task's earlier tries could not be looked for ({error}), so no job was submitted, "
                "lest it run twice: a retry looks for them again"
            ) from error
        taken = take_over(found, BATCH)
        if taken is None:
            if found:
                batch_id, state = found[0][0]["id"], found[0][0]["state"]
                self.log.info("The earlier try's DLI batch job %s ended %s: submitting the job anew", batch_id, state)
            return None
        newest, newest_owner, duplicates = taken
        batch_id, state = str(newest["id"]), newest["state"]
        self.log.info("Adopting DLI batch job %s (%s), submitted by try %d", batch_id, state, newest_owner.try_number)
        if duplicates:
            self.log.warning("Cancelling %d older live job(s) of this task instance: %s", len(duplicates), duplicates)
            from airflow_provider_dli.client.cancels import bulk_cancel_counts

            self.log.info("%s", bulk_cancel_counts(self.hook.cancel_batches(duplicates)))
        metrics.count("dli.batch.adopted")
        self.taken_over = True
        return batch_id

    def _this_tries_job(self, name: str, owner: JobOwner, context: Context, lost: Exception) -> str:
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.owned_jobs import search_floor, tries_jobs

        self.log.warning("DLI may have created the job although its answer said otherwise (%s): looking for it", lost)
        try:
            this_try = range(owner.try_number, owner.try_number + 1)
            found = tries_jobs(self.hook, owner, this_try, name=name, since_ms=search_floor(context.get("dag_run")))
        except DLIError as listing:
            raise DLIError(
                f"{lost}. DLI may have created the job anyway, named {name!r}; it could not be looked for "
                f"({listing}): a retry looks for it before submitting"
            ) from lost
        if not found:
            raise DLIError(f"{lost}. No job of this try was found at DLI, so none was adopted") from lost
        batch_id = str(found[0][0]["id"])
        self.log.info("Adopting DLI batch job %s (%s), created by this try", batch_id, name)
        metrics.count("dli.batch.adopted")
        return batch_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return self.hook.get_batch_state(str(external_id))

    def is_job_active(self, status: str) -> bool:
        return status in LIVE_STATES

    def is_job_succeeded(self, status: str) -> bool:
        return status == "success"

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        batch_id = str(external_id)
        if self.batch_id != batch_id:  # reconnected on a retry: this try's XCom is empty
            self.log.info("Reconnecting to DLI batch job %s submitted by an earlier try", batch_id)
            self._remember(batch_id, context)
            self.taken_over = True
        state = self._wait(batch_id)
        if state == "dead" and self.taken_over:
            batch_id = self._submit_anew(batch_id, context)
            if (store := context.get("task_state_store")) is not None:
                store.set(self.external_id_key, batch_id)  # a later retry reconnects to this one
            state = self._wait(batch_id)
        self._finish(batch_id, state, context)

    def _wait(self, batch_id: str) -> str:
        from airflow_provider_dli.progress import WaitProgress

        unknown, outage = UnknownStates(batch_id), Outage(self.outage_tolerance)
        progress = WaitProgress(batch_id, since=self.waiting_since)
        while (state := self._poll(batch_id, outage)) not in TERMINAL_STATES:
            if state is not None and (line := progress.line(state)):
                self.log.info("%s", line)
            if state is not None and (problem := unknown.check(state)):
                self._cancel_before_failing(batch_id)
                raise AirflowException(problem + "; it was cancelled")
            time.sleep(self.poll_interval)
        return state

    def _submit_anew(self, dead_batch_id: str, context: Context) -> str:
        """A retry that took over an earlier try's job which then ended ``dead`` (it failed, or the earlier try
        was cancelling it) runs the job again, as a retry that found it dead would have."""
        self.log.warning(
            "DLI batch job %s, taken over from an earlier try, ended dead: this retry submits the job anew",
            dead_batch_id,
        )
        self._copy_log_tail(dead_batch_id, "dead")
        self.taken_over = False
        return self.submit_job(context)

    def _poll(self, batch_id: str, outage: Outage) -> str | None:
        """The job's state; None after a failed poll that the wait goes on through (as the trigger's does)."""
        from airflow_provider_dli.client.errors import DLIError

        try:
            state = self.hook.get_batch_state(batch_id)
        except DLIError as error:
            if not outage.tolerate(error):
                raise
            metrics.count("dli.poll.failed")
            self.log.warning(
                "Could not read the state of DLI batch job %s (%s): %s", batch_id, outage.describe(), error
            )
            return None
        outage.answered()
        return state

    def get_job_result(self, external_id: Any, context: Context) -> str:
        return str(external_id)

    # Deferrable waiting

    def _submit_and_defer(self, context: Context) -> NoReturn:
        self._defer_on(self.submit_job(context))

    def _defer_on(self, batch_id: str) -> NoReturn:
        from airflow_provider_dli.triggers.dli import DLIBatchTrigger

        deadline = None
        backstop: timedelta | None = None
        if self.execution_timeout is not None:
            # The trigger cancels the job at the deadline; Airflow's own deferral timeout, which would end
            # the wait without cancelling, is only a backstop a minute later.
            deadline = time.time() + self.execution_timeout.total_seconds()
            backstop = self.execution_timeout + timedelta(minutes=1)
        self.defer(
            trigger=DLIBatchTrigger(
                batch_id=batch_id,
                dli_conn_id=self.dli_conn_id,
                project_id=self.project_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
                outage_tolerance=self.outage_tolerance,
                caller=f"{self.dag_id}.{self.task_id}",
                waiting_since=self.waiting_since,
            ),
            method_name="execute_complete",
            kwargs={"taken_over": self.taken_over},
            timeout=backstop,
        )

    def execute_complete(self, context: Context, event: dict[str, Any], taken_over: bool = False) -> str:
        batch_id = str(event["batch_id"])
        self.batch_id = batch_id
        status = event["status"]
        if status == "timeout":
            raise AirflowException(
                f"DLI batch job {batch_id} did not finish within execution_timeout "
                f"({self.execution_timeout}); it was cancelled"
            )
        if status == "error":
            self._cancel_before_failing(batch_id)  # the job must not outlive the task
            raise AirflowException(f"Lost track of DLI batch job {batch_id}, so it was cancelled: {event['message']}")
        if status == "dead" and taken_over:
            self._defer_on(self._submit_anew(batch_id, context))
        self._finish(batch_id, status, context)
        return batch_id

    # Shared

    def _remember(self, batch_id: str, context: Context) -> None:
        self.batch_id = batch_id
        self.waiting_since = time.time()
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=batch_id)

    def _finish(self, batch_id: str, state: str, context: Context) -> None:
        """Copy the job's last log lines into the task log; fail the task if the job ended ``dead``, saying why:
        cancelled by a canceller of this provider (which recorded itself: no retry, which would run the job
        again), cancelled outside it, or failed."""
        from airflow_provider_dli.cancel_records import ended_dead, recorded_cancel

        lines = self._copy_log_tail(batch_id, state)
        if state == "success":
            return
        record = recorded_cancel(context["ti"], batch_id)
        raise (AirflowFailException if record else AirflowException)(ended_dead(batch_id, record, lines))

    def _copy_log_tail(self, batch_id: str, state: str) -> list[str]:
        """Best effort: DLI marks its log API deprecated, so a log that cannot be read is reported, never fatal.
        For an ``auto_recovery`` job, whose driver DLI may have restarted, the last driver's log."""
        from airflow_provider_dli.exceptions import DLIError

        extra = self.extra_body if isinstance(self.extra_body, Mapping) else {}
        recovering = bool(extra.get("auto_recovery"))
        retries = extra.get("max_retry_times")
        attempts = retries + 1 if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0 else None
        try:
            lines = self.hook.tail_batch_log(
                batch_id, self.log_tail_lines, last_attempt=recovering, max_attempts=attempts
            )
        except (DLIError, ValueError) as error:
            self.log.warning(
                "DLI batch job %s ended %s; its driver log could not be read (the log API is best effort): %s",
                batch_id,
                state,
                error,
            )
            return []
        which = "last driver's " if recovering else ""
        self.log.info("DLI batch job %s ended %s; its %slast driver log lines:", batch_id, state, which)
        for line in lines:
            self.log.info("  %s", line)
        return lines

    def _cancel_before_failing(self, batch_id: str) -> None:
        from airflow_provider_dli.client.cancels import cancel_summary

        try:
            self.log.info("%s", cancel_summary(self.hook.cancel_batch(batch_id)))
        except Exception:
            self.log.exception("Could not cancel DLI batch job %s", batch_id)

    def on_kill(self) -> None:
        """SIGTERM or execution_timeout: cancel the job within the 5 s before SIGKILL."""
        if self.batch_id is None:
            return
        from airflow_provider_dli.client.cancels import cancel_summary

        self.log.warning("Task killed: cancelling DLI batch job %s", self.batch_id)
        try:
            hook = task_hook(self, **ON_KILL_HOOK_OPTIONS)
            self.log.info("%s", cancel_summary(hook.cancel_batch(self.batch_id, settle_timeout=ON_KILL_SETTLE_TIMEOUT)))
        except Exception:
            self.log.exception("Could not cancel DLI batch job %s", self.batch_id)

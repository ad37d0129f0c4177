"""The submit operator: submit one DLI Spark batch job and, by default, watch it to its end.

The hook (and with it ``requests``) is imported when a task runs, not when a DAG file is parsed: the DAG
processor imports operator modules on every parse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli._compat import AirflowFailException, conf
from airflow_provider_dli.job_kinds import BATCH
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
)
from airflow_provider_dli.operators.lifecycle import DLIJobOperator, outage_tolerance_seconds
from airflow_provider_dli.validation import non_empty_text
from airflow_provider_dli.xcom_keys import XCOM_BATCH_ID

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk import Context


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


class DLISubmitBatchOperator(DLIJobOperator):
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
    kind = BATCH
    what = "job"
    state_word = "state"

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
        self.job_id: str | None = None
        self.taken_over = False
        self.waiting_since: float | None = None
        for field in ("file", "class_name"):
            if getattr(self, field) is None:  # required: check_at_parse passes over None
                non_empty_text(field, None)
        check_at_parse(self, {field: check for field, _, check in BODY_FIELDS} | CONNECTION_FIELDS)

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

    @property
    def batch_id(self) -> str | None:
        """This try's job (``job_id``, as the other DLI operators name it)."""
        return self.job_id

    @batch_id.setter
    def batch_id(self, batch_id: str | None) -> None:
        self.job_id = batch_id

    def execute(self, context: Context) -> Any:
        from airflow_provider_dli.progress import progress_log_interval

        self._start_try()
        progress_log_interval()  # a bad [dli] option fails the task before it submits, not while it waits
        if not self.wait_for_completion:
            return self.submit_job(context)
        if self.deferrable:
            self._defer_on(self.submit_job(context))
        # Airflow 3.3's mixin returns poll_until_complete's None when a retry reconnects: the batch id still.
        return self._wait_resumably(context) or self.job_id

    # DLIJobOperator: what a batch job is

    def _request_body(self, context: Context) -> dict[str, Any]:
        return self.batch_body(context)

    def _send(self, body: dict[str, Any]) -> str:
        return str(self.hook.create_batch(body)["id"])

    def _search_name(self, body: dict[str, Any]) -> str:
        return str(body["name"])

    def _before_submitting_anew(self, job_id: str, state: str) -> None:
        self._copy_log_tail(job_id, state)

    def _completed(self, job_id: str, state: str) -> str:
        return job_id

    def get_job_result(self, external_id: Any, context: Context) -> str:
        return str(external_id)

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

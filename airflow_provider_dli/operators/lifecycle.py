"""The life of one DLI job in a task, whatever its kind: submit it or take over the one the task already has,
push its id to XCom at once, wait for it (in the worker or deferred), and cancel it on the way out.

:class:`DLIJobOperator` holds these rules once; the batch and the SQL operators only say how to build and send
their request, read a job's state and judge how it ended. A kind's states, XCom key and client methods come from
its :class:`~airflow_provider_dli.job_kinds.JobKind`. The hook is imported when a task runs, not when a DAG file
is parsed.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_dli import metrics
from airflow_provider_dli._compat import ResumableJobMixin, conf
from airflow_provider_dli.operators.arguments import positive_seconds, task_hook
from airflow_provider_dli.states import OUTAGE_TOLERANCE, Outage, UnknownStates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dli.hooks.dli import DLIHook
    from airflow_provider_dli.identity import JobOwner
    from airflow_provider_dli.job_kinds import JobKind

# SIGTERM gives a task 5 s before SIGKILL: the cancel in on_kill must fit in that whatever the server does
# (an attempt ends after connect + read timeouts in all; every request of the call ends within the deadline).
ON_KILL_HOOK_OPTIONS: dict[str, Any] = {"timeout": (1.0, 2.0), "retry_limit": 0, "deadline": 4.0}
ON_KILL_SETTLE_TIMEOUT = 1.0
"""Seconds on_kill re-reads the state after a refused cancel (an earlier cancel may be under way)."""


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


class DLIJobOperator(ResumableJobMixin, BaseOperator):
    """At most one DLI job per try, its id in XCom (``kind.xcom_key``) as soon as DLI accepts it, cancelled when
    the task is killed or loses track of it.

    A retry takes over the newest job of its earlier tries (:func:`~airflow_provider_dli.owned_jobs.take_over`;
    on Airflow 3.3+ it reconnects through ``task_state_store``): live, it waits for it; succeeded, it succeeds with
    it; failed or cancelled, it submits anew (and cancels the older live ones either way). A taken-over job that
    then fails or is cancelled is submitted anew too, unless a canceller of this provider cancelled it on purpose
    (:meth:`_cancelled_on_purpose`). After a submit whose answer may hide a job, this try's job is looked for and
    adopted.
    """

    kind: ClassVar[JobKind]
    what: ClassVar[str]
    """How the lines that are not about one job name this kind: ``job``, ``SQL job``."""
    state_word: ClassVar[str]
    """What DLI calls a job's state in this kind's answers: ``state``, ``status``."""

    wait_for_completion: bool
    poll_interval: float
    outage_tolerance: float
    dli_conn_id: str
    project_id: str | None
    job_id: str | None
    taken_over: bool
    """This try adopted an earlier try's job (rather than submitting its own)."""
    waiting_since: float | None
    """Epoch seconds this try got its job: the wait's lines say how long it has waited since."""

    @cached_property
    def hook(self) -> DLIHook:
        return task_hook(self)

    # What each kind says

    @abstractmethod
    def _request_body(self, context: Context) -> dict[str, Any]:
        """The submit request, checked; a ValueError names any bad parameter."""

    @abstractmethod
    def _send(self, body: dict[str, Any]) -> str:
        """Submit the request; the new job's id."""

    def _search_name(self, body: dict[str, Any]) -> str:
        """The name a look-up for this task's jobs asks DLI for (a hint only); none by default."""
        return ""

    def _read_state(self, job_id: str) -> str:
        return str(getattr(self.hook, self.kind.read_state)(job_id))

    def _before_submitting_anew(self, job_id: str, state: str) -> None:
        """Report what can be read of a taken-over job that ended unsuccessfully, before the retry replaces it."""

    @abstractmethod
    def _finish(self, job_id: str, state: str, context: Context) -> None:
        """Fail the task, saying why, unless the job ended successfully."""

    @abstractmethod
    def _completed(self, job_id: str, state: str) -> Any:
        """The task's return value once its deferred wait ended successfully."""

    # One try

    def _start_try(self) -> None:
        self.job_id = None  # per try: an in-process retry may reuse this instance
        self.taken_over = False

    def _wait_resumably(self, context: Context) -> Any:
        owner, store = self._owner(context), context.get("task_state_store")
        if store is not None and owner.try_number > 1 and owner.first_try == owner.try_number:
            # A person cleared the task: run its job again, not the job Airflow 3.3 remembers from before.
            store.delete(self.external_id_key)
        return self.execute_resumable(context)

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

        body = self._request_body(context)
        name = self._search_name(body)
        owner = self._owner(context)
        job_id = self._earlier_tries_job(name, owner, context) if owner.try_number > owner.first_try else None
        if job_id is None:
            try:
                job_id = self._send(body)
                metrics.count(f"dli.{self.kind.name}.submitted")
            except DLIError as lost:
                if not lost.answer.may_have_acted:
                    raise  # refused, or never sent: DLI created nothing
                job_id = self._this_tries_job(name, owner, context, lost)
        self._remember(job_id, context)
        return job_id

    def _earlier_tries_job(self, name: str, owner: JobOwner, context: Context) -> str | None:
        """The newest job of the earlier tries, to take over, unless it failed or was cancelled; the older live ones
        are cancelled either way."""
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.owned_jobs import search_floor, take_over, tries_jobs

        earlier = range(owner.first_try, owner.try_number)
        floor = search_floor(context.get("dag_run"))
        try:
            found = tries_jobs(self.hook, owner, earlier, name=name, since_ms=floor, kind=self.kind)
        except DLIError as error:
            raise DLIError(
                f"The {self.what}s of this task's earlier tries could not be looked for ({error}), so no job was "
                "submitted, lest it run twice: a retry looks for them again"
            ) from error
        adopted, older_live = take_over(found, self.kind)
        if adopted is None and found:
            job_id, state = found[0][0]["id"], found[0][0]["state"]
            self.log.info("The earlier try's %s %s ended %s: submitting the job anew", self.kind.noun, job_id, state)
        if adopted is not None:
            newest, newest_owner = adopted
            self.log.info(
                "Adopting %s %s (%s), submitted by try %d",
                self.kind.noun,
                newest["id"],
                newest["state"],
                newest_owner.try_number,
            )
        if older_live:
            from airflow_provider_dli.client.cancels import bulk_cancel_counts

            self.log.warning(
                "Cancelling %d older live %s(s) of this task instance: %s", len(older_live), self.what, older_live
            )
            self.log.info("%s", bulk_cancel_counts(getattr(self.hook, self.kind.cancel_many)(older_live)))
        if adopted is None:
            return None
        metrics.count(f"dli.{self.kind.name}.adopted")
        self.taken_over = True
        return str(adopted[0]["id"])

    def _this_tries_job(self, name: str, owner: JobOwner, context: Context, lost: Exception) -> str:
        from airflow_provider_dli.exceptions import DLIError
        from airflow_provider_dli.owned_jobs import search_floor, tries_jobs

        self.log.warning(
            "DLI may have created the %s although its answer said otherwise (%s): looking for it", self.what, lost
        )
        try:
            this_try = range(owner.try_number, owner.try_number + 1)
            floor = search_floor(context.get("dag_run"))
            found = tries_jobs(self.hook, owner, this_try, name=name, since_ms=floor, kind=self.kind)
        except DLIError as listing:
            named = f", named {name!r}" if name else ""
            raise DLIError(
                f"{lost}. DLI may have created the {self.what} anyway{named}; it could not be looked for "
                f"({listing}): a retry looks for it before submitting"
            ) from lost
        if not found:
            raise DLIError(f"{lost}. No {self.what} of this try was found at DLI, so none was adopted") from lost
        job_id = str(found[0][0]["id"])
        self.log.info("Adopting %s %s%s, created by this try", self.kind.noun, job_id, f" ({name})" if name else "")
        metrics.count(f"dli.{self.kind.name}.adopted")
        return job_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return str(getattr(self.hook, self.kind.read_state)(str(external_id)))

    def is_job_active(self, status: str) -> bool:
        return status in self.kind.live

    def is_job_succeeded(self, status: str) -> bool:
        return status == self.kind.succeeded

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        job_id = str(external_id)
        if self.job_id != job_id:  # reconnected on a retry: this try's XCom is empty
            self.log.info("Reconnecting to %s %s submitted by an earlier try", self.kind.noun, job_id)
            self._remember(job_id, context)
            self.taken_over = True
        state = self._wait(job_id)
        if state != self.kind.succeeded and self.taken_over and not self._cancelled_on_purpose(job_id, context):
            job_id = self._submit_anew(job_id, state, context)
            if (store := context.get("task_state_store")) is not None:
                store.set(self.external_id_key, job_id)  # a later retry reconnects to this one
            state = self._wait(job_id)
        self._finish(job_id, state, context)

    def _wait(self, job_id: str) -> str:
        """The job's final state, polled."""
        from airflow_provider_dli.progress import WaitProgress

        noun = self.kind.noun
        unknown = UnknownStates(job_id, known=self.kind.known, noun=noun.removeprefix("DLI "))
        outage, progress = Outage(self.outage_tolerance), WaitProgress(job_id, since=self.waiting_since, noun=noun)
        while (state := self._poll(job_id, outage)) not in self.kind.terminal:
            if state is not None and (line := progress.line(state)):
                self.log.info("%s", line)
            if state is not None and (problem := unknown.check(state)):
                self._cancel_before_failing(job_id)
                raise AirflowException(problem + "; it was cancelled")
            time.sleep(self.poll_interval)
        return state

    def _submit_anew(self, ended_job_id: str, state: str, context: Context) -> str:
        """A retry that took over an earlier try's job which then failed or was cancelled (perhaps by the earlier
        try, on its way out) runs the job again, as a retry that found it so would have."""
        self.log.warning(
            "%s %s, taken over from an earlier try, ended %s: this retry submits the job anew",
            self.kind.noun,
            ended_job_id,
            state,
        )
        self._before_submitting_anew(ended_job_id, state)
        self.taken_over = False
        return self.submit_job(context)

    def _cancelled_on_purpose(self, job_id: str, context: Context) -> bool:
        """Whether a canceller of this provider deliberately cancelled the job that this retry took over (the kill
        switch, a sibling's notifier, ``airflow dli cancel``...): then the retry fails, naming it, rather than run
        the job again and undo the cancel.

        Not when this task instance's own callback wrote the record (its name is the record's ``by``): that is
        the earlier try's ``on_retry_callback`` cancelling that try's job, which Airflow runs after it has set the
        state, so perhaps after this try took the job over; the retry then runs the job anew. No record, or one
        of another job: cancelled outside this provider, or failed; run anew too, as before. Airflow clears the
        task's records when a try starts, so any record read here was written during this try.
        """
        from airflow_provider_dli.cancel_records import canceller, recorded_cancel

        record = recorded_cancel(context["ti"], job_id)
        return record is not None and not record["by"].endswith(canceller(context["ti"], ""))

    def _poll(self, job_id: str, outage: Outage) -> str | None:
        """The job's state; None after a failed poll that the wait goes on through (as the trigger's does)."""
        from airflow_provider_dli.client.errors import DLIError

        try:
            state = self._read_state(job_id)
        except DLIError as error:
            if not outage.tolerate(error):
                raise
            metrics.count("dli.poll.failed")
            self.log.warning(
                "Could not read the %s of %s %s (%s): %s",
                self.state_word,
                self.kind.noun,
                job_id,
                outage.describe(),
                error,
            )
            return None
        outage.answered()
        return state

    # Deferrable waiting

    def _defer_on(self, job_id: str) -> NoReturn:
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
                batch_id=job_id,
                job_kind=self.kind.name,
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

    def execute_complete(self, context: Context, event: dict[str, Any], taken_over: bool = False) -> Any:
        job_id = str(event["batch_id"])
        self.job_id = job_id
        state = event["status"]
        if state == "timeout":
            raise AirflowException(
                f"{self.kind.noun} {job_id} did not finish within execution_timeout ({self.execution_timeout}); "
                "it was cancelled"
            )
        if state == "error":
            self._cancel_before_failing(job_id)  # the job must not outlive the task
            raise AirflowException(f"Lost track of {self.kind.noun} {job_id}, so it was cancelled: {event['message']}")
        if state != self.kind.succeeded and taken_over and not self._cancelled_on_purpose(job_id, context):
            self._defer_on(self._submit_anew(job_id, state, context))
        self._finish(job_id, state, context)
        return self._completed(job_id, state)

    # Shared

    def _remember(self, job_id: str, context: Context) -> None:
        self.job_id = job_id
        self.waiting_since = time.time()
        context["ti"].xcom_push(key=self.kind.xcom_key, value=job_id)

    def _cancel_before_failing(self, job_id: str) -> None:
        from airflow_provider_dli.client.cancels import cancel_summary

        try:
            self.log.info("%s", cancel_summary(getattr(self.hook, self.kind.cancel)(job_id), self.kind.noun))
        except Exception:
            self.log.exception("Could not cancel %s %s", self.kind.noun, job_id)

    def on_kill(self) -> None:
        """SIGTERM or execution_timeout: cancel the job within the 5 s before SIGKILL."""
        if self.job_id is None:
            return
        from airflow_provider_dli.client.cancels import cancel_summary

        self.log.warning("Task killed: cancelling %s %s", self.kind.noun, self.job_id)
        try:
            hook = task_hook(self, **ON_KILL_HOOK_OPTIONS)
            result = getattr(hook, self.kind.cancel)(self.job_id, settle_timeout=ON_KILL_SETTLE_TIMEOUT)
            self.log.info("%s", cancel_summary(result, self.kind.noun))
        except Exception:
            self.log.exception("Could not cancel %s %s", self.kind.noun, self.job_id)

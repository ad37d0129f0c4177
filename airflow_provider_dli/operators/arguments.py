"""What every DLI task shares: the hook its connection arguments make, and the checks of its arguments.

The checks run while a DAG file is parsed, for the values known then (:func:`check_at_parse`), and again on the
rendered values before any request: bad input gets a clear error naming the field before DLI hears of it.
Standard library and :mod:`airflow_provider_dli.validation` only, so that the DAG processor's parses stay cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_dli.validation import (
    non_empty_text,
    resolved_later,
    shown,
    validate_batch_id,
    validate_project_id,
)

if TYPE_CHECKING:
    from airflow_provider_dli.hooks.dli import DLIHook

_MEMORY = re.compile(r"[1-9][0-9]*[MmGg]")
_SC_TYPES = ("A", "B", "C")


class DLITask(Protocol):
    """What :func:`task_hook` reads from an operator or a sensor."""

    @property
    def dag_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def dli_conn_id(self) -> str: ...
    @property
    def project_id(self) -> str | None: ...


def task_hook(task: DLITask, **options: Any) -> DLIHook:
    """The hook for one task: its connection and project, with the task named in DLI's audit trail."""
    from airflow_provider_dli.hooks.dli import DLIHook

    return DLIHook(task.dli_conn_id, project_id=task.project_id, caller=f"{task.dag_id}.{task.task_id}", **options)


def positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0; got {value!r}")
    return float(value)


def positive_int(name: str, value: object) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
        value = int(value)  # templated values render as strings ("²" is a digit to str.isdigit, not here)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a whole number > 0; got {shown(value)}")
    return value


def string_list(name: str, value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of strings; got {shown(value)}")
    if not all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in value):
        raise ValueError(f"{name} must be a list of strings; got {shown(value)}")
    return [str(item) for item in value]


def string_mapping(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{name} must be a mapping with string keys; got {shown(value)}")
    return dict(value)


def memory_size(name: str, value: object) -> str:
    if not isinstance(value, str) or not _MEMORY.fullmatch(value):
        raise ValueError(f"{name} must look like '512M' or '2G'; got {shown(value)}")
    return value


def job_name_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.strip():
        raise ValueError(f"{name} must be a string of 1 to 128 characters; got {shown(value)}")
    return value


def spark_sc_type(name: str, value: object) -> str:
    if value not in _SC_TYPES:
        raise ValueError(f"{name} must be one of {_SC_TYPES}; got {shown(value)}")
    return str(value)


def project_id_or_blank(name: str, value: object) -> str:
    """A project id; blank (a template that rendered empty) means the connection's, as None does."""
    return "" if value == "" else validate_project_id(value, "the project_id argument")


def one_batch_id(name: str, value: object) -> str:
    return validate_batch_id(value, name)


def batch_id_or_ids(name: str, value: object) -> str | list[str]:
    """One batch id, or a list of them (each checked now unless it is still a template)."""
    if isinstance(value, str):
        return validate_batch_id(value, name)
    if isinstance(value, bytes) or not isinstance(value, Sequence):  # a pulled XCom list is a lazy Sequence
        raise ValueError(f"{name} must be a DLI batch job id or a list of them; got {shown(value)}")
    return [
        item if resolved_later(item, text=True) else validate_batch_id(item, f"{name}[{index}]")
        for index, item in enumerate(value)
    ]


Check = Callable[[str, Any], Any]
TEXT_CHECKS: frozenset[Check] = frozenset(
    {non_empty_text, memory_size, job_name_text, spark_sc_type, project_id_or_blank, one_batch_id, batch_id_or_ids}
)
"""Checks whose field renders into text: a plain string there is known while the DAG file is parsed."""


def check_at_parse(task: object, checks: Mapping[str, Check]) -> None:
    """Run each field's check now unless its value is only known when the task runs (a template, an XComArg)."""
    for name, check in checks.items():
        value = getattr(task, name)
        if value is not None and not resolved_later(value, text=check in TEXT_CHECKS):
            check(name, value)


CONNECTION_FIELDS: dict[str, Check] = {"dli_conn_id": non_empty_text, "project_id": project_id_or_blank}

"""Checks of user input shared by the hook, the operators, the sensor and the notifier.

Free of imports beyond the standard library, so that operators run these checks while a DAG file is parsed
without loading the hook (and ``requests``). Every check raises a ValueError that names the field and says what
was expected; patterns are full matches (``re.fullmatch``: ``$`` would accept a trailing newline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

BATCH_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PROJECT_ID = re.compile(r"[A-Za-z0-9]{1,64}")
MAX_BULK_WORKERS = 32
"""Most cancels in flight at once: DLI throttles each API at 200 requests/s, and a pool is not free."""

_JINJA_MARKERS = ("{{", "{%", "{#")


def shown(value: object) -> str:
    """``repr(value)``, shortened: for messages about values that are not secrets."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_batch_id(batch_id: object, field: str = "batch_id") -> str:
    """Return ``batch_id`` if it is a DLI batch id (a UUID); else a ValueError naming ``field``."""
    if isinstance(batch_id, str) and BATCH_ID.fullmatch(batch_id):
        return batch_id
    raise ValueError(
        f"{field} must be a DLI batch job id, a UUID such as '0a324461-d9d9-45da-a52a-3b3c7a3d809e'; "
        f"got {shown(batch_id)}"
    )


def validate_sql_job_id(job_id: object, field: str = "job_id") -> str:
    """Return ``job_id`` if it is a DLI SQL job id (a UUID, as batch ids are); else a ValueError naming ``field``."""
    if isinstance(job_id, str) and BATCH_ID.fullmatch(job_id):
        return job_id
    raise ValueError(
        f"{field} must be a DLI SQL job id, a UUID such as '0a324461-d9d9-45da-a52a-3b3c7a3d809e'; got {shown(job_id)}"
    )


def validate_project_id(project_id: object, where: str) -> str:
    if isinstance(project_id, str) and PROJECT_ID.fullmatch(project_id):
        return project_id
    raise ValueError(f"project_id must be up to 64 letters and digits ({where}); got {shown(project_id)}")


def validate_max_workers(max_workers: object) -> int:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not 1 <= max_workers <= MAX_BULK_WORKERS:
        raise ValueError(f"max_workers must be a whole number from 1 to {MAX_BULK_WORKERS}; got {shown(max_workers)}")
    return max_workers


def resolved_later(value: object, *, text: bool) -> bool:
    """True when a template field's value is only known once the task runs, so that a check must wait.

    A string with Jinja markers is rendered first; an XComArg (anything with ``resolve``) is resolved first.
    For a field whose rendered value is not text (a number, a list, a mapping), every string waits: with
    ``render_template_as_native_obj`` even a plain string may render into a number or a list.
    """
    if hasattr(value, "resolve"):
        return True
    if isinstance(value, str):
        return not text or any(marker in value for marker in _JINJA_MARKERS)
    if isinstance(value, list | tuple | set):
        return any(hasattr(item, "resolve") for item in value)
    if isinstance(value, Mapping):
        return any(hasattr(item, "resolve") for item in value.values())
    return False


def non_empty_text(name: str, value: Any) -> str:
    """A string with something in it; a whole number (a native-rendered template) counts as its text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string; got {shown(value)}")
    return value

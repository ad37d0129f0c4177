"""The readings of DLI that the emulator can play: where DLI's documentation is silent, or its editions differ,
each way DLI may behave is a value of one reading, so that a test can run against every one of them.

A reading is one field of :class:`Readings`: its type lists the values it allows, its default is what the
emulator plays unless told otherwise, and its ``help`` says what it changes. Adding one is a field here and the
``if`` in the API area that plays it; ``dli-emulator --reading NAME=VALUE`` and ``DLIEmulator(readings=...)``
take it from here.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal


def _reading(default: str, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Readings:
    """One value for each reading; every one not given plays its default."""

    cancel_finished_code: Literal["DLI.0007", "DLI.0001"] = _reading(
        "DLI.0007",
        "the error code (HTTP 400) of a cancel of a finished job: the docs say it is refused, not with which code",
    )
    unknown_batch: Literal["DLI.0002", "DLI.0023"] = _reading(
        "DLI.0002",
        "the answer for a batch id DLI does not know: 400 DLI.0002 (object does not exist) or 404 DLI.0023",
    )
    log_from: Literal["string", "integer"] = _reading(
        "string", "how the log API sends back the 'from' of its page: the real service sends a string at times"
    )
    list_parameters: Literal["any", "t-cloud", "huawei"] = _reading(
        "any",
        "which query parameters the job list takes: any (an unknown one is ignored), or only those one edition "
        "documents (t-cloud: no start, end or order; huawei: no owner), an undocumented one refused with 400 "
        "DLI.0001",
    )
    recovering: Literal["never", "mid-run"] = _reading(
        "never", "whether a job passes through the documented 'recovering' state in the middle of its run"
    )
    retry_after: Literal["rounded-up", "rounded-down"] = _reading(
        "rounded-up",
        "the whole seconds of the rate limit's Retry-After: rounded up, or down (0 when the limit frees up within "
        "a second)",
    )
    create_answer: Literal["job", "DLI.0999"] = _reading(
        "job",
        "what a create answers: the new job, or 400 DLI.0999 (DLI's server-side error) after it made the job",
    )
    job_name_filter: Literal["substring", "whole", "ignored"] = _reading(
        "substring",
        "how the list filter job_name matches a job's name: the docs do not say (Huawei's Terraform tests expect "
        "whole names); 'ignored' lists every job",
    )
    job_name_characters: Literal["any", "documented"] = _reading(
        "any",
        "which job names a create accepts: any of up to 128 characters, or only the documented letters, digits, "
        "'_', '-' and '.' (another character: 400 DLI.0001)",
    )
    req_body: Literal["request", "normalized", "absent"] = _reading(
        "request",
        "the req_body of a listed job and of a job's details: the create request as sent, DLI's normalized form "
        "of it (autoRecovery, maxRetryTimes...; the Spark conf as sent), or absent from listings (older T Cloud "
        "docs; the details still carry the request)",
    )

    def __post_init__(self) -> None:
        for name, allowed in allowed_values().items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"reading {name!r} must be one of {', '.join(map(repr, allowed))}; got {value!r}")

    @classmethod
    def of(cls, chosen: Readings | Mapping[str, str] | None) -> Readings:
        """``chosen`` as readings: a name that is not a reading is refused, naming the ones there are."""
        if chosen is None or isinstance(chosen, Readings):
            return chosen or cls()
        unknown = sorted(set(chosen) - set(allowed_values()))
        if unknown:
            raise ValueError(f"unknown reading {unknown[0]!r}; the readings are {', '.join(allowed_values())}")
        return cls(**dict[str, Any](chosen))


def allowed_values() -> dict[str, tuple[str, ...]]:
    """Each reading's name and the values it allows, the default first."""
    hints = typing.get_type_hints(Readings)
    allowed = {}
    for reading in fields(Readings):
        default = str(reading.default)
        allowed[reading.name] = (default, *(v for v in typing.get_args(hints[reading.name]) if v != default))
    return allowed


def describe() -> list[str]:
    """One line per reading, for ``--help``: its name, values (default first) and what it changes."""
    return [
        f"{reading.name}={'|'.join(allowed_values()[reading.name])}: {reading.metadata['help']}"
        for reading in fields(Readings)
    ]

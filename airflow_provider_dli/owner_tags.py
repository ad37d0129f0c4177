"""A SQL job's owner record, carried by its tags: a SQL job has no Spark ``conf`` that DLI hands back, but it
keeps its tags and shows them in every listing and status answer.

DLI's tag rules allow only letters, digits, spaces and ``_ . : = + - @`` in a tag, and 255 characters in a
value, so the record's JSON text travels base64url-encoded (no padding) in as many tags as it needs
(``airflow.dli.owner.0``, ``.1``...). Two more tags make the record findable with one filtered listing: the
instance id (``airflow.dli.instance``, for the sweeper) and a digest of the instance, DAG and run ids
(``airflow.dli.run``, for the run-wide tools). A filter is a search hint: every listed job is still matched on
its decoded record (:func:`~airflow_provider_dli.identity.belongs_to`), never on these two tags alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping

from airflow_provider_dli.identity import JobOwner, owner_from_text

TAG_PREFIX = "airflow.dli."
OWNER_TAG = TAG_PREFIX + "owner."
INSTANCE_TAG = TAG_PREFIX + "instance"
RUN_TAG = TAG_PREFIX + "run"
MAX_TAG_VALUE = 255
MAX_OWNER_TAGS = 8
"""Chunks of a record read at most: ids of 250 characters each need 6; a job with more is not ours."""


def run_digest(instance: str, dag_id: str, run_id: str) -> str:
    """The ``airflow.dli.run`` tag's value: the exact ids, hashed, so that any run id fits DLI's tag rules."""
    return hashlib.sha256("\0".join((instance, dag_id, run_id)).encode()).hexdigest()[:40]


def owner_tags(owner: JobOwner) -> list[dict[str, str]]:
    """The tags that carry ``owner`` (the record's chunks, the instance, the run's digest)."""
    encoded = base64.urlsafe_b64encode(owner.conf_value().encode()).decode().rstrip("=")
    chunks = [encoded[start : start + MAX_TAG_VALUE] for start in range(0, len(encoded), MAX_TAG_VALUE)]
    return [
        *({"key": f"{OWNER_TAG}{index}", "value": chunk} for index, chunk in enumerate(chunks)),
        {"key": INSTANCE_TAG, "value": owner.instance},
        {"key": RUN_TAG, "value": run_digest(owner.instance, owner.dag_id, owner.run_id)},
    ]


def owner_from_tags(tags: object) -> JobOwner | None:
    """The owner record that a job's tags carry; None when they carry none, or a malformed one."""
    values = _tag_values(tags)
    chunks: list[str] = []
    for index in range(MAX_OWNER_TAGS):
        chunk = values.get(f"{OWNER_TAG}{index}")
        if chunk is None:
            break
        chunks.append(chunk)
    if not chunks:
        return None
    encoded = "".join(chunks)
    try:
        text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return owner_from_text(text)  # the one parser of the record


def _tag_values(tags: object) -> dict[str, str]:
    """``[{key, value}, ...]`` as a mapping; anything else (or a malformed tag) contributes nothing."""
    if not isinstance(tags, Iterable) or isinstance(tags, str | bytes | Mapping):
        return {}
    return {
        tag["key"]: tag["value"]
        for tag in tags
        if isinstance(tag, Mapping) and isinstance(tag.get("key"), str) and isinstance(tag.get("value"), str)
    }

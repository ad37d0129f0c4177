"""OpenLineage for DLI Spark jobs, as the Livy and Databricks providers do it: the parent job (the Airflow task)
and, if asked, where to send events go into the job's Spark conf, so that the events of the Spark OpenLineage
integration link to the task that submitted the job.

Opt-in, with the same settings as those providers: the operator's ``openlineage_inject_parent_job_info`` and
``openlineage_inject_transport_info``, by default Airflow's ``[openlineage] spark_inject_parent_job_info`` and
``spark_inject_transport_info``. It needs ``apache-airflow-providers-openlineage`` (the ``openlineage`` extra),
which is imported only when a task that asks for it runs, never when a DAG file is parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

PROPERTY_PREFIX = "spark.openlineage."
_SECRET_WORDS = ("auth", "key", "token", "secret", "password")

log = logging.getLogger(__name__)


def with_lineage(
    spark_conf: Mapping[str, Any], context: Context, *, parent_job: bool, transport: bool
) -> dict[str, Any]:
    """``spark_conf`` plus the OpenLineage properties asked for. A conf that already has parent (or transport)
    properties keeps them and gets none of that kind added, as the OpenLineage provider decides."""
    properties = dict(spark_conf)
    if not (parent_job or transport):
        return properties
    try:
        from airflow.providers.openlineage.utils.spark import (
            inject_parent_job_information_into_spark_properties,
            inject_transport_information_into_spark_properties,
        )
    except ImportError:
        log.warning(
            "OpenLineage information was asked for, but apache-airflow-providers-openlineage is not installed "
            "(pip install 'airflow-provider-dli[openlineage]'): the DLI job is submitted without it"
        )
        return properties
    if parent_job:
        properties = inject_parent_job_information_into_spark_properties(properties, context)
    if transport:
        properties = inject_transport_information_into_spark_properties(properties, context)
        _mask_transport_secrets(properties)
    return properties


def _mask_transport_secrets(properties: Mapping[str, Any]) -> None:
    """The transport's credentials (e.g. an API key) travel in the job's conf: keep them out of the task log."""
    from airflow.sdk.log import mask_secret

    for key, value in properties.items():
        name = key.lower()
        if name.startswith(f"{PROPERTY_PREFIX}transport.") and any(word in name for word in _SECRET_WORDS):
            mask_secret(str(value))

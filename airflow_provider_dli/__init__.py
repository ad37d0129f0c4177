"""Apache Airflow provider for Data Lake Insight (DLI), the serverless Spark service of Huawei Cloud and
T Cloud Public. This module stays free of heavy imports: Airflow reads :func:`get_provider_info` at start-up."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONN_TYPE = "dli"

# The connection form (Airflow 3.2+ builds it from the provider info, without importing the hook).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "project_id": {
        "label": "Project ID",
        "description": "The project (region) ID the batch jobs belong to: up to 64 letters and digits.",
        "schema": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9]{1,64}$"},
    },
    "region": {
        "label": "Region",
        "description": "Derives the endpoints when the host is empty: 'eu-de' (T Cloud Public), "
        "'cn-north-4', 'ap-southeast-1', 'eu-west-101'... (Huawei Cloud).",
        "schema": {"type": ["string", "null"]},
    },
    "auth_type": {
        "label": "Authentication",
        "description": "aksk: login = access key ID, password = secret access key. password: IAM user, "
        "password and domain_name. token: a ready IAM token in 'token'.",
        "schema": {"type": ["string", "null"], "enum": ["aksk", "password", "token", None], "default": "aksk"},
    },
    "domain_name": {
        "label": "IAM domain (account) name",
        "description": "For auth_type 'password'.",
        "schema": {"type": ["string", "null"]},
    },
    "iam_endpoint": {
        "label": "IAM endpoint URL",
        "description": "For auth_type 'password' when it cannot be derived from the region, e.g. "
        "https://iam.eu-nl.otc.t-systems.com.",
        "schema": {"type": ["string", "null"]},
    },
    "security_token": {
        "label": "Security token",
        "description": "For temporary AK/SK credentials; sent as X-Security-Token.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "token": {
        "label": "IAM token",
        "description": "For auth_type 'token': a project-scoped IAM token (valid 24 h).",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "host": "DLI endpoint URL (optional)",
        "login": "Access key ID / IAM user name",
        "password": "Secret access key / IAM password",
    },
    "placeholders": {
        "host": "derived from the region, e.g. https://dli.eu-de.otc.t-systems.com",
        "project_id": "0123456789abcdef0123456789abcdef",
        "region": "eu-de",
        "auth_type": "aksk",
    },
}


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads through the ``apache_airflow_provider`` entry point."""
    integration = "Data Lake Insight (DLI)"
    return {
        "package-name": "airflow-provider-dli",
        "name": "Data Lake Insight (DLI)",
        "description": "Submit, watch and cancel Spark batch jobs on `Data Lake Insight "
        "<https://www.huaweicloud.com/intl/en-us/product/dli.html>`__ (Huawei Cloud, T Cloud Public).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": integration,
                "external-doc-url": "https://docs.otc.t-systems.com/data-lake-insight/api-ref/",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": integration, "python-modules": ["airflow_provider_dli.hooks.dli"]}],
        "operators": [{"integration-name": integration, "python-modules": ["airflow_provider_dli.operators.dli"]}],
        "sensors": [{"integration-name": integration, "python-modules": ["airflow_provider_dli.sensors.dli"]}],
        "triggers": [{"integration-name": integration, "python-modules": ["airflow_provider_dli.triggers.dli"]}],
        "notifications": ["airflow_provider_dli.notifications.dli.DLICancelBatchNotifier"],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_dli.hooks.dli.DLIHook",
                "hook-name": integration,
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }

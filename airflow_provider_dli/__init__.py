"""Apache Airflow provider for Data Lake Insight (DLI), the serverless Spark service of Huawei Cloud and
T Cloud Public. This module stays free of heavy imports: Airflow reads :func:`get_provider_info` at start-up."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one place: pyproject.toml and the provider info read it; see CHANGELOG.md

CONN_TYPE = "dli"

# The connection form. Airflow 3.2+ builds it from the provider info without importing the hook; Airflow 3.1
# asks the hook (DLIHook.get_connection_form_widgets builds its fields from these same definitions). The form
# shows an extra field's hints from its schema (``examples`` become suggestions, ``values_display`` labels a
# choice); placeholders reach only the standard fields. Empty fields are saved as ``null``, which the hook
# reads as unset.
AUTH_TYPE_LABELS: dict[str, str] = {
    "aksk": "Access key (login = AK, password = SK)",
    "password": "IAM user (login = user name, password = IAM password)",
    "token": "IAM token (in the 'IAM token' field)",
}

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "project_id": {
        "label": "Project ID",
        "description": "The ID (not the name) of the project the batch jobs belong to: 32 hex digits, shown "
        "under My Credentials > API Credentials in the console.",
        # maxLength too: Python's jsonschema searches with re.search, where "$" also matches before a newline.
        "schema": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9]{1,64}$", "maxLength": 64},
    },
    "region": {
        "label": "Region",
        "description": "Gives the DLI and IAM endpoints when the host is empty: 'eu-de' or 'eu-nl' "
        "(T Cloud Public), 'cn-north-4', 'ap-southeast-1', 'eu-west-101'... (Huawei Cloud).",
        "schema": {
            "type": ["string", "null"],
            "examples": ["eu-de", "eu-nl", "cn-north-4", "cn-east-3", "ap-southeast-1", "eu-west-101"],
        },
    },
    "auth_type": {
        "label": "Authentication",
        "description": "How the hook signs in: with an access key, as an IAM user, or with a ready IAM token.",
        "schema": {
            "type": "string",
            "enum": list(AUTH_TYPE_LABELS),
            "values_display": AUTH_TYPE_LABELS,
            "default": "aksk",
        },
    },
    "domain_name": {
        "label": "IAM domain (account) name",
        "description": "For IAM user authentication: the account the user belongs to.",
        "schema": {"type": ["string", "null"]},
    },
    "iam_endpoint": {
        "label": "IAM endpoint URL",
        "description": "For IAM user authentication, when the region does not give it.",
        "schema": {
            "type": ["string", "null"],
            "examples": ["https://iam.eu-de.otc.t-systems.com", "https://iam.eu-nl.otc.t-systems.com"],
        },
    },
    "login_cache": {
        "label": "IAM login cache",
        "description": "For auth_type 'password'. disk (default): one token shared by this machine's processes, "
        "in a private folder ([dli] login_cache_path). memory: each process logs in for itself.",
        "schema": {
            "type": ["string", "null"],
            "enum": ["disk", "memory"],
            "values_display": {"disk": "disk: one token per machine", "memory": "memory: one token per process"},
            "default": "disk",
        },
    },
    "security_token": {
        "label": "Security token",
        "description": "For temporary access keys only; sent as X-Security-Token.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "token": {
        "label": "IAM token",
        "description": "For IAM token authentication: a project-scoped IAM token (valid 24 h).",
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
    "placeholders": {"host": "from the region, e.g. https://dli.eu-de.otc.t-systems.com"},
}


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads through the ``apache_airflow_provider`` entry point."""
    integration = "Data Lake Insight (DLI)"
    return {
        "package-name": "airflow-provider-dli",
        "name": "Data Lake Insight (DLI)",
        # The Providers page shows a link without the space after it: a link goes last.
        "description": "Submit, watch and cancel Spark batch jobs on Data Lake Insight (Huawei Cloud, T Cloud "
        "Public): `DLI <https://www.huaweicloud.com/intl/en-us/product/dli.html>`__",
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
        # ``airflow dli`` (Airflow 3.3+; Airflow 3.1 ignores the entry: ``python -m airflow_provider_dli`` there).
        "cli": ["airflow_provider_dli.cli.get_cli_commands"],
        "config": {
            "dli": {
                "description": "The DLI provider: where password authentication keeps its IAM tokens, "
                "which DLI jobs are this Airflow's, and how long a wait outlasts an outage of DLI.",
                "options": {
                    "instance_id": {
                        "description": "Names this Airflow deployment in every job it submits (the Spark "
                        "setting spark.airflow.dli.owner), so that the orphan sweeper only ever touches this "
                        "deployment's jobs. Deployments that share a DLI project must each set their own, on all "
                        "of their components: 1 to 64 letters, digits, '_', '.' or '-'.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "prod-eu",
                        "default": "airflow",
                    },
                    "progress_log_interval": {
                        "description": "Seconds between two lines that a wait on a DLI job logs while the job's "
                        "state does not change (a line is logged at every change of state too), in a waiting "
                        "task and in the triggerer alike.\n",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "60",
                        "default": "300",
                    },
                    "login_cache": {
                        "description": "disk: share one IAM token per connection between this machine's "
                        "processes (every Airflow task runs in a process of its own), through files in "
                        "login_cache_path. memory: keep tokens in each process only. A connection's extra "
                        "'login_cache' can also choose memory.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "memory",
                        "default": "disk",
                    },
                    "login_cache_path": {
                        "description": "An absolute path to the private folder (mode 700) of the token files. "
                        "Empty: ~/.cache/airflow-provider-dli/iam-tokens ($XDG_CACHE_HOME on Linux, "
                        "~/Library/Caches on macOS).\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/cache/airflow/dli-tokens",
                        "default": "",
                    },
                    "outage_tolerance": {
                        "description": "Seconds a wait on a DLI job (in the worker or the triggerer) goes on "
                        "while its polls fail on answers that an outage gives (no answer, a 5xx, DLI.0999, a "
                        "maintenance page, a gateway 404 during a deploy), before the task fails. An operator's or a "
                        "sensor's outage_tolerance overrides it.\n",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "1800",
                        "default": "600",
                    },
                },
            }
        },
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

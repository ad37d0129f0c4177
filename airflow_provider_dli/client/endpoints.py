"""Public DLI and IAM endpoints by region, for Huawei Cloud and T Cloud Public (Open Telekom Cloud)."""

from __future__ import annotations

import re

T_CLOUD_DLI_REGIONS = frozenset({"eu-de"})
T_CLOUD_IAM_REGIONS = frozenset({"eu-de", "eu-nl"})
_HUAWEI_REGION = re.compile(r"[a-z]{2}-[a-z]+-\d{1,3}")
_HUAWEI_EU_SOVEREIGN_REGIONS = frozenset({"eu-west-101"})  # served from myhuaweicloud.eu


def _huawei_domain(region: str) -> str:
    if not isinstance(region, str) or not _HUAWEI_REGION.fullmatch(region):
        raise ValueError(
            f"region must be a Huawei Cloud region such as 'cn-north-4' or 'ap-southeast-1', or the "
            f"T Cloud Public region 'eu-de'; got {region!r}"
        )
    return "myhuaweicloud.eu" if region in _HUAWEI_EU_SOVEREIGN_REGIONS else "myhuaweicloud.com"


def dli_endpoint(region: str) -> str:
    """``https://dli.{region}...`` for ``region``; a clear error for a region without DLI."""
    if region in T_CLOUD_DLI_REGIONS:
        return f"https://dli.{region}.otc.t-systems.com"
    if region in T_CLOUD_IAM_REGIONS:
        raise ValueError(
            f"T Cloud Public offers DLI only in {sorted(T_CLOUD_DLI_REGIONS)}, not in region {region!r}; "
            "set region to 'eu-de' or give the DLI endpoint as the connection host"
        )
    return f"https://dli.{region}.{_huawei_domain(region)}"


def iam_endpoint(region: str) -> str:
    if region in T_CLOUD_IAM_REGIONS:
        return f"https://iam.{region}.otc.t-systems.com"
    return f"https://iam.{region}.{_huawei_domain(region)}"

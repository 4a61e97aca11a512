"""The project's tags: the one place that knows what every resource is tagged with.

Both sides read it: the laptop tags what it creates and filters what it lists by these
tags, and the instance's cleanup finds its own volumes with the same filters. Pure data
and functions (no boto3 import), so the instance bundle needs nothing from ``infra/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.layout import check_env

PROJECT_TAG = "Chronos-Training"
DEFAULT_COST_CENTER = "ml-research"
MANAGED_BY_PULUMI = "pulumi"
MANAGED_BY_LOCAL = "chronos-local"

PROJECT_KEY = "Project"
ENVIRONMENT_KEY = "Environment"
COST_CENTER_KEY = "CostCenter"
MANAGED_BY_KEY = "ManagedBy"
RUN_ID_KEY = "RunId"
# The tag the stack's Batch compute environments put on every host they launch (their
# ``computeResources.tags``, which Batch applies to the EC2 instances it launches: API Reference,
# ComputeResource ``tags``), valued with the environment's name; beside it the tags Batch itself is
# seen to add. Batch owns those hosts (it scales them, its retry strategy reruns their jobs), so
# neither the recovery handler nor verify treats them as a run's instance. Our own key comes first:
# it does not depend on what Batch adds.
BATCH_HOST_KEY = "BatchComputeEnvironment"
BATCH_HOST_TAG_KEYS = (BATCH_HOST_KEY, "aws:batch:compute-environment", "AWSBatchServiceTag")


def tags(
    env: str,
    cost_center: str = DEFAULT_COST_CENTER,
    extra: Mapping[str, str] | None = None,
    *,
    managed_by: str = MANAGED_BY_PULUMI,
) -> dict[str, str]:
    """Tags every taggable resource carries (extra tags cannot override them)."""
    base = {
        PROJECT_KEY: PROJECT_TAG,
        ENVIRONMENT_KEY: check_env(env),
        COST_CENTER_KEY: cost_center,
        MANAGED_BY_KEY: managed_by,
    }
    return {**dict(extra or {}), **base}


def tag_list(tag_map: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags as the AWS API's ``[{"Key": .., "Value": ..}]`` list, sorted by key."""
    return [{"Key": k, "Value": v} for k, v in sorted(tag_map.items())]


def project_filters() -> list[dict[str, Any]]:
    """EC2 ``Filters`` selecting this project's resources of every env."""
    return [{"Name": f"tag:{PROJECT_KEY}", "Values": [PROJECT_TAG]}]


def env_filters(env: str) -> list[dict[str, Any]]:
    """EC2 ``Filters`` selecting this project's resources of ``env``."""
    return [*project_filters(), {"Name": f"tag:{ENVIRONMENT_KEY}", "Values": [check_env(env)]}]


def is_batch_host(resource: Mapping[str, Any]) -> bool:
    """Whether a described EC2 instance was launched by AWS Batch (one of :data:`BATCH_HOST_TAG_KEYS`)."""
    return any(tag_value(resource, key) is not None for key in BATCH_HOST_TAG_KEYS)


def tag_value(resource: Mapping[str, Any], key: str) -> str | None:
    """The value of tag ``key`` on a described EC2 resource (its ``Tags`` list), ``None`` if absent."""
    return next((str(t.get("Value")) for t in resource.get("Tags") or [] if t.get("Key") == key), None)

"""Tagging rules of the infrastructure: what a launch tags, and IAM's tag conditions.

The tags themselves (``Project``, ``Environment`` ... and their values) are
:mod:`common.tags`, shared with the instance side; this module says which
resource types carry them at launch and how policies test for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.tags import ENVIRONMENT_KEY, PROJECT_KEY, PROJECT_TAG

# Resource types the launch template tags: only those EVERY launch creates. AWS fails a
# launch whose template tags a type the launch does not create ("If the instance does not
# include the resource type that you specify, the instance launch fails", EC2 API Reference,
# LaunchTemplateTagSpecificationRequest), so the spot request is tagged by the RunInstances
# call itself, and only for spot (:func:`launch_tagged_types`).
LAUNCH_TEMPLATE_TAGGED_TYPES: tuple[str, ...] = (
    "instance",
    "volume",
    "network-interface",
)
SPOT_REQUEST_TYPE = "spot-instances-request"


def launch_tagged_types(market: str) -> tuple[str, ...]:
    """Resource types a RunInstances call of ``market`` tags in its own TagSpecifications."""
    return ("instance", "volume", *((SPOT_REQUEST_TYPE,) if market == "spot" else ()))


def launch_time_tag_specs(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The TagSpecifications of launch-template data that tag resources at launch.

    moto also copies the template's own ``launch-template`` tags into its data (AWS does
    not): they tag the template, not what a launch creates.
    """
    return [dict(s) for s in data.get("TagSpecifications", []) if s["ResourceType"] != "launch-template"]


def launch_created_types(market: str) -> frozenset[str]:
    """Resource types one launch of this project creates (so the ones it may tag)."""
    return frozenset({"instance", "volume", "network-interface", *launch_tagged_types(market)})


def project_env_condition(env: str, key_prefix: str = "aws:ResourceTag") -> dict[str, str]:
    """IAM condition values: ``{prefix}/Project`` and ``{prefix}/Environment`` of ``env``.

    ``key_prefix`` is ``aws:ResourceTag`` (an existing resource), ``aws:RequestTag`` (tags
    sent with the request) or a service's own key such as ``ssm:resourceTag``.
    """
    return {f"{key_prefix}/{PROJECT_KEY}": PROJECT_TAG, f"{key_prefix}/{ENVIRONMENT_KEY}": env}

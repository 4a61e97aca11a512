"""Facts about existing resources that AWS puts into an authorization request.

Tags of an instance, the VPC of a subnet, the data of a launch template, the
role of an instance profile: AWS reads them from the resource when it
authorizes a call. The audit looks them up afterwards in the local AWS with an
admin session (moto keeps terminated instances and their tags). Every lookup is
cached; a resource the local AWS no longer knows answers ``None``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)


def tag_map(tags: list[Mapping[str, str]] | None) -> dict[str, str]:
    """``[{"Key": k, "Value": v}]`` -> ``{k: v}``."""
    return {t["Key"]: t["Value"] for t in tags or []}


class MotoFacts:
    """Resource facts read from the local AWS.

    Args:
        admin_session: a session allowed to describe everything.
        endpoint_url: the local AWS endpoint.
        region: the region of the resources.
    """

    def __init__(self, admin_session: boto3.Session, endpoint_url: str | None, region: str) -> None:
        self.region = region
        self._session = admin_session
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(
                service, region_name=self.region, endpoint_url=self._endpoint_url
            )
        return self._clients[service]

    def _first(self, method: str, key: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            items = getattr(self._client("ec2"), method)(**kwargs)[key]
        except ClientError as exc:
            log.debug("%s(%s): %s", method, kwargs, exc)
            return None
        if key == "Reservations":
            items = [i for r in items for i in r["Instances"]]
        return items[0] if items else None

    @functools.cache  # noqa: B019 - one MotoFacts per audit
    def instance(self, instance_id: str) -> dict[str, Any] | None:
        """``DescribeInstances`` entry of the instance (terminated ones included)."""
        return self._first("describe_instances", "Reservations", InstanceIds=[instance_id])

    @functools.cache  # noqa: B019
    def subnet(self, subnet_id: str) -> dict[str, Any] | None:
        """``DescribeSubnets`` entry."""
        return self._first("describe_subnets", "Subnets", SubnetIds=[subnet_id])

    @functools.cache  # noqa: B019
    def security_group(self, group_id: str) -> dict[str, Any] | None:
        """``DescribeSecurityGroups`` entry."""
        return self._first("describe_security_groups", "SecurityGroups", GroupIds=[group_id])

    @functools.cache  # noqa: B019
    def image(self, image_id: str) -> dict[str, Any] | None:
        """``DescribeImages`` entry (``None`` for the local stand-in AMI id)."""
        return self._first("describe_images", "Images", ImageIds=[image_id])

    @functools.cache  # noqa: B019
    def volume(self, volume_id: str) -> dict[str, Any] | None:
        """``DescribeVolumes`` entry (``None`` once deleted)."""
        return self._first("describe_volumes", "Volumes", VolumeIds=[volume_id])

    @functools.cache  # noqa: B019
    def spot_request(self, request_id: str) -> dict[str, Any] | None:
        """``DescribeSpotInstanceRequests`` entry."""
        return self._first(
            "describe_spot_instance_requests", "SpotInstanceRequests", SpotInstanceRequestIds=[request_id]
        )

    def launch_template(self, ref: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        """``(id, LaunchTemplateData, template tags)`` of a RunInstances ``LaunchTemplate`` parameter."""
        key = (
            ref.get("LaunchTemplateId"),
            ref.get("LaunchTemplateName"),
            str(ref.get("Version", "$Default")),
        )
        return self._launch_template(*key)

    @functools.cache  # noqa: B019
    def _launch_template(self, lt_id: str | None, name: str | None, version: str) -> Any:
        selector = {"LaunchTemplateIds": [lt_id]} if lt_id else {"LaunchTemplateNames": [name]}
        template = self._first("describe_launch_templates", "LaunchTemplates", **selector)
        if template is None:
            return None
        found = self._first(
            "describe_launch_template_versions",
            "LaunchTemplateVersions",
            LaunchTemplateId=template["LaunchTemplateId"],
            Versions=[version],
        )
        data = found["LaunchTemplateData"] if found else {}
        return template["LaunchTemplateId"], data, tag_map(template.get("Tags"))

    @functools.cache  # noqa: B019
    def batch_job_tags(self, job_id: str) -> dict[str, str] | None:
        """The tags of a Batch job (``None``: unknown to the local AWS)."""
        try:
            jobs = self._client("batch").describe_jobs(jobs=[job_id])["jobs"]
        except ClientError as exc:
            log.debug("DescribeJobs(%s): %s", job_id, exc)
            return None
        return dict(jobs[0].get("tags") or {}) if jobs else None

    def instance_profile_roles(self, profile: str) -> tuple[str, ...]:
        """Role ARNs of an instance profile given by ARN or name."""
        name = profile.rsplit("/", 1)[-1]
        try:
            found = self._client("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except ClientError as exc:
            log.debug("get_instance_profile(%s): %s", name, exc)
            return ()
        return tuple(r["Arn"] for r in found.get("Roles", []))

    @functools.cache  # noqa: B019
    def instance_profile_arn(self, profile: str) -> str | None:
        """The ARN of an instance profile given by ARN or name."""
        if profile.startswith("arn:"):
            return profile
        try:
            return self._client("iam").get_instance_profile(InstanceProfileName=profile)["InstanceProfile"][
                "Arn"
            ]
        except ClientError:
            return None

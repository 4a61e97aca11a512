"""Rules AWS applies to a launch that moto does not, checked before anything is created.

moto keeps few launch-template fields and accepts launches AWS refuses, so a launch
that works locally could still fail on a real account. :func:`launch_problems` checks
the *effective* launch (the launch template's data with the RunInstances overrides on
top) against what AWS enforces:

- every resource type the template or the request tags is created by this launch
  (EC2 API Reference, LaunchTemplateTagSpecificationRequest: "If the instance does
  not include the resource type that you specify, the instance launch fails");
- every block device name is the AMI's root device (a mapping for another name
  attaches an extra, empty volume, and the root keeps the AMI's own size);
- the user data is at most 16 KB before base64 encoding (EC2 User Guide, "Run
  commands when you launch an EC2 instance with user data input").

Quota errors are not capacity errors (``common.placement`` tells them apart): a new
account has 0 vCPUs for G-family spot instances (EC2 User Guide, "Spot Instance
quotas"); :func:`quota_for` names the quota to raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.status import Market
from infra.spec import launch_template as spec_template
from infra.spec import operator_access as spec_operator
from infra.spec import tags as spec_tags

# "User data is limited to 16 KB, in raw form, before it is base64-encoded" (EC2 User Guide,
# "Work with instance user data": https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html).
# moto accepts more, so the limit is checked here (and by control.userdata when it renders).
USER_DATA_LIMIT_BYTES = 16 * 1024
TEMPLATE_VERSION = "$Latest"  # the version every launch names, and the one read before it (launch, doctor)


@dataclass(frozen=True, kw_only=True)
class TemplateFacts:
    """What the launch template and its AMI say, read before the launch (DescribeLaunchTemplateVersions,
    DescribeImages)."""

    version: str
    data: Mapping[str, Any]
    image_id: str
    image_name: str | None
    root_device: str | None

    @property
    def tagged_types(self) -> set[str]:
        """Resource types the template tags at launch."""
        return {s["ResourceType"] for s in spec_tags.launch_time_tag_specs(self.data)}


@dataclass(frozen=True, kw_only=True)
class Quota:
    """A Service Quotas quota of EC2 (service code ``ec2``)."""

    code: str
    name: str


_SPOT_CODE, _ON_DEMAND_CODE = spec_operator.G_FAMILY_QUOTA_CODES
QUOTAS: Mapping[Market, Quota] = {
    Market.SPOT: Quota(code=_SPOT_CODE, name="All G and VT Spot Instance Requests"),
    Market.ON_DEMAND: Quota(code=_ON_DEMAND_CODE, name="Running On-Demand G and VT instances"),
}


def quota_for(market: Market) -> Quota:
    """The vCPU quota a G-family launch of ``market`` counts against."""
    return QUOTAS[market]


def quota_message(code: str, market: Market, region: str, vcpus: int | None) -> str:
    """One line: which quota refused the launch and how to raise it."""
    quota = quota_for(market)
    want = f" to at least {vcpus}" if vcpus else ""
    return (
        f"the {market.value} launch was refused by a quota ({code}): raise the EC2 quota "
        f'"{quota.name}" ({quota.code}) in {region}{want}, in the Service Quotas console or with '
        f"`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code "
        f"{quota.code} --desired-value {vcpus or 'N'} --region {region}`; new accounts start at 0 "
        f"vCPUs. The lock was released; nothing is running"
    )


def _request_tagged_types(request: Mapping[str, Any]) -> set[str]:
    return {s["ResourceType"] for s in request.get("TagSpecifications", [])}


def _device_names(mappings: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(m.get("DeviceName")) for m in mappings]


def launch_problems(template: TemplateFacts, request: Mapping[str, Any], market: Market) -> list[str]:
    """Why AWS would refuse (or silently mis-build) this launch; empty when it would not.

    Args:
        template: the launch template version the request names, and its AMI.
        request: the RunInstances arguments.
        market: spot creates a spot request; on-demand does not.
    """
    problems = []
    created = spec_tags.launch_created_types(market.value)
    tagged = template.tagged_types | _request_tagged_types(request)
    for kind in sorted(tagged - created):
        problems.append(
            f"it tags a {kind!r} that a {market.value} launch does not create "
            "(AWS fails the launch: LaunchTemplateTagSpecificationRequest)"
        )
    # Both the template's and the request's mappings count. AWS merges them by device name (EC2
    # API Reference, FleetBlockDeviceMappingRequest: "To override a block device mapping specified
    # in the launch template: specify the exact same DeviceName"; another name adds a mapping), so
    # a name other than the AMI's root device adds a volume, whichever list it is in.
    names = _device_names(template.data.get("BlockDeviceMappings") or [])
    names += _device_names(request.get("BlockDeviceMappings") or [])
    if template.root_device is None:
        problems.append(f"the AMI {template.image_id} has no root device name (is it an EBS-backed image?)")
    else:
        for name in sorted(set(names)):
            if name != template.root_device:
                problems.append(
                    f"block device {name} is not the AMI's root device {template.root_device}: "
                    "it would attach an extra empty volume and leave the root at the AMI's size"
                )
    size = len(str(request.get("UserData", "")).encode())
    if size > USER_DATA_LIMIT_BYTES:
        problems.append(
            f"the user data is {size} bytes; AWS accepts at most {USER_DATA_LIMIT_BYTES} "
            "before base64 encoding"
        )
    return problems


def root_volume_mapping(root_device: str, size_gb: int) -> list[dict[str, Any]]:
    """``BlockDeviceMappings`` that sizes the root volume (the spec's ``instance.root_volume_gb``).

    The whole mapping is restated (type, encryption, delete on termination) so the
    request alone decides the root volume, whatever the template holds.
    """
    return [
        {
            "DeviceName": root_device,
            "Ebs": {
                "VolumeSize": int(size_gb),
                "VolumeType": spec_template.ROOT_VOLUME_TYPE,
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        }
    ]

"""boto3 (AWS API) shapes -> the snake_case inputs the Pulumi AWS provider takes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


def to_pulumi_sg_rules(permissions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert boto3 ``IpPermissions`` into ``aws.ec2.SecurityGroup`` rule inputs."""
    rules = []
    for perm in permissions:
        for ip_range in perm["IpRanges"]:
            rules.append(
                {
                    "protocol": perm["IpProtocol"],
                    "from_port": perm["FromPort"],
                    "to_port": perm["ToPort"],
                    "cidr_blocks": [ip_range["CidrIp"]],
                    "description": ip_range.get("Description", ""),
                }
            )
    return rules


def _pulumi_bool(value: bool) -> str:
    """Launch-template booleans are strings in the provider's schema."""
    return "true" if value else "false"


def to_pulumi_launch_template_args(data: Mapping[str, Any]) -> dict[str, Any]:
    """Convert :func:`launch_template_data` output to ``aws.ec2.LaunchTemplate`` kwargs."""
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    nic = data["NetworkInterfaces"][0]
    meta = data["MetadataOptions"]
    return {
        "image_id": data["ImageId"],
        "instance_type": data["InstanceType"],
        "iam_instance_profile": {"arn": data["IamInstanceProfile"]["Arn"]},
        "instance_initiated_shutdown_behavior": data["InstanceInitiatedShutdownBehavior"],
        "metadata_options": {
            "http_endpoint": meta["HttpEndpoint"],
            "http_tokens": meta["HttpTokens"],
            "http_put_response_hop_limit": meta["HttpPutResponseHopLimit"],
        },
        "monitoring": {"enabled": data["Monitoring"]["Enabled"]},
        "block_device_mappings": [
            {
                "device_name": data["BlockDeviceMappings"][0]["DeviceName"],
                "ebs": {
                    "volume_size": ebs["VolumeSize"],
                    "volume_type": ebs["VolumeType"],
                    "encrypted": _pulumi_bool(ebs["Encrypted"]),
                    "delete_on_termination": _pulumi_bool(ebs["DeleteOnTermination"]),
                },
            }
        ],
        "network_interfaces": [
            {
                "device_index": nic["DeviceIndex"],
                "associate_public_ip_address": _pulumi_bool(nic["AssociatePublicIpAddress"]),
                "delete_on_termination": _pulumi_bool(nic["DeleteOnTermination"]),
                "security_groups": list(nic["Groups"]),
            }
        ],
        "tag_specifications": [
            {"resource_type": s["ResourceType"], "tags": {t["Key"]: t["Value"] for t in s["Tags"]}}
            for s in data["TagSpecifications"]
        ],
    }


# --------------------------------------------------------- camel -> snake

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(key: str) -> str:
    """``SSEAlgorithm`` -> ``sse_algorithm``, ``ID`` -> ``id``."""
    return _WORD_BOUNDARY.sub("_", key).lower()


def to_pulumi_inputs(value: Any) -> Any:
    """Recursively rename boto3 CamelCase keys to the provider's snake_case ones."""
    if isinstance(value, Mapping):
        return {_snake(k): to_pulumi_inputs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_pulumi_inputs(v) for v in value]
    return value

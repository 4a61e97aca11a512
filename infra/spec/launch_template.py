"""The training instance's launch template: image, root volume, metadata and interface.

No key pair and no user data (the launch supplies it); the tags a launch puts on
what it creates come from :mod:`infra.spec.tags`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.tags import tag_list
from infra.spec.names import validate_instance_type
from infra.spec.tags import LAUNCH_TEMPLATE_TAGGED_TYPES

ROOT_DEVICE_NAME = "/dev/sda1"  # Ubuntu DLAMIs boot from /dev/sda1
ROOT_VOLUME_GB = 100
ROOT_VOLUME_TYPE = "gp3"
# IMDSv2's PUT response hop limit: 1 lets only the instance's own processes get a token (EC2 User
# Guide, "Configure the instance metadata options": the default; 2 is for containers, which this
# image does not run). Tokens are required (IMDSv1 off): tests/security/test_imdsv2.py.
IMDS_HOP_LIMIT = 1

DLAMI_SSM_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.10-ubuntu-24.04/latest/ami-id"
)


def launch_template_data(
    *,
    image_id: Any,
    instance_type: str,
    instance_profile_arn: Any,
    security_group_id: Any,
    resource_tags: Mapping[str, str],
) -> dict[str, Any]:
    """boto3 ``LaunchTemplateData`` of the training instance.

    No key pair and no user data (the launch supplies it); IMDSv2 only with hop
    limit 1; a 100 GB encrypted gp3 root deleted with the instance; an OS
    shutdown terminates the instance; a public IP (public subnet, no NAT).

    ``image_id``, ``instance_profile_arn`` and ``security_group_id`` are strings
    or Pulumi outputs of strings: they are placed, never inspected.
    """
    return {
        "ImageId": image_id,
        "InstanceType": validate_instance_type(instance_type),
        "IamInstanceProfile": {"Arn": instance_profile_arn},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": IMDS_HOP_LIMIT,
        },
        "Monitoring": {"Enabled": False},
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE_NAME,
                "Ebs": {
                    "VolumeSize": ROOT_VOLUME_GB,
                    "VolumeType": ROOT_VOLUME_TYPE,
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
                "Groups": [security_group_id],
            }
        ],
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tag_list(resource_tags)} for kind in LAUNCH_TEMPLATE_TAGGED_TYPES
        ],
    }

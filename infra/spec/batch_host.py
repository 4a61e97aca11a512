"""The Batch hosts and jobs: the ECS instance role, the job role, the hosts' launch template.

Pure data (see :mod:`infra.spec.batch` for why the hosts need a template of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.tags import tag_list
from infra.spec.iam import instance_role_policy, policy_document
from infra.spec.launch_template import ROOT_VOLUME_GB, ROOT_VOLUME_TYPE
from infra.spec.tags import LAUNCH_TEMPLATE_TAGGED_TYPES

ECS_ROOT_DEVICE = "/dev/xvda"
BATCH_IMDS_HOP_LIMIT = 2
# The AWS managed policy of ECS container instances (ECS Developer Guide, "Amazon ECS container
# instance IAM role"): the agent registers with the cluster, pulls from ECR, writes its logs.
ECS_INSTANCE_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
ECS_TASKS_SERVICE = "ecs-tasks.amazonaws.com"
# ECS_CONTAINER_STOP_TIMEOUT: how long a stopped task (TerminateJob, a kill) has between SIGTERM
# and SIGKILL; the default 30 s is too short to checkpoint (ECS Developer Guide, "Amazon ECS
# container agent configuration"). 110 s stays inside a spot notice's two minutes.
CONTAINER_STOP_TIMEOUT = "110s"
_BOUNDARY = "==CHRONOS-BATCH=="


# ------------------------------------------------------------------ IAM


def _trust(service: str, local_principal_arn: str | None) -> dict[str, Any]:
    principal: dict[str, str] = {"Service": service}
    if local_principal_arn:  # local mode: the one-statement form moto accepts for AssumeRole
        principal["AWS"] = local_principal_arn
    return policy_document({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


def host_trust_policy() -> dict[str, Any]:
    """The ECS instance role of Batch hosts: only EC2 assumes it."""
    return _trust("ec2.amazonaws.com", None)


def job_trust_policy(local_principal_arn: str | None = None) -> dict[str, Any]:
    """The job role: only ECS tasks assume it (the container's credentials), and locally the executor."""
    return _trust(ECS_TASKS_SERVICE, local_principal_arn)


def job_role_policy(
    env: str,
    bucket_arn: str,
    *,
    region: str = "*",
    account_id: str = "*",
    notify_topic_arn: str | None = None,
) -> dict[str, Any]:
    """What a job may do: the instance role's statements less terminating an instance.

    The same S3 scope as a training instance (``cached-datasets/*`` read, ``{env}/*`` read/write,
    never ``user-configs/``), Describe for cleanup's checks, the env's topic. Batch owns the host,
    so ``TerminateOnlyItself`` goes: a job never ends its instance.
    """
    doc = instance_role_policy(
        env, bucket_arn, region=region, account_id=account_id, notify_topic_arn=notify_topic_arn
    )
    doc["Statement"] = [s for s in doc["Statement"] if s.get("Sid") != "TerminateOnlyItself"]
    return doc


# ------------------------------------------------------------------ host template


def host_user_data() -> str:
    """The MIME multi-part user data of Batch hosts: the ECS agent's stop timeout."""
    return (
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"\n'
        "\n"
        f"--{_BOUNDARY}\n"
        'Content-Type: text/x-shellscript; charset="us-ascii"\n'
        "\n"
        "#!/bin/bash\n"
        f"echo ECS_CONTAINER_STOP_TIMEOUT={CONTAINER_STOP_TIMEOUT} >> /etc/ecs/ecs.config\n"
        "\n"
        f"--{_BOUNDARY}--\n"
    )


def host_launch_template_data(resource_tags: Mapping[str, str]) -> dict[str, Any]:
    """boto3 ``LaunchTemplateData`` of the Batch hosts (user data still plain text: base64 it to send).

    As the training template where Batch allows it (IMDSv2 only, encrypted gp3 root deleted with
    the instance, OS shutdown terminates, no key pair, the same tags); no image, instance type,
    profile or interface (the module docstring says why).
    """
    return {
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": BATCH_IMDS_HOP_LIMIT,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": ECS_ROOT_DEVICE,
                "Ebs": {
                    "VolumeSize": ROOT_VOLUME_GB,
                    "VolumeType": ROOT_VOLUME_TYPE,
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "UserData": host_user_data(),
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tag_list(resource_tags)}
            for kind in LAUNCH_TEMPLATE_TAGGED_TYPES
            if kind != "network-interface"
        ],
    }

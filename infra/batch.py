"""Batch: the sweep engine (stack config ``batch``): two compute environments, a queue, a job definition.

Every document comes from :mod:`infra.spec.batch` and :mod:`infra.spec.batch_host` (the module
docstring there says what Batch needs and why); this module only turns them into resources.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.iam import least_privilege_role
from infra.spec import batch as spec_batch
from infra.spec import batch_host as spec_host
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class BatchArgs:
    """Inputs of :class:`Batch`.

    Attributes:
        scope: env, region, account, instance type, the vCPU ceiling, image, attempts, timeout.
        bucket_name, bucket_arn: the training bucket (the job's environment, its role's scope).
        subnet_ids: the stack's public subnets.
        security_group_id: the stack's security group.
        tags: the stack's resource tags.
        notify_topic_arn: the env's topic when there is one (the job may publish the run's end).
        wheelhouse_prefix: where the job finds the wheels to install over the image's Python.
    """

    scope: spec_batch.BatchScope
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    tags: Mapping[str, str]
    notify_topic_arn: pulumi.Input[str] | None = None
    wheelhouse_prefix: str = ""


def _compute_resources_args(resources: Mapping[str, Any]) -> dict[str, Any]:
    """boto3 ``computeResources`` -> the provider's ``compute_resources`` (its own key names)."""
    template = resources["launchTemplate"]
    return {
        "type": resources["type"],
        "allocation_strategy": resources["allocationStrategy"],
        "min_vcpus": resources["minvCpus"],
        "max_vcpus": resources["maxvCpus"],
        "instance_types": list(resources["instanceTypes"]),
        "subnets": list(resources["subnets"]),
        "security_group_ids": list(resources["securityGroupIds"]),
        "instance_role": resources["instanceRole"],
        "launch_template": {
            "launch_template_id": template["launchTemplateId"],
            "version": template["version"],
        },
        "ec2_configurations": [{"image_type": c["imageType"]} for c in resources["ec2Configuration"]],
        "tags": dict(resources["tags"]),
    }


def _retry_strategy_args(strategy: Mapping[str, Any]) -> dict[str, Any]:
    keys = {"onStatusReason": "on_status_reason", "onExitCode": "on_exit_code", "onReason": "on_reason"}
    return {
        "attempts": strategy["attempts"],
        "evaluate_on_exits": [
            {"action": r["action"].lower(), **{keys[k]: v for k, v in r.items() if k in keys}}
            for r in strategy["evaluateOnExit"]
        ],
    }


class Batch(pulumi.ComponentResource):
    """Spot and on-demand compute environments (0 vCPUs when idle), a queue trying spot first,
    and a job definition that runs ``python -m trainer run --batch`` under a least-privilege job
    role; the ECS instance role and profile and the launch template of the hosts.
    """

    def __init__(self, name: str, args: BatchArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Batch", name, None, opts)
        self.child = pulumi.ResourceOptions(parent=self)
        scope, names = args.scope, spec_batch.names(args.scope.env)
        self._host_identity(name, names["host_role"], args.tags)
        self._job_role(name, names["job_role"], args)
        self._host_template(name, names["launch_template"], args.tags)
        hosts = spec_batch.HostPlacement(
            subnets=list(args.subnet_ids),
            security_group_id=args.security_group_id,
            instance_profile_arn=self.host_profile.arn,
            launch_template_id=self.launch_template.id,
            # A new template version is a new compute-environment input: Batch updates its hosts.
            launch_template_version=self.launch_template.latest_version.apply(str),
        )
        self.spot = self._environment(f"{name}-spot", scope, hosts, spot=True, tags=args.tags)
        self.on_demand = self._environment(f"{name}-on-demand", scope, hosts, spot=False, tags=args.tags)
        queue = spec_batch.job_queue(scope.env, self.spot.arn, self.on_demand.arn, args.tags)
        self.queue = aws.batch.JobQueue(
            f"{name}-queue",
            name=queue["jobQueueName"],
            state=queue["state"],
            priority=queue["priority"],
            compute_environment_orders=[
                {"order": o["order"], "compute_environment": o["computeEnvironment"]}
                for o in queue["computeEnvironmentOrder"]
            ],
            tags=queue["tags"],
            opts=self.child,
        )
        self.job_definition = self._job_definition(name, args)
        self.job_queue_name: pulumi.Output[str] = self.queue.name
        self.job_queue_arn: pulumi.Output[str] = self.queue.arn
        self.job_definition_name: pulumi.Output[str] = self.job_definition.name
        self.job_definition_arn: pulumi.Output[str] = self.job_definition.arn_prefix
        self.register_outputs(
            {
                "job_queue": self.job_queue_name,
                "job_definition": self.job_definition_name,
                "spot_compute_environment": self.spot.name,
                "on_demand_compute_environment": self.on_demand.name,
                "job_role_arn": self.job_role.arn,
            }
        )

    def _host_identity(self, name: str, role_name: str, tags: Mapping[str, str]) -> None:
        self.host_role = aws.iam.Role(
            f"{name}-host-role",
            name=role_name,
            description="ECS container instances of Chronos Batch sweeps",
            assume_role_policy=json.dumps(spec_host.host_trust_policy()),
            tags=dict(tags),
            opts=self.child,
        )
        self.host_policy = aws.iam.RolePolicyAttachment(
            f"{name}-host-ecs",
            role=self.host_role.name,
            policy_arn=spec_host.ECS_INSTANCE_POLICY_ARN,
            opts=self.child,
        )
        self.host_profile = aws.iam.InstanceProfile(
            f"{name}-host-profile", name=role_name, role=self.host_role.name, tags=dict(tags), opts=self.child
        )

    def _job_role(self, name: str, role_name: str, args: BatchArgs) -> None:
        scope = args.scope
        self.job_role, self.job_policy = least_privilege_role(
            (f"{name}-job-role", f"{name}-job-policy"),
            role_name=role_name,
            description=f"Chronos Batch jobs of env {scope.env}",
            trust=spec_host.job_trust_policy(),
            policy=lambda bucket_arn, topic_arn: spec_host.job_role_policy(
                scope.env,
                bucket_arn,
                region=scope.region,
                account_id=scope.account_id,
                notify_topic_arn=topic_arn,
            ),
            args=args,
            opts=self.child,
        )

    def _host_template(self, name: str, template_name: str, tags: Mapping[str, str]) -> None:
        data = spec_host.host_launch_template_data(tags)
        ebs = data["BlockDeviceMappings"][0]["Ebs"]
        meta = data["MetadataOptions"]
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-host-lt",
            name=template_name,
            description="Chronos Batch hosts (ECS GPU AMI chosen by the compute environment)",
            update_default_version=True,
            instance_initiated_shutdown_behavior=data["InstanceInitiatedShutdownBehavior"],
            metadata_options={
                "http_endpoint": meta["HttpEndpoint"],
                "http_tokens": meta["HttpTokens"],
                "http_put_response_hop_limit": meta["HttpPutResponseHopLimit"],
            },
            block_device_mappings=[
                {
                    "device_name": data["BlockDeviceMappings"][0]["DeviceName"],
                    "ebs": {
                        "volume_size": ebs["VolumeSize"],
                        "volume_type": ebs["VolumeType"],
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            user_data=base64.b64encode(data["UserData"].encode()).decode(),
            tag_specifications=[
                {"resource_type": s["ResourceType"], "tags": {t["Key"]: t["Value"] for t in s["Tags"]}}
                for s in data["TagSpecifications"]
            ],
            tags=dict(tags),
            opts=self.child,
        )

    def _environment(
        self,
        resource_name: str,
        scope: spec_batch.BatchScope,
        hosts: spec_batch.HostPlacement,
        *,
        spot: bool,
        tags: Mapping[str, str],
    ) -> aws.batch.ComputeEnvironment:
        request = spec_batch.compute_environment(scope, hosts, spot=spot, resource_tags=tags)
        return aws.batch.ComputeEnvironment(
            resource_name,
            name=request["computeEnvironmentName"],
            type=request["type"],
            state=request["state"],
            compute_resources=_compute_resources_args(request["computeResources"]),
            tags=request["tags"],
            opts=self.child,
        )

    def _job_definition(self, name: str, args: BatchArgs) -> aws.batch.JobDefinition:
        entry = spec_batch.entry_script()

        def document(values: list[Any]) -> str:
            request = spec_batch.job_definition(
                args.scope,
                bucket=values[0],
                job_role_arn=values[1],
                entry_script=entry,
                resource_tags=args.tags,
                wheelhouse_prefix=args.wheelhouse_prefix,
            )
            return json.dumps(request["containerProperties"], sort_keys=True)

        static = spec_batch.job_definition(
            args.scope, bucket="", job_role_arn="", entry_script=entry, resource_tags=args.tags
        )
        return aws.batch.JobDefinition(
            f"{name}-job",
            name=static["jobDefinitionName"],
            type=static["type"],
            parameters=static["parameters"],
            container_properties=pulumi.Output.all(args.bucket_name, self.job_role.arn).apply(document),
            retry_strategy=_retry_strategy_args(static["retryStrategy"]),
            timeout={"attempt_duration_seconds": static["timeout"]["attemptDurationSeconds"]},
            platform_capabilities=static["platformCapabilities"],
            propagate_tags=static["propagateTags"],
            tags=static["tags"],
            opts=self.child,
        )

"""Zero-idle proof: every resource type the program declares costs nothing while idle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from pulumi_harness import DeclaredStack, RecordingMocks, run_program

from infra.config import StackConfig
from infra.spec import zero_idle as spec_zero_idle
from infra.stack import build_stack

FULL = StackConfig(
    env="dev",
    budget_email="alerts@example.com",
    ami_id="ami-0123456789abcdef0",
    notify_email="runs@example.com",
)
RECOVERY_TYPES = {
    "aws:lambda/function:Function",
    "aws:lambda/permission:Permission",
    "aws:cloudwatch/eventRule:EventRule",
    "aws:cloudwatch/eventTarget:EventTarget",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:sns/topic:Topic",
    "aws:sns/topicSubscription:TopicSubscription",
}


def violations(declared: DeclaredStack) -> list[str]:
    return spec_zero_idle.idle_cost_violations((r.typ, r.inputs) for r in declared.resources)


def test_the_whole_stack_is_in_the_zero_idle_allowlist() -> None:
    declared = run_program(lambda: build_stack(FULL), RecordingMocks())
    assert violations(declared) == []
    declared_types = {r.typ for r in declared.resources if not r.typ.startswith("chronos:")}
    assert declared_types <= spec_zero_idle.ZERO_IDLE_RESOURCE_TYPES
    assert len(declared_types) >= 15  # the check really saw the stack
    assert declared_types >= RECOVERY_TYPES  # the recovery function, its triggers, logs and topic


BILLING_WHILE_IDLE: dict[str, Callable[[], Any]] = {
    "aws:ec2/instance:Instance": lambda: aws.ec2.Instance(
        "idle-instance", ami="ami-0123456789abcdef0", instance_type="g5.xlarge"
    ),
    "aws:ebs/volume:Volume": lambda: aws.ebs.Volume(
        "idle-volume", availability_zone="us-east-1a", size=100, type="gp3"
    ),
    "aws:ec2/natGateway:NatGateway": lambda: aws.ec2.NatGateway(
        "idle-nat", subnet_id="subnet-1", allocation_id="eipalloc-1"
    ),
    "aws:ec2/eip:Eip": lambda: aws.ec2.Eip("idle-eip", domain="vpc"),
    "aws:kms/key:Key": lambda: aws.kms.Key("idle-key"),
    # A warm Lambda bills by the hour whether invoked or not.
    "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig": lambda: (
        aws.lambda_.ProvisionedConcurrencyConfig(
            "idle-warm-lambda",
            function_name="chronos-dev-recovery",
            qualifier="1",
            provisioned_concurrent_executions=1,
        )
    ),
    # A CloudWatch alarm bills per alarm-month: the function's errors are in its log group instead.
    "aws:cloudwatch/metricAlarm:MetricAlarm": lambda: aws.cloudwatch.MetricAlarm(
        "idle-alarm",
        comparison_operator="GreaterThanThreshold",
        evaluation_periods=1,
        metric_name="Errors",
        namespace="AWS/Lambda",
        period=300,
        statistic="Sum",
        threshold=0,
    ),
}


@pytest.mark.parametrize("type_token", sorted(BILLING_WHILE_IDLE))
def test_adding_a_resource_that_bills_while_idle_fails_the_check(type_token: str) -> None:
    def program() -> dict[str, Any]:
        outputs = build_stack(FULL)
        BILLING_WHILE_IDLE[type_token]()
        return outputs

    found = violations(run_program(program, RecordingMocks()))
    assert found == [f"{type_token} is not in the zero-idle allowlist"]


def test_an_interface_endpoint_fails_the_check_though_gateway_ones_pass() -> None:
    def program() -> dict[str, Any]:
        outputs = build_stack(FULL)
        aws.ec2.VpcEndpoint(
            "idle-interface-endpoint",
            vpc_id="vpc-1",
            service_name="com.amazonaws.us-east-1.ssm",
            vpc_endpoint_type="Interface",
        )
        return outputs

    found = violations(run_program(program, RecordingMocks()))
    assert found == ["aws:ec2/vpcEndpoint:VpcEndpoint of type 'Interface' bills hourly"]


def test_a_lambda_with_snapstart_fails_the_check() -> None:
    """SnapStart for Python bills for caching the snapshot while the version exists."""

    def program() -> dict[str, Any]:
        outputs = build_stack(FULL)
        aws.lambda_.Function(
            "idle-snapstart",
            role="arn:aws:iam::123456789012:role/x",
            runtime="python3.12",
            handler="x.handler",
            code=pulumi.AssetArchive({}),
            snap_start={"apply_on": "PublishedVersions"},
        )
        return outputs

    found = violations(run_program(program, RecordingMocks()))
    assert found == ["aws:lambda/function:Function with SnapStart on 'PublishedVersions' bills while idle"]


def test_a_log_group_that_keeps_logs_forever_fails_the_check() -> None:
    def program() -> dict[str, Any]:
        outputs = build_stack(FULL)
        aws.cloudwatch.LogGroup("forever", name="/aws/lambda/other")
        return outputs

    found = violations(run_program(program, RecordingMocks()))
    assert found == [
        "aws:cloudwatch/logGroup:LogGroup without a retention keeps (and bills) its logs forever"
    ]


# ------------------------------------------------------------------ AWS Batch (sweeps)

BATCH = StackConfig(env="dev", batch=True, budget_email="alerts@example.com")
BATCH_TYPES = {
    "aws:batch/computeEnvironment:ComputeEnvironment",
    "aws:batch/jobQueue:JobQueue",
    "aws:batch/jobDefinition:JobDefinition",
}


def _extra_environment(**compute: Any) -> Callable[[], dict[str, Any]]:
    """The batch stack plus one more managed environment with ``compute`` in its resources."""

    def program() -> dict[str, Any]:
        outputs = build_stack(BATCH)
        aws.batch.ComputeEnvironment(
            "warm-pool",
            type="MANAGED",
            compute_resources={
                "type": "EC2",
                "max_vcpus": 16,
                "instance_types": ["g5.xlarge"],
                "subnets": ["subnet-1"],
                "security_group_ids": ["sg-1"],
                "instance_role": "arn:aws:iam::123456789012:instance-profile/x",
                **compute,
            },
        )
        return outputs

    return program


def test_the_batch_stack_passes_with_its_queue_job_definition_and_idle_free_environments() -> None:
    declared = run_program(lambda: build_stack(BATCH), RecordingMocks())
    assert violations(declared) == []
    assert {r.typ for r in declared.resources} >= BATCH_TYPES


def test_a_compute_environment_with_min_vcpus_0_and_no_desired_passes() -> None:
    assert violations(run_program(_extra_environment(min_vcpus=0), RecordingMocks())) == []
    assert violations(run_program(_extra_environment(min_vcpus=0, desired_vcpus=0), RecordingMocks())) == []


def test_a_compute_environment_with_min_vcpus_above_0_is_rejected_with_the_reason() -> None:
    found = violations(run_program(_extra_environment(min_vcpus=4), RecordingMocks()))
    assert found == [
        "aws:batch/computeEnvironment:ComputeEnvironment with minVcpus 4.0 keeps instances (and bills) "
        "while no job runs"
    ]


def test_a_compute_environment_with_desired_vcpus_above_0_is_rejected_with_the_reason() -> None:
    found = violations(run_program(_extra_environment(min_vcpus=0, desired_vcpus=8), RecordingMocks()))
    assert found == [
        "aws:batch/computeEnvironment:ComputeEnvironment with desiredVcpus 8.0 keeps instances (and bills) "
        "while no job runs"
    ]


def test_a_scale_down_delay_is_rejected_as_idle_instances_that_bill() -> None:
    inputs = {"computeResources": {"minvCpus": 0, "scalingPolicy": {"minScaleDownDelayMinutes": 20}}}
    found = spec_zero_idle.idle_cost_violations([("aws:batch/computeEnvironment:ComputeEnvironment", inputs)])
    assert found == [
        "aws:batch/computeEnvironment:ComputeEnvironment with a scale-down delay of 20 min keeps idle "
        "instances that bill"
    ]

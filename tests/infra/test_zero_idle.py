"""Zero-idle proof: every resource type the program declares costs nothing while idle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi_aws as aws
import pytest
from pulumi_harness import DeclaredStack, RecordingMocks, run_program

from infra.config import StackConfig
from infra.spec import zero_idle as spec_zero_idle
from infra.stack import build_stack

FULL = StackConfig(env="dev", budget_email="alerts@example.com", ami_id="ami-0123456789abcdef0")


def violations(declared: DeclaredStack) -> list[str]:
    return spec_zero_idle.idle_cost_violations((r.typ, r.inputs) for r in declared.resources)


def test_the_whole_stack_is_in_the_zero_idle_allowlist() -> None:
    declared = run_program(lambda: build_stack(FULL), RecordingMocks())
    assert violations(declared) == []
    declared_types = {r.typ for r in declared.resources if not r.typ.startswith("chronos:")}
    assert declared_types <= spec_zero_idle.ZERO_IDLE_RESOURCE_TYPES
    assert len(declared_types) >= 15  # the check really saw the stack


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

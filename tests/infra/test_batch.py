"""The Batch component under Pulumi mocks, policy-style: what a sweep stack promises."""

from __future__ import annotations

import base64
import email
import json

import pytest
from iam_eval import Request, allowed
from pulumi_harness import ACCOUNT, REGION, DeclaredStack, RecordingMocks, run_program

from infra.config import StackConfig
from infra.outputs import BATCH_OUTPUT_KEYS, read_outputs
from infra.spec import batch as spec_batch
from infra.spec import batch_host as spec_host
from infra.spec import zero_idle as spec_zero_idle
from infra.stack import build_stack

CE = "aws:batch/computeEnvironment:ComputeEnvironment"
QUEUE = "aws:batch/jobQueue:JobQueue"
JOB = "aws:batch/jobDefinition:JobDefinition"
LT = "aws:ec2/launchTemplate:LaunchTemplate"


def declare(**config) -> DeclaredStack:
    return run_program(lambda: build_stack(StackConfig(**{"env": "dev", **config})), RecordingMocks())


@pytest.fixture(scope="module")
def stack() -> DeclaredStack:
    return declare(batch=True, notify_email="runs@example.com")


def test_no_batch_resource_and_no_batch_output_without_the_flag() -> None:
    plain = declare()
    assert not [r for r in plain.resources if r.typ.startswith("aws:batch/")]
    assert not set(BATCH_OUTPUT_KEYS) & set(plain.outputs)
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in plain.of_type("aws:ec2/subnet:Subnet"))


def test_no_compute_environment_bills_while_idle(stack: DeclaredStack) -> None:
    environments = stack.of_type(CE)
    assert len(environments) == 2
    for ce in environments:
        resources = ce.inputs["computeResources"]
        assert resources["minVcpus"] == 0
        assert "desiredVcpus" not in resources
        assert "scalingPolicy" not in resources
    assert spec_zero_idle.idle_cost_violations((r.typ, r.inputs) for r in stack.resources) == []


def test_the_queue_tries_spot_first_then_on_demand(stack: DeclaredStack) -> None:
    by_arn = {
        f"arn:aws:batch:{REGION}:{ACCOUNT}:compute-environment/{ce.inputs['name']}": ce
        for ce in stack.of_type(CE)
    }
    orders = sorted(stack.one(QUEUE)["computeEnvironmentOrders"], key=lambda o: o["order"])
    kinds = [by_arn[o["computeEnvironment"]].inputs["computeResources"]["type"] for o in orders]
    assert kinds == ["SPOT", "EC2"]
    spot = by_arn[orders[0]["computeEnvironment"]].inputs["computeResources"]
    assert spot["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert "spotIamFleetRole" not in spot  # not needed with that strategy


def test_both_environments_use_the_stacks_subnets_security_group_and_host_template(
    stack: DeclaredStack,
) -> None:
    subnet_ids = {stack.id_of(s.name) for s in stack.of_type("aws:ec2/subnet:Subnet")}
    host_lt = stack.id_of("batch-host-lt")
    for ce in stack.of_type(CE):
        resources = ce.inputs["computeResources"]
        assert set(resources["subnets"]) == subnet_ids
        assert resources["securityGroupIds"] == [stack.outputs["security_group_id"]]
        assert resources["launchTemplate"] == {"launchTemplateId": host_lt, "version": "1"}
        assert resources["ec2Configurations"] == [{"imageType": "ECS_AL2023_NVIDIA"}]
        assert resources["instanceTypes"] == ["g5.xlarge"]
        assert resources["instanceRole"].endswith(":instance-profile/chronos-dev-batch-host")
    # no NAT: the hosts' way out is a public IP from the subnet
    assert all(s.inputs["mapPublicIpOnLaunch"] is True for s in stack.of_type("aws:ec2/subnet:Subnet"))


def test_the_host_template_has_no_image_imdsv2_hop_2_and_multipart_user_data(stack: DeclaredStack) -> None:
    lt = stack.named(LT, "batch-host-lt")
    assert "imageId" not in lt and "instanceType" not in lt and "networkInterfaces" not in lt
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert lt["metadataOptions"]["httpPutResponseHopLimit"] == 2
    (root,) = lt["blockDeviceMappings"]
    assert root["deviceName"] == "/dev/xvda" and root["ebs"]["encrypted"] == "true"
    message = email.message_from_string(base64.b64decode(lt["userData"]).decode())
    assert message.is_multipart()
    (part,) = message.get_payload()
    assert part.get_content_type() == "text/x-shellscript"
    assert f"ECS_CONTAINER_STOP_TIMEOUT={spec_host.CONTAINER_STOP_TIMEOUT}" in part.get_payload()


def test_the_job_runs_the_trainer_entry_point_on_a_whole_gpu_instance(stack: DeclaredStack) -> None:
    job = stack.one(JOB)
    container = json.loads(job["containerProperties"])
    command = container["command"]
    assert command[:2] == ["bash", "-c"] and command[2] == spec_batch.entry_script()
    assert command[3:] == ["chronos-batch", "Ref::env", "Ref::run_id", "Ref::code_key"]
    assert 'exec "$PY" -m trainer run "${ARGS[@]}"' in command[2] and "ARGS=(--batch" in command[2]
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {
        "GPU": "1",
        "VCPU": "4",
        "MEMORY": str(int(16 * 1024 * spec_batch.MEMORY_HEADROOM)),
    }
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["CHRONOS_BUCKET"] == stack.outputs["bucket"] and env["CHRONOS_ENV"] == "dev"
    assert container["jobRoleArn"] == stack.outputs["batch_job_role_arn"]
    assert job["parameters"]["env"] == "dev"
    assert job["timeout"]["attemptDurationSeconds"] >= 60


def test_the_job_retries_host_terminations_and_interruptions_and_exits_otherwise(
    stack: DeclaredStack,
) -> None:
    rules = stack.one(JOB)["retryStrategy"]["evaluateOnExits"]
    assert rules[0] == {"onStatusReason": "Host EC2*", "action": "retry"}
    assert rules[-1] == {"onReason": "*", "action": "exit"}
    assert len(rules) <= 5


def test_job_role_cannot_reach_another_env_nor_terminate_an_instance(stack: DeclaredStack) -> None:
    role = stack.named("aws:iam/role:Role", "batch-job-role")
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com"
    }
    document = json.loads(stack.named("aws:iam/rolePolicy:RolePolicy", "batch-job-policy")["policy"])
    bucket = f"arn:aws:s3:::{stack.outputs['bucket']}"
    assert allowed(document, Request("s3:PutObject", f"{bucket}/dev/2026/12/01-210000-001/models/x"))
    assert not allowed(document, Request("s3:GetObject", f"{bucket}/prod/2026/12/01-210000-001/models/x"))
    assert not allowed(document, Request("s3:PutObject", f"{bucket}/prod/system-state.json"))
    assert not allowed(
        document, Request("s3:PutObject", f"{bucket}/dev/2026/12/01-210000-001/user-configs/run-spec.json")
    )
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"
    context = {
        "aws:ResourceTag/Project": "Chronos-Training",
        "aws:ResourceTag/Environment": "dev",
        "aws:userid": "AROA:i-1",
        "ec2:InstanceID": "i-1",
    }
    assert not allowed(document, Request("ec2:TerminateInstances", instance, context))


def test_hosts_get_only_the_ecs_managed_policy(stack: DeclaredStack) -> None:
    role = stack.named("aws:iam/role:Role", "batch-host-role")
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    attachment = stack.named("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "batch-host-ecs")
    assert attachment["policyArn"] == spec_host.ECS_INSTANCE_POLICY_ARN


def test_outputs_carry_the_queue_and_job_definition_and_read_back(stack: DeclaredStack) -> None:
    outputs = read_outputs(stack.outputs)
    assert outputs.has_batch
    assert outputs.batch_job_queue == "chronos-dev-batch-queue"
    assert outputs.batch_job_definition == "chronos-dev-batch-job"
    assert outputs.batch_spot_compute_environment == "chronos-dev-batch-spot"
    assert read_outputs(outputs.to_dict()) == outputs


def test_a_partial_batch_output_set_is_refused(stack: DeclaredStack) -> None:
    from infra.outputs import OutputsError

    partial = {k: v for k, v in stack.outputs.items() if k != "batch_job_definition"}
    with pytest.raises(OutputsError, match="batch_job_definition"):
        read_outputs(partial)

"""The Pulumi program under mocks: every property the stack promises, policy-style."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

import pytest
from iam_eval import Request, allowed
from pulumi_harness import ACCOUNT, AZS, REGION, SSM_AMI, DeclaredStack, RecordingMocks, run_program

from infra.config import StackConfig
from infra.outputs import OUTPUT_KEYS, RECOVERY_OUTPUT_KEYS, read_outputs
from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam
from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names
from infra.spec import zero_idle as spec_zero_idle
from infra.stack import build_stack

REQUIRED_TAGS = {
    "Project": "Chronos-Training",
    "Environment": "dev",
    "CostCenter": "ml-research",
    "ManagedBy": "pulumi",
}
LT = "aws:ec2/launchTemplate:LaunchTemplate"
SG = "aws:ec2/securityGroup:SecurityGroup"


def declare(**config: Any) -> DeclaredStack:
    cfg = StackConfig(**{"env": "dev", **config})
    return run_program(lambda: build_stack(cfg), RecordingMocks())


@pytest.fixture(scope="module")
def stack() -> DeclaredStack:
    return declare(budget_email="alerts@example.com")


# ------------------------------------------------------------------ network


def test_security_group_has_no_ingress_at_all(stack: DeclaredStack) -> None:
    for group in stack.of_type(SG):
        assert group.inputs["ingress"] == []
    assert not stack.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert not stack.of_type("aws:ec2/securityGroupRule:SecurityGroupRule")


def test_security_group_egress_is_https_only(stack: DeclaredStack) -> None:
    (egress,) = stack.one(SG)["egress"]
    assert (egress["protocol"], egress["fromPort"], egress["toPort"]) == ("tcp", 443, 443)


@pytest.mark.parametrize(
    "forbidden",
    ["aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip", "aws:ec2/instance:Instance"],
)
def test_no_nat_gateway_eip_or_instance_anywhere(stack: DeclaredStack, forbidden: str) -> None:
    assert stack.of_type(forbidden) == []


def test_only_gateway_endpoints_exist(stack: DeclaredStack) -> None:
    endpoints = stack.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert [e.inputs["vpcEndpointType"] for e in endpoints] == ["Gateway"]
    assert endpoints[0].inputs["serviceName"] == f"com.amazonaws.{REGION}.s3"


def test_s3_gateway_endpoint_sits_on_the_public_route_table(stack: DeclaredStack) -> None:
    route_table_id = stack.id_of("network-public-rt")
    endpoint = stack.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint["routeTableIds"] == [route_table_id]
    (route,) = stack.one("aws:ec2/routeTable:RouteTable")["routes"]
    assert route == {"cidrBlock": "0.0.0.0/0", "gatewayId": stack.id_of("network-igw")}


def test_one_public_subnet_per_availability_zone(stack: DeclaredStack) -> None:
    subnets = stack.of_type("aws:ec2/subnet:Subnet")
    assert sorted(s.inputs["availabilityZone"] for s in subnets) == list(AZS)
    associations = stack.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert {a.inputs["subnetId"] for a in associations} == {stack.id_of(s.name) for s in subnets}
    assert {a.inputs["routeTableId"] for a in associations} == {stack.id_of("network-public-rt")}
    assert stack.outputs["subnets_by_az"] == {
        s.inputs["availabilityZone"]: stack.id_of(s.name) for s in subnets
    }


def test_max_azs_limits_the_subnets_but_never_below_two() -> None:
    declared = declare(max_azs=2)
    assert len(declared.of_type("aws:ec2/subnet:Subnet")) == 2
    assert list(declared.outputs["subnets_by_az"]) == list(AZS[:2])


# ---------------------------------------------------------- launch template


def test_launch_template_requires_imdsv2_with_hop_limit_one(stack: DeclaredStack) -> None:
    meta = stack.one(LT)["metadataOptions"]
    assert meta["httpTokens"] == "required"
    assert meta["httpPutResponseHopLimit"] == 1
    assert meta["httpEndpoint"] == "enabled"


def test_root_volume_is_100_gb_encrypted_gp3_deleted_on_termination(stack: DeclaredStack) -> None:
    (mapping,) = stack.one(LT)["blockDeviceMappings"]
    assert mapping["deviceName"] == "/dev/sda1"
    assert mapping["ebs"] == {
        "volumeSize": 100,
        "volumeType": "gp3",
        "encrypted": "true",
        "deleteOnTermination": "true",
    }


def test_shutdown_terminates_and_there_is_no_key_pair_or_user_data(stack: DeclaredStack) -> None:
    template = stack.one(LT)
    assert template["instanceInitiatedShutdownBehavior"] == "terminate"
    assert "keyName" not in template and "userData" not in template


def test_launch_template_wires_profile_and_security_group(stack: DeclaredStack) -> None:
    template = stack.one(LT)
    assert template["iamInstanceProfile"] == {"arn": stack.outputs["instance_profile_arn"]}
    (nic,) = template["networkInterfaces"]
    assert nic["securityGroups"] == [stack.outputs["security_group_id"]]
    assert nic["associatePublicIpAddress"] == "true"
    assert nic["deviceIndex"] == 0
    assert template["instanceType"] == spec_names.DEFAULT_INSTANCE_TYPE


def test_instances_and_volumes_are_tagged_at_launch(stack: DeclaredStack) -> None:
    tagged = {s["resourceType"]: s["tags"] for s in stack.one(LT)["tagSpecifications"]}
    # Only what every launch creates: tagging the spot request here fails on-demand launches
    # (LaunchTemplateTagSpecificationRequest); a spot launch tags it in its own request.
    assert set(tagged) == {"instance", "volume", "network-interface"}
    assert all(tags.items() >= REQUIRED_TAGS.items() for tags in tagged.values())


def test_ami_comes_from_the_public_dlami_parameter(stack: DeclaredStack) -> None:
    assert stack.one(LT)["imageId"] == SSM_AMI
    (call,) = [c for c in stack.mocks.calls if c.token == "aws:ssm/getParameter:getParameter"]
    assert call.args["name"] == spec_template.DLAMI_SSM_PARAMETER
    assert spec_template.DLAMI_SSM_PARAMETER.startswith("/aws/service/deeplearning/ami/x86_64/")


def test_configured_ami_id_overrides_the_lookup() -> None:
    declared = declare(ami_id="ami-0123456789abcdef0")
    assert declared.one(LT)["imageId"] == "ami-0123456789abcdef0"
    assert not [c for c in declared.mocks.calls if c.token.startswith("aws:ssm/")]


# ------------------------------------------------------------------- bucket


def test_bucket_has_the_documented_name(stack: DeclaredStack) -> None:
    bucket = stack.one("aws:s3/bucket:Bucket")
    assert bucket["bucket"] == f"chronos-training-dev-{ACCOUNT}-{REGION}"
    assert stack.outputs["bucket"] == bucket["bucket"]


def test_public_access_block_is_all_true(stack: DeclaredStack) -> None:
    block = stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert all(block[f] is True for f in flags)


def test_versioning_off_encryption_on_acls_disabled(stack: DeclaredStack) -> None:
    assert not stack.of_type("aws:s3/bucketVersioning:BucketVersioning")
    assert not stack.of_type("aws:s3/bucketVersioningV2:BucketVersioningV2")
    assert "versioning" not in stack.one("aws:s3/bucket:Bucket")
    enc = stack.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert enc["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    ownership = stack.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_lifecycle_rules_are_the_specs(stack: DeclaredStack) -> None:
    rules = stack.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    by_id = {r["id"]: r for r in rules}
    assert by_id["expire-logs"]["filter"] == {"prefix": "dev/logs/"}
    assert by_id["expire-logs"]["expiration"] == {"days": 14}
    outputs = by_id["run-outputs-ia-then-expire"]
    assert outputs["filter"] == {"prefix": "dev/2"}
    assert outputs["transitions"] == [{"days": 30, "storageClass": "STANDARD_IA"}]
    assert outputs["expiration"] == {"days": 60}
    abort = by_id["abort-incomplete-multipart"]
    assert abort["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    assert all(r["status"] == "Enabled" for r in rules)
    assert not any("cached-datasets/".startswith(r["filter"]["prefix"]) and "expiration" in r for r in rules)


def test_bucket_policy_is_tls_only(stack: DeclaredStack) -> None:
    policy = json.loads(stack.one("aws:s3/bucketPolicy:BucketPolicy")["policy"])
    bucket_arn = f"arn:aws:s3:::{stack.outputs['bucket']}"
    assert policy == spec_bucket.tls_only_bucket_policy(bucket_arn)


# ---------------------------------------------------------------------- IAM


def test_role_trusts_only_ec2_and_carries_the_specs_policy(stack: DeclaredStack) -> None:
    role = stack.named("aws:iam/role:Role", "instance-role")
    assert json.loads(role["assumeRolePolicy"]) == spec_iam.instance_trust_policy()
    document = json.loads(stack.named("aws:iam/rolePolicy:RolePolicy", "instance-policy")["policy"])
    bucket_arn = f"arn:aws:s3:::{stack.outputs['bucket']}"
    assert document == spec_iam.instance_role_policy("dev", bucket_arn, region=REGION, account_id=ACCOUNT)
    assert not stack.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")


def test_operator_policy_names_the_real_launch_template_and_role(stack: DeclaredStack) -> None:
    document = json.loads(stack.one("aws:iam/policy:Policy")["policy"])
    lt_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{stack.outputs['launch_template_id']}"
    context = {"ec2:LaunchTemplate": lt_arn, "ec2:InstanceType": "g4dn.xlarge"}
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"
    assert allowed(document, Request("ec2:RunInstances", instance, context))
    passed = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert allowed(document, Request("iam:PassRole", stack.outputs["instance_role_arn"], passed))


# -------------------------------------------------------- tags and structure


def _resource_class(type_token: str) -> type:
    package, module_type = type_token.split(":", 1)
    module = module_type.split("/")[0]
    module = "lambda_" if module == "lambda" else module  # a Python keyword
    class_name = type_token.rsplit(":", 1)[1]
    return getattr(importlib.import_module(f"pulumi_{package}.{module}"), class_name)


def test_every_taggable_resource_carries_the_required_tags(stack: DeclaredStack) -> None:
    checked = 0
    for resource in stack.resources:
        if resource.typ.startswith(spec_zero_idle.COMPONENT_TYPE_PREFIX):
            continue
        signature = inspect.signature(_resource_class(resource.typ)._internal_init)
        if "tags" in signature.parameters:
            assert resource.inputs.get("tags", {}).items() >= REQUIRED_TAGS.items(), resource.name
            checked += 1
    assert checked >= 10  # vpc, subnets, igw, rt, endpoint, sg, lt, bucket, role, profile...


def test_every_resource_lives_inside_a_component(stack: DeclaredStack) -> None:
    """Components hang off the stack; every AWS resource's parent is a component."""
    for urn in stack.urns:
        type_chain = urn.split("::")[2]
        if type_chain.startswith("pulumi:pulumi:Stack$"):
            assert type_chain.split("$")[1].startswith(spec_zero_idle.COMPONENT_TYPE_PREFIX), urn
        else:
            assert type_chain.startswith(spec_zero_idle.COMPONENT_TYPE_PREFIX), urn
    assert any(u.split("::")[2].startswith(spec_zero_idle.COMPONENT_TYPE_PREFIX) for u in stack.urns)


def test_exports_are_what_the_outputs_reader_needs(stack: DeclaredStack) -> None:
    assert set(stack.outputs) == set(OUTPUT_KEYS) | set(RECOVERY_OUTPUT_KEYS)
    outputs = read_outputs(stack.outputs)
    assert (outputs.env, outputs.region, outputs.account_id) == ("dev", REGION, ACCOUNT)


# ------------------------------------------------------------------- budget


def test_budget_emails_the_configured_address(stack: DeclaredStack) -> None:
    budget = stack.one("aws:budgets/budget:Budget")
    assert (budget["budgetType"], budget["timeUnit"], budget["limitUnit"]) == (
        "COST",
        "MONTHLY",
        "USD",
    )
    assert float(budget["limitAmount"]) == 100.0
    emails = {e for n in budget["notifications"] for e in n["subscriberEmailAddresses"]}
    assert emails == {"alerts@example.com"}


def test_no_budget_without_an_email() -> None:
    assert declare().of_type("aws:budgets/budget:Budget") == []


def test_every_component_registers_its_outputs(registered: dict[str, dict[str, Any]]) -> None:
    declare(budget_email="alerts@example.com")
    components = {"Network", "Storage", "InstanceIdentity", "Compute", "OperatorAccess", "Budget", "Recovery"}
    assert set(registered) == components
    assert all(registered[name] for name in components)


def test_preview_declares_the_same_resources(stack: DeclaredStack) -> None:
    cfg = StackConfig(env="dev", budget_email="alerts@example.com")
    previewed = run_program(lambda: build_stack(cfg), RecordingMocks(), preview=True)
    assert sorted((r.typ, r.name) for r in previewed.resources) == sorted(
        (r.typ, r.name) for r in stack.resources
    )

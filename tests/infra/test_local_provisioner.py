"""infra.local: the same stack in the local AWS (moto), idempotent, same outputs shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra.local import ProvisionOptions, provision
from infra.outputs import OUTPUT_KEYS, RECOVERY_OUTPUT_KEYS, read_outputs, read_outputs_file
from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam
from infra.spec import names as spec_names
from infra.spec import network as spec_network

REQUIRED_TAGS = {"Project": "Chronos-Training", "Environment": "dev", "CostCenter": "ml-research"}


class _Aws:
    """The module's local AWS with one session and cached clients (clients are slow to build)."""

    def __init__(self, server: Any) -> None:
        self.endpoint_url = server.endpoint_url
        self.session = server.session()
        self._server = server
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._server.client(service, self.session)
        return self._clients[service]


def _run(local_aws: _Aws, **kwargs: Any) -> dict[str, Any]:
    return provision(
        local_aws.session, env="dev", endpoint_url=local_aws.endpoint_url, options=ProvisionOptions(**kwargs)
    )


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _bucket_inventory(s3: Any) -> dict[str, Any]:
    inventory: dict[str, Any] = {}
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        getters = {
            "tags": s3.get_bucket_tagging,
            "public_access_block": s3.get_public_access_block,
            "ownership": s3.get_bucket_ownership_controls,
            "encryption": s3.get_bucket_encryption,
            "lifecycle": s3.get_bucket_lifecycle_configuration,
            "versioning": s3.get_bucket_versioning,
        }
        inventory[name] = {key: _strip(get(Bucket=name)) for key, get in getters.items()}
    return inventory


def _iam_inventory(iam: Any) -> dict[str, Any]:
    roles = {}
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        inline = iam.list_role_policies(RoleName=name)["PolicyNames"]
        documents = {p: iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"] for p in inline}
        roles[name] = {"role": role, "inline": documents}
    policies = {}
    for policy in iam.list_policies(Scope="Local")["Policies"]:
        versions = iam.list_policy_versions(PolicyArn=policy["Arn"])["Versions"]
        policies[policy["PolicyName"]] = {"policy": policy, "versions": versions}
    profiles = iam.list_instance_profiles()["InstanceProfiles"]
    return {"roles": roles, "policies": policies, "profiles": profiles}


def _ec2_inventory(ec2: Any) -> dict[str, Any]:
    calls = {
        "vpcs": ec2.describe_vpcs,
        "subnets": ec2.describe_subnets,
        "internet_gateways": ec2.describe_internet_gateways,
        "route_tables": ec2.describe_route_tables,
        "endpoints": ec2.describe_vpc_endpoints,
        "security_groups": ec2.describe_security_groups,
        "launch_templates": ec2.describe_launch_templates,
        "nat_gateways": ec2.describe_nat_gateways,
        "addresses": ec2.describe_addresses,
        "instances": ec2.describe_instances,
        "volumes": ec2.describe_volumes,
    }
    inventory = {key: _strip(call()) for key, call in calls.items()}
    inventory["launch_template_versions"] = [
        _strip(ec2.describe_launch_template_versions(LaunchTemplateId=t["LaunchTemplateId"]))
        for t in inventory["launch_templates"]["LaunchTemplates"]
    ]
    return inventory


def inventory(local_aws: Any) -> dict[str, Any]:
    """Everything the provisioner could have created or changed, as AWS reports it."""
    return {
        "s3": _bucket_inventory(local_aws.client("s3")),
        "iam": _iam_inventory(local_aws.client("iam")),
        "ec2": _ec2_inventory(local_aws.client("ec2")),
    }


@pytest.fixture(scope="module")
def local_aws(moto_server: Any) -> Iterator[_Aws]:
    """One clean local AWS for this module; tests that change it put it back."""
    moto_server.reset()
    yield _Aws(moto_server)
    moto_server.reset()


@pytest.fixture(scope="module")
def provisioned(local_aws: Any) -> dict[str, Any]:
    return _run(local_aws)


def test_second_run_changes_nothing(local_aws: Any, provisioned: dict[str, Any]) -> None:
    before = inventory(local_aws)
    again = _run(local_aws)
    assert again == provisioned
    assert inventory(local_aws) == before
    assert before["s3"] and before["iam"]["roles"] and before["ec2"]["vpcs"]["Vpcs"]


def test_outputs_have_the_shape_pulumi_exports(
    local_aws: Any, provisioned: dict[str, Any], tmp_path: Path
) -> None:
    outputs = _run(local_aws, outputs_path=tmp_path / "outputs.json")
    assert outputs == provisioned
    assert set(outputs) == set(OUTPUT_KEYS) | set(RECOVERY_OUTPUT_KEYS)
    assert read_outputs(outputs) == read_outputs_file(tmp_path / "outputs.json")
    assert outputs["bucket"] == spec_names.bucket_name("dev", outputs["account_id"], "us-east-1")
    assert len(outputs["subnets_by_az"]) >= 2


def test_bucket_settings_come_from_the_spec(local_aws: Any, provisioned: dict[str, Any]) -> None:
    s3, bucket = local_aws.client("s3"), provisioned["bucket"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted(rules, key=lambda r: r["ID"]) == sorted(
        spec_bucket.lifecycle_rules("dev"), key=lambda r: r["ID"]
    )
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == spec_bucket.PUBLIC_ACCESS_BLOCK
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
    assert ownership == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags.items() >= {**REQUIRED_TAGS, "ManagedBy": "chronos-local"}.items()


def test_bucket_is_usable_locally(local_aws: Any, provisioned: dict[str, Any]) -> None:
    s3, bucket = local_aws.client("s3"), provisioned["bucket"]
    s3.put_object(Bucket=bucket, Key="dev/system-state.json", Body=b"{}", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="dev/system-state.json")["Body"].read() == b"{}"
    s3.delete_object(Bucket=bucket, Key="dev/system-state.json")


def test_tls_only_policy_only_on_request(local_aws: Any, provisioned: dict[str, Any]) -> None:
    s3, bucket = local_aws.client("s3"), provisioned["bucket"]
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=bucket)
    _run(local_aws, tls_only_policy=True)
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    s3.delete_bucket_policy(Bucket=bucket)
    assert policy == spec_bucket.tls_only_bucket_policy(spec_bucket.bucket_arn(bucket))


def test_network_is_public_subnets_https_only_and_nothing_billing(
    local_aws: Any, provisioned: dict[str, Any]
) -> None:
    ec2 = local_aws.client("ec2")
    (group,) = ec2.describe_security_groups(GroupIds=[provisioned["security_group_id"]])["SecurityGroups"]
    assert group["IpPermissions"] == []
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in group["IpPermissionsEgress"]] == [
        ("tcp", 443, 443)
    ]
    subnet_ids = list(provisioned["subnets_by_az"].values())
    (table,) = ec2.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": subnet_ids[:1]}]
    )["RouteTables"]
    assert {a.get("SubnetId") for a in table["Associations"]} >= set(subnet_ids)
    assert any(r.get("GatewayId", "").startswith("igw-") for r in table["Routes"])
    (endpoint,) = ec2.describe_vpc_endpoints()["VpcEndpoints"]
    assert endpoint["VpcEndpointType"] == "Gateway"
    assert endpoint["RouteTableIds"] == [table["RouteTableId"]]
    assert ec2.describe_nat_gateways()["NatGateways"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_instances()["Reservations"] == []


def test_launch_template_comes_from_the_spec(local_aws: Any, provisioned: dict[str, Any]) -> None:
    ec2 = local_aws.client("ec2")
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateId=provisioned["launch_template_id"])[
        "LaunchTemplateVersions"
    ]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (mapping,) = data["BlockDeviceMappings"]
    assert mapping == {
        "DeviceName": "/dev/sda1",
        "Ebs": {"VolumeSize": 100, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
    }
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["IamInstanceProfile"] == {"Arn": provisioned["instance_profile_arn"]}
    assert data["NetworkInterfaces"][0]["Groups"] == [provisioned["security_group_id"]]
    assert "KeyName" not in data and "UserData" not in data
    tagged = {s["ResourceType"] for s in data["TagSpecifications"]}
    assert {"instance", "volume"} <= tagged


def test_iam_documents_come_from_the_spec(local_aws: Any, provisioned: dict[str, Any]) -> None:
    iam = local_aws.client("iam")
    role = iam.get_role(RoleName="chronos-dev-instance")["Role"]
    assert role["AssumeRolePolicyDocument"] == spec_iam.instance_trust_policy()
    inline = iam.get_role_policy(
        RoleName="chronos-dev-instance", PolicyName="chronos-dev-instance-least-privilege"
    )["PolicyDocument"]
    bucket_arn = spec_bucket.bucket_arn(provisioned["bucket"])
    assert inline == spec_iam.instance_role_policy(
        "dev", bucket_arn, region="us-east-1", account_id=provisioned["account_id"]
    )
    arn = provisioned["operator_policy_arn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    account, lt_id = provisioned["account_id"], provisioned["launch_template_id"]
    lt_arn = f"arn:aws:ec2:us-east-1:{account}:launch-template/{lt_id}"
    (run,) = [s for s in document["Statement"] if s["Sid"] == "RunInstancesOnlyFromLaunchTemplate"]
    assert run["Condition"]["ArnLike"] == {"ec2:LaunchTemplate": lt_arn}


def test_drift_is_put_back(local_aws: Any, provisioned: dict[str, Any]) -> None:
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    bucket, group = provisioned["bucket"], provisioned["security_group_id"]
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]
        },
    )
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[ssh])
    _run(local_aws)
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"] for r in rules} == {r["ID"] for r in spec_bucket.lifecycle_rules("dev")}
    assert ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"] == []


def test_an_instance_launches_from_the_outputs(local_aws: Any, provisioned: dict[str, Any]) -> None:
    ec2 = local_aws.client("ec2")
    az, subnet = sorted(provisioned["subnets_by_az"].items())[1]
    reservation = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateId": provisioned["launch_template_id"], "Version": "$Default"},
        NetworkInterfaces=spec_network.network_interface_override(subnet, provisioned["security_group_id"]),
        MinCount=1,
        MaxCount=1,
    )
    (instance,) = reservation["Instances"]
    assert instance["Placement"]["AvailabilityZone"] == az
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    assert tags.items() >= REQUIRED_TAGS.items()
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])

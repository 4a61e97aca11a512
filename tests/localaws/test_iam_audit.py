"""The IAM call audit over real calls against the local AWS, with the project's own policies.

The stack comes from ``infra.local.provision`` and the principals from
``localaws.identities``; moto enforces IAM (with the moto-only allowance),
and the audit proves what moto cannot: conditions and EC2 resource ARNs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from common import tags as common_tags
from infra import local
from infra.spec import names as spec_names
from infra.spec import network as spec_network
from localaws import audit, identities, principals
from localaws.iam_audit import audit_run

ENV = "dev"


@dataclass
class World:
    """A provisioned local stack with its principals, IAM enforced, calls being recorded."""

    aws: Any
    env_ids: identities.EnvIdentities
    outputs: dict[str, Any]
    log: Path
    _sessions: dict[str, boto3.Session] = field(default_factory=dict)

    def operator(self, service: str) -> Any:
        keys = self.env_ids.operator
        if "operator" not in self._sessions:
            self._sessions["operator"] = boto3.Session(
                keys.access_key_id, keys.secret_access_key, region_name=self.aws.region
            )
        return self.aws.client(service, self._sessions["operator"])  # made after install: recorded

    def instance(self, instance_id: str, service: str) -> Any:
        """A client with the instance role credentials of ``instance_id`` (recorded, as by the supervisor)."""
        if instance_id not in self._sessions:
            self._sessions[instance_id] = self._assume(instance_id)
        return self.aws.client(service, self._sessions[instance_id])

    def _assume(self, instance_id: str) -> boto3.Session:
        creds = identities.assume_instance_role(
            self.aws.endpoint_url, self.aws.region, self.env_ids, instance_id
        )
        role = self.aws.client("iam").get_role(RoleName=self.env_ids.instance_role_name)["Role"]
        audit.record_credentials(
            access_key_id=creds["AccessKeyId"],
            role_arn=role["Arn"],
            role_id=role["RoleId"],
            session_name=instance_id,
        )
        return boto3.Session(
            creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"], region_name=self.aws.region
        )

    def launch(self, *, spot: bool) -> str:
        """RunInstances as the control plane's launch plan builds it; returns the instance id."""
        tags = common_tags.tag_list(common_tags.tags(ENV, managed_by=common_tags.MANAGED_BY_LOCAL))
        kinds = ["instance", "volume", *(["spot-instances-request"] if spot else [])]
        subnet = sorted(self.outputs["subnets_by_az"].values())[0]
        request: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": "g5.xlarge",
            "UserData": "#!/bin/bash\n",
            "LaunchTemplate": {"LaunchTemplateId": self.outputs["launch_template_id"], "Version": "$Latest"},
            "NetworkInterfaces": spec_network.network_interface_override(
                subnet, self.outputs["security_group_id"]
            ),
            "TagSpecifications": [{"ResourceType": k, "Tags": tags} for k in kinds],
        }
        if spot:
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time"},
            }
        return self.operator("ec2").run_instances(**request)["Instances"][0]["InstanceId"]

    def audit(self) -> Any:
        return audit_run(self.log, admin_session=self.aws.session(), endpoint_url=self.aws.endpoint_url)


@pytest.fixture(scope="module")
def stack(moto_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """One provisioned stack for the module (provisioning takes seconds); IAM enforced."""
    moto_server.reset()

    def provision(host_arn: str) -> dict[str, Any]:
        return local.provision(
            moto_server.session(),
            env=ENV,
            endpoint_url=moto_server.endpoint_url,
            options=local.ProvisionOptions(local_principal_arn=host_arn),
        )

    path = tmp_path_factory.mktemp("identities") / "identities.json"
    record, outputs = principals.ensure_identities(moto_server, path, env=ENV, provision=provision)
    moto_server.enforce_iam()
    try:
        yield moto_server, record.envs[ENV], outputs
    finally:
        moto_server.reset()


@pytest.fixture
def world(stack: tuple[Any, Any, dict[str, Any]], tmp_path: Path) -> Iterator[World]:
    """The stack, with a fresh audit log recording this test's calls."""
    log = tmp_path / "iam-audit.jsonl"
    audit.install(log)
    try:
        yield World(*stack, log)
    finally:
        audit.uninstall()


def _operator_side(world: World, *, spot: bool) -> str:
    s3, bucket = world.operator("s3"), world.outputs["bucket"]
    s3.put_object(Bucket=bucket, Key=f"{ENV}/system-state.json", Body=b"{}", IfNoneMatch="*")
    s3.list_objects_v2(Bucket=bucket, Prefix=f"{ENV}/logs/")
    s3.put_object(Bucket=bucket, Key="cached-datasets/scripts/code.tar.gz", Body=b"code")
    world.operator("ec2").describe_instances()
    world.operator("sts").get_caller_identity()
    instance_id = world.launch(spot=spot)
    s3.delete_object(Bucket=bucket, Key=f"{ENV}/system-state.json")
    return instance_id


def _instance_side(world: World, instance_id: str) -> None:
    s3, bucket = world.instance(instance_id, "s3"), world.outputs["bucket"]
    s3.get_object(Bucket=bucket, Key="cached-datasets/scripts/code.tar.gz")["Body"].read()
    s3.put_object(Bucket=bucket, Key=f"{ENV}/logs/x/training.json", Body=b"{}")
    s3.list_objects_v2(Bucket=bucket, Prefix=f"{ENV}/logs/x/")
    world.instance(instance_id, "ec2").terminate_instances(InstanceIds=[instance_id])


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
def test_a_whole_run_on_each_side_passes_the_audit(world: World, spot: bool) -> None:
    instance_id = _operator_side(world, spot=spot)
    _instance_side(world, instance_id)
    report = world.audit()
    assert report.ok, report.summary()
    operator = identities.user_name(ENV, "operator")
    assert report.calls_by_principal[f"user/{operator}"] == 7
    assert report.calls_by_principal[f"assumed-role/{world.env_ids.instance_role_name}/{instance_id}"] == 4
    assert report.skipped_admin_calls > 0


def test_a_call_aws_would_deny_is_a_finding_although_moto_allowed_it(world: World) -> None:
    mine, other = world.launch(spot=False), world.launch(spot=False)
    world.instance(mine, "ec2").terminate_instances(InstanceIds=[other])  # moto: allowed on "*"
    report = world.audit()
    (finding,) = report.findings
    assert finding.action == "ec2:TerminateInstances" and finding.resource.endswith(f"instance/{other}")
    assert "TerminateOnlyItself: condition StringLike aws:userid failed" in finding.why
    assert finding.moto_error is None
    assert "1 findings" in report.summary()


def _without_statement(world: World, sid: str) -> str:
    """Make the operator policy's default version one lacking statement ``sid``; returns the old version."""
    iam = world.aws.client("iam")
    arn = next(
        p["PolicyArn"]
        for p in iam.list_attached_user_policies(UserName=identities.user_name(ENV, "operator"))[
            "AttachedPolicies"
        ]
    )
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    kept = [s for s in document["Statement"] if s.get("Sid") != sid]
    assert len(kept) == len(document["Statement"]) - 1, f"no statement {sid}"
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=json.dumps({**document, "Statement": kept}), SetAsDefault=True
    )
    return version


def _restore(world: World, version: str) -> None:
    iam = world.aws.client("iam")
    arn = f"arn:aws:iam::{world.outputs['account_id']}:policy/{spec_names.resource_name(ENV, 'operator')}"
    iam.set_default_policy_version(PolicyArn=arn, VersionId=version)


def test_removing_a_needed_statement_makes_the_finding_appear(world: World) -> None:
    world.launch(spot=True)
    assert world.audit().ok
    spot_statement = next(
        s["Sid"]
        for s in _operator_statements(world)
        if s.get("Resource")
        == f"arn:aws:ec2:{world.aws.region}:{world.outputs['account_id']}:spot-instances-request/*"
        and "ec2:RunInstances" in s["Action"]
    )
    old = _without_statement(world, spot_statement)
    try:
        (finding,) = world.audit().findings
    finally:
        _restore(world, old)
    assert finding.action == "ec2:RunInstances" and finding.resource.endswith("spot-instances-request/*")
    assert (
        finding.why.startswith("RunInstancesOnlyFromLaunchTemplate: condition")
        or "no statement" in finding.why
    )


def _operator_statements(world: World) -> list[dict[str, Any]]:
    iam = world.aws.client("iam")
    arn = f"arn:aws:iam::{world.outputs['account_id']}:policy/{spec_names.resource_name(ENV, 'operator')}"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return (json.loads(document) if isinstance(document, str) else document)["Statement"]


def test_a_call_moto_refused_is_still_evaluated_and_said_so(world: World) -> None:
    s3 = world.operator("s3")
    with pytest.raises(Exception, match="AccessDenied"):
        s3.put_object(Bucket=world.outputs["bucket"], Key="prod/system-state.json", Body=b"{}")
    (finding,) = world.audit().findings
    assert finding.action == "s3:PutObject" and finding.why == "no statement allows"
    assert "moto refused it too" in finding.line()

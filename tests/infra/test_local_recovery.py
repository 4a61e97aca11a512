"""The local provisioner's recovery side: the role and policy of AWS, the topic with ``notify_email``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.local import ProvisionOptions, provision
from infra.outputs import read_outputs
from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam
from infra.spec import recovery as spec_recovery

RUNNER = "arn:aws:iam::123456789012:user/chronos-dev-recovery-host"


@pytest.fixture(scope="module")
def local_aws(moto_server: Any) -> Iterator[Any]:
    moto_server.reset()
    yield moto_server
    moto_server.reset()


def _provision(local_aws: Any, **options: Any) -> dict[str, Any]:
    return provision(
        local_aws.session(),
        env="dev",
        endpoint_url=local_aws.endpoint_url,
        options=ProvisionOptions(**options),
    )


def _inline(iam: Any, role: str) -> dict[str, Any]:
    return iam.get_role_policy(RoleName=role, PolicyName=f"{role}-least-privilege")["PolicyDocument"]


def _scope(outputs: dict[str, Any], vpc_arn: str) -> spec_recovery.RecoveryScope:
    region, account = outputs["region"], outputs["account_id"]
    return spec_recovery.RecoveryScope(
        env="dev",
        region=region,
        account_id=account,
        bucket_arn=spec_bucket.bucket_arn(outputs["bucket"]),
        launch_template_arn=f"arn:aws:ec2:{region}:{account}:launch-template/{outputs['launch_template_id']}",
        vpc_arn=vpc_arn,
        instance_role_arn=outputs["instance_role_arn"],
    )


def test_the_recovery_role_has_the_functions_policy_and_trusts_the_local_runner(local_aws: Any) -> None:
    iam, ec2 = local_aws.client("iam"), local_aws.client("ec2")
    outputs = _provision(local_aws, recovery_principal_arn=RUNNER)
    read = read_outputs(outputs)
    assert read.recovery_function_name == "chronos-dev-recovery"
    assert read.recovery_role_arn == f"arn:aws:iam::{outputs['account_id']}:role/chronos-dev-recovery"
    assert read.notify_topic_arn is None and outputs["notify_topic_arn"] is None
    role = iam.get_role(RoleName="chronos-dev-recovery")["Role"]
    assert role["AssumeRolePolicyDocument"] == spec_recovery.lambda_trust_policy(RUNNER)
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "tag:Environment", "Values": ["dev"]}])["Vpcs"]
    vpc_arn = f"arn:aws:ec2:{outputs['region']}:{outputs['account_id']}:vpc/{vpc['VpcId']}"
    assert _inline(iam, "chronos-dev-recovery") == spec_recovery.recovery_role_policy(
        _scope(outputs, vpc_arn)
    )
    tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
    assert tags["Project"] == "Chronos-Training" and tags["Environment"] == "dev"


def test_a_second_run_changes_nothing(local_aws: Any) -> None:
    first = _provision(local_aws, recovery_principal_arn=RUNNER)
    iam = local_aws.client("iam")
    before = (iam.get_role(RoleName="chronos-dev-recovery")["Role"], _inline(iam, "chronos-dev-recovery"))
    assert _provision(local_aws, recovery_principal_arn=RUNNER) == first
    assert (
        iam.get_role(RoleName="chronos-dev-recovery")["Role"],
        _inline(iam, "chronos-dev-recovery"),
    ) == before


def test_notify_email_creates_the_topic_once_and_lets_both_roles_publish(local_aws: Any) -> None:
    sns, iam = local_aws.client("sns"), local_aws.client("iam")
    outputs = _provision(local_aws, notify_email="runs@example.com")
    again = _provision(local_aws, notify_email="runs@example.com")
    assert again == outputs
    topic = read_outputs(outputs).notify_topic_arn
    assert topic is not None and topic.endswith(":chronos-dev-notify")
    (subscription,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "runs@example.com")
    instance = _inline(iam, "chronos-dev-instance")
    assert instance == spec_iam.instance_role_policy(
        "dev",
        spec_bucket.bucket_arn(outputs["bucket"]),
        region=outputs["region"],
        account_id=outputs["account_id"],
        notify_topic_arn=topic,
    )
    recovery = _inline(iam, "chronos-dev-recovery")
    publish = [s for s in recovery["Statement"] if "sns:Publish" in s["Action"]]
    assert [s["Resource"] for s in publish] == [topic]


def test_without_notify_email_the_roles_lose_the_publish_statement(local_aws: Any) -> None:
    iam = local_aws.client("iam")
    _provision(local_aws)
    for role in ("chronos-dev-instance", "chronos-dev-recovery"):
        actions = {a for s in _inline(iam, role)["Statement"] for a in s["Action"]}
        assert "sns:Publish" not in actions

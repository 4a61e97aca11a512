"""The instance role, proven against moto with IAM enforcement on.

The role and its policy are created by the local provisioner from ``infra.spec``;
the calls below use the credentials of an assumed instance-role session. moto
ignores most conditions (a conditional Allow acts as unconditional there), so:

- every denial here would also hold with the conditions enforced;
- every allowance is re-checked with a role holding only the *unconditional*
  statements, so none of them passes because moto skipped a condition;
- the admin can do what the instance is denied, so the denials are the policy's
  doing and not a missing object.

Conditional statements themselves are tested in ``test_policy_documents.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from common.aws import is_access_denied
from infra.local import ProvisionOptions, provision
from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam

CACHED_KEY = "cached-datasets/training-data/2026/01/part-0.parquet"
OTHER_ENV_KEY = "prod/system-state.json"
INSTANCE_ID = "i-0aaaaaaaaaaaaaaaa"


@dataclass
class World:
    """The provisioned env and sessions for each identity."""

    bucket: str
    admin: boto3.Session
    instance: boto3.Session
    unconditional: boto3.Session
    client: Callable[..., Any]


def _unconditional_role(aws: Any, trust: dict, document: dict) -> str:
    """A role with only the statements of ``document`` that carry no condition."""
    iam = aws.client("iam")
    name = "chronos-dev-unconditional"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    kept = [s for s in document["Statement"] if "Condition" not in s]
    assert len(kept) < len(document["Statement"])
    iam.put_role_policy(
        RoleName=name,
        PolicyName="unconditional",
        PolicyDocument=json.dumps({**document, "Statement": kept}),
    )
    return role["Arn"]


def _assume(aws: Any, role_arn: str) -> boto3.Session:
    creds = aws.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=INSTANCE_ID)["Credentials"]
    return boto3.Session(
        creds["AccessKeyId"],
        creds["SecretAccessKey"],
        creds["SessionToken"],
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def world(enforcing_aws: Any) -> Iterator[World]:
    outputs = provision(
        enforcing_aws.admin,
        env="dev",
        endpoint_url=enforcing_aws.endpoint_url,
        options=ProvisionOptions(local_principal_arn=enforcing_aws.admin_arn),
    )
    bucket = outputs["bucket"]
    s3 = enforcing_aws.client("s3")
    for key in (CACHED_KEY, OTHER_ENV_KEY):
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    policy = spec_iam.instance_role_policy(
        "dev", spec_bucket.bucket_arn(bucket), region="us-east-1", account_id=outputs["account_id"]
    )
    trust = spec_iam.instance_trust_policy(enforcing_aws.admin_arn)
    unconditional_arn = _unconditional_role(enforcing_aws, trust, policy)
    enforcing_aws.set_enforcement(True)
    yield World(
        bucket=bucket,
        admin=enforcing_aws.admin,
        instance=_assume(enforcing_aws, outputs["instance_role_arn"]),
        unconditional=_assume(enforcing_aws, unconditional_arn),
        client=enforcing_aws.client,
    )
    enforcing_aws.set_enforcement(False)


def _denied(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ClientError as exc:
        if is_access_denied(exc):
            return True
        raise
    return False


def test_enforcement_is_really_on(world: World) -> None:
    anonymous = boto3.Session("testing", "testing", region_name="us-east-1")
    with pytest.raises(ClientError):
        world.client("s3", anonymous).get_object(Bucket=world.bucket, Key=CACHED_KEY)


@pytest.mark.parametrize("who", ["instance", "unconditional"])
def test_instance_reads_cached_datasets_and_writes_its_own_env(world: World, who: str) -> None:
    s3 = world.client("s3", getattr(world, who))
    assert s3.get_object(Bucket=world.bucket, Key=CACHED_KEY)["Body"].read() == b"data"
    key = f"dev/2026/11/25-140502/{who}/model_metadata.json"
    s3.put_object(Bucket=world.bucket, Key=key, Body=b"{}")
    assert s3.get_object(Bucket=world.bucket, Key=key)["Body"].read() == b"{}"
    s3.delete_object(Bucket=world.bucket, Key=key)


def test_instance_can_take_and_release_the_env_lock(world: World) -> None:
    s3 = world.client("s3", world.instance)
    key = "dev/system-state.json"
    s3.put_object(Bucket=world.bucket, Key=key, Body=b"{}", IfNoneMatch="*")
    s3.delete_object(Bucket=world.bucket, Key=key)


def _forbidden_s3_calls(bucket: str) -> dict[str, Callable[[Any], Any]]:
    return {
        "write cached-datasets": lambda s3: s3.put_object(
            Bucket=bucket, Key="cached-datasets/scripts/evil.sh", Body=b"x"
        ),
        "delete cached-datasets": lambda s3: s3.delete_object(Bucket=bucket, Key=CACHED_KEY),
        "read another env": lambda s3: s3.get_object(Bucket=bucket, Key=OTHER_ENV_KEY),
        "write another env": lambda s3: s3.put_object(
            Bucket=bucket, Key="prod/2026/11/25-140502/_SUCCESS", Body=b"x"
        ),
        "delete another env": lambda s3: s3.delete_object(Bucket=bucket, Key=OTHER_ENV_KEY),
        "write a lookalike env": lambda s3: s3.put_object(
            Bucket=bucket, Key="devx/system-state.json", Body=b"x"
        ),
        "write outside any prefix": lambda s3: s3.put_object(Bucket=bucket, Key="x", Body=b"x"),
        "replace the bucket policy": lambda s3: (
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(_harmless_policy(bucket))),
            s3.delete_bucket_policy(Bucket=bucket),
        ),
    }


def _harmless_policy(bucket: str) -> dict[str, Any]:
    """A bucket policy moto's object checks treat as neutral (it ignores conditions)."""
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:user/admin"},
        "Action": "s3:GetObject",
        "Resource": f"{spec_bucket.bucket_arn(bucket)}/*",
    }
    return {"Version": "2012-10-17", "Statement": [statement]}


@pytest.mark.parametrize("what", sorted(_forbidden_s3_calls("b")))
def test_instance_is_denied_outside_its_prefixes_and_the_admin_is_not(world: World, what: str) -> None:
    call = _forbidden_s3_calls(world.bucket)[what]
    assert _denied(lambda: call(world.client("s3", world.instance)))
    if not what.startswith("delete"):
        call(world.client("s3", world.admin))  # the same call is fine with full rights


def test_instance_may_not_delete_the_bucket(world: World) -> None:
    s3 = world.client("s3", world.instance)
    assert _denied(lambda: s3.delete_bucket(Bucket=world.bucket))
    assert world.client("s3").head_bucket(Bucket=world.bucket)


IAM_CALLS: dict[str, Callable[[Any], Any]] = {
    "list roles": lambda iam: iam.list_roles(),
    "create a user": lambda iam: iam.create_user(UserName="intruder"),
    "widen its own policy": lambda iam: iam.put_role_policy(
        RoleName="chronos-dev-instance",
        PolicyName="more",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    ),
    "attach admin": lambda iam: iam.attach_role_policy(
        RoleName="chronos-dev-instance", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
    ),
}


@pytest.mark.parametrize("what", sorted(IAM_CALLS))
def test_instance_is_denied_every_iam_call(world: World, what: str) -> None:
    assert _denied(lambda: IAM_CALLS[what](world.client("iam", world.instance)))


def test_instance_may_not_launch_instances(world: World) -> None:
    ec2 = world.client("ec2", world.instance)
    assert _denied(
        lambda: ec2.run_instances(
            ImageId="ami-0c0ffee0c0ffee0c0", InstanceType="g5.xlarge", MinCount=1, MaxCount=1
        )
    )


def test_instance_may_describe_instances(world: World) -> None:
    world.client("ec2", world.instance).describe_instances()

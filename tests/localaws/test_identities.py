"""Local identities against moto with IAM enforcement on: who may do what, and keys that last."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from common.aws import is_access_denied
from infra.local import ProvisionOptions, provision
from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam
from localaws import identities, principals
from localaws.identities import MOTO_ONLY_POLICY_NAME

INSTANCE_ID = "i-0123456789abcdef0"


class Env:
    """An env provisioned with its identities; enforcement on."""

    def __init__(self, aws: Any, path: Path) -> None:
        self.aws, self.path = aws, path
        self.record, self.outputs = self.ensure()
        aws.enforce_iam()

    def ensure(self, env: str = "dev") -> tuple[identities.Identities, Any]:
        def run(principal: str) -> dict[str, Any]:
            return provision(
                self.aws.session(),
                env=env,
                endpoint_url=self.aws.endpoint_url,
                options=ProvisionOptions(local_principal_arn=principal),
            )

        return principals.ensure_identities(self.aws, self.path, env=env, provision=run)

    def client(self, service: str, keys: identities.Keys) -> Any:
        return self.aws.client(service, session=keys.session(self.aws.region))


@pytest.fixture
def env(local_aws, tmp_path) -> Iterator[Env]:
    yield Env(local_aws, tmp_path / "identities.json")
    local_aws.reset()


def _denied(call: Any) -> bool:
    try:
        call()
    except ClientError as exc:
        return is_access_denied(exc)
    return False


def test_the_record_is_private_and_reads_back(env: Env) -> None:
    assert stat.S_IMODE(env.path.stat().st_mode) == 0o600
    assert identities.load(env.path) == env.record
    dev = env.record.envs["dev"]
    assert env.record.admin.arn == "arn:aws:iam::123456789012:user/chronos-local-admin"
    assert dev.operator.arn == "arn:aws:iam::123456789012:user/chronos-dev-operator"
    assert dev.instance_host.arn == "arn:aws:iam::123456789012:user/chronos-dev-instance-host"
    assert (dev.instance_role_arn, dev.instance_role_name, dev.instance_profile_name) == (
        env.outputs["instance_role_arn"],
        "chronos-dev-instance",
        "chronos-dev-instance",
    )


def test_no_record_means_no_identities(tmp_path) -> None:
    assert identities.load(tmp_path / "identities.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(identities.IdentitiesError):
        identities.load(tmp_path / "bad.json")


def test_enforcement_is_on_and_the_admin_may_do_anything(env: Env) -> None:
    anonymous = boto3.Session("testing", "testing", region_name="us-east-1")
    with pytest.raises(ClientError):
        env.aws.client("s3", session=anonymous).list_buckets()
    assert env.aws.client("iam").get_user(UserName="chronos-dev-operator")  # the admin by default


def test_the_operator_is_itself_and_has_only_the_operator_policy(env: Env) -> None:
    op = env.record.envs["dev"].operator
    assert env.client("sts", op).get_caller_identity()["Arn"] == op.arn
    iam = env.aws.client("iam")
    attached = iam.list_attached_user_policies(UserName="chronos-dev-operator")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [env.outputs["operator_policy_arn"]]
    assert iam.list_user_policies(UserName="chronos-dev-operator")["PolicyNames"] == [MOTO_ONLY_POLICY_NAME]


def test_moto_refuses_the_operator_what_its_policy_does_not_grant(env: Env) -> None:
    op, bucket = env.record.envs["dev"].operator, env.outputs["bucket"]
    s3, iam = env.client("s3", op), env.client("iam", op)
    s3.put_object(Bucket=bucket, Key="dev/probe.json", Body=b"{}")
    assert _denied(lambda: iam.create_user(UserName="intruder"))
    assert _denied(
        lambda: iam.attach_user_policy(
            UserName="chronos-dev-operator", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
        )
    )
    assert _denied(lambda: s3.delete_bucket(Bucket=bucket))
    assert _denied(lambda: s3.put_bucket_policy(Bucket=bucket, Policy="{}"))


def test_the_instance_host_may_only_assume_the_instance_role(env: Env) -> None:
    host = env.record.envs["dev"].instance_host
    assert _denied(lambda: env.client("s3", host).list_objects_v2(Bucket=env.outputs["bucket"]))
    assert _denied(lambda: env.client("ec2", host).describe_instances())
    role = env.aws.client("iam").get_role(RoleName="chronos-dev-instance")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust == spec_iam.instance_trust_policy(host.arn)  # one statement: EC2 and the host together
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com", "AWS": host.arn}


def test_assumed_instance_role_is_the_role_with_the_instance_id_as_session(env: Env) -> None:
    dev = env.record.envs["dev"]
    creds = identities.assume_instance_role(env.aws.endpoint_url, env.aws.region, dev, INSTANCE_ID)
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    assert creds["Expiration"].endswith("Z") and creds["LastUpdated"].endswith("Z")
    session = boto3.Session(
        creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"], region_name="us-east-1"
    )
    sts = env.aws.client("sts", session=session)
    assert sts.get_caller_identity()["Arn"] == (
        f"arn:aws:sts::123456789012:assumed-role/chronos-dev-instance/{INSTANCE_ID}"
    )
    s3 = env.aws.client("s3", session=session)
    s3.put_object(Bucket=env.outputs["bucket"], Key="dev/probe.json", Body=b"{}")
    assert _denied(lambda: s3.put_object(Bucket=env.outputs["bucket"], Key="prod/x", Body=b"x"))


def test_moto_only_allowance_names_exactly_the_real_policies_arn_scoped_actions(env: Env) -> None:
    iam = env.aws.client("iam")
    bucket_arn = spec_bucket.bucket_arn(env.outputs["bucket"])
    role_policy = spec_iam.instance_role_policy(
        "dev", bucket_arn, region="us-east-1", account_id="123456789012"
    )
    version = iam.get_policy(PolicyArn=env.outputs["operator_policy_arn"])["Policy"]["DefaultVersionId"]
    operator_policy = iam.get_policy_version(PolicyArn=env.outputs["operator_policy_arn"], VersionId=version)[
        "PolicyVersion"
    ]["Document"]

    def ec2_actions(doc: dict) -> set[str]:  # the non-S3 actions of statements scoped to an ARN
        return {
            a
            for s in doc["Statement"]
            if s["Resource"] != "*"
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            if not a.startswith("s3:")
        }

    got_user = iam.get_user_policy(UserName="chronos-dev-operator", PolicyName=MOTO_ONLY_POLICY_NAME)
    got_role = iam.get_role_policy(RoleName="chronos-dev-instance", PolicyName=MOTO_ONLY_POLICY_NAME)
    for got, real in ((got_user, operator_policy), (got_role, role_policy)):
        [statement] = got["PolicyDocument"]["Statement"]
        assert statement["Resource"] == "*" and statement["Effect"] == "Allow"
        assert set(statement["Action"]) == ec2_actions(real) != set()


def test_moto_only_allowance_follows_the_documents() -> None:
    doc = {
        "Statement": [
            {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:*:instance/*"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "ec2:DescribeTags"], "Resource": "*"},
            {"Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*"},
        ]
    }
    doc["Statement"].append(
        {
            "Effect": "Allow",
            "Action": ["iam:GetInstanceProfile", "s3:PutObject"],
            "Resource": "arn:aws:iam::123456789012:instance-profile/p",
        }
    )
    allowance = principals.moto_only_allowance([doc])
    assert allowance is not None  # ARN-scoped non-S3 actions only: "*" statements already work in moto
    assert allowance["Statement"][0]["Action"] == ["ec2:RunInstances", "iam:GetInstanceProfile"]
    s3_only = {"Statement": [doc["Statement"][0] | {"Action": "s3:*"}]}
    assert principals.moto_only_allowance([s3_only]) is None


def test_a_second_run_changes_nothing_and_keeps_the_keys(env: Env) -> None:
    before = env.path.read_text()
    again, outputs = env.ensure()  # enforcement on: the admin's keys do it
    assert again == env.record and outputs == env.outputs
    assert env.path.read_text() == before
    op = env.record.envs["dev"].operator
    assert env.client("sts", op).get_caller_identity()["Arn"] == op.arn


def test_a_second_env_joins_an_enforcing_server(env: Env) -> None:
    record, outputs = env.ensure("prod")
    assert set(record.envs) == {"dev", "prod"} and record.envs["dev"] == env.record.envs["dev"]
    prod = record.envs["prod"].operator
    s3 = env.client("s3", prod)
    s3.put_object(Bucket=outputs["bucket"], Key="prod/probe.json", Body=b"{}")
    assert env.client("sts", env.record.envs["dev"].operator).get_caller_identity()


def test_a_lost_record_is_recreated_with_new_keys(env: Env) -> None:
    env.path.unlink()
    env.aws.use_admin(None)  # a new process: nobody knows the admin's keys
    record, _ = env.ensure()
    env.aws.enforce_iam()
    assert record.admin.access_key_id != env.record.admin.access_key_id
    op = record.envs["dev"].operator
    assert env.client("sts", op).get_caller_identity()["Arn"] == op.arn
    with pytest.raises(ClientError):  # the old key is gone
        env.client("sts", env.record.envs["dev"].operator).get_caller_identity()


def test_reset_forgets_the_admin_and_relaxes(local_aws, tmp_path) -> None:
    Env(local_aws, tmp_path / "identities.json")
    assert local_aws.admin is not None
    local_aws.reset()
    assert local_aws.admin is None
    assert local_aws.client("s3").list_buckets()["Buckets"] == []  # the test keys work again


def test_the_recovery_host_may_only_assume_the_recovery_role_and_the_role_only_what_lambda_may(
    env: Env,
) -> None:
    from infra.spec.recovery import lambda_trust_policy

    dev = env.record.envs["dev"]
    host, bucket = dev.recovery_host, env.outputs["bucket"]
    assert host is not None and host.arn == "arn:aws:iam::123456789012:user/chronos-dev-recovery-host"
    assert dev.recovery_role_arn == env.outputs["recovery_role_arn"]
    assert identities.load(env.path) == env.record  # recorded
    assert _denied(lambda: env.client("s3", host).list_objects_v2(Bucket=bucket))
    role = env.aws.client("iam").get_role(RoleName="chronos-dev-recovery")["Role"]
    assert role["AssumeRolePolicyDocument"] == lambda_trust_policy(
        host.arn
    )  # Lambda and the host, one statement
    creds = identities.assume_recovery_role(env.aws.endpoint_url, env.aws.region, dev)
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=env.aws.region,
    )
    s3 = env.aws.client("s3", session=session)
    s3.put_object(Bucket=bucket, Key="dev/logs/20261125-140502/cleanup_status.json", Body=b"{}")
    assert _denied(lambda: s3.put_object(Bucket=bucket, Key="prod/system-state.json", Body=b"{}"))
    assert _denied(lambda: env.aws.client("iam", session=session).create_user(UserName="intruder"))

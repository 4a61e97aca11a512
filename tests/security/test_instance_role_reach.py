"""The dev instance role stays in dev: proven under moto's IAM enforcement and by the IAM evaluator.

Two envs (``dev`` and ``prod``, a bucket each) are provisioned by the real local provisioner
from ``infra.spec``; the calls are signed with the dev instance role's own credentials (the
instance host assumes it with the instance id as session name, as EC2's instance profile
does). Each case is decided twice:

- by moto, which enforces S3 resource ARNs but ignores most conditions (FIELD-NOTES: a
  ``StringLike`` on ``s3:prefix`` passes there);
- by :mod:`localaws.iam_eval` on the role's real policies as stored in IAM (conditions and
  ARNs as AWS evaluates them, IAM User Guide "Policy evaluation logic"), with the request
  context AWS would send (``aws:userid`` ``ROLEID:<instance-id>``, ``s3:prefix``).

Every case must be denied by the evaluator; moto must agree except where it is known to be
more permissive (listed, and noted in RELIABILITY.md). The allowed cases are the control: the
same credentials and the same evaluator grant what the run needs.
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
from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam
from localaws import identities as local_identities
from localaws.iam_eval import Request, evaluate
from reliability import record

ROW = "instance-role-stays-in-its-env"
INSTANCE_ID = "i-0aaaaaaaaaaaaaaaa"
RUN = "2026/11/25-140502"


@dataclass
class Envs:
    dev_bucket: str
    prod_bucket: str
    role: boto3.Session
    role_id: str
    policies: list[dict[str, Any]]
    spec: dict[str, Any]
    client: Callable[..., Any]
    admin_ec2: Any
    launch_template_id: str


def _real_policies(iam: Any, role: str) -> list[dict[str, Any]]:
    """The role's identity policies as IAM stores them (inline and attached managed)."""
    docs = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        docs.append(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(
            PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )
        docs.append(version["PolicyVersion"]["Document"])
    return [json.loads(d) if isinstance(d, str) else d for d in docs]


@pytest.fixture(scope="module")
def envs(moto_server, tmp_path_factory) -> Iterator[Envs]:
    from control.local_backend import LocalBackend
    from control.localdir import LocalDir, write_json
    from control.localenv import provision

    moto_server.reset()
    local_dir = LocalDir(tmp_path_factory.mktemp("reach") / ".local")
    write_json(local_dir.aws_file, {"endpoint_url": moto_server.endpoint_url, "pid": None})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHRONOS_LOCAL_DIR", str(local_dir.root))
        backend = LocalBackend.open(local_dir)
        dev, prod = provision(backend, "dev"), provision(backend, "prod")
        ids = local_identities.load(local_dir.identities_file)
        admin = ids.admin.session("us-east-1")
        s3 = moto_server.client("s3", admin)
        for bucket in (dev["bucket"], prod["bucket"]):
            for key in ("cached-datasets/training-data/2026/01/part-0.parquet", "prod/system-state.json"):
                s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
        creds = local_identities.assume_instance_role(
            moto_server.endpoint_url, "us-east-1", ids.envs["dev"], INSTANCE_ID
        )
        role = boto3.Session(
            creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"], region_name="us-east-1"
        )
        user_id = moto_server.client("sts", role).get_caller_identity()["UserId"]
        iam = moto_server.client("iam", admin)
        role_name = ids.envs["dev"].instance_role_name
        yield Envs(
            dev_bucket=dev["bucket"],
            prod_bucket=prod["bucket"],
            role=role,
            role_id=user_id.split(":", 1)[0],
            policies=_real_policies(iam, role_name),
            spec=spec_iam.instance_role_policy(
                "dev", spec_bucket.bucket_arn(dev["bucket"]), region="us-east-1", account_id=dev["account_id"]
            ),
            client=moto_server.client,
            admin_ec2=moto_server.client("ec2", admin),
            launch_template_id=dev["launch_template_id"],
        )
    moto_server.reset()


@dataclass(frozen=True)
class Case:
    """One call: what boto3 does, and the IAM request AWS would authorize for it."""

    call: Callable[[Any, Envs], Any]
    action: str
    resource: Callable[[Envs], str]
    prefix: str | None = None  # s3:prefix of a listing
    moto_enforces: bool = True  # False: moto is known to allow it (a condition it ignores)


def _obj(bucket: str, key: str) -> Callable[[Envs], str]:
    return lambda e: f"arn:aws:s3:::{getattr(e, bucket)}/{key}"


def _bucket(bucket: str) -> Callable[[Envs], str]:
    return lambda e: f"arn:aws:s3:::{getattr(e, bucket)}"


def _put(bucket: str, key: str, **kw: Any) -> Callable[[Any, Envs], Any]:
    return lambda s3, e: s3.put_object(Bucket=getattr(e, bucket), Key=key, Body=b"{}", **kw)


def _get(bucket: str, key: str) -> Callable[[Any, Envs], Any]:
    return lambda s3, e: s3.get_object(Bucket=getattr(e, bucket), Key=key)["Body"].read()


def _delete(bucket: str, key: str) -> Callable[[Any, Envs], Any]:
    return lambda s3, e: s3.delete_object(Bucket=getattr(e, bucket), Key=key)


def _list(bucket: str, prefix: str | None) -> Callable[[Any, Envs], Any]:
    extra = {"Prefix": prefix} if prefix is not None else {}
    return lambda s3, e: s3.list_objects_v2(Bucket=getattr(e, bucket), **extra)


CACHED = "cached-datasets/training-data/2026/01/part-0.parquet"
DENIED: dict[str, Case] = {
    "read another env's state in its own bucket": Case(
        _get("dev_bucket", "prod/system-state.json"),
        "s3:GetObject",
        _obj("dev_bucket", "prod/system-state.json"),
    ),
    "take another env's lock in its own bucket": Case(
        _put("dev_bucket", "prod/system-state.json", IfNoneMatch="*"),
        "s3:PutObject",
        _obj("dev_bucket", "prod/system-state.json"),
    ),
    "read prod's state": Case(
        _get("prod_bucket", "prod/system-state.json"),
        "s3:GetObject",
        _obj("prod_bucket", "prod/system-state.json"),
    ),
    "overwrite prod's lock": Case(
        _put("prod_bucket", "prod/system-state.json"),
        "s3:PutObject",
        _obj("prod_bucket", "prod/system-state.json"),
    ),
    "release prod's lock": Case(
        _delete("prod_bucket", "prod/system-state.json"),
        "s3:DeleteObject",
        _obj("prod_bucket", "prod/system-state.json"),
    ),
    "write prod's run outputs": Case(
        _put("prod_bucket", f"prod/{RUN}/_SUCCESS"),
        "s3:PutObject",
        _obj("prod_bucket", f"prod/{RUN}/_SUCCESS"),
    ),
    "write its own env's name in prod's bucket": Case(
        _put("prod_bucket", f"dev/{RUN}/_SUCCESS"), "s3:PutObject", _obj("prod_bucket", f"dev/{RUN}/_SUCCESS")
    ),
    "read prod's cached datasets": Case(
        _get("prod_bucket", CACHED), "s3:GetObject", _obj("prod_bucket", CACHED)
    ),
    "rewrite its run's launch request (recovery relaunches from it)": Case(
        _put("dev_bucket", f"dev/{RUN}/user-configs/launch-request.json"),
        "s3:PutObject",
        _obj("dev_bucket", f"dev/{RUN}/user-configs/launch-request.json"),
    ),
    "delete its run's spec": Case(
        _delete("dev_bucket", f"dev/{RUN}/user-configs/run-spec.json"),
        "s3:DeleteObject",
        _obj("dev_bucket", f"dev/{RUN}/user-configs/run-spec.json"),
    ),
    "write the code bundles": Case(
        _put("dev_bucket", "cached-datasets/scripts/code-0.tar.gz"),
        "s3:PutObject",
        _obj("dev_bucket", "cached-datasets/scripts/code-0.tar.gz"),
    ),
    "overwrite the training data": Case(
        _put("dev_bucket", CACHED), "s3:PutObject", _obj("dev_bucket", CACHED)
    ),
    "delete the training data": Case(
        _delete("dev_bucket", CACHED), "s3:DeleteObject", _obj("dev_bucket", CACHED)
    ),
    "list prod's bucket": Case(
        _list("prod_bucket", "prod/"), "s3:ListBucket", _bucket("prod_bucket"), "prod/"
    ),
    "list another env's prefix in its own bucket": Case(
        _list("dev_bucket", "prod/"), "s3:ListBucket", _bucket("dev_bucket"), "prod/", moto_enforces=False
    ),
    "list its whole bucket": Case(
        _list("dev_bucket", None), "s3:ListBucket", _bucket("dev_bucket"), None, moto_enforces=False
    ),
}
ALLOWED: dict[str, Case] = {
    "read the training data": Case(_get("dev_bucket", CACHED), "s3:GetObject", _obj("dev_bucket", CACHED)),
    "write its run outputs": Case(
        _put("dev_bucket", f"dev/{RUN}/models/config.json"),
        "s3:PutObject",
        _obj("dev_bucket", f"dev/{RUN}/models/config.json"),
    ),
    "take and release its own lock": Case(
        lambda s3, e: (
            _put("dev_bucket", "dev/system-state.json", IfNoneMatch="*")(s3, e),
            _delete("dev_bucket", "dev/system-state.json")(s3, e),
        ),
        "s3:PutObject",
        _obj("dev_bucket", "dev/system-state.json"),
    ),
    "list its own env": Case(_list("dev_bucket", "dev/"), "s3:ListBucket", _bucket("dev_bucket"), "dev/"),
    "list the cached datasets": Case(
        _list("dev_bucket", "cached-datasets/training-data/"),
        "s3:ListBucket",
        _bucket("dev_bucket"),
        "cached-datasets/training-data/",
    ),
}


def _decision(envs: Envs, case: Case) -> str:
    context: dict[str, Any] = {"aws:userid": f"{envs.role_id}:{INSTANCE_ID}", "aws:SecureTransport": "true"}
    if case.prefix is not None:
        context["s3:prefix"] = case.prefix
    return evaluate(envs.policies, Request(case.action, case.resource(envs), context)).effect


def _moto_denies(envs: Envs, case: Case) -> bool:
    try:
        case.call(envs.client("s3", envs.role), envs)
    except ClientError as exc:
        if is_access_denied(exc):
            return True
        raise
    return False


@pytest.mark.row(ROW)
def test_the_role_holds_the_specs_s3_statements(envs: Envs) -> None:
    real = [s for policy in envs.policies for s in policy["Statement"]]
    spec_s3 = [s for s in envs.spec["Statement"] if any(a.startswith("s3:") for a in s["Action"])]
    assert len(spec_s3) >= 3
    for statement in spec_s3:
        assert statement in real, statement["Sid"]
    assert not any(s["Effect"] == "Allow" and s["Action"] in ("*", "s3:*") for s in real)


@pytest.mark.row(ROW)
@pytest.mark.parametrize("what", sorted(DENIED))
def test_the_instance_role_is_denied_outside_its_env(envs: Envs, what: str) -> None:
    case = DENIED[what]
    assert _decision(envs, case) != "Allow", f"the IAM evaluator allows: {what}"
    denied_by_moto = _moto_denies(envs, case)
    if case.moto_enforces:
        assert denied_by_moto, f"moto allows: {what}"
    elif not denied_by_moto:
        record.note(
            ROW, f"moto allows '{what}' (it ignores the s3:prefix condition); the evaluator denies it"
        )


@pytest.mark.row(ROW)
@pytest.mark.parametrize("what", sorted(ALLOWED))
def test_the_instance_role_may_do_what_a_run_needs(envs: Envs, what: str) -> None:
    case = ALLOWED[what]
    assert _decision(envs, case) == "Allow", what
    assert not _moto_denies(envs, case), what


@pytest.mark.row("imdsv2-required-at-launch")
def test_the_provisioned_launch_template_requires_tokens(envs: Envs) -> None:
    """The template the local provisioner made (from infra.spec) is what every launch starts from."""
    (version,) = envs.admin_ec2.describe_launch_template_versions(
        LaunchTemplateId=envs.launch_template_id, Versions=["$Default"]
    )["LaunchTemplateVersions"]
    options = version["LaunchTemplateData"]["MetadataOptions"]
    assert (options["HttpTokens"], options["HttpPutResponseHopLimit"], options["HttpEndpoint"]) == (
        "required",
        1,
        "enabled",
    )

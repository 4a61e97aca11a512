"""The opt-in debug profile (stack config ``debug_profile``): absent by default, complete when on.

Pulumi program under mocks, the policy documents themselves (conditions included, linted
with parliament), the outputs reader, and the local provisioner that mirrors the stack.
"""

from __future__ import annotations

import json
import runpy
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulumi
import pytest
from iam_eval import Request, allowed
from pulumi_harness import ACCOUNT, PROJECT, REGION, DeclaredStack, RecordingMocks, run_program

from infra.config import StackConfig
from infra.local import ProvisionOptions, provision
from infra.outputs import DEBUG_OUTPUT_KEYS, OUTPUT_KEYS, RECOVERY_OUTPUT_KEYS, OutputsError, read_outputs
from infra.spec import bucket as spec_bucket
from infra.spec import debug as spec_debug
from infra.spec import iam as spec_iam
from infra.spec import names as spec_names
from infra.spec import operator_access as spec_operator
from infra.spec import zero_idle as spec_zero_idle
from infra.stack import build_stack

ROLE = "aws:iam/role:Role"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
DEBUG_ON = ProvisionOptions(debug_profile=True)
DEBUG_SIDS = {
    "PassTheDebugRole",
    "DebugSessionsOnTaggedInstances",
    "DebugSessionsWithTheDefaultDocument",
    "DebugOwnSessionsOnly",
}
BUCKET = spec_bucket.bucket_arn(spec_names.bucket_name("dev", ACCOUNT, REGION))
LT_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0abc"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance"
DEBUG_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance-debug"
VPC_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1"
TAGGED = {"ssm:resourceTag/Project": "Chronos-Training", "ssm:resourceTag/Environment": "dev"}
TO_EC2 = {"iam:PassedToService": "ec2.amazonaws.com"}


def declare(**config: Any) -> DeclaredStack:
    cfg = StackConfig(**{"env": "dev", **config})
    return run_program(lambda: build_stack(cfg), RecordingMocks())


@pytest.fixture(scope="module")
def plain() -> DeclaredStack:
    return declare()


@pytest.fixture(scope="module")
def debug() -> DeclaredStack:
    return declare(debug_profile=True)


def _sids(document: dict[str, Any]) -> set[str]:
    return {s["Sid"] for s in document["Statement"]}


ALWAYS = set(OUTPUT_KEYS) | set(RECOVERY_OUTPUT_KEYS)


def _instance_roles(declared: DeclaredStack) -> list[Any]:
    """The roles instances run with (the recovery function's role is the Lambda's)."""
    return [r for r in declared.of_type(ROLE) if r.inputs["name"].startswith("chronos-dev-instance")]


def _operator(declared: DeclaredStack) -> dict[str, Any]:
    return json.loads(declared.one("aws:iam/policy:Policy")["policy"])


# --------------------------------------------------------------- Pulumi program


def test_off_by_default_nothing_of_it_exists(plain: DeclaredStack) -> None:
    assert [r.inputs["name"] for r in _instance_roles(plain)] == ["chronos-dev-instance"]
    assert [r.inputs["name"] for r in plain.of_type(PROFILE)] == ["chronos-dev-instance"]
    assert plain.of_type(ATTACHMENT) == []
    assert not set(DEBUG_OUTPUT_KEYS) & set(plain.outputs)
    assert not read_outputs(plain.outputs).has_debug_profile
    assert not _sids(_operator(plain)) & DEBUG_SIDS
    assert not any(
        s.startswith("ssm:") and s != "ssm:GetParameter" and s != "ssm:GetParameters"
        for st in _operator(plain)["Statement"]
        for s in st["Action"]
    )


def test_on_a_second_role_with_the_instance_roles_policy_and_session_manager(debug: DeclaredStack) -> None:
    roles = {r.inputs["name"]: r for r in _instance_roles(debug)}
    assert set(roles) == {"chronos-dev-instance", "chronos-dev-instance-debug"}
    role = roles["chronos-dev-instance-debug"]
    assert json.loads(role.inputs["assumeRolePolicy"]) == spec_iam.instance_trust_policy()
    policies = [r for r in debug.of_type("aws:iam/rolePolicy:RolePolicy") if "instance" in r.name]
    inline = {r.inputs["name"]: json.loads(r.inputs["policy"]) for r in policies}
    bucket_arn = f"arn:aws:s3:::{debug.outputs['bucket']}"
    expected = spec_iam.instance_role_policy("dev", bucket_arn, region=REGION, account_id=ACCOUNT)
    assert inline == {
        "chronos-dev-instance-least-privilege": expected,
        "chronos-dev-instance-debug-least-privilege": expected,
    }
    (attachment,) = debug.of_type(ATTACHMENT)
    assert attachment.inputs["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    assert attachment.inputs["role"] == "chronos-dev-instance-debug"
    profiles = {r.inputs["name"]: r.inputs["role"] for r in debug.of_type(PROFILE)}
    assert profiles["chronos-dev-instance-debug"] == "chronos-dev-instance-debug"


def test_on_the_normal_instance_role_and_launch_template_are_unchanged(
    plain: DeclaredStack, debug: DeclaredStack
) -> None:
    lt = "aws:ec2/launchTemplate:LaunchTemplate"
    assert debug.one(lt) == plain.one(lt)
    assert debug.one(lt)["iamInstanceProfile"] == {"arn": debug.outputs["instance_profile_arn"]}
    for group in debug.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert group.inputs["ingress"] == []  # a debug session opens no port


def test_on_its_outputs_are_exported_and_read(debug: DeclaredStack) -> None:
    assert set(debug.outputs) == ALWAYS | set(DEBUG_OUTPUT_KEYS)
    outputs = read_outputs(debug.outputs)
    assert outputs.has_debug_profile
    assert outputs.debug_instance_profile_arn == (
        f"arn:aws:iam::{ACCOUNT}:instance-profile/chronos-dev-instance-debug"
    )
    assert outputs.debug_role_arn == DEBUG_ROLE_ARN
    assert outputs.debug_instance_profile_arn != outputs.instance_profile_arn


def test_on_the_operator_may_pass_the_debug_role_named_by_the_stack(debug: DeclaredStack) -> None:
    document = _operator(debug)
    assert _sids(document) >= DEBUG_SIDS
    assert allowed(document, Request("iam:PassRole", debug.outputs["debug_role_arn"], TO_EC2))
    assert allowed(document, Request("iam:PassRole", debug.outputs["instance_role_arn"], TO_EC2))


def test_on_the_stack_is_still_zero_idle(debug: DeclaredStack) -> None:
    assert spec_zero_idle.idle_cost_violations((r.typ, r.inputs) for r in debug.resources) == []
    assert ATTACHMENT in spec_zero_idle.ZERO_IDLE_RESOURCE_TYPES


def test_on_the_debug_component_registers_its_outputs(registered: dict[str, dict[str, Any]]) -> None:
    declare(debug_profile=True)
    assert set(registered["DebugInstanceIdentity"]) == {"role_arn", "instance_profile_arn"}


def test_the_stack_config_key_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``pulumi config set debug_profile true`` does, through ``__main__.py``."""
    main = Path(__file__).resolve().parents[2] / "__main__.py"
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda key, value: exported.__setitem__(key, value))

    def program() -> dict[str, Any]:
        pulumi.runtime.set_all_config({"aws:region": REGION, f"{PROJECT}:debug_profile": "true"})
        runpy.run_path(str(main), run_name="__main__")
        return exported

    try:
        outputs = run_program(program, RecordingMocks()).outputs
    finally:
        pulumi.runtime.set_all_config({})
    assert read_outputs(outputs).has_debug_profile


# ----------------------------------------------------------- policy documents

PLAIN_SCOPE = spec_operator.OperatorScope(
    env="dev",
    region=REGION,
    account_id=ACCOUNT,
    bucket_arn=BUCKET,
    launch_template_arn=LT_ARN,
    role_arn=ROLE_ARN,
    vpc_arn=VPC_ARN,
)
PLAIN_OPERATOR = spec_operator.operator_policy(PLAIN_SCOPE)
DEBUG_OPERATOR = spec_operator.operator_policy(replace(PLAIN_SCOPE, debug_role_arn=DEBUG_ROLE_ARN))
INSTANCE_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0aaaaaaaaaaaaaaaa"
DEFAULT_DOC = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/SSM-SessionManagerRunShell"
OWN_SESSION = f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/alice-0123456789abcdef0"
OTHER_SESSION = f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/bob-0123456789abcdef0"


def test_debug_statements_are_only_appended() -> None:
    assert DEBUG_OPERATOR["Statement"][: len(PLAIN_OPERATOR["Statement"])] == PLAIN_OPERATOR["Statement"]
    assert _sids(DEBUG_OPERATOR) - _sids(PLAIN_OPERATOR) == DEBUG_SIDS
    assert spec_debug.debug_operator_statements("dev", None, region=REGION, account_id=ACCOUNT) == []


def test_debug_role_passes_only_to_ec2() -> None:
    assert allowed(DEBUG_OPERATOR, Request("iam:PassRole", DEBUG_ROLE_ARN, TO_EC2))
    lam = {"iam:PassedToService": "lambda.amazonaws.com"}
    assert not allowed(DEBUG_OPERATOR, Request("iam:PassRole", DEBUG_ROLE_ARN, lam))
    assert not allowed(PLAIN_OPERATOR, Request("iam:PassRole", DEBUG_ROLE_ARN, TO_EC2))


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (TAGGED, True),
        ({}, False),
        ({**TAGGED, "ssm:resourceTag/Environment": "prod"}, False),
        ({**TAGGED, "ssm:resourceTag/Project": "Other"}, False),
    ],
    ids=["this-env", "untagged", "other-env", "other-project"],
)
def test_sessions_start_only_on_this_envs_tagged_instances(context: dict, expected: bool) -> None:
    assert allowed(DEBUG_OPERATOR, Request("ssm:StartSession", INSTANCE_ARN, context)) is expected
    assert not allowed(PLAIN_OPERATOR, Request("ssm:StartSession", INSTANCE_ARN, TAGGED))


def test_sessions_use_the_default_shell_document_only() -> None:
    assert allowed(DEBUG_OPERATOR, Request("ssm:StartSession", DEFAULT_DOC))
    checked = {"ssm:SessionDocumentAccessCheck": "true"}
    assert allowed(DEBUG_OPERATOR, Request("ssm:StartSession", DEFAULT_DOC, checked))
    port_forwarding = f"arn:aws:ssm:{REGION}::document/AWS-StartPortForwardingSession"
    assert not allowed(DEBUG_OPERATOR, Request("ssm:StartSession", port_forwarding))


@pytest.mark.parametrize("action", ["ssm:ResumeSession", "ssm:TerminateSession"])
def test_operators_resume_and_end_only_their_own_sessions(action: str) -> None:
    alice = {"aws:username": "alice"}
    assert allowed(DEBUG_OPERATOR, Request(action, OWN_SESSION, alice))
    assert not allowed(DEBUG_OPERATOR, Request(action, OTHER_SESSION, alice))
    assert not allowed(DEBUG_OPERATOR, Request(action, OWN_SESSION, {}))  # no user name: nothing


def test_the_debug_role_has_exactly_the_instance_roles_inline_policy() -> None:
    same = {"region": REGION, "account_id": ACCOUNT}
    assert spec_debug.debug_role_policy("dev", BUCKET, **same) == spec_iam.instance_role_policy(
        "dev", BUCKET, **same
    )
    assert spec_debug.debug_managed_policy_arns() == ("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",)
    assert spec_debug.debug_role_name("dev") == "chronos-dev-instance-debug"


def _blocking(parliament: types.ModuleType, document: dict[str, Any]) -> list[tuple[str, str, str]]:
    policy = parliament.analyze_policy_string(json.dumps(document))
    findings = [parliament.enhance_finding(f) for f in policy.findings]
    return [
        (f.severity, f.issue, json.dumps(f.detail, sort_keys=True))
        for f in findings
        if f.severity in {"MEDIUM", "HIGH", "CRITICAL"}
    ]


def test_parliament_finds_nothing_of_medium_severity_in_the_debug_statements(
    parliament_module: types.ModuleType,
) -> None:
    statements = spec_debug.debug_operator_statements(
        "dev", DEBUG_ROLE_ARN, region=REGION, account_id=ACCOUNT
    )
    assert _blocking(parliament_module, {"Version": "2012-10-17", "Statement": statements}) == []
    assert _blocking(parliament_module, DEBUG_OPERATOR) == _blocking(parliament_module, PLAIN_OPERATOR)


# -------------------------------------------------------------------- outputs


def test_debug_outputs_come_both_or_not_at_all(debug: DeclaredStack) -> None:
    half = {k: v for k, v in debug.outputs.items() if k != "debug_role_arn"}
    with pytest.raises(OutputsError, match="debug_role_arn"):
        read_outputs(half)
    with pytest.raises(OutputsError, match="debug_role_arn"):
        read_outputs({**debug.outputs, "debug_role_arn": ""})
    round_trip = read_outputs(debug.outputs).to_dict()
    assert read_outputs(round_trip) == read_outputs(debug.outputs)
    plain = {k: v for k, v in debug.outputs.items() if k not in DEBUG_OUTPUT_KEYS}
    assert set(read_outputs(plain).to_dict()) == ALWAYS


# ---------------------------------------------------------- local provisioner


@pytest.fixture(scope="module")
def local_aws(moto_server: Any) -> Iterator[Any]:
    moto_server.reset()
    yield moto_server
    moto_server.reset()


def _iam_state(iam: Any) -> dict[str, Any]:
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    profiles = {
        p["InstanceProfileName"]: [r["RoleName"] for r in p["Roles"]]
        for p in iam.list_instance_profiles()["InstanceProfiles"]
    }
    return {"roles": roles, "profiles": profiles}


def test_local_provisioner_mirrors_the_flag_on_then_off(local_aws: Any) -> None:
    session = local_aws.session()
    iam = local_aws.client("iam", session)
    outputs = provision(session, env="dev", endpoint_url=local_aws.endpoint_url, options=DEBUG_ON)
    assert set(outputs) == ALWAYS | set(DEBUG_OUTPUT_KEYS)
    read = read_outputs(outputs)
    assert read.debug_role_arn.endswith(":role/chronos-dev-instance-debug")
    assert read.debug_instance_profile_arn.endswith(":instance-profile/chronos-dev-instance-debug")
    state = _iam_state(iam)
    assert state["profiles"]["chronos-dev-instance-debug"] == ["chronos-dev-instance-debug"]
    inline = iam.get_role_policy(
        RoleName="chronos-dev-instance-debug", PolicyName="chronos-dev-instance-debug-least-privilege"
    )["PolicyDocument"]
    assert inline == spec_iam.instance_role_policy(
        "dev", spec_bucket.bucket_arn(outputs["bucket"]), region="us-east-1", account_id=outputs["account_id"]
    )
    version = iam.get_policy(PolicyArn=outputs["operator_policy_arn"])["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=outputs["operator_policy_arn"], VersionId=version)
    operator = document["PolicyVersion"]["Document"]
    assert _sids(operator) >= DEBUG_SIDS
    assert allowed(operator, Request("iam:PassRole", read.debug_role_arn, TO_EC2))

    again = provision(session, env="dev", endpoint_url=local_aws.endpoint_url, options=DEBUG_ON)
    assert again == outputs and _iam_state(iam) == state

    off = provision(session, env="dev", endpoint_url=local_aws.endpoint_url)
    assert set(off) == ALWAYS
    assert "chronos-dev-instance-debug" not in _iam_state(iam)["roles"]
    assert "chronos-dev-instance-debug" not in _iam_state(iam)["profiles"]
    version = iam.get_policy(PolicyArn=off["operator_policy_arn"])["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=off["operator_policy_arn"], VersionId=version)
    assert not _sids(document["PolicyVersion"]["Document"]) & DEBUG_SIDS

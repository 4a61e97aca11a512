"""The local instance's supervisor: it boots the user data from moto with bash, the instance role's
credentials only through the fake IMDS, and mirrors power-off and outside termination like EC2."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from control.local_instance import InstanceFacts, spawn
from control.localdir import LocalDir, pid_alive, read_json, write_json

ROLE = "chronos-dev-instance"
PROBE = """#!/bin/bash
set -euo pipefail
export AWS_DEFAULT_REGION=us-east-1
shutdown -P +30 "chronos: max runtime of 30 min reached"
env > "$CHRONOS_ROOT/env.txt"
aws sts get-caller-identity --query Arn --output text > "$CHRONOS_ROOT/arn.txt"
"$CHRONOS_ROOT/opt/pytorch/bin/python3" -c 'import torch, boto3' && echo ok > "$CHRONOS_ROOT/ami.txt"
{body}
"""


def _instance(local_aws, local_dir: LocalDir, user_data: str) -> str:
    iam, ec2 = local_aws.client("iam"), local_aws.client("ec2")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}
        ],
    }
    role = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName=ROLE)["InstanceProfile"]["Arn"]
    write_json(local_dir.stack_file("dev"), {"instance_role_arn": role, "instance_profile_arn": profile})
    image = ec2.describe_images()["Images"][0]["ImageId"]
    resp = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="g5.xlarge", UserData=user_data
    )
    return str(resp["Instances"][0]["InstanceId"])


def _spawn(local_aws, local_dir: LocalDir, instance_id: str, **env: str) -> int:
    return spawn(
        local_dir=local_dir,
        instance_id=instance_id,
        endpoint_url=local_aws.endpoint_url,
        env_vars={**local_aws.env(), **env},
        python=sys.executable,
        facts=InstanceFacts(
            bucket="b",
            env="dev",
            run_id="20261125-140502",
            region="us-east-1",
            instance_type="g5.xlarge",
            availability_zone="us-east-1a",
            market="spot",
            max_runtime_minutes=30,
        ),
    )


def _state(local_aws, instance_id: str) -> str:
    found = local_aws.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(found[0]["Instances"][0]["State"]["Name"])


def _wait(predicate, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail("timed out")


def test_user_data_runs_under_the_instance_role_and_shutdown_terminates(local_aws, local_dir, tmp_path):
    audit_log = tmp_path / "audit.jsonl"
    instance_id = _instance(local_aws, local_dir, PROBE.format(body="sudo -n shutdown -h now\nsleep 60"))
    pid = _spawn(local_aws, local_dir, instance_id, CHRONOS_IAM_AUDIT_LOG=str(audit_log))
    record_file = local_dir.instance_file(instance_id)
    _wait(lambda: (read_json(record_file) or {}).get("ended_at") is not None)
    record = read_json(record_file) or {}
    console = Path(record["console_log"]).read_text()
    assert _state(local_aws, instance_id) in ("shutting-down", "terminated"), console
    root = Path(record["root"])
    assert (root / "arn.txt").read_text().strip() == (
        f"arn:aws:sts::123456789012:assumed-role/{ROLE}/{instance_id}"
    ), console
    env = dict(line.split("=", 1) for line in (root / "env.txt").read_text().splitlines() if "=" in line)
    for absent in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
        "VIRTUAL_ENV",
        "PYTHONPATH",
    ):
        assert absent not in env, absent
    assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == record["imds_url"]
    assert env["CHRONOS_ROOT"] == str(root) and env["HOME"] == str(root / "root")
    assert env["PATH"].split(":")[0].endswith("/shims") and env["HF_HUB_OFFLINE"] == "1"
    assert (root / "ami.txt").read_text().strip() == "ok"
    deadline_file = local_dir.instance_dir(instance_id) / "power" / "deadline"
    deadline = float(deadline_file.read_text())
    # the dead-man switch reached the host: +30 min from when the shim wrote it (its own stamp, not now)
    assert 29 * 60 < deadline - deadline_file.stat().st_mtime <= 30 * 60
    assert record["exit_code"] is not None and record["exit_code"] != 0  # `sleep 60` was stopped
    _wait(lambda: not pid_alive(pid) and not pid_alive(record["trainer_pid"]), timeout=20)

    lines = [json.loads(line) for line in audit_log.read_text().splitlines()]
    [creds] = [line for line in lines if line.get("kind") == "credentials"]
    assert creds["session_name"] == instance_id and creds["role_id"].startswith("AROA")
    assert creds["access_key_id"].startswith("ASIA")
    calls = [line for line in lines if line.get("kind") == "call"]
    if calls:  # the AMI Python's .pth installed localaws.audit in the instance's aws CLI
        assert any(
            c["operation"] == "GetCallerIdentity" and c["access_key_id"] == creds["access_key_id"]
            for c in calls
        )


def test_terminated_from_outside_stops_every_process_of_the_instance(local_aws, local_dir):
    body = 'sleep 300 &\necho "$!" > "$CHRONOS_ROOT/sleep.pid"\nwait'
    instance_id = _instance(local_aws, local_dir, PROBE.format(body=body))
    _spawn(local_aws, local_dir, instance_id)
    record_file = local_dir.instance_file(instance_id)
    _wait(lambda: Path((read_json(record_file) or {}).get("root", "/nonexistent"), "sleep.pid").exists())
    record = read_json(record_file) or {}
    sleeper = int(Path(record["root"], "sleep.pid").read_text())
    assert pid_alive(sleeper)
    local_aws.client("ec2").terminate_instances(InstanceIds=[instance_id])
    _wait(lambda: (read_json(record_file) or {}).get("ended_at") is not None, timeout=30)
    _wait(lambda: not pid_alive(sleeper), timeout=15)
    console = Path(record["console_log"]).read_text()
    assert "from outside: OS shutdown" in console


def test_user_data_is_read_from_moto_base64(local_aws, local_dir):
    instance_id = _instance(local_aws, local_dir, "#!/bin/bash\necho hi\n")
    raw = local_aws.client("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert base64.b64decode(raw["UserData"]["Value"]).decode() == "#!/bin/bash\necho hi\n"

"""Every error a user can cause: one line that says what to do, exit code 2, nothing created."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests

from common.state_store import StateStore, new_state
from common.timeutil import iso
from control.localdir import write_json


@pytest.fixture
def unchanged(inventory):
    """Assert at the end of the test that the local AWS holds exactly what it held at the start."""
    before = {}

    def snapshot():
        before.update(inventory())

    yield snapshot
    assert before, "call unchanged() once the world is set up"
    assert inventory() == before


def test_unknown_env_name(dev, cli, error_line, unchanged):
    unchanged()
    proc = cli("launch", "--env=Prod_1", "--local")
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("error: unknown env") and "lowercase letters" in line


def test_env_that_was_never_provisioned(dev, cli, error_line, unchanged):
    unchanged()
    proc = cli("launch", "--env=staging", "--local")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "unknown env 'staging'" in line and "provisioned: dev" in line
    assert "invoke local.up --env=staging" in line


def test_malformed_spec_names_the_json_path(dev, cli, error_line, unchanged, tmp_path):
    spec = tmp_path / "run.toml"
    spec.write_text('[model]\nnum_steps = "many"\n')
    unchanged()
    proc = cli("launch", "--env=dev", "--local", f"--spec={spec}")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "$.model.num_steps" in line and str(spec) in line


def test_bad_instance_type_on_the_command_line(dev, cli, error_line, unchanged):
    unchanged()
    proc = cli("launch", "--env=dev", "--local", "--instance-type=p3.2xlarge")
    assert proc.returncode == 2
    assert "$.instance.types[0]" in error_line(proc)


def test_missing_stack_outputs(dev, cli, error_line, unchanged, local_dir):
    broken = {k: v for k, v in dev.items() if k != "launch_template_id"}
    write_json(local_dir.stack_file("dev"), broken)
    unchanged()
    proc = cli("launch", "--env=dev", "--local")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "missing stack outputs" in line and "launch_template_id" in line


def test_missing_stack_outputs_on_aws(cli, error_line, unchanged, local_aws, tmp_path):
    # The AWS path against the local endpoint: credentials work, but no stack outputs exist.
    unchanged()
    proc = cli(
        "launch",
        "--env=dev",
        env={
            "AWS_ENDPOINT_URL": local_aws.endpoint_url,
            "CHRONOS_STACK_OUTPUTS": str(tmp_path / "{env}.json"),
        },
    )
    assert proc.returncode == 2
    line = error_line(proc)
    assert "unknown env 'dev'" in line and "pulumi up --stack dev" in line


def test_no_credentials(cli, error_line, unchanged, tmp_path):
    unchanged()
    proc = cli(
        "launch",
        "--env=dev",
        env={
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        drop=(
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "CHRONOS_LOCAL",
        ),
    )
    assert proc.returncode == 2
    line = error_line(proc)
    assert "no AWS credentials found" in line and "aws configure" in line


def test_a_run_already_active(dev, cli, error_line, unchanged, local_aws):
    store = StateStore(local_aws.client("s3"), dev["bucket"], "dev")
    started = iso(datetime.now(UTC))
    store.acquire(new_state(env="dev", run_id="20261125-140502", market="spot", total_steps=10, now=started))
    store.transition("20261125-140502", __import__("common.status").status.RunStatus.DATA_SYNC)
    unchanged()
    proc = cli("launch", "--env=dev", "--local")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "a run is already active in env 'dev': 20261125-140502 (data_sync since" in line
    assert "invoke kill --env=dev" in line


def test_access_denied(dev, cli, error_line, unchanged, local_aws):
    iam = local_aws.client("iam")
    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    admin = iam.create_access_key(UserName="admin")["AccessKey"]
    iam.create_user(UserName="viewer")
    iam.put_user_policy(
        UserName="viewer",
        PolicyName="describe-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["sts:GetCallerIdentity", "ec2:Describe*"], "Resource": "*"}
                ],
            }
        ),
    )
    viewer = iam.create_access_key(UserName="viewer")["AccessKey"]
    unchanged()
    requests.post(f"{local_aws.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        proc = cli(
            "launch",
            "--env=dev",
            "--local",
            env={
                "AWS_ACCESS_KEY_ID": viewer["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": viewer["SecretAccessKey"],
            },
        )
    finally:
        admin_s3 = local_aws.client(
            "s3", session=local_aws.session(admin["AccessKeyId"], admin["SecretAccessKey"])
        )
        admin_s3.list_buckets()
        requests.post(f"{local_aws.endpoint_url}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("error: access denied: s3:GetObject on s3://") and "system-state.json" in line


def test_verify_with_an_unknown_env(cli, error_line, local_dir):
    proc = cli("verify", "--env=qa", "--local")
    assert proc.returncode == 2
    assert "unknown env 'qa'" in error_line(proc)


def test_local_mode_without_local_aws(cli, error_line, local_dir):
    local_dir.aws_file.unlink()
    proc = cli("monitor", "--env=dev", "--local")
    assert proc.returncode == 2
    assert "local AWS is not running" in error_line(proc) and "invoke local.up" in error_line(proc)

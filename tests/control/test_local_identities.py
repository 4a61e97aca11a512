"""Local mode's control plane works as the env's operator, under moto's IAM enforcement."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from common.aws import is_access_denied
from common.errors import ConfigError
from control.local_backend import LocalBackend
from control.localdir import PROJECT_ROOT
from control.localenv import exports, provision
from localaws import identities

AWS_CLI = str(Path(sys.executable).with_name("aws"))


def _operator(local_dir, env: str = "dev") -> identities.Keys:
    record = identities.load(local_dir.identities_file)
    assert record is not None
    return record.envs[env].operator


def test_the_control_plane_is_the_operator(dev, local_dir) -> None:
    backend = LocalBackend.open(local_dir)
    identity = backend.check_credentials()  # before the env is known: checked once it is
    backend.stack_outputs("dev")
    assert identity["arn"] == _operator(local_dir).arn
    assert identity["arn"] == "arn:aws:iam::123456789012:user/chronos-dev-operator"
    assert backend.check_credentials()["arn"] == _operator(local_dir).arn


def test_moto_refuses_the_control_plane_what_the_operator_policy_lacks(dev, backend) -> None:
    backend.stack_outputs("dev")
    for call in (
        lambda: backend.clients().s3.delete_bucket(Bucket=dev["bucket"]),
        lambda: backend.client("iam").create_user(UserName="intruder"),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert is_access_denied(caught.value)


def test_invoke_works_as_the_operator(dev, cli) -> None:
    proc = cli("runs", "--env=dev", "--local")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_local_env_exports_the_operators_keys_for_the_aws_cli(dev, cli, local_dir) -> None:
    proc = cli("local.env", "--env=dev")
    assert proc.returncode == 0, proc.stderr
    exported = dict(
        shlex.split(line)[1].split("=", 1) for line in proc.stdout.splitlines() if line.startswith("export ")
    )
    assert exported["AWS_ACCESS_KEY_ID"] == _operator(local_dir).access_key_id
    assert exported == exports(local_dir, env="dev")
    env = {**os.environ, **exported}
    who = subprocess.run(
        [AWS_CLI, "sts", "get-caller-identity", "--query", "Arn", "--output", "text"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert who.stdout.strip() == _operator(local_dir).arn, who.stderr
    listed = subprocess.run(
        [AWS_CLI, "s3", "ls", f"s3://{dev['bucket']}/cached-datasets/"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and "training-data/" in listed.stdout, listed.stderr


def test_a_second_env_on_an_enforcing_server(dev, backend, local_dir) -> None:
    prod = provision(LocalBackend.open(local_dir), "prod")
    prod_backend = LocalBackend.open(local_dir, env="prod")
    assert prod_backend.check_credentials()["arn"] == _operator(local_dir, "prod").arn
    dev_backend = LocalBackend.open(local_dir, env="dev")
    assert dev_backend.check_credentials()["arn"] == _operator(local_dir).arn
    with pytest.raises(ClientError) as caught:  # the dev operator may not write prod's state
        dev_backend.clients().s3.put_object(Bucket=prod["bucket"], Key="prod/system-state.json", Body=b"{}")
    assert is_access_denied(caught.value)


def test_an_env_without_identities_is_refused_with_the_fix(dev, local_dir) -> None:
    with pytest.raises(ConfigError, match=r"invoke local.up --env=qa"):
        LocalBackend.open(local_dir, env="qa")


def test_without_a_record_the_default_chain_is_used(local_dir) -> None:
    backend = LocalBackend.open(local_dir, env="dev")
    assert backend.credentials_env()["AWS_ACCESS_KEY_ID"] == "testing"
    assert backend.check_credentials()["account"] == "123456789012"


def test_local_up_with_the_debug_profile_provisions_it_under_enforcement(local_dir) -> None:
    """`invoke local.up --debug-profile` mirrors the stack flag: a debug spec can launch locally."""
    from control.local_backend import LocalBackend
    from control.localenv import provision

    backend = LocalBackend.open(local_dir)
    outputs = provision(backend, "dev", debug_profile=True)
    assert outputs["debug_instance_profile_arn"].endswith(":instance-profile/chronos-dev-instance-debug")
    assert backend.check_credentials()["arn"].endswith(":user/chronos-dev-operator")

"""Every error a user can cause: one line that says what to do, exit code 2, nothing created."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests

from common.state_doc import new_state
from common.state_store import StateStore
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
    """The control plane signs as the env's operator: without its policy, one line names the call."""
    iam = local_aws.client("iam")  # the admin's keys
    operator = "chronos-dev-operator"
    for policy in iam.list_attached_user_policies(UserName=operator)["AttachedPolicies"]:
        iam.detach_user_policy(UserName=operator, PolicyArn=policy["PolicyArn"])
    unchanged()
    proc = cli("launch", "--env=dev", "--local")
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


# ---------------------------------------------------------------- AWS configuration and credentials
# Each case runs the AWS backend (no --local) as a new user would, with environment variables that
# provoke one botocore configuration or credential error. Network only to 127.0.0.1.

_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "CHRONOS_LOCAL",
)
_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def aws_runs(cli, local_aws, tmp_path):
    """``invoke runs --env=dev`` on the AWS backend with only the AWS variables a test gives."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    config = home / ".aws" / "config"
    config.write_text("")

    def run(env: dict[str, str], *, endpoint: str | None = None, outputs: str | None = None):
        full = {
            "HOME": str(home),
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws" / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": endpoint or local_aws.endpoint_url,
            "CHRONOS_STACK_OUTPUTS": outputs or str(tmp_path / "{env}.json"),
            **env,
        }
        return cli(
            "runs", "--env=dev", env=full, drop=tuple(v for v in _AWS_VARS if v not in full), timeout=120
        )

    run.home, run.config = home, config
    return run


def test_no_region_configured(aws_runs, error_line):
    proc = aws_runs(_KEYS)
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("error: no AWS region configured") and "AWS_REGION" in line, line


def test_aws_region_alone_is_enough(aws_runs, local_aws, tmp_path):
    bucket = "chronos-training-dev-123456789012-us-east-1"
    local_aws.client("s3").create_bucket(Bucket=bucket)
    outputs = tmp_path / "dev.json"
    write_json(
        outputs,
        {
            "bucket": bucket,
            "region": "us-east-1",
            "env": "dev",
            "account_id": "123456789012",
            "subnets_by_az": {"us-east-1a": "subnet-1"},
            "security_group_id": "sg-1",
            "launch_template_id": "lt-1",
            "instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/chronos-dev-instance",
            "instance_role_arn": "arn:aws:iam::123456789012:role/chronos-dev-instance",
            "operator_policy_arn": "arn:aws:iam::123456789012:policy/chronos-dev-operator",
        },
    )
    proc = aws_runs({**_KEYS, "AWS_REGION": "us-east-1"}, outputs=str(outputs))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no runs yet" in proc.stdout


def test_aws_region_is_read_when_aws_default_region_is_unset(monkeypatch):
    from control.backend import AwsBackend

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert AwsBackend().session.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")  # botocore's own variable keeps precedence
    assert AwsBackend().session.region_name == "us-west-2"
    assert AwsBackend(region="ap-south-1").session.region_name == "ap-south-1"


def test_mistyped_profile(aws_runs, error_line):
    proc = aws_runs({"AWS_PROFILE": "dve", "AWS_REGION": "us-east-1"})
    assert proc.returncode == 2
    line = error_line(proc)
    assert "AWS profile 'dve'" in line and "aws configure list-profiles" in line, line


_SSO_PROFILE = """[profile work]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
sso_account_id = 123456789012
sso_role_name = Admin
region = us-east-1
"""

_SSO_SESSION_PROFILE = """[profile work]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Admin
region = us-east-1

[sso-session corp]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
"""


def _sso_cache(home, key: str, token: dict) -> None:
    import hashlib

    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{hashlib.sha1(key.encode()).hexdigest()}.json").write_text(json.dumps(token))


@pytest.mark.parametrize("case", ["never-logged-in", "expired-legacy", "expired-sso-session"])
def test_sso_login_missing_or_expired(aws_runs, error_line, case):
    expired = {
        "accessToken": "x",
        "expiresAt": "2020-01-01T00:00:00Z",
        "region": "us-east-1",
        "startUrl": "https://example.awsapps.com/start",
    }
    if case == "expired-sso-session":
        aws_runs.config.write_text(_SSO_SESSION_PROFILE)
        _sso_cache(aws_runs.home, "corp", expired)
    else:
        aws_runs.config.write_text(_SSO_PROFILE)
        if case == "expired-legacy":
            _sso_cache(aws_runs.home, "https://example.awsapps.com/start", expired)
    proc = aws_runs({"AWS_PROFILE": "work"})
    assert proc.returncode == 2
    line = error_line(proc)
    assert "aws sso login --profile work" in line, line


def test_partial_credentials(aws_runs, error_line):
    proc = aws_runs({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_REGION": "us-east-1"})
    assert proc.returncode == 2
    line = error_line(proc)
    assert "AWS_SECRET_ACCESS_KEY" in line and "incomplete AWS credentials" in line, line


def test_unreachable_endpoint(aws_runs, error_line):
    from localaws.moto import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    proc = aws_runs({**_KEYS, "AWS_REGION": "us-east-1"}, endpoint=closed)
    assert proc.returncode == 2
    line = error_line(proc)
    assert f"cannot reach AWS at {closed}" in line and "AWS_ENDPOINT_URL" in line, line


def test_invalid_keys(aws_runs, error_line, local_aws):
    requests.post(f"{local_aws.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        proc = aws_runs(
            {
                "AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000",
                "AWS_SECRET_ACCESS_KEY": "x",
                "AWS_REGION": "us-east-1",
            }
        )
    finally:
        requests.post(f"{local_aws.endpoint_url}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert proc.returncode == 2
    line = error_line(proc)
    assert "AWS rejected these credentials (InvalidClientTokenId)" in line, line


def _client_error(code: str, status: int = 403):
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetCallerIdentity",
    )


def _botocore_errors():
    from botocore import exceptions as e

    return [
        (e.NoRegionError(), "no AWS region configured"),
        (e.ProfileNotFound(profile="dve"), "AWS profile 'dve'"),
        (e.SSOTokenLoadError(error_msg="Token for x does not exist"), "aws sso login"),
        (e.UnauthorizedSSOTokenError(), "aws sso login"),
        (
            e.TokenRetrievalError(provider="sso", error_msg="Token has expired and refresh failed"),
            "aws sso login",
        ),
        (
            e.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            "AWS_SECRET_ACCESS_KEY",
        ),
        (e.CredentialRetrievalError(provider="custom-process", error_msg="exit 1"), "custom-process"),
        (e.EndpointConnectionError(endpoint_url="https://sts.amazonaws.com/"), "cannot reach AWS"),
        (e.ConnectTimeoutError(endpoint_url="https://sts.amazonaws.com/"), "cannot reach AWS"),
        (e.ReadTimeoutError(endpoint_url="https://sts.amazonaws.com/"), "cannot reach AWS"),
        (e.InvalidConfigError(error_msg="bad profile"), "AWS configuration"),
        (e.NoCredentialsError(), "no AWS credentials found"),
        (_client_error("ExpiredToken"), "expired"),
        (_client_error("InvalidClientTokenId"), "AWS rejected these credentials"),
        (_client_error("SignatureDoesNotMatch"), "AWS rejected these credentials"),
    ]


def test_every_botocore_configuration_and_credential_error_is_one_line():
    from common.errors import UserError
    from control.aws_errors import aws_errors

    for exc, expected in _botocore_errors():
        with pytest.raises(UserError) as info, aws_errors("sts:GetCallerIdentity", "*"):
            raise exc
        message = str(info.value)
        assert expected in message and "\n" not in message, (type(exc).__name__, message)


def test_env_credentials_survive_the_switch_to_the_stacks_region(tmp_path, monkeypatch):
    """With keys only in the environment and no profile, the stack's region must not
    re-create the session under a profile named 'default' (ProfileNotFound)."""
    import json

    from control.backend import AwsBackend

    outputs = tmp_path / "dev.json"
    outputs.write_text(
        json.dumps(
            {
                "env": "dev",
                "region": "eu-west-1",
                "account_id": "123456789012",
                "bucket": "chronos-training-dev-123456789012-eu-west-1",
            }
        )
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    backend = AwsBackend()
    monkeypatch.setattr(
        "control.backend.outputs_from_mapping",
        lambda doc, env, source, fix: type("O", (), {"region": doc["region"]})(),
    )
    monkeypatch.setenv("CHRONOS_STACK_OUTPUTS", str(outputs))
    backend.stack_outputs("dev")
    assert backend.session.region_name == "eu-west-1"
    assert backend.session.get_credentials().access_key == "testing"

"""The call recorder: boto3 and the AWS CLI, one JSON line per API call, no bodies or secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from localaws import audit

BUCKET = "chronos-training-dev-123456789012-us-east-1"
# The AWS CLI in a process that loads the recorder first, as the local instance's Python does.
CLI = (
    "import sys; from localaws import audit; audit.install_from_env(); "
    "from awscli.clidriver import main; sys.exit(main())"
)


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "iam-audit.jsonl"
    audit.install(path)
    audit.install(path)  # a second install must not record twice
    yield path
    audit.uninstall()


def _calls(path: Path) -> list[dict]:
    return [r for r in audit.read_log(path) if r["kind"] == "call"]


def test_boto3_calls_are_recorded_once_each_without_bodies(local_aws, log_path: Path) -> None:
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="dev/system-state.json", Body=b"{}", IfNoneMatch="*")
    with pytest.raises(ClientError):
        s3.put_object(Bucket=BUCKET, Key="dev/system-state.json", Body=b"{}", IfNoneMatch="*")
    calls = _calls(log_path)
    assert [(c["operation"], c["error"]) for c in calls] == [
        ("CreateBucket", None),
        ("PutObject", None),
        ("PutObject", "PreconditionFailed"),
    ]
    put = calls[1]
    assert put["params"] == {
        "Bucket": BUCKET,
        "Key": "dev/system-state.json",
        "Body": "<dropped>",
        "IfNoneMatch": "*",
    }
    assert (put["service"], put["region"], put["pid"]) == ("s3", "us-east-1", os.getpid())
    assert put["access_key_id"] == local_aws.session().get_credentials().access_key
    assert put["ts"].endswith("Z")


def test_clients_made_before_install_or_after_uninstall_record_nothing(local_aws, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    early = local_aws.client("s3")
    audit.install(path)
    try:
        early.list_buckets()
        local_aws.client("s3").list_buckets()
    finally:
        audit.uninstall()
    local_aws.client("s3").list_buckets()
    assert [c["operation"] for c in _calls(path)] == ["ListBuckets"]


def test_secrets_and_user_data_are_dropped() -> None:
    params = {
        "UserData": "IyEvYmlu",
        "SSECustomerKey": "k",
        "Nested": [{"SecretAccessKey": "s", "Name": "x"}],
        "Payload": b"123",
        "When": None,
    }
    assert audit.sanitize(params) == {
        "UserData": "<dropped>",
        "SSECustomerKey": "<dropped>",
        "Nested": [{"SecretAccessKey": "<dropped>", "Name": "x"}],
        "Payload": "<3 bytes>",
        "When": None,
    }


def test_threads_share_the_log_line_by_line(local_aws, log_path: Path) -> None:
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"dev/{i}", Body=b"x"), range(40)))
    keys = sorted(c["params"]["Key"] for c in _calls(log_path) if c["operation"] == "PutObject")
    assert keys == sorted(f"dev/{i}" for i in range(40))


def test_the_aws_cli_records_through_the_same_hook(local_aws, tmp_path: Path) -> None:
    path = tmp_path / "cli.jsonl"
    local_aws.client("s3").create_bucket(Bucket=BUCKET)
    env = {**os.environ, **local_aws.env(), audit.ENV_VAR: str(path)}
    done = subprocess.run(
        [sys.executable, "-c", CLI, "s3", "ls", f"s3://{BUCKET}/dev/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: nothing listed
    (listed,) = _calls(path)
    assert (listed["operation"], listed["params"]["Prefix"]) == ("ListObjectsV2", "dev/")
    assert listed["pid"] != os.getpid() and listed["access_key_id"] == local_aws.access_key


def test_install_from_env_and_record_credentials(tmp_path: Path) -> None:
    path = tmp_path / "creds.jsonl"
    assert not audit.install_from_env({})
    assert not audit.record_credentials(
        access_key_id="ASIA1", role_arn="r", role_id="AROA1", session_name="i-1"
    )
    assert audit.install_from_env({audit.ENV_VAR: str(path)})
    try:
        assert audit.installed_path() == path
        assert audit.record_credentials(
            access_key_id="ASIA1", role_arn="arn:aws:iam::1:role/r", role_id="AROA1", session_name="i-1"
        )
    finally:
        audit.uninstall()
    (line,) = (json.loads(x) for x in path.read_text().splitlines())
    assert line["kind"] == "credentials" and line["session_name"] == "i-1" and line["role_id"] == "AROA1"


def test_install_before_botocore_is_imported_imports_nothing_and_still_records(
    local_aws, tmp_path: Path
) -> None:
    path = tmp_path / "lazy.jsonl"
    code = (
        "import sys; from localaws import audit; audit.install_from_env(); "
        "assert 'botocore.session' not in sys.modules, 'install imported botocore'; "
        "import boto3; boto3.client('s3', endpoint_url=sys.argv[1]).list_buckets()"
    )
    env = {**os.environ, **local_aws.env(), audit.ENV_VAR: str(path)}
    done = subprocess.run(
        [sys.executable, "-c", code, local_aws.endpoint_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [c["operation"] for c in _calls(path)] == ["ListBuckets"]

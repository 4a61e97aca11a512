"""The trainer's own retry policy (trainer.errors.Retrier) against the fault proxy's faults.

The trainer's clients have botocore's retries off (``total_max_attempts=1``): every S3 call is
retried by :class:`trainer.errors.Retrier` alone, so it must retry whatever botocore's standard
mode would: 500/502/503/504, throttling codes, ``RequestTimeout``, and connection errors
(``ConnectionError`` and ``HTTPClientError``: a reset or a read timeout, botocore's
``TransientRetryableChecker``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from common.aws import is_retriable
from reliability import record
from reliability.s3faults import FaultProxy, Kind, Rule
from trainer.errors import CLIENT_CONFIG, ErrorLog, ExponentialBackoff, Retrier, TerminalError
from trainer.transfers import Transfers

BUCKET = "chronos-training-dev-123456789012-us-east-1"


@pytest.fixture
def proxy(local_aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    monkeypatch.setenv(record.RESULTS_VAR, str(tmp_path / "results"))
    local_aws.client("s3").create_bucket(Bucket=BUCKET)
    with FaultProxy(local_aws.endpoint_url) as p:
        yield p


def transfers(proxy: FaultProxy, sleeps: list[float], **config: Any) -> Transfers:
    from common.aws import client

    session = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1")
    cfg = CLIENT_CONFIG.merge(Config(**config)) if config else CLIENT_CONFIG
    s3 = client(session, "s3", endpoint_url=proxy.url, config=cfg)
    retrier = Retrier(ExponentialBackoff(), errors=ErrorLog(), sleep=sleeps.append)
    return Transfers(s3, BUCKET, retrier)


@pytest.mark.parametrize(
    ("kind", "operation"),
    [
        (Kind.RESET, "GetObject"),
        (Kind.RESET, "PutObject"),
        (Kind.INTERNAL_ERROR, "PutObject"),
        (Kind.SLOW_DOWN, "GetObject"),
        (Kind.THROTTLING, "ListObjectsV2"),
    ],
)
def test_the_trainer_retries_every_transient_fault_kind(proxy: FaultProxy, tmp_path: Path, kind, operation):
    sleeps: list[float] = []
    t = transfers(proxy, sleeps)
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    t.upload([(src, "dev/x.bin")], component="training")
    proxy.add(Rule(kind=kind, operations=operation, count=2))
    if operation == "GetObject":
        t.download(
            t.list("dev/", component="data_sync"), tmp_path / "out", strip="dev/", component="data_sync"
        )
        assert (tmp_path / "out" / "x.bin").read_bytes() == src.read_bytes()
    elif operation == "PutObject":
        t.upload([(src, "dev/y.bin")], component="training")
    else:
        assert [o.key for o in t.list("dev/", component="data_sync")] == ["dev/x.bin"]
    t.close()
    assert len(proxy.injected) == 2 and sleeps == [1.0, 2.0]
    records = t.retrier.errors.records()
    assert [r["retry_count"] for r in records] == [1, 2] and all(
        r["error_class"] == "retriable" for r in records
    )


def test_a_read_timeout_is_retried(proxy: FaultProxy, tmp_path: Path):
    sleeps: list[float] = []
    t = transfers(proxy, sleeps, read_timeout=1)
    t.put_bytes("dev/t.json", b"{}", component="state")
    proxy.add(Rule(kind=Kind.READ_TIMEOUT, operations="GetObject", count=1, hold_s=4))
    assert t.get_bytes("dev/t.json", component="state") == b"{}"
    assert sleeps == [1.0] and "ReadTimeout" in t.retrier.errors.records()[0]["message"]
    t.close()


def test_access_denied_is_not_retried_and_names_action_and_key(proxy: FaultProxy):
    sleeps: list[float] = []
    t = transfers(proxy, sleeps)
    proxy.add(Rule(kind=Kind.ACCESS_DENIED, key_prefix="cached-datasets/"))
    with pytest.raises(TerminalError) as caught:
        t.get_bytes("cached-datasets/configs/x.json", component="data_sync")
    assert sleeps == [] and "s3:GetObject" in caught.value.message
    assert f"s3://{BUCKET}/cached-datasets/configs/x.json" in caught.value.message
    t.close()


def test_s3_request_timeout_is_transient():
    from botocore.exceptions import ClientError

    # S3's 400 RequestTimeout ("Your socket connection to the server was not read from or written
    # to within the timeout period"): botocore's standard mode retries it
    exc = ClientError(
        {"Error": {"Code": "RequestTimeout"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutObject"
    )
    assert is_retriable(exc)

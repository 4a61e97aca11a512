"""The lock's writes whose answer is lost: S3 stored the write, the client saw a 500 and retried.

S3's error best practices: "if a PUT request returns InternalError, a subsequent GET might
retrieve the old value or the updated value". botocore's standard retry then sends the write
again and meets its own document (412). The loopback fault proxy (reliability/s3faults.py)
lets moto store the write and answers 500 instead (``after=True``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest

from common.aws import client
from common.state_doc import new_state
from common.state_store import LockHeldError, StateStore
from common.timeutil import iso
from reliability.s3faults import FaultProxy, Kind, Rule
from tests.conftest import TEST_BUCKET

NOW = iso(datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC))
RUN_ID = "20261125-140502"


def _doc():
    return new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=100, now=NOW)


@pytest.fixture
def proxied(local_aws, tmp_path, monkeypatch):
    monkeypatch.setenv("RELIABILITY_RESULTS", str(tmp_path))  # the proxy counts its faults there
    local_aws.client("s3").create_bucket(Bucket=TEST_BUCKET)
    with FaultProxy(local_aws.endpoint_url) as proxy:
        session = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1")
        s3 = client(session, "s3", endpoint_url=proxy.url)  # the product's client: botocore retries on
        yield proxy, StateStore(s3, TEST_BUCKET, "dev")


def test_an_acquire_whose_answer_was_lost_holds_the_lock(proxied):
    proxy, store = proxied
    proxy.add(Rule(kind=Kind.INTERNAL_ERROR, operations="PutObject", count=1, after=True))
    doc = _doc()
    snap = store.acquire(doc)  # before: LockHeldError "run 20261125-140502 is active" for its own lock
    assert snap.run_id == RUN_ID and len(snap.doc["lock_id"]) == 32
    assert len(proxy.injected) == 1
    store.set_instance(
        RUN_ID, instance_id="i-0abc", instance_type="g5.xlarge", availability_zone="us-east-1a", market="spot"
    )  # the snapshot's ETag is the stored one: the run goes on
    assert store.read().doc["instance_id"] == "i-0abc"


def test_a_second_launch_of_the_same_run_id_in_the_same_second_is_still_refused(proxied):
    _, store = proxied
    store.acquire(_doc())
    with pytest.raises(LockHeldError):
        store.acquire(_doc())  # same run id, same second, same spec: another launch's token

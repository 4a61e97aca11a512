"""The harness gate learns whose credentials sign each request, and a hold can skip some sessions.

A chain of faults arms the next phase's hold while the instance just hit is still in its
shutdown grace (its last requests must not take the hold): the gate reads AssumeRole answers on
their way back, so it knows which role session (an instance's is its instance id) each access
key belongs to.
"""

from __future__ import annotations

import json
import threading

import boto3
import pytest

from common.aws import client as make_client
from reliability.harness_gate import Gate, excluding_sessions

ROLE = "arn:aws:iam::123456789012:role/chronos-dev-instance"


@pytest.fixture
def gate(local_aws):
    g = Gate(local_aws.endpoint_url).start()
    yield g
    g.stop()


def _assumed(gate: Gate, session_name: str) -> dict:
    sts = make_client(boto3.Session(region_name="us-east-1"), "sts", endpoint_url=gate.url)
    return sts.assume_role(RoleArn=ROLE, RoleSessionName=session_name)["Credentials"]


def _s3_as(gate: Gate, creds: dict):
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-east-1",
    )
    return make_client(session, "s3", endpoint_url=gate.url)


def test_the_gate_names_the_session_of_keys_it_saw_issued_and_none_for_others(gate):
    first, second = _assumed(gate, "i-0aaa"), _assumed(gate, "i-0bbb")
    assert gate.session_of(first["AccessKeyId"]) == "i-0aaa"
    assert gate.session_of(second["AccessKeyId"]) == "i-0bbb"
    assert gate.session_of("AKIANEVERISSUEDHERE0") is None
    assert gate.session_of(None) is None


def test_a_hold_excluding_a_session_lets_its_requests_through_and_takes_the_next_one(gate, bucket):
    hit, fresh = _assumed(gate, "i-0hit"), _assumed(gate, "i-0new")
    excluded = {"i-0hit"}
    hold = gate.hold(
        "put", excluding_sessions(gate, lambda r: r.method == "PUT" and r.key == "k", excluded), after=True
    )
    _s3_as(gate, hit).put_object(Bucket=bucket, Key="k", Body=b"from the hit instance")
    assert not hold.hit.is_set()  # went through unheld
    # the next attempt's request is the one held (after moto answered; released here at once)
    t = threading.Thread(target=lambda: _s3_as(gate, fresh).put_object(Bucket=bucket, Key="k", Body=b"new"))
    t.start()
    held = hold.wait(30)
    hold.release()
    t.join(30)
    assert held.access_key == fresh["AccessKeyId"]
    assert gate.session_of(held.access_key) == "i-0new"


def test_the_excluded_set_is_read_at_each_request(gate, bucket):
    late = _assumed(gate, "i-0late")
    excluded: set[str] = set()
    match = excluding_sessions(gate, lambda r: r.method == "PUT", excluded)
    hold = gate.hold("put", match, after=True)
    excluded.add("i-0late")  # added after arming: still skipped
    _s3_as(gate, late).put_object(Bucket=bucket, Key="k2", Body=b"x")
    assert not hold.hit.is_set()
    gate.disarm(hold)


def test_a_state_phase_hold_matches_the_documents_own_status_not_its_history(gate, bucket, monkeypatch):
    """The recovery handler's claim (``recovering``) carries a history naming ``results_sync``:
    it took the evaluation hold meant for the relaunch once in CI (the needle matched anywhere)."""
    from common.state_doc import apply_transition, new_state
    from common.status import RunStatus
    from common.timeutil import iso, utc_now
    from reliability import harness

    monkeypatch.setattr(harness, "ENV", "dev")
    match, _ = harness.phase_request(
        "evaluation", harness.layout.RunPaths(env="dev", run_id="20261125-140502")
    )
    now = iso(utc_now())
    doc = new_state(env="dev", run_id="20261125-140502", market="spot", total_steps=10, now=now)
    for status in (RunStatus.DATA_SYNC, RunStatus.TRAINING, RunStatus.RESULTS_SYNC):
        doc = apply_transition(doc, status, now=now)
    claimed = {**doc, "status": RunStatus.RECOVERING.value}  # the history still ends in results_sync
    s3 = _s3_as(gate, _assumed(gate, "i-0aaa"))
    key = harness.layout.state_key("dev")
    for body in (claimed, doc):  # as the state store writes it (indented, sorted), through the gate
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body, indent=2, sort_keys=True).encode())
    puts = [r for r in gate.log() if r.method == "PUT" and r.key == key]
    assert b'"status": "results_sync"' in puts[0].body  # the old needle matched the claim
    assert [match(r) for r in puts] == [False, True]

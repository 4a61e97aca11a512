"""Every artifact the laptop reads back from S3, damaged and mutated: training.json, the sentinel
(``_SUCCESS`` / ``_FAILED_UPLOAD``), cleanup_status.json, the launch record, the stored run spec.

Property: the run history (:func:`control.runs.read_run`, behind ``invoke runs``, ``monitor``
once a run ended, ``cost``) summarises the run whatever its documents hold: a document that
fails its schema makes the run ``invalid`` with the S3 key and JSON path in ``problem``; one
that is only informative (cleanup status, launch record, run spec) is ignored when unusable.
The summary renders as a table and as JSON. Nothing raises.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import fuzzkit
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from common import layout
from control.backend import Clients
from control.cli import render
from control.monitor import Monitor, Outcome
from control.runs import read_run
from schemas import examples

ROW = "artifact-readers"
BUCKET = "chronos-training-dev-123456789012-us-east-1"
NOW = datetime(2026, 11, 26, 0, 0, 0, tzinfo=UTC)
_SEQ = {"n": 0}


def _launch_record(run_id: str) -> dict:
    return {
        "run_id": run_id, "env": "dev", "instance_id": "i-0abc1234def567890", "instance_type": "g5.xlarge",
        "availability_zone": "us-east-1a", "market": "spot", "price_per_hour": 0.4,
        "price_source": "spot-history", "launched_at": "2026-11-25T14:05:10Z", "local": False,
        "code_key": "cached-datasets/scripts/code.tar.gz",
        "max_runtime_minutes": 240, "image_id": "ami-0123", "image_name": "dlami", "root_volume_gb": 100,
        "refused": [],
    }  # fmt: skip


def documents(run_id: str) -> dict[str, dict]:
    """A run's documents, valid, keyed by their S3 key."""
    paths = layout.RunPaths(env="dev", run_id=run_id)
    training = {**examples("training")[0], "run_id": run_id, "env": "dev"}
    sentinel = {**examples("sentinel")[0], "run_id": run_id}
    cleanup = {**examples("cleanup-status")[0], "run_id": run_id}
    return {
        paths.training_log: training,
        paths.success: sentinel,
        paths.cleanup_status: cleanup,
        paths.launch_record: _launch_record(run_id),
        paths.run_spec: examples("run-spec")[1],
    }


def next_run_id() -> str:
    _SEQ["n"] += 1
    return (datetime(2026, 11, 25, 14, 5, 2) + timedelta(seconds=_SEQ["n"])).strftime("%Y%m%d-%H%M%S")


# each document: kept, dropped, mutated or damaged below JSON
FATES = st.sampled_from(("keep", "keep", "drop", "mutate", "bytes"))


@pytest.fixture
def aws(local_aws):
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return Clients(s3=s3, ec2=local_aws.client("ec2"), sts=None)


def _put_run(draw, s3, run_id: str) -> dict[str, str]:
    fates = {}
    for key, doc in documents(run_id).items():
        fate = draw(FATES)
        fates[key.rsplit("/", 1)[-1]] = fate
        if fate == "drop":
            continue
        if fate == "mutate":
            body = json.dumps(draw(fuzzkit.mutated(doc)), allow_nan=True).encode()
        elif fate == "bytes":
            body = draw(fuzzkit.damaged_bytes(doc))
        else:
            body = json.dumps(doc).encode()
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return fates


@pytest.mark.row(ROW)
@settings(max_examples=fuzzkit.scaled(12, fuzz=150))
@given(data=st.data())
def test_the_run_history_summarises_a_run_whatever_its_documents_hold(data, aws):
    fuzzkit.example()
    run_id = next_run_id()
    fates = _put_run(data.draw, aws.s3, run_id)
    summary = read_run(aws.s3, BUCKET, "dev", run_id, clock=lambda: NOW)
    assert summary.run_id == run_id
    if summary.status == "invalid":
        problem = fuzzkit.one_line(summary.problem or "")
        assert f"s3://{BUCKET}/dev/" in problem, problem
        assert "not JSON" in problem or fuzzkit.names_a_path(problem), problem
        assert {fates.get("training.json"), fates.get("_SUCCESS")} & {"mutate", "bytes"}, fates
    json.dumps(summary.to_dict(), allow_nan=False)
    for as_json in (False, True):
        render.runs(Console(file=io.StringIO(), width=200), [summary], env="dev", as_json=as_json)
    view = Monitor(aws, BUCKET, "dev", clock=lambda: NOW).poll()  # no state file: the newest run, ended
    assert view.outcome is not Outcome.RUNNING
    if set(fates.values()) != {"drop"}:  # a run with every document dropped left no trace to find
        assert view.run_id == run_id

"""S3 faults at a rate the retries absorb, at every phase of one whole local run: it succeeds.

One run carries every transient kind (500 InternalError, 503 SlowDown, 503 ServiceUnavailable,
a connection reset; the read timeout is in test_s3_faults_failing.py, where its 60 s overlap
the backoff of an upload that fails past the retries) at each phase's own S3
calls: data_sync's listing and downloads, training's checkpoint uploads, results_sync's model
uploads, finalize's training.json and sentinel, cleanup's cleanup_status.json and the lock's
delete, and the state file writes. Each rule names keys only its phase writes or reads, and
the state file's status at the moment of each injection is recorded and checked, so each row
proves its own phase. The faults are injected for the instance role's requests only.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from common import layout
from common.status import RunStatus
from reliability import harness as H
from reliability import record
from reliability.s3faults import Caller, FaultProxy, Kind, Rule, in_front_of

pytestmark = pytest.mark.slow

DATA = layout.TRAINING_DATA
ROWS = {
    "data_sync": "s3-transient@data_sync",
    "training": "s3-transient@training",
    "results_sync": "s3-transient@results_sync",
    "finalize": "s3-transient@finalize",
    "cleanup": "s3-transient@cleanup",
}
# the state file's status while each phase's faulted requests are made
STATUS = {
    "data_sync": {"data_sync"},
    "training": {"training"},
    "results_sync": {"results_sync"},
    "finalize": {"results_sync", "succeeded"},
    "cleanup": {"cleanup", ""},  # cleanup_status.json is written after the lock's release: no lock
}


@pytest.fixture
def chained(world: Any) -> Iterator[tuple[Any, FaultProxy]]:
    """The harness's world with the fault proxy in front of it (every caller goes through it)."""
    with in_front_of(world) as pair:
        yield pair


def instance_role(world: Any) -> str:
    outputs = json.loads(world.local_dir.stack_file(world.env).read_text())
    outputs = outputs.get("outputs", outputs)
    return str(outputs["instance_role_arn"]).rsplit("/", 1)[1]


def rules(paths: layout.RunPaths, caller: Any) -> dict[str, list[Rule]]:
    state = layout.state_key(H.ENV)
    put = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")

    def r(kind: Kind, ops: Any, prefix: str, count: int = 1, **kw: Any) -> Rule:
        return Rule(kind=kind, operations=ops, key_prefix=prefix, caller=caller, count=count, **kw)

    return {
        "data_sync": [
            r(Kind.SLOW_DOWN, "ListObjectsV2", DATA),
            r(Kind.INTERNAL_ERROR, "GetObject", DATA),
            r(Kind.RESET, "GetObject", DATA),
            r(Kind.THROTTLING, "GetObject", DATA),
        ],
        "training": [
            r(Kind.INTERNAL_ERROR, put, paths.checkpoints),
            r(Kind.RESET, put, paths.checkpoints),
            r(Kind.SLOW_DOWN, put, paths.checkpoints),
        ],
        "results_sync": [
            r(Kind.THROTTLING, put, paths.models),
            # the upload check's listing of the run prefix (data_sync lists only its sentinel keys)
            Rule(kind=Kind.SLOW_DOWN, operations="ListObjectsV2", key=paths.prefix, caller=caller, count=1),
        ],
        "finalize": [
            r(Kind.INTERNAL_ERROR, "PutObject", paths.training_log),
            r(Kind.SLOW_DOWN, "PutObject", paths.success),
        ],
        "cleanup": [
            r(Kind.THROTTLING, "PutObject", paths.cleanup_status),
            r(Kind.RESET, "DeleteObject", state),
        ],
        # the state writes: a heartbeat's answer lost (moto stored it; S3: "a subsequent GET
        # might retrieve ... the updated value") and a 500 on a status transition (retried:
        # re-read, re-decided). A transition's lost answer: test_s3_faults_state.py.
        "state": [
            r(Kind.INTERNAL_ERROR, "PutObject", state, after=True, when=is_heartbeat),
            r(Kind.INTERNAL_ERROR, "PutObject", state, when=is_transition_to(RunStatus.TRAINING)),
        ],
    }


def sha256(world: Any, key: str) -> str | None:
    try:
        return hashlib.sha256(world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()).hexdigest()
    except world.s3.exceptions.NoSuchKey:
        return None


def _state_doc(req: Any) -> dict[str, Any]:
    try:
        doc = json.loads(req.body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def is_heartbeat(req: Any) -> bool:
    """A heartbeat's state write: heartbeat_at is this write's time, not its last transition's."""
    doc = _state_doc(req)
    history = doc.get("history") or [{}]
    beat = doc.get("heartbeat_at")
    return bool(beat) and beat == doc.get("updated_at") and beat != history[-1].get("at")


def is_transition_to(status: RunStatus) -> Any:
    """The state write moving the run to ``status`` (its newest history entry, stamped as it beats)."""

    def test(req: Any) -> bool:
        doc = _state_doc(req)
        last = (doc.get("history") or [{}])[-1]
        return (
            doc.get("status") == status.value
            and last.get("status") == status.value
            and (last.get("at") == doc.get("heartbeat_at"))
        )

    return test


@pytest.mark.row("s3-transient@data_sync")
@pytest.mark.row("s3-transient@training")
@pytest.mark.row("s3-transient@results_sync")
@pytest.mark.row("s3-transient@finalize")
@pytest.mark.row("s3-transient@cleanup")
def test_transient_s3_faults_at_every_phase_are_retried_and_the_run_succeeds(chained):
    world, proxy = chained
    caller = Caller.role(instance_role(world))
    statuses: list[tuple[str, str]] = []
    proxy.probe = lambda: (world.state() or {}).get("status", "")  # the state file at each injection
    run = world.launch(H.matrix_spec(steps=20, checkpoint_interval=10))
    by_phase = rules(run.paths, caller)
    owner: dict[int, str] = {}
    for phase, group in by_phase.items():
        for rule in group:
            proxy.add(rule)
            owner[len(proxy.rules) - 1] = phase
    # what was uploaded before the results_sync, finalize and cleanup faults (checkpoints, configs)
    H.wait_until(lambda: "results_sync" in {owner[i.rule] for i in proxy.injected}, 420, "results_sync")
    before = H.snapshot(world, run.run_id)
    out = H.settle(world, run, before=before, row="s3-transient@training")
    hit = Counter(owner[i.rule] for i in proxy.injected)
    for inj in proxy.injected:
        statuses.append((owner[inj.rule], inj.status))
    detail = f"injected {dict(hit)}; at statuses {statuses}\n{out}\n{world.logs()}"
    assert all(status in STATUS[phase] for phase, status in statuses if phase != "state"), detail
    assert out.status == "succeeded", detail
    assert out.orphans == [] and out.lost == [] and out.checked >= 3, detail
    assert any(k.startswith(run.paths.checkpoints) for k in before), before
    # and every artifact of training.json's manifest is in S3 with its checksum
    manifest = {a["key"]: a["sha256"] for a in out.training["artifacts"]}
    lost = sorted(k for k, digest in manifest.items() if sha256(world, k) != digest)
    record.count(record.Total.ARTIFACTS_CHECKED, len(manifest))
    record.count(record.Total.ARTIFACTS_LOST, len(lost))
    assert lost == [] and any(k.startswith(run.paths.models) for k in manifest), (lost, detail)
    assert out.state is None, detail  # the lock is released
    for phase, group in by_phase.items():
        assert all(rule.fired == rule.count for rule in group), (phase, detail)
    # every faulted key was asked for again (the retry) and is in S3 whole
    for inj in proxy.injected:
        again = [
            r for r in proxy.requests(inj.request.operation, inj.request.key) if r.key == inj.request.key
        ]
        assert len(again) >= 2, (inj, detail)
    retried = [e for e in out.training["errors"] if e["error_class"] == "retriable"]
    components = {e["component"] for e in retried}
    assert {"training", "results_sync"} <= components or len(retried) >= 4, (retried, detail)
    assert out.training["completion_status"] == "normal" and out.sentinel["status"] == "success", detail
    assert out.cleanup is not None, detail
    for phase, row in ROWS.items():
        kinds = sorted({str(r.kind) for r in by_phase[phase]})
        record.note(
            row, f"{', '.join(kinds)} injected once each at {phase}'s S3 calls: retried, run succeeded"
        )

"""``invoke kill --sweep`` / ``--run-id`` and ``monitor --sweep``'s view against moto's Batch.

moto never runs a job; each test holds jobs where AWS would have them (queued, on a host) and
asserts what was requested of Batch and what a describe then observed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common import layout
from common.errors import ConfigError
from common.state_store import StateStore
from control.sweep import sweep
from control.sweep_kill import kill_sweep
from control.sweep_status import sweep_view

NOW = datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC)
SWEEP = "20261201-210502"


@pytest.fixture
def submitted(tmp_path, s3, bucket, moto_batch):
    s3.put_object(Bucket=bucket, Key="cached-datasets/training-data/part-0.parquet", Body=b"PAR1")
    path = tmp_path / "sweep.toml"
    path.write_text('[base.model]\nnum_steps = 20\n[grid]\n"model.seed" = [1, 2, 3]\n')
    backend = moto_batch.backend(bucket)
    outcome = sweep(backend, env="dev", grid_path=path, clock=lambda: NOW)
    jobs = [m.job_id for m in outcome.result.members]
    moto_batch.hold(jobs[0], "RUNNABLE")  # queued: no capacity yet
    moto_batch.hold(jobs[1], "RUNNING")  # on a host (its trainer would be running)
    return backend, jobs  # the third: moto's SUCCEEDED


def kill(backend, **target):
    ticks = iter(range(0, 10_000, 5))
    return kill_sweep(backend, env="dev", grace_s=10, clock=lambda: NOW, sleep=lambda s: None,
                      monotonic=lambda: next(ticks), **target)  # fmt: skip


def test_the_view_shows_each_member_with_its_job_beside(submitted, moto_batch):
    backend, jobs = submitted
    view = sweep_view(backend, env="dev", sweep_id=SWEEP)
    assert [m.run_id for m in view.members] == [f"{SWEEP}-00{n}" for n in (1, 2, 3)]
    # the member's own state says what it is; a job that ended while its lock is held reads stale
    # (the third: moto's SUCCEEDED, its trainer never ran)
    assert [m.status for m in view.members] == ["initialization", "initialization", "stale"]
    assert view.to_dict()["members"][2]["state"] == "initialization"
    assert [m.job.status.value for m in view.members] == ["RUNNABLE", "RUNNING", "SUCCEEDED"]
    assert not view.done and view.exit_code == 0
    assert view.to_dict()["members"][0]["point"] == {"model.seed": 1}


def test_kill_sweep_cancels_the_queued_terminates_the_running_and_clears_every_lock(submitted, s3, bucket):
    backend, jobs = submitted
    result = kill(backend, sweep_id=SWEEP)
    by_run = {m.run_id: m for m in result.members}
    first, second, third = (by_run[f"{SWEEP}-00{n}"] for n in (1, 2, 3))
    assert (first.job.requested, first.job.before.value) == ("cancel", "RUNNABLE")
    assert (second.job.requested, second.job.before.value) == ("terminate", "RUNNING")
    assert third.job.requested == "none"  # already finished
    assert set(result.unconfirmed) == {first.run_id, second.run_id}  # moto flags, never stops: not confirmed
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.sweep_manifest_key("dev", SWEEP))["Body"].read()
    )
    assert manifest["killed_at"] == "2026-12-01T21:05:02Z" and result.manifest_marked
    for member in result.members:
        assert StateStore(s3, bucket, "dev", run_id=member.run_id).read() is None  # no lock left behind
        assert member.state_cleared_by_control and member.cleanup_written_by == "control"
    paths = layout.RunPaths(env="dev", run_id=first.run_id)
    cleanup = json.loads(s3.get_object(Bucket=bucket, Key=paths.cleanup_status)["Body"].read())
    job_action = cleanup["actions"][0]
    assert (job_action["action"], job_action["status"]) == ("cancel", "requested")
    assert job_action["observed"] == "DescribeJobs: RUNNABLE"
    view = sweep_view(backend, env="dev", sweep_id=SWEEP)
    assert [m.status for m in view.members] == ["killed"] * 3 and view.done and view.exit_code == 4


def test_kill_run_id_stops_one_member_only(submitted, s3, bucket, moto_batch):
    backend, jobs = submitted
    result = kill(backend, run_id=f"{SWEEP}-002")
    assert [m.run_id for m in result.members] == [f"{SWEEP}-002"] and not result.manifest_marked
    moto_batch.honour_stops(jobs[1])
    assert StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-001").read() is not None
    view = sweep_view(backend, env="dev", sweep_id=SWEEP)
    assert [m.status for m in view.members] == ["initialization", "killed", "stale"]
    again = kill(backend, run_id=f"{SWEEP}-002")  # idempotent: nothing left to stop
    assert again.members[0].job.requested == "none" and again.members[0].status_before is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [({}, "give one of --sweep"), ({"sweep_id": SWEEP, "run_id": f"{SWEEP}-001"}, "give one of --sweep"),
     ({"run_id": SWEEP}, "is a single run, not a sweep member"),
     ({"sweep_id": "20261201-000000"}, "no sweep"),
     ({"run_id": f"{SWEEP}-009"}, "is not a member of sweep"), ({"sweep_id": "x"}, "sweep id 'x'")],
)  # fmt: skip
def test_a_bad_kill_target_is_one_line(submitted, target, expected):
    backend, _ = submitted
    with pytest.raises(ConfigError, match=expected):
        kill(backend, **target)

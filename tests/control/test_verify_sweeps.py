"""``verify`` of sweeps against moto's Batch: stale member locks, orphaned jobs, an idle environment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from common import layout
from common.state_store import StateStore
from control.sweep import sweep
from control.sweep_kill import SweepKiller
from control.verify import verify

NOW = datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC)
SWEEP = "20261201-210502"


@pytest.fixture
def members(tmp_path, s3, bucket, moto_batch):
    s3.put_object(Bucket=bucket, Key="cached-datasets/training-data/part-0.parquet", Body=b"PAR1")
    path = tmp_path / "sweep.toml"
    path.write_text('[grid]\n"model.seed" = [1, 2, 3]\n')
    backend = moto_batch.backend(bucket)
    result = sweep(backend, env="dev", grid_path=path, clock=lambda: NOW).result
    return backend, [m.job_id for m in result.members]


def findings(result, kind):
    return {f.run_id or f.resource: f for f in result.before.findings if f.kind == kind}


def test_verify_finds_locks_whose_job_finished_or_vanished_and_fix_clears_them(
    members, s3, bucket, moto_batch
):
    backend, jobs = members
    moto_batch.hold(jobs[0], "RUNNING")  # healthy: its trainer runs
    # jobs[1]: SUCCEEDED (moto) but its lock is held: stale
    third = StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-003")
    third.update(f"{SWEEP}-003", lambda d: {**d, "batch": {**d["batch"], "job_id": "gone-0000"}})
    moto_batch.scale(4)  # a job runs: the environment's vCPUs are in use
    later = NOW + timedelta(minutes=30)
    found = verify(backend, env="dev", clock=lambda: later)
    locks = findings(found, "sweep-lock")
    assert (
        not locks[f"{SWEEP}-001"].orphaned and "job " + jobs[0] + " RUNNING" in locks[f"{SWEEP}-001"].detail
    )
    assert locks[f"{SWEEP}-002"].orphaned and "SUCCEEDED but the lock is held" in locks[f"{SWEEP}-002"].detail
    assert locks[f"{SWEEP}-003"].orphaned and "unknown to Batch" in locks[f"{SWEEP}-003"].detail
    assert not findings(found, "compute-environment")[moto_batch.compute_environment].orphaned
    assert found.exit_code == 1
    fixed = verify(backend, env="dev", fix=True, yes=True, clock=lambda: later)
    assert fixed.final.clean and any("removed stale lock" in d for d in fixed.fixed)
    assert StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-001").read() is not None  # the healthy one stays
    cleanup = json.loads(
        s3.get_object(Bucket=bucket, Key=layout.RunPaths(env="dev", run_id=f"{SWEEP}-002").cleanup_status)[
            "Body"
        ].read()
    )
    assert cleanup["written_by"] == "control" and cleanup["actions"][0]["status"] == "succeeded"


def test_a_lock_without_a_job_is_stale_only_after_the_grace(members, s3, bucket, moto_batch):
    backend, _ = members
    first = StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-001")
    first.update(f"{SWEEP}-001", lambda d: {**d, "batch": {**d["batch"], "job_id": None}})
    soon = findings(verify(backend, env="dev", clock=lambda: NOW + timedelta(seconds=30)), "sweep-lock")
    assert not soon[f"{SWEEP}-001"].orphaned and soon[f"{SWEEP}-001"].detail == "being submitted"
    late = findings(verify(backend, env="dev", clock=lambda: NOW + timedelta(hours=1)), "sweep-lock")
    assert late[f"{SWEEP}-001"].orphaned and "no Batch job recorded" in late[f"{SWEEP}-001"].detail


def test_a_killed_sweeps_queued_job_and_an_idle_environment_are_orphans_fix_stops_both(
    members, s3, bucket, local_aws, moto_batch
):
    backend, jobs = members
    for n in (1, 2, 3):  # every lock released, as a finished kill leaves them
        StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-00{n}").release(f"{SWEEP}-00{n}")
    SweepKiller(s3, local_aws.client("batch"), bucket, "dev", clock=lambda: NOW).mark_manifest(
        SWEEP, "killed"
    )
    moto_batch.hold(jobs[0], "RUNNABLE")  # the cancel never reached it: it would start and bill
    found = verify(backend, env="dev", clock=lambda: NOW)
    job = findings(found, "batch-job")[f"{SWEEP}-001"]
    assert job.orphaned and job.resource == jobs[0] and "its sweep was killed" in job.detail
    assert not findings(found, "compute-environment")[moto_batch.compute_environment].orphaned  # 0 vCPUs
    moto_batch.scale(8)
    found = verify(backend, env="dev", clock=lambda: NOW)
    ce = findings(found, "compute-environment")[moto_batch.compute_environment]
    assert not ce.orphaned  # a job is still queued: the vCPUs may be for it
    fixed = verify(backend, env="dev", fix=True, yes=True, clock=lambda: NOW)
    assert any(d.startswith(f"requested cancel of job {jobs[0]}") for d in fixed.fixed)
    moto_batch.honour_stops(jobs[0])
    found = verify(backend, env="dev", clock=lambda: NOW)
    assert findings(found, "compute-environment")[moto_batch.compute_environment].orphaned  # idle at 8 vCPUs
    fixed = verify(backend, env="dev", fix=True, yes=True, clock=lambda: NOW)
    assert any("requested scale-in of compute environment" in d for d in fixed.fixed)


def test_an_instance_batch_launched_is_never_an_orphan(members, local_aws, moto_batch):
    backend, _ = members
    ec2 = local_aws.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "Project", "Value": "Chronos-Training"}, {"Key": "Environment", "Value": "dev"},
            {"Key": "AWSBatchServiceTag", "Value": moto_batch.compute_environment}]  # fmt: skip
    ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
    )
    found = verify(backend, env="dev", clock=lambda: NOW)
    (host,) = [f for f in found.before.findings if f.kind == "instance"]
    assert not host.orphaned and "AWS Batch host of chronos-dev-batch-spot" in host.detail

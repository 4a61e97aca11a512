"""``invoke sweep``'s plan and submit against moto's Batch (jobs are not executed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common import layout
from common.errors import ConfigError
from common.state_store import StateStore
from control.sweep_grid import load_grid
from control.sweep_plan import BatchTarget, Submission, SweepWorld, batch_target, plan_sweep
from control.sweep_submit import apply_sweep
from infra.outputs import read_outputs
from schemas import validate

OUTPUTS = {
    "region": "us-east-1", "env": "dev", "account_id": "123456789012",
    "subnets_by_az": {"us-east-1a": "subnet-1"}, "security_group_id": "sg-1", "launch_template_id": "lt-1",
    "instance_profile_arn": "arn:aws:iam::1:x", "instance_role_arn": "arn:aws:iam::1:role/x",
    "operator_policy_arn": "arn:aws:iam::1:policy/x",
}  # fmt: skip

NOW = datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC)
SWEEP = "20261201-210502"
DATA = "cached-datasets/training-data/"


@pytest.fixture
def batch_world(moto_batch, bucket):
    return moto_batch


def make_plan(tmp_path, bucket, target, *, points=2, data=None, outputs=None):
    grid_path = tmp_path / "sweep.toml"
    rates = ", ".join(str(1e-4 * (i + 1)) for i in range(points))
    grid_path.write_text(f'[base.model]\nnum_steps = 20\n[grid]\n"model.learning_rate" = [{rates}]\n')
    grid = load_grid(grid_path, env="dev")
    world = SweepWorld(
        env="dev",
        sweep_id=SWEEP,
        now=NOW,
        local=True,
        outputs=outputs or read_outputs(OUTPUTS | {"bucket": bucket}),
        target=target,
        code_bundle=b"bundle",
        code_key="cached-datasets/scripts/bundle-abc.tar.gz",
        code_skip_reason=None,
        data_files=data if data is not None else {DATA: 3},
        grid_file=("sweep.toml", grid_path.read_bytes()),
    )
    return plan_sweep(grid, world)


def target_of(world):
    return BatchTarget(job_queue=world.queue, job_definition=world.definition)


def test_the_plan_gives_each_point_its_run_id_lock_and_job_request(tmp_path, bucket):
    plan = make_plan(tmp_path, bucket, BatchTarget(job_queue="q", job_definition="jd:1"), points=3)
    summary = plan.summary()
    assert [m["run_id"] for m in summary["members"]] == [f"{SWEEP}-001", f"{SWEEP}-002", f"{SWEEP}-003"]
    first = plan.members[0]
    assert (
        summary["members"][0]["lock"]
        == f"s3://{bucket}/dev/sweeps/{SWEEP}/runs/{SWEEP}-001/system-state.json"
    )
    assert summary["members"][0]["outputs"] == f"s3://{bucket}/dev/2026/12/01-210502-001/"
    assert first.submit_request["parameters"] == {
        "env": "dev", "run_id": f"{SWEEP}-001", "code_key": "cached-datasets/scripts/bundle-abc.tar.gz"
    }  # fmt: skip
    assert first.submit_request["jobName"] == f"dev-{SWEEP}-001"
    assert (
        first.submit_request["tags"]["SweepId"] == SWEEP
        and first.submit_request["tags"]["RunId"] == first.run_id
    )
    validate("system-state", dict(first.state_doc))  # the lock's first document is a valid state
    assert first.state_doc["batch"] == {
        "sweep_id": SWEEP,
        "job_id": None,
        "job_queue": "q",
        "job_definition": "jd:1",
    }
    validate("sweep", plan.manifest)
    assert json.loads(first.uploads[0].body)["model"]["learning_rate"] == 1e-4


def test_a_point_without_data_is_refused_before_anything_is_written(tmp_path, bucket):
    with pytest.raises(
        ConfigError, match=r"point 1: no .parquet file under .*cached-datasets/training-data/"
    ):
        make_plan(tmp_path, bucket, BatchTarget(job_queue="q", job_definition="jd"), data={})


def test_a_stack_without_batch_resources_is_one_line_with_what_to_do(bucket, moto_batch):
    outputs = moto_batch.outputs
    with pytest.raises(ConfigError, match=r"this stack has no Batch resources.*set `batch: true`.*pulumi up"):
        batch_target(outputs(bucket), local=False)
    with pytest.raises(ConfigError, match=r"no Batch resources.*local.up --env=dev"):
        batch_target(outputs(bucket), local=True)
    found = batch_target(outputs(bucket, batch_job_queue="q", batch_job_definition="jd"), local=False)
    assert (found.job_queue, found.job_definition) == ("q", "jd")


def test_submit_writes_manifest_specs_locks_and_one_job_per_point(
    tmp_path, local_aws, s3, bucket, batch_world
):
    plan = make_plan(tmp_path, bucket, target_of(batch_world))
    batch = local_aws.client("batch")
    result = apply_sweep(plan, s3=s3, batch=batch, clock=lambda: NOW)
    assert result.ok and result.count(Submission.SUBMITTED) == 2
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=plan.manifest_key)["Body"].read())
    validate("sweep", manifest)
    assert [m["submission"] for m in manifest["members"]] == ["submitted", "submitted"]
    jobs = {
        j["jobId"]: j for j in batch.describe_jobs(jobs=[m["job_id"] for m in manifest["members"]])["jobs"]
    }
    assert len(jobs) == 2
    for entry in manifest["members"]:
        state = StateStore(s3, bucket, "dev", run_id=entry["run_id"]).read()
        assert state.doc["batch"]["job_id"] == entry["job_id"]  # the member's lock knows its job
        job = jobs[entry["job_id"]]
        assert job["parameters"]["run_id"] == entry["run_id"] and job["parameters"]["env"] == "dev"
        assert job["jobQueue"].endswith(batch_world.queue)
        assert job["tags"]["SweepId"] == SWEEP
        spec = layout.RunPaths(env="dev", run_id=entry["run_id"]).run_spec
        assert json.loads(s3.get_object(Bucket=bucket, Key=spec)["Body"].read())["env"] == "dev"
    assert StateStore(s3, bucket, "dev").read() is None  # the env's single-run lock stays free
    assert (
        s3.get_object(Bucket=bucket, Key=f"dev/sweeps/{SWEEP}/sweep.toml")["Body"].read().startswith(b"[base")
    )
    assert s3.head_object(Bucket=bucket, Key=plan.code_upload.key)["ContentLength"] == len(b"bundle")


def test_a_point_whose_lock_is_held_is_skipped_with_its_run_id(tmp_path, local_aws, s3, bucket, batch_world):
    plan = make_plan(tmp_path, bucket, target_of(batch_world))
    held = StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-002")
    held.acquire(dict(plan.members[1].state_doc))
    result = apply_sweep(plan, s3=s3, batch=local_aws.client("batch"), clock=lambda: NOW)
    assert [m.submission for m in result.members] == [Submission.SUBMITTED, Submission.SKIPPED]
    assert f"{SWEEP}-002" in result.members[1].reason and not result.ok
    assert held.read().doc["batch"]["job_id"] is None  # the holder's lock untouched
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=plan.manifest_key)["Body"].read())
    assert manifest["members"][1]["submission"] == "skipped"


def test_a_refused_submit_releases_that_lock_and_stops_the_sweep(
    tmp_path, local_aws, s3, bucket, batch_world
):
    target = BatchTarget(job_queue="chronos-dev-no-such-queue", job_definition=batch_world.definition)
    plan = make_plan(tmp_path, bucket, target)
    result = apply_sweep(plan, s3=s3, batch=local_aws.client("batch"), clock=lambda: NOW)
    assert [m.submission for m in result.members] == [Submission.FAILED]
    assert "SubmitJob refused it" in result.members[0].reason
    assert StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-001").read() is None  # no orphan lock
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=plan.manifest_key)["Body"].read())
    assert [m["submission"] for m in manifest["members"]] == ["failed", "planned"]


def test_a_second_sweep_of_the_same_second_writes_nothing(tmp_path, local_aws, s3, bucket, batch_world):
    from control.sweep import SweepIdTakenError

    plan = make_plan(tmp_path, bucket, target_of(batch_world))
    apply_sweep(plan, s3=s3, batch=local_aws.client("batch"), clock=lambda: NOW)
    before = s3.list_objects_v2(Bucket=bucket)["KeyCount"]
    with pytest.raises(SweepIdTakenError, match=f"sweep id {SWEEP} is already used in env 'dev'"):
        apply_sweep(plan, s3=s3, batch=local_aws.client("batch"), clock=lambda: NOW)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == before


@pytest.mark.parametrize(
    ("name", "tags"),
    [("-dev-x", {}), ("dev." + "x" * 10, {}), ("d" * 129, {}),
     ("dev-ok", {f"k{i}": "v" for i in range(51)}), ("dev-ok", {"k": "v" * 257})],
)  # fmt: skip
def test_what_submitjob_refuses_and_moto_takes_is_refused_in_the_plan(name, tags):
    from control.sweep_plan import _check_request

    with pytest.raises(ConfigError, match="job name|tags"):
        _check_request({"jobName": name, "tags": tags})
    _check_request({"jobName": "dev-20261201-210502-001", "tags": {"Project": "Chronos-Training"}})


def test_a_kill_during_the_submit_stops_it_and_keeps_its_mark(tmp_path, local_aws, s3, bucket, batch_world):
    from control.sweep_kill import SweepKiller

    plan = make_plan(tmp_path, bucket, target_of(batch_world), points=3)
    batch = local_aws.client("batch")
    real_submit = batch.submit_job

    def submit_then_kill(**request):
        answer = real_submit(**request)  # the first job is submitted, then the user kills the sweep
        SweepKiller(s3, batch, bucket, "dev", clock=lambda: NOW).mark_manifest(SWEEP, "killed by operator")
        return answer

    batch.submit_job = submit_then_kill
    result = apply_sweep(plan, s3=s3, batch=batch, clock=lambda: NOW)
    assert [m.submission for m in result.members] == [
        Submission.SUBMITTED,
        Submission.SKIPPED,
        Submission.SKIPPED,
    ]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=plan.manifest_key)["Body"].read())
    assert manifest["killed_at"] == "2026-12-01T21:05:02Z"  # the final write kept the kill's mark
    assert [m["submission"] for m in manifest["members"]] == ["submitted", "skipped", "skipped"]
    assert StateStore(s3, bucket, "dev", run_id=f"{SWEEP}-002").read() is None  # nothing of it written

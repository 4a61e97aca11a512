"""A sweep member whose Batch host vanishes mid-training: Batch retries the job, and the retry resumes.

The real job definition and entry script (``trainer/batch_entry.sh`` -> ``python -m trainer run
--batch``) run by the local executor. The host is reclaimed without notice once a checkpoint is
in S3 (the executor SIGKILLs the attempt: status reason ``Host EC2 (instance ...) terminated.``);
the retry strategy retries it, attempt 2 takes the member's state over (claimed, a recovery
counted, attempt 1 ended ``vanished``) and resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import json

import pytest

from common.layout import RunPaths
from common.state_store import StateStore
from common.timeutil import wait_until
from control import local_batch
from control.local_backend import LocalBackend
from control.localdir import write_json
from control.localenv import stage_dataset
from control.sweep import sweep

pytestmark = pytest.mark.slow

GRID = """\
[base.instance]
max_runtime = "20m"
[base.model]
base = "tiny"
batch_size = 16
checkpoint_interval = 20
[grid]
"model.num_steps" = [400]
"""
# The spot notice is heard within the watcher's 2 s poll of the IMDS, and the tiny model trains
# about 50 steps a second on an idle host: enough steps that the run is still training then.
SPOT_GRID = GRID.replace("[400]", "[2000]")


@pytest.fixture
def batch_dev(local_aws, dataset_dir, local_dir):
    from infra.local import ProvisionOptions
    from infra.local import provision as provision_local

    outputs = provision_local(
        local_aws.session(),
        env="dev",
        endpoint_url=local_aws.endpoint_url,
        options=ProvisionOptions(batch=True),
    )
    write_json(local_dir.stack_file("dev"), outputs)
    backend = LocalBackend.open(local_dir)
    stage_dataset(backend.clients().s3, outputs["bucket"], dataset_dir)
    yield backend, outputs
    local_batch.stop_all(local_dir)


def test_a_member_whose_host_vanishes_is_retried_by_batch_and_resumes_from_its_checkpoint(
    tmp_path, local_dir, batch_dev
):
    backend, outputs = batch_dev
    grid = tmp_path / "sweep.toml"
    grid.write_text(GRID)
    outcome = sweep(backend, env="dev", grid_path=grid)
    assert outcome.result.ok, outcome.result.members
    (member,) = outcome.result.members
    s3, bucket = backend.clients().s3, outputs["bucket"]
    paths = RunPaths(env="dev", run_id=member.run_id)

    wait_until(lambda: _checkpointed(s3, bucket, paths), 240, f"{member.run_id}: a complete checkpoint in S3")
    assert local_batch.interrupt(member.job_id, local_dir=local_dir)  # the spot host is gone, no notice
    record = local_batch.wait(member.job_id, local_dir=local_dir, timeout_s=300)

    assert record["status"] == "SUCCEEDED", record
    first, second = record["attempts"]
    assert first["status_reason"].startswith("Host EC2 (instance ") and first["exit_code"] is None
    assert second["exit_code"] == 0
    assert StateStore(s3, bucket, "dev", run_id=member.run_id).read() is None  # the member's lock released
    assert s3.head_object(Bucket=bucket, Key=paths.success)
    training = json.loads(s3.get_object(Bucket=bucket, Key=paths.training_log)["Body"].read())
    assert training["completion_status"] == "normal" and training["exit_code"] == 0
    assert training["resumed_from_step"] and training["resumed_from_step"] % 20 == 0  # a checkpoint, not 0
    assert [a["end"] for a in training["attempts"]][:1] == ["vanished"]
    assert len(training["attempts"]) == 2
    assert training["instance"]["instance_id"] == f"batch:{member.job_id}"


def test_a_spot_notice_checkpoints_keeps_the_lock_and_the_retry_on_a_new_host_resumes(
    tmp_path, local_dir, batch_dev, monkeypatch
):
    """The host's IMDS (reached from the container) gives a two-minute notice: the trainer
    checkpoints, ends the attempt ``interrupted`` (exit 3) with the member's lock kept for Batch;
    the retry strategy retries exit 3, and attempt 2 on another host resumes from that checkpoint."""
    from common.status import RunStatus
    from localaws.imds import FakeIMDS

    backend, outputs = batch_dev
    host = FakeIMDS(instance_id="i-0spothost000001").start()
    monkeypatch.setenv("CHRONOS_IMDS_ENDPOINT", host.url)  # the runner and its jobs inherit it
    try:
        grid = tmp_path / "sweep.toml"
        grid.write_text(SPOT_GRID)
        (member,) = sweep(backend, env="dev", grid_path=grid).result.members
        s3, bucket = backend.clients().s3, outputs["bucket"]
        paths = RunPaths(env="dev", run_id=member.run_id)
        store = StateStore(s3, bucket, "dev", run_id=member.run_id)

        # the first complete checkpoint (step 20) is in S3: an event of the run's own, not a poll
        # of its heartbeat, which is written at most every 20 s (a fast run finished unseen)
        wait_until(lambda: _checkpointed(s3, bucket, paths), 240, f"{member.run_id}: a checkpoint in S3")
        host.set_spot_notice()
        wait_until(
            lambda: _status(store) in (RunStatus.INTERRUPTED, None), 120, f"{member.run_id} interrupted"
        )
        assert _status(store) is RunStatus.INTERRUPTED, (
            "the run ended before it heard the notice (too few steps)"
        )
        host.clear()  # the next attempt runs on another host, without a notice
        host.values["instance-id"] = "i-0spothost000002"
        record = local_batch.wait(member.job_id, local_dir=local_dir, timeout_s=300)
    finally:
        host.stop()
    assert record["status"] == "SUCCEEDED", record
    assert [a["exit_code"] for a in record["attempts"]] == [3, 0]  # ExitCode.INTERRUPTED, then done
    training_log = json.loads(s3.get_object(Bucket=bucket, Key=paths.training_log)["Body"].read())
    assert [a["end"] for a in training_log["attempts"]] == ["interrupted", "completed"]
    assert [a["instance_id"] for a in training_log["attempts"]] == ["i-0spothost000001", "i-0spothost000002"]
    assert training_log["resumed_from_step"] >= 20
    assert training_log["interruptions"] and training_log["interruptions"][0]["notice_at"]
    assert store.read() is None and s3.head_object(Bucket=bucket, Key=paths.success)


def _checkpointed(s3, bucket: str, paths: RunPaths) -> bool:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=paths.checkpoints).get("Contents", [])
    return any(o["Key"].endswith("trainer_state.json") for o in listed)


def _status(store: StateStore):
    snap = store.read()
    return None if snap is None else snap.status

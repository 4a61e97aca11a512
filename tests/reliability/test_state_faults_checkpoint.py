"""State faults of a run's checkpoints and results: a full disk, a truncated checkpoint, _FAILED_UPLOAD.

One run, three attempts, each fault on its own attempt and each ending settled on its own:

1. the disk fills while checkpoint-30 is written (an injected ENOSPC, :func:`reliability.
   harness_faults.disk_full`): the run fails, saying the disk is full and what to do; the
   checkpoints uploaded before (10, 20) are intact;
2. checkpoint-20, the newest in S3, is then truncated (its weights cut in half, a torn upload)
   and the user resumes (``invoke launch --resume``): the resume skips it for the newest
   *valid* one, checkpoint-10, and trains on; this attempt's model uploads are denied
   (403 AccessDenied on ``models/``), so it ends with ``_FAILED_UPLOAD``;
3. the user resumes again: the run starts from its final checkpoint (30, nothing retrained),
   uploads its results and succeeds.
"""

from __future__ import annotations

import json

import pytest

from reliability import harness as H
from reliability import harness_faults as F
from reliability import (
    matrix,  # noqa: F401 - first: it imports every rows_*.py
    record,
)
from reliability.s3faults import Caller, Kind, Rule, in_front_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.row("disk-full@training"),
    pytest.mark.row("truncated-checkpoint@data_sync"),
    pytest.mark.row("failed-upload-resume@results_sync"),
]


def _instance_caller(world):
    outputs = json.loads(world.local_dir.stack_file(world.env).read_text())
    outputs = outputs.get("outputs", outputs)
    return Caller.role(str(outputs["instance_role_arn"]).rsplit("/", 1)[1])


def test_a_full_disk_then_a_truncated_checkpoint_then_a_failed_upload_each_end_truly_and_resume(world):
    # 1. the disk fills while checkpoint-30 is written
    with F.disk_full("*/checkpoints/checkpoint-30/*"):
        run = world.launch(H.matrix_spec(steps=30, recoveries=0, checkpoint_interval=10))
    first = run.instance_id
    H.wait_until(lambda: F.disk_full_hits(world, first), 400, "the full disk to refuse a checkpoint write")
    out = H.settle(world, run, before=H.snapshot(world, run.run_id), row="disk-full@training")
    detail = f"{out}\n{world.logs()}"
    assert out.status == "failed" and out.state is None, detail
    assert out.orphans == [] and out.lost == [] and out.checked > 0, detail
    assert "No space left on device" in out.message and "checkpoint-30" in out.message, out.message
    assert "root_volume_gb" in out.message, out.message  # what to do
    assert H.newest_checkpoint(H.snapshot(world, run.run_id), run.paths) == 20, detail
    record.note("disk-full@training", f"the user read: {out.message}")

    # 2. the newest checkpoint in S3 is torn; the resume uses the newest valid one
    weights = f"{run.paths.checkpoints}checkpoint-20/model.safetensors"
    F.truncate_object(world, weights)
    torn = f"{run.paths.checkpoints}checkpoint-20/"
    before = {k: v for k, v in H.snapshot(world, run.run_id).items() if not k.startswith(torn)}
    with in_front_of(world) as (fronted, proxy):
        proxy.add(Rule(kind=Kind.ACCESS_DENIED, key_prefix=run.paths.models, caller=_instance_caller(world)))
        run = fronted.resume(run.run_id)
        out = H.settle(fronted, run, before=before, row="truncated-checkpoint@data_sync")
    detail = f"{out}\n{world.logs()}"
    assert proxy.injected, detail
    assert out.resumed_from_step == 10, detail  # checkpoint-20 was torn: the newest valid is 10
    assert out.status == "failed" and out.state is None, detail
    assert out.sentinel is not None and out.sentinel["status"] == "failed_upload", detail
    assert out.orphans == [] and out.lost == [], detail
    assert run.paths.models in out.message and "resume" in out.message, out.message
    record.note("truncated-checkpoint@data_sync", f"resumed from step {out.resumed_from_step}")

    # 3. resume after _FAILED_UPLOAD: from the final checkpoint, results uploaded, succeeded
    before = H.snapshot(world, run.run_id)
    assert H.newest_checkpoint(before, run.paths) == 30, before
    run = world.resume(run.run_id)
    out = H.settle(world, run, before=before, row="failed-upload-resume@results_sync")
    detail = f"{out}\n{world.logs()}"
    assert out.status == "succeeded" and out.state is None, detail
    assert out.resumed_from_step == 30, detail
    assert out.sentinel is not None and out.sentinel["completion_status"] == "normal", detail
    assert world.get_json(run.paths.failed_upload) is None, detail  # the sentinel of the failure is gone
    assert out.orphans == [] and out.lost == [] and out.checked > 0, detail
    assert len(world.instances(run.run_id)) == 3

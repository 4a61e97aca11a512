"""Faults of the lock (the env's state file) that the next command must find: a launch killed after
RunInstances, a lock whose instance is gone, a schema-invalid state file, a corrupt one mid-run.

None of them but the last needs a trainer: the launch death happens before any instance boots
(in local mode the launching process starts the instance's host), the stale lock's run is
stopped in preflight, the schema-invalid file is read by the next commands.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from common import layout
from reliability import harness as H
from reliability import harness_faults as F
from reliability import (
    matrix,  # noqa: F401 - first: it imports every rows_*.py
    record,
)
from reliability.harness_inject import powered_off

pytestmark = pytest.mark.slow
VERIFY_FIX = "invoke verify --env=dev --fix --yes"


def _one_line_refusal(proc, *needles: str) -> str:
    out = proc.stdout.strip()
    assert proc.returncode != 0, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    for needle in needles:
        assert needle in out, (needle, out)
    return out


def _verify(world, *, fix: bool = False):
    from control.verify import verify

    result = verify(world.backend, env=world.env, fix=fix, yes=fix)
    orphans = [f for f in result.final.orphans]
    if fix:  # what is left after --fix; before it, the orphans are the row's own planted fault
        record.count(record.Total.ORPHANS_FOUND, len(orphans))
    return result, orphans


def _launch_is_not_refused(world) -> None:
    from control.launch import launch

    plan = launch(
        world.backend, env=world.env, spec_path=world.write_spec(H.matrix_spec(), "next"), dry_run=True
    )
    assert plan.result is None and plan.plan is not None


def _real_run_instances(r: H.Request) -> bool:
    return r.action == "RunInstances" and b"DryRun=true" not in r.body  # not the doctor's dry run


def _run_instances(world) -> list[H.Request]:
    return [r for r in world.gate.log() if _real_run_instances(r)]


@pytest.mark.row("control-death@launch")
def test_a_launch_killed_after_run_instances_is_found_and_accounted_for(world):
    hold = world.gate.hold("RunInstances", _real_run_instances, after=True)
    proc = world.launch_process(H.matrix_spec(steps=10))
    try:
        hold.wait(300)  # moto started the instance; the launch has not heard back
        doc = world.state()
        assert doc is not None and doc["instance_id"] is None, doc
        os.killpg(proc.pid, signal.SIGKILL)
        record.count(record.Total.FAULTS_INJECTED)
        proc.wait(60)
    finally:
        hold.drop()
    run_id = doc["run_id"]
    [iid] = world.instances(run_id)
    assert world.billing(run_id) == [iid]

    again = world.invoke(
        "launch", "--env=dev", "--local", f"--spec={world.write_spec(H.matrix_spec(), 'again')}"
    )
    message = _one_line_refusal(
        again, run_id, iid, "`invoke kill --env=dev` terminates the instance and releases the lock"
    )
    record.note("control-death@launch", f"the next launch said: {message}")
    assert len(_run_instances(world)) == 1  # the refused launch started nothing

    _, orphans = _verify(world)
    assert [(f.kind, f.resource, f.run_id) for f in orphans] == [("instance", iid, run_id)], orphans
    killed = world.invoke("kill", "--env=dev", "--local")  # what the refusal said
    assert killed.returncode == 0 and world.state() is None, killed.stdout
    assert world.billing(run_id) == [], killed.stdout  # kill found the instance by its RunId tag
    fixed, _ = _verify(world, fix=True)
    assert fixed.final.clean and world.billing(run_id) == [], fixed.final
    _, orphans = _verify(world)
    assert orphans == []
    _launch_is_not_refused(world)


@pytest.mark.row("stale-lock@launch")
def test_a_lock_whose_instance_is_gone_makes_launch_point_to_verify_fix(world):
    from control.local_recovery import stop_all

    run = world.launch(H.matrix_spec(steps=10))
    hold = H.hold_at(world, "preflight", run.run_id)
    try:
        H.landed(world, "preflight", hold, timeout=300)
        before = H.snapshot(world, run.run_id)
        stop_all(world.local_dir)  # the recovery handler is not running (undeployed, failing)
        F.sigkill_trainer(world, run.instance_id)  # no cleanup: the user data powers the instance off
        hold.drop()
    finally:
        hold.release()
    powered_off(world, run.instance_id)
    doc = world.state()
    assert doc is not None and doc["run_id"] == run.run_id, doc  # nobody released it

    again = world.invoke(
        "launch", "--env=dev", "--local", f"--spec={world.write_spec(H.matrix_spec(), 'again')}"
    )
    message = _one_line_refusal(again, run.run_id, run.instance_id, "stale", VERIFY_FIX)
    record.note("stale-lock@launch", f"the next launch said: {message}")
    _, orphans = _verify(world)
    assert [(f.kind, f.state) for f in orphans] == [("state-file", "stale")], orphans
    fixed, _ = _verify(world, fix=True)
    assert fixed.final.clean and world.state() is None, fixed.final
    out = H.settle(world, run, before=before, row="stale-lock@launch")
    assert out.orphans == [] and out.lost == [] and out.state is None, out
    _launch_is_not_refused(world)


@pytest.mark.row("schema-invalid-state@launch")
def test_a_schema_invalid_state_file_is_refused_in_one_line_by_every_command_until_verify_fix(world):
    key = layout.state_key(world.env)
    doc = {
        "run_id": "not-a-date",
        "env": world.env,
        "status": "sleeping",
        "instance_id": None,
        "started_at": "2026-11-25T14:05:02Z",
        "updated_at": "2026-11-25T14:05:02Z",
        "heartbeat_at": "2026-11-25T14:05:02Z",
    }
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=json.dumps(doc).encode())
    record.count(record.Total.FAULTS_INJECTED)
    spec = world.write_spec(H.matrix_spec(), "next")
    for args in (("launch", "--env=dev", "--local", f"--spec={spec}"), ("monitor", "--env=dev", "--local")):
        message = _one_line_refusal(world.invoke(*args), key, "corrupt", "$", "invoke verify --env=dev --fix")
    record.note("schema-invalid-state@launch", f"launch and monitor said: {message}")
    killed = world.invoke("kill", "--env=dev", "--local")
    assert killed.returncode != 0 and "Traceback" not in killed.stdout and "verify" in killed.stdout, (
        killed.stdout
    )
    assert _run_instances(world) == []  # nothing launched
    _, orphans = _verify(world)
    assert [(f.kind, f.state) for f in orphans] == [("state-file", "corrupt")], orphans
    fixed, _ = _verify(world, fix=True)
    assert fixed.final.clean and world.state() is None, fixed.final
    _launch_is_not_refused(world)


@pytest.mark.row("corrupt-state@training")
def test_a_state_file_corrupted_while_training_ends_the_run_truly_and_verify_fix_clears_it(world):
    run = world.launch(H.matrix_spec(steps=30, checkpoint_interval=10))
    key = layout.state_key(world.env)
    hold = H.hold_at(world, "training", run.run_id)
    try:
        H.landed(world, "training", hold, timeout=300)
        before = H.snapshot(world, run.run_id)  # the first checkpoint is in S3
        torn = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()[:40]
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=torn)  # not JSON any more
        record.count(record.Total.FAULTS_INJECTED)
    finally:
        hold.release()
    out = H.settle(world, run, before=before, row="corrupt-state@training", planted=("state-file",))
    detail = f"{out}\n{world.logs()}"
    assert out.status == "failed", detail
    assert "corrupt" in out.message and "invoke verify --env=dev --fix" in out.message, out.message
    assert out.lost == [] and out.checked > 0, detail
    assert out.state is not None and "corrupt" in out.state, detail  # nobody may release what it cannot read
    assert [o.split(" ", 1)[0] for o in out.orphans] == ["state-file"], out.orphans
    fixed, _ = _verify(world, fix=True)
    assert fixed.final.clean and world.state() is None, fixed.final
    _, orphans = _verify(world)
    assert orphans == [] and world.billing(run.run_id) == []
    record.note("corrupt-state@training", f"the user read: {out.message}")

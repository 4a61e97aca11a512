"""The terminate column of the fault matrix: instances terminated from outside in every phase.

A terminate (TerminateInstances as the operator: no notice, the host's OS shutdown: SIGTERM,
then SIGKILL after a grace) while the run still works is recovered: one run takes it in
preflight, data_sync, training and evaluation in turn, each on a new attempt held by the gate in
its phase (checked on the state file), each recovery the product's own (the pump's
instance-ended event, the handler's relaunch). Its next attempt is terminated in results_sync,
whose uploads are then under way: the instance may finish them within the shutdown's grace, or
be killed at its end and relaunched; either way the run must end succeeded with every artifact
intact. Terminated in finalize or cleanup, a run finishes the same way, and has no later attempt
to take another fault: each gets a short run of its own.

The recovery pump hears only its schedule here (no instance-ended event): a terminate from
outside gives no notice, and the handler's schedule tick finds the instance gone by itself
(each recovery's trigger is checked on the held state). Every call of the instances and the
recovery function is recorded and judged against their exact IAM policies (the local audit):
what AWS would refuse fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from control import local_audit
from control.local_recovery import EVENTS_VAR
from localaws.audit import ENV_VAR as AUDIT_VAR
from reliability import harness as H
from reliability import (
    matrix,  # noqa: F401 - first: it imports every rows_*.py
    record,
)
from reliability.harness_inject import inject_at
from reliability.rows_process import PHASES, WORKING

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    *(pytest.mark.row(f"terminate@{p}") for p in PHASES),
]


def _succeeded(out: H.Outcome) -> None:
    assert out.state is None, out.state  # the lock is gone
    assert out.status == "succeeded", out.message
    assert out.training is not None and out.training["completion_status"] == "normal"
    assert out.sentinel is not None and out.sentinel["completion_status"] == "normal"
    assert out.orphans == [] and out.lost == [], (out.orphans, out.lost)
    assert out.checked > 0
    assert out.cleanup is not None and out.cleanup["state_file_removed"] is True, out.cleanup


def _released_by_the_handler(cleanup: dict) -> bool:
    """The instance's cleanup found the lock already gone (its delete skipped), yet it is gone."""
    delete = next(a for a in cleanup["actions"] if a["action"] == "delete")
    return delete["status"] == "skipped" and "already gone" in (delete["error"] or "")


@pytest.fixture
def calls(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pump hears only its schedule; every process started from now on records its AWS calls here."""
    monkeypatch.setenv(EVENTS_VAR, "schedule")
    path = tmp_path / "audit" / "calls.jsonl"
    path.parent.mkdir(parents=True)
    monkeypatch.setenv(AUDIT_VAR, str(path))
    return path


def _audited(world, calls: Path) -> None:
    report = local_audit.audit(world.local_dir, calls)
    assert report.ok, report.summary()
    principals = set(report.calls_by_principal)
    assert any(p.startswith("assumed-role/chronos-dev-instance/") for p in principals), principals
    assert "assumed-role/chronos-dev-recovery/local-recovery" in principals, principals  # the handler


def test_an_instance_terminated_in_every_phase_is_recovered_or_finishes_and_the_run_succeeds(world, calls):
    chain = (*WORKING, "results_sync")
    run = world.launch(H.matrix_spec(steps=30, recoveries=len(chain), checkpoint_interval=10))
    hit: set[str] = set()
    before: dict[str, str] = {}
    newest = None
    armed = None  # each next phase's hold is armed before the fault (the relaunch can outrun it)
    for i, phase in enumerate(chain):
        then = chain[i + 1] if i + 1 < len(chain) else None
        injected = inject_at(world, run, phase, "terminate", previous=hit, hold=armed, then=then)
        armed = injected.next_hold
        hit.add(injected.instance_id)
        before.update(injected.before)
        if phase == "evaluation":  # training was done: every later attempt resumes at its last checkpoint
            newest = H.newest_checkpoint(injected.before, run.paths)
    # the held state of the last attempt: each recovery before it was claimed by the schedule
    triggers = [h["reason"] for h in injected.state["history"] if h["status"] == "recovering"]
    assert triggers == ["schedule"] * (len(chain) - 1), injected.state["history"]
    out = H.settle(world, run, before=before, row="terminate@results_sync")
    _succeeded(out)
    assert out.training["loss_curve"][-1][0] == 30, out.training["loss_curve"][-3:]
    attempts = out.training["attempts"]
    assert all(a["notice_at"] is None for a in attempts), attempts
    # training.json is the finishing attempt's. One instance more than it lists: the handler
    # relaunched the run although the attempt terminated in results_sync finished its finalize in
    # the grace; the relaunch found the normal _SUCCESS and only cleaned up (trainer.sync.AlreadyFinished)
    extra = [i for i in out.instances if i not in {a["instance_id"] for a in attempts}]
    assert extra == [] or [out.cleanup["instance_id"]] == extra, (attempts, out.instances, out.cleanup)
    assert out.resumed_from_step == newest == 30, (out.resumed_from_step, newest)
    assert hit <= set(out.instances) and len(out.instances) in (len(chain), len(chain) + 1), out.instances
    how = (
        "relaunched after the grace; the relaunch found the run done and cleaned up"
        if extra
        else "finished in the grace"
        if len(out.instances) == len(chain)
        else "relaunched after the grace"
    )
    if _released_by_the_handler(out.cleanup):
        how += " (the recovery handler released the lock first: it saw the instance gone and _SUCCESS)"
    for phase in chain:
        record.note(f"terminate@{phase}", f"one of {len(chain)} faults on one run; results_sync: {how}")

    for phase in ("finalize", "cleanup"):
        short = world.launch(H.matrix_spec(steps=10, recoveries=1, checkpoint_interval=10), name=phase)
        injected = inject_at(world, short, phase, "terminate", previous=set())
        out = H.settle(world, short, before=injected.before, row=f"terminate@{phase}")
        _succeeded(out)
    _audited(world, calls)

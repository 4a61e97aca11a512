"""A sweep end to end in local mode: two grid points, two Batch jobs the local executor really runs.

``invoke sweep --local`` submits to moto's Batch; moto marks each job SUCCEEDED unrun, and the
local executor (``control.local_batch``) runs each job's command (``trainer/batch_entry.sh`` ->
``python -m trainer run --batch``) under the job role. One member trains the tiny model a few
steps under its own lock, finalizes with ``_SUCCESS`` and releases its lock; the other trains on
until ``kill --sweep`` stops it through its own state file (its trainer checkpoints, finalizes
killed, releases its lock). ``monitor --sweep``, ``runs``, ``cost --sweep`` and ``verify`` read the
outcome from the members' own records, and the IAM call audit finds no call of the operator or of
the jobs (under the job role) that AWS would refuse.
"""

from __future__ import annotations

import pytest

from common.state_store import StateStore
from common.timeutil import wait_until
from control import local_audit, local_batch
from control.cost import cost_report
from control.local_backend import LocalBackend
from control.localenv import provision, stage_dataset
from control.runs import list_runs
from control.sweep import sweep
from control.sweep_kill import kill_sweep
from control.sweep_status import sweep_view
from control.verify import verify
from localaws.audit import ENV_VAR as AUDIT_VAR

pytestmark = pytest.mark.slow

GRID = """\
[base.instance]
max_runtime = "20m"
[base.model]
base = "tiny"
num_steps = 12
batch_size = 16
checkpoint_interval = 1000
[grid]
"model.num_steps" = [12, 100000]
"""


@pytest.fixture
def batch_dev(local_dir, dataset_dir, tmp_path, monkeypatch):
    """``dev`` with the sweep engine, provisioned as ``invoke local.up --batch`` does (moto's IAM
    enforcement on, signing as the env's operator), with the IAM call audit of every process on."""
    calls = tmp_path / "audit" / "calls.jsonl"
    monkeypatch.setenv(AUDIT_VAR, str(calls))  # this process's clients, each job's runner and trainer
    backend = LocalBackend.open(local_dir)
    outputs = provision(backend, "dev", batch=True)
    stage_dataset(backend.clients().s3, outputs["bucket"], dataset_dir)
    yield backend, outputs, calls
    local_batch.stop_all(local_dir)


def test_a_two_point_sweep_runs_one_member_to_success_and_kills_the_other_through_its_trainer(
    tmp_path, local_dir, batch_dev
):
    backend, outputs, calls = batch_dev
    grid = tmp_path / "sweep.toml"
    grid.write_text(GRID)
    outcome = sweep(backend, env="dev", grid_path=grid)
    assert outcome.result.ok, outcome.result.members
    short, long = outcome.result.members
    s3, bucket, sweep_id = backend.clients().s3, outputs["bucket"], outcome.plan.sweep_id
    # the executor's record, not moto's SUCCEEDED, says what ran
    assert local_batch.wait(short.job_id, local_dir=local_dir, timeout_s=240)["status"] == "SUCCEEDED"
    assert StateStore(s3, bucket, "dev", run_id=short.run_id).read() is None  # its lock released
    store = StateStore(s3, bucket, "dev", run_id=long.run_id)

    def training() -> bool:
        snap = store.read()
        return snap is not None and snap.doc["status"] == "training" and snap.doc["progress"]["step"] > 0

    wait_until(training, 180, f"{long.run_id} training")
    running = sweep_view(backend, env="dev", sweep_id=sweep_id)
    assert [m.status for m in running.members] == ["succeeded", "training"] and not running.done
    assert [m.job.status.value for m in running.members] == ["SUCCEEDED", "RUNNING"]
    listed = {r.run_id: r for r in list_runs(backend, env="dev")}
    assert listed[long.run_id].active and listed[short.run_id].sweep_id == sweep_id

    result = kill_sweep(backend, env="dev", sweep_id=sweep_id, grace_s=120)
    killed = {m.run_id: m for m in result.members}
    assert killed[long.run_id].status_before == "training" and killed[short.run_id].status_before is None
    record = local_batch.wait(long.job_id, local_dir=local_dir, timeout_s=120)
    assert record["status"] == "FAILED"  # the trainer exits KILLED (4): the retry strategy's "*" -> EXIT
    assert store.read() is None and killed[long.run_id].cleanup_written_by == "instance"  # its own cleanup
    view = sweep_view(backend, env="dev", sweep_id=sweep_id)
    assert [m.status for m in view.members] == ["succeeded", "killed"] and view.done and view.exit_code == 4
    report = cost_report(backend, env="dev", sweep=sweep_id)
    assert [r.run_id for r in report.runs] == [long.run_id, short.run_id]
    assert verify(backend, env="dev").final.clean
    report = local_audit.audit(local_dir, calls)  # AWS would have allowed every call of every process
    assert report.ok, report.summary()
    principals = set(report.calls_by_principal)
    assert any(p.startswith("user/chronos-dev-operator") for p in principals), principals
    assert any(p.startswith("assumed-role/chronos-dev-batch-job/") for p in principals), principals

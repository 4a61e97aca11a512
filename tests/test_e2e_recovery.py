"""Local end to end: automatic recovery from spot interruptions and vanished instances.

As in tests/test_e2e_local.py the real trainer runs in local "instances" driven through
``invoke`` with IAM enforced and every call audited; here the launch also starts the env's
recovery event pump (:mod:`control.local_recovery`), which feeds the recovery handler the
events AWS would send: the fake IMDS notice (spot warning), the moto instance terminated
(instance ended) and a schedule tick every second.

An instance terminated without notice and recovered by the schedule alone (the pump hearing
no instance-ended event), audited the same way, is the terminate column of the fault matrix:
tests/reliability/test_process_faults_terminate.py (four such recoveries in one run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from common import layout
from common.state_store import StateStore
from control import local_audit
from control.local_backend import LocalBackend
from control.local_instance import terminate_processes
from control.local_recovery import EVENTS_VAR, TICK_VAR, stop_all
from control.localdir import PROJECT_ROOT, LocalDir, read_json, write_json
from control.localenv import provision, stage_dataset
from localaws.audit import ENV_VAR as AUDIT_VAR
from schemas import validate

pytestmark = pytest.mark.slow

INVOKE = str(Path(sys.executable).with_name("invoke"))
RUN = """\
[instance]
max_runtime = "20m"
max_recoveries = {recoveries}
[model]
base = "tiny"
num_steps = {steps}
batch_size = 16
checkpoint_interval = 20
"""


@pytest.fixture
def world(tmp_path, local_aws, monkeypatch):
    """``dev`` provisioned in a clean local AWS, and ``launch(spec, events=...)`` through ``invoke``."""
    from trainer.synthetic import generate_dataset

    local_dir = LocalDir(tmp_path / ".local")
    write_json(local_dir.aws_file, {"endpoint_url": local_aws.endpoint_url, "pid": None})
    monkeypatch.setenv("CHRONOS_LOCAL_DIR", str(local_dir.root))
    backend = LocalBackend.open(local_dir)
    outputs = provision(backend, "dev")
    data = tmp_path / "data"
    generate_dataset(data)
    stage_dataset(backend.clients().s3, outputs["bucket"], data)
    calls = tmp_path / "audit" / "calls.jsonl"
    _LOCAL.append(local_dir)

    def invoke(*args: str, events: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "CHRONOS_LOCAL_DIR": str(local_dir.root),
            "COLUMNS": "200",
            AUDIT_VAR: str(calls),
        }
        env.update({TICK_VAR: "1", EVENTS_VAR: events or "spot_warning,instance_ended,schedule"})
        return subprocess.run(
            [INVOKE, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    def launch(steps: int, recoveries: int, events: str = "") -> tuple[str, str]:
        spec = tmp_path / "run.toml"
        spec.write_text(RUN.format(steps=steps, recoveries=recoveries))
        proc = invoke("launch", "--env=dev", "--local", f"--spec={spec}", events=events)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        words = proc.stdout.split()
        return words[words.index("run") + 1], words[words.index("on") + 1]

    s3 = local_aws.client("s3")
    yield {
        "invoke": invoke,
        "launch": launch,
        "s3": s3,
        "ec2": local_aws.client("ec2"),
        "bucket": outputs["bucket"],
        "store": StateStore(s3, outputs["bucket"], "dev"),
        "local_dir": local_dir,
        "audit": lambda: local_audit.audit(local_dir, calls),
    }
    stop_all(local_dir)
    for record in local_dir.instance_records():
        terminate_processes(record, grace_s=5.0)


def wait(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{_logs()}")


_LOCAL: list[LocalDir] = []


def _logs() -> str:
    """The tails of the pump's and the instances' logs, for a failure message."""
    if not _LOCAL:
        return ""
    root = _LOCAL[-1].root
    files = sorted((root / "recovery").glob("*.log")) + sorted(root.glob("instances/*/console.log"))
    return "\n".join(
        f"--- {f.name} ({f.parent.name})\n" + "\n".join(f.read_text().splitlines()[-25:]) for f in files
    )


def keys(world, prefix: str) -> list[str]:
    pages = world["s3"].get_paginator("list_objects_v2").paginate(Bucket=world["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def checkpoints(world, run_id: str) -> list[int]:
    prefix = layout.RunPaths(env="dev", run_id=run_id).checkpoints
    return sorted(
        int(k[len(prefix) :].split("/")[0].split("-")[1])
        for k in keys(world, prefix)
        if k.endswith("/trainer_state.json")
    )


def training_on(world, instance_id: str, run_id: str, *, beyond: int = 0) -> bool:
    """The run trains on ``instance_id`` and S3 holds a checkpoint past ``beyond``."""
    snap = world["store"].read()
    return bool(
        snap is not None
        and snap.doc["status"] == "training"
        and snap.doc["instance_id"] == instance_id
        and (read_json(world["local_dir"].instance_file(instance_id)) or {}).get("imds_url")
        and any(step > beyond for step in checkpoints(world, run_id))
    )


def spot_notice(world, instance_id: str) -> None:
    record = read_json(world["local_dir"].instance_file(instance_id)) or {}
    requests.post(record["imds_url"] + "/_fake/spot-notice", timeout=5).raise_for_status()


def next_attempt(world, run_id: str, previous: str):
    """A probe for ``wait``: the relaunched instance once it trains past ``previous``'s newest checkpoint."""
    reached = max(checkpoints(world, run_id))

    def probe() -> str | None:
        snap = world["store"].read()
        iid = snap.doc["instance_id"] if snap is not None else None
        return (
            iid if iid not in (None, previous) and training_on(world, iid, run_id, beyond=reached) else None
        )

    return probe


def run_instances(world, run_id: str) -> list[str]:
    """Every instance ever launched for ``run_id`` (moto keeps terminated ones listed)."""
    resp = world["ec2"].describe_instances(Filters=[{"Name": "tag:RunId", "Values": [run_id]}])
    return [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]


def billing(world, run_id: str) -> list[str]:
    resp = world["ec2"].describe_instances(
        Filters=[
            {"Name": "tag:RunId", "Values": [run_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )
    return [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]


def training_json(world, run_id: str) -> dict[str, Any]:
    key = layout.RunPaths(env="dev", run_id=run_id).training_log
    return validate(
        "training", json.loads(world["s3"].get_object(Bucket=world["bucket"], Key=key)["Body"].read())
    )


def watch_states(world, until: Callable[[], bool], timeout: float) -> list[dict[str, Any]]:
    """Every state document seen (status and recovery claim) until ``until()``."""
    seen: list[dict[str, Any]] = []

    def done() -> bool:
        snap = world["store"].read()
        if snap is not None and (not seen or seen[-1] != snap.doc):
            seen.append(snap.doc)
        return until()

    wait(done, timeout, "the run to end", every=0.2)
    return seen


def verified_and_audited(world) -> None:
    verified = world["invoke"]("verify", "--env=dev", "--local")
    assert verified.returncode == 0 and "clean" in verified.stdout, verified.stdout + verified.stderr
    report = world["audit"]()
    assert report.ok, report.summary()
    principals = set(report.calls_by_principal)
    assert any(p.startswith("assumed-role/chronos-dev-instance/") for p in principals), principals
    assert "assumed-role/chronos-dev-recovery/local-recovery" in principals, principals  # the handler


def test_spot_interruption_is_recovered_and_the_run_finishes_with_both_attempts(world):
    steps = 300  # attempt 1 gets its notice near step 80 (a checkpoint every 20), far from the end
    run_id, first = world["launch"](steps, recoveries=2)
    wait(lambda: training_on(world, first, run_id), 240, "a checkpoint of attempt 1")
    spot_notice(world, first)
    seen = watch_states(world, lambda: world["store"].read() is None, 300)
    assert "recovering" in {d["status"] for d in seen} and "interrupted" in {d["status"] for d in seen}

    training = training_json(world, run_id)
    assert training["completion_status"] == "normal" and training["loss_curve"][-1][0] == steps
    assert 0 < training["resumed_from_step"] < steps
    assert [s for s, _ in training["loss_curve"]] == list(range(1, steps + 1))  # one curve across attempts
    one, two = training["attempts"]
    assert (one["instance_id"], one["end"]) == (first, "interrupted") and one["notice_at"]
    assert two["end"] == "completed" and two["instance_id"] != first
    [gap] = training["interruptions"]
    assert gap["attempt"] == 1 and gap["steps_lost"] == 0
    order = ("notice_at", "replacement_launched_at", "first_resumed_step_at")
    stamps = [gap[name] for name in order]
    assert all(stamps) and stamps == sorted(stamps), gap
    # the checkpoint resumed from was durable before the replacement started; it may predate
    # the notice (a periodic checkpoint at the step the notice stopped: nothing was lost)
    assert gap["checkpoint_durable_at"] and gap["checkpoint_durable_at"] <= gap["replacement_launched_at"], (
        gap
    )
    assert set(run_instances(world, run_id)) == {first, two["instance_id"]}
    ledger = training["ledger"]  # both attempts priced: each billed at least AWS's 60 s minimum
    assert [a["attempt"] for a in ledger["attempts"]] == [1, 2], ledger
    assert all(a["billable_s"] >= 60 and a["total_usd"] > 0 for a in ledger["attempts"]), ledger
    assert ledger["total_usd"] == pytest.approx(sum(a["total_usd"] for a in ledger["attempts"]), abs=1e-3)
    wait(lambda: billing(world, run_id) == [], 30, "the last instance to power off")
    verified_and_audited(world)


def test_kill_during_recovery_relaunches_nothing(world):
    run_id, first = world["launch"](100000, recoveries=3)
    wait(lambda: training_on(world, first, run_id), 240, "a checkpoint of attempt 1")
    spot_notice(world, first)
    wait(
        lambda: (s := world["store"].read()) is not None and s.doc["status"] == "recovering",
        120,
        "recovering",
        0.1,
    )
    killed = world["invoke"]("kill", "--env=dev", "--local", "--grace=60")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    wait(
        lambda: world["store"].read() is None and billing(world, run_id) == [], 120, "the kill to end the run"
    )
    launched = run_instances(world, run_id)
    time.sleep(4)  # four schedule ticks: none relaunches a killed run
    assert run_instances(world, run_id) == launched and len(launched) <= 2
    assert billing(world, run_id) == [] and world["store"].read() is None
    verified_and_audited(world)


def test_more_interruptions_than_max_recoveries_fail_the_run_without_a_relaunch(world):
    run_id, first = world["launch"](100000, recoveries=1)
    wait(lambda: training_on(world, first, run_id), 240, "a checkpoint of attempt 1")
    spot_notice(world, first)
    relaunched = wait(next_attempt(world, run_id, first), 240, "attempt 2 training past the first checkpoint")
    spot_notice(world, relaunched)
    wait(lambda: world["store"].read() is None, 180, "the run to end")
    training = training_json(world, run_id)
    assert training["status"] == "failed" and training["completion_status"] == "failed"
    sentinel = json.loads(
        world["s3"]
        .get_object(Bucket=world["bucket"], Key=layout.RunPaths(env="dev", run_id=run_id).success)["Body"]
        .read()
    )
    assert sentinel["reason"] == "interrupted 2 times; max_recoveries is 1"
    assert [a["end"] for a in training["attempts"]] == ["interrupted", "interrupted"]
    wait(lambda: billing(world, run_id) == [], 30, "the last instance to power off")
    time.sleep(3)  # three schedule ticks: nothing relaunches a failed run
    assert set(run_instances(world, run_id)) == {first, relaunched} and billing(world, run_id) == []
    verified_and_audited(world)


def test_two_interruptions_in_one_run_are_both_recovered_and_the_ledger_prices_three_attempts(world):
    steps = 450  # two notices, near steps 80 and 200: attempt 3 trains the rest
    run_id, first = world["launch"](steps, recoveries=2)
    wait(lambda: training_on(world, first, run_id), 240, "a checkpoint of attempt 1")
    spot_notice(world, first)
    relaunched = wait(next_attempt(world, run_id, first), 240, "attempt 2 training past the first checkpoint")
    spot_notice(world, relaunched)
    wait(lambda: world["store"].read() is None, 300, "the run to end")
    training = training_json(world, run_id)
    assert training["completion_status"] == "normal" and training["loss_curve"][-1][0] == steps
    assert [s for s, _ in training["loss_curve"]] == list(range(1, steps + 1))
    assert [a["end"] for a in training["attempts"]] == ["interrupted", "interrupted", "completed"]
    assert [g["attempt"] for g in training["interruptions"]] == [1, 2]
    assert [a["attempt"] for a in training["ledger"]["attempts"]] == [1, 2, 3]
    assert len(set(run_instances(world, run_id))) == 3
    wait(lambda: billing(world, run_id) == [], 30, "the last instance to power off")
    # each attempt's trainer log is its own key: a relaunch no longer overwrites the one it recovers
    paths = layout.RunPaths(env="dev", run_id=run_id)
    texts = [_body(world, paths.trainer_log_of(n)) for n in (1, 2, 3)]
    assert f"instance {first} (" in texts[0] and f"instance {relaunched} (" in texts[1], texts[0][:300]
    assert f"instance {relaunched} (" not in texts[0] and f"instance {first} (" not in texts[1]
    assert "attempt 3 of run" in texts[2] and "attempt 2 of run" not in texts[2]
    verified_and_audited(world)


def _body(world, key: str) -> str:
    return world["s3"].get_object(Bucket=world["bucket"], Key=key)["Body"].read().decode()

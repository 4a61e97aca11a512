"""monitor: conditional polling, stale heartbeats, gone instances, and the outcome of ended runs."""

from __future__ import annotations

import json

import pytest

from common import layout
from common import tags as common_tags
from common.exitcodes import ExitCode
from common.staleness import StalenessPolicy
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import CompletionStatus, RunStatus
from common.timeutil import iso
from control.backend import Clients
from control.monitor import Monitor, Outcome
from schemas import examples

RUN_ID = "20261125-140502"


@pytest.fixture
def running(dev, local_aws, clock):
    """A run in training on a (planted) running instance, and a monitor on it."""
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    instance = ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        LaunchTemplate={"LaunchTemplateId": dev["launch_template_id"]},
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": common_tags.tag_list(common_tags.tags("dev"))}
        ],
    )["Instances"][0]["InstanceId"]
    store = StateStore(s3, dev["bucket"], "dev", clock=clock)
    store.acquire(
        new_state(
            env="dev", run_id=RUN_ID, market="spot", total_steps=100, now=iso(clock()), price_per_hour=0.5
        )
    )
    store.set_instance(RUN_ID, instance_id=instance, instance_type="g5.xlarge")
    store.transition(RUN_ID, RunStatus.DATA_SYNC)
    store.transition(RUN_ID, RunStatus.TRAINING)
    mon = Monitor(
        Clients(s3=s3, ec2=ec2, sts=None),
        dev["bucket"],
        "dev",
        clock=clock,
        policy=StalenessPolicy(heartbeat_s=120, gone_grace_s=20),
    )
    return {
        "store": store,
        "instance": instance,
        "monitor": mon,
        "s3": s3,
        "ec2": ec2,
        "bucket": dev["bucket"],
    }


def test_unchanged_state_is_not_transferred_again(running, clock):
    mon, store = running["monitor"], running["store"]
    first = mon.poll()
    assert first.changed and first.status == "training" and first.outcome is Outcome.RUNNING
    clock.tick(3600)
    second = mon.poll()
    assert not second.changed and mon.transfers == 1  # a 304: no body
    assert second.elapsed_s == pytest.approx(3600) and second.cost_usd == pytest.approx(0.5)
    store.heartbeat(RUN_ID, progress={"step": 40, "loss": 0.5, "eta_s": 90.0})
    third = mon.poll()
    assert third.changed and mon.transfers == 2 and third.step == 40 and third.loss == 0.5


def test_stale_heartbeat_says_what_to_do(running, clock):
    mon = running["monitor"]
    assert mon.poll().advice is None
    clock.tick(600)
    view = mon.poll()
    assert view.outcome is Outcome.RUNNING  # the instance still runs: a warning, not a verdict
    assert "no heartbeat for 600 s" in view.advice and "invoke kill --env=dev" in view.advice


def test_gone_instance_with_a_live_state_is_a_dead_run(running, clock):
    mon = running["monitor"]
    running["ec2"].terminate_instances(InstanceIds=[running["instance"]])
    assert mon.poll().outcome is Outcome.RUNNING  # the trainer may be removing the state right now
    clock.tick(30)
    view = mon.poll()
    assert view.outcome is Outcome.STALE and view.outcome.exit_code == 5
    assert running["instance"] in view.advice and "invoke verify --env=dev --fix --yes" in view.advice


def test_ended_run_outcome_comes_from_its_log(running):
    mon, s3, bucket = running["monitor"], running["s3"], running["bucket"]
    mon.poll()
    running["store"].release(RUN_ID)
    key = layout.RunPaths(env="dev", run_id=RUN_ID).training_log
    for completion, outcome, code in (
        (CompletionStatus.NORMAL, Outcome.SUCCEEDED, 0),
        (CompletionStatus.FAILED, Outcome.FAILED, 1),
        (CompletionStatus.KILLED, Outcome.KILLED, 4),
        (CompletionStatus.INTERRUPTED, Outcome.INTERRUPTED, 3),
    ):
        assert code == ExitCode.for_completion(completion)  # monitor exits as the trainer did
        training = examples("training")[0]
        training.update(run_id=RUN_ID, completion_status=completion.value, exit_code=code)
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(training).encode())
        view = mon.poll()
        assert view.outcome is outcome and view.outcome.exit_code == code and view.run_id == RUN_ID
        assert view.metrics["model_wql"] == training["metrics"]["model_wql"]
        if outcome is Outcome.FAILED:
            assert f"invoke logs {RUN_ID} --env=dev" in view.advice


def test_no_run_yet(dev, local_aws, cli):
    proc = cli("monitor", "--env=dev", "--local")
    assert proc.returncode == 6
    assert "no run in env 'dev' yet" in proc.stdout and "invoke launch --env=dev" in proc.stdout


def test_cli_json_view_of_a_running_run(running, cli):
    proc = cli("monitor", "--env=dev", "--local", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert (
        view["run_id"] == RUN_ID
        and view["status"] == "training"
        and view["instance_id"] == running["instance"]
    )


@pytest.mark.parametrize("completion", list(CompletionStatus))
def test_an_ended_run_exits_with_the_trainers_code(completion):
    """The monitor's exit code for an ended run is the one the trainer itself exits with."""
    from control.monitor import view_of_ended
    from control.runs import RunSummary, status_of_completion

    run = RunSummary(run_id=RUN_ID, env="dev", status=status_of_completion(completion))
    assert view_of_ended(run).outcome.exit_code == ExitCode.for_completion(completion)

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
    # the advice alone, on stderr: it says why the exit code is not 0 (before, stdout also had a
    # "run None none phase=None" line and a table of dashes)
    assert "no run in env 'dev' yet" in proc.stderr and "invoke launch --env=dev" in proc.stderr
    assert proc.stdout == "" and "None" not in proc.stderr, proc.stdout


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


def _text(renderable) -> str:
    from rich.console import Console

    out = Console(record=True, width=200)
    out.print(renderable)
    return out.export_text()


def test_the_live_view_shows_validation_wql_the_best_step_and_zero_shot(running):
    from control.cli.live import view_line, view_table

    mon = running["monitor"]
    running["store"].heartbeat(
        RUN_ID,
        progress={"step": 300, "loss": 0.4, "val_wql": 0.0461, "best_val_wql": 0.0432, "best_step": 200,
                  "zero_shot_val_wql": 0.0487},
    )  # fmt: skip
    view = mon.poll()
    assert (view.val_wql, view.best_val_wql, view.best_step, view.zero_shot_val_wql) == (
        0.0461,
        0.0432,
        200,
        0.0487,
    )
    assert view.to_dict()["best_step"] == 200 and view.to_dict()["zero_shot_val_wql"] == 0.0487
    assert "│ validation WQL │ 0.0461 (best 0.0432 at step 200, zero-shot 0.0487)" in _text(view_table(view))
    assert "val_wql=0.0461 best=0.0432@200 zero_shot=0.0487" in view_line(view)
    running["store"].heartbeat(RUN_ID, progress={"val_wql": 0.05, "best_val_wql": 0.0487, "best_step": 0})
    assert "not better than zero-shot yet" in _text(view_table(mon.poll()))


def test_a_live_view_without_validation_has_no_validation_row(running):
    from control.cli.live import view_line, view_table

    view = running["monitor"].poll()
    assert "validation" not in _text(view_table(view)) and "val_wql" not in view_line(view)


def _evaluated(beats: bool, exported: str = "fine_tuned") -> dict:
    from schemas import validate

    def scores(wql: float) -> dict:
        return {"wql": wql, "mase": 1.0, "windows": [{"name": "test-1", "wql": wql, "mase": 1.0}]}

    best = 0.0412 if beats else 0.0533
    training = examples("training")[0]
    training.update(run_id=RUN_ID)
    training["metrics"].update(zero_shot_wql=0.0455, val_wql=best, zero_shot_val_wql=0.0487)
    training["evaluation"] = {
        "windows": [{"name": "test-1", "items": 2}], "season": 24, "season_source": "gluonts",
        "quantile_levels": [0.5],
        "models": {"fine_tuned": scores(0.031), "zero_shot": scores(0.0455), "seasonal_naive": scores(0.069)},
        "validation": {"zero_shot_wql": 0.0487, "best_wql": best, "best_step": 200,
                       "history": [[0, 0.0487, 1.0], [200, best, 0.9]], "early_stopped": False},
        "beats_zero_shot": beats, "exported": exported, "warnings": [],
    }  # fmt: skip
    validate("training", training)
    return training


def test_the_final_view_says_when_fine_tuning_did_not_beat_zero_shot_and_still_succeeds(running):
    from rich.console import Console

    from control.cli.live import ViewPrinter, view_table

    mon, s3, bucket = running["monitor"], running["s3"], running["bucket"]
    mon.poll()
    running["store"].release(RUN_ID)
    key = layout.RunPaths(env="dev", run_id=RUN_ID).training_log
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(_evaluated(False, "base")).encode())
    view = mon.poll()
    assert view.outcome is Outcome.SUCCEEDED and view.outcome.exit_code == ExitCode.OK
    assert view.beats_zero_shot is False and view.to_dict()["beats_zero_shot"] is False
    line = (
        "the fine-tuned model does NOT beat the base model (zero-shot) on validation: WQL 0.0533 vs 0.0487; "
        "models/ holds the base model (keep_base_if_worse)"
    )
    assert view.advice == line
    out = Console(record=True, width=300, force_terminal=False)
    printer = ViewPrinter(out)
    printer.show(view)
    printer.close()
    text = out.export_text()
    assert text.count(line) == 1 and "│ zero_shot_wql  │ 0.0455" in text
    assert "best 0.0533 at step 200, zero-shot 0.0487: does NOT beat zero-shot" in text

    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(_evaluated(True)).encode())
    beaten = mon.poll()
    assert beaten.outcome is Outcome.SUCCEEDED and beaten.advice is None and beaten.beats_zero_shot is True
    assert "beats zero-shot" in _text(view_table(beaten)) and "NOT beat" not in _text(view_table(beaten))


def test_plain_monitor_watches_single_runs_and_points_to_sweep_for_members(tmp_path, s3, bucket, moto_batch):
    from datetime import UTC, datetime

    from control.monitor import watch
    from control.sweep import sweep

    s3.put_object(Bucket=bucket, Key="cached-datasets/training-data/part-0.parquet", Body=b"PAR1")
    grid = tmp_path / "sweep.toml"
    grid.write_text('[grid]\n"model.seed" = [1]\n')
    backend = moto_batch.backend(bucket)
    sweep(backend, env="dev", grid_path=grid, clock=lambda: datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC))
    (view,) = list(watch(backend, env="dev", follow=False))
    assert view.outcome.exit_code == 6 and "invoke monitor --env=dev --sweep SWEEP_ID" in view.advice

"""launch --resume: relaunch an interrupted run under its own id with its stored spec."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common import layout
from common.errors import ConfigError
from common.runspec import from_dict
from common.state_store import StateStore
from control.backend import Clients
from control.launch import InstanceOverrides, launch
from control.launch_apply import apply_launch

RUN = "20261124-090000"
NOW = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)
PATHS = layout.RunPaths(env="dev", run_id=RUN)


def _plant(s3, bucket: str, *, completion: str | None) -> dict:
    """A first attempt: its resolved spec, a checkpoint and (optionally) its sentinel."""
    spec = from_dict({"model": {"num_steps": 77, "batch_size": 16}}).resolved(local=True).to_dict()
    s3.put_object(Bucket=bucket, Key=PATHS.user_configs + "run-spec.json", Body=json.dumps(spec).encode())
    s3.put_object(Bucket=bucket, Key=PATHS.checkpoints + "checkpoint-40/trainer_state.json", Body=b"{}")
    if completion:
        sentinel = {
            "run_id": RUN,
            "finalized_at": "2026-11-24T09:10:00Z",
            "status": "success",
            "completion_status": completion,
            "exit_code": 3,
            "reason": "spot interruption notice: terminate at 2026-11-24T09:09:00Z",
        }
        s3.put_object(Bucket=bucket, Key=PATHS.success, Body=json.dumps(sentinel).encode())
    return spec


def test_dry_run_resume_plans_the_same_run_with_its_own_spec(backend, dev):
    s3 = backend.clients().s3
    _plant(s3, dev["bucket"], completion="interrupted")
    outcome = launch(
        backend,
        env="dev",
        resume=RUN,
        overrides=InstanceOverrides(market="on-demand"),
        dry_run=True,
        clock=lambda: NOW,
    )
    plan = outcome.plan
    assert outcome.result is None
    assert plan.run_id == RUN and plan.resume
    assert plan.spec.model.num_steps == 77 and plan.spec.model.batch_size == 16
    assert plan.spec.instance.market.value == "on-demand"
    assert RUN in plan.user_data


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ("normal", "already finished normally"),
        (None, None),
    ],
)
def test_a_finished_run_is_not_resumed(backend, dev, completion, message):
    s3 = backend.clients().s3
    _plant(s3, dev["bucket"], completion=completion)
    if message is None:  # no sentinel at all (the instance died): resumable
        assert launch(backend, env="dev", resume=RUN, dry_run=True, clock=lambda: NOW).plan.run_id == RUN
        return
    with pytest.raises(ConfigError, match=message):
        launch(backend, env="dev", resume=RUN, dry_run=True, clock=lambda: NOW)


def test_unknown_run_and_bad_arguments_are_user_errors(backend, dev):
    with pytest.raises(ConfigError, match="does not exist.*invoke runs --env=dev"):
        launch(backend, env="dev", resume=RUN, dry_run=True, clock=lambda: NOW)
    with pytest.raises(ConfigError, match="--resume: run id 'yesterday'"):
        launch(backend, env="dev", resume="yesterday", dry_run=True)
    with pytest.raises(ConfigError, match="drop --spec"):
        launch(backend, env="dev", resume=RUN, spec_path="run.toml", dry_run=True)


def test_a_failed_relaunch_keeps_the_first_attempts_files(backend, dev):
    s3 = backend.clients().s3
    _plant(s3, dev["bucket"], completion="interrupted")
    plan = launch(backend, env="dev", resume=RUN, dry_run=True, clock=lambda: NOW).plan
    clients = backend.clients()

    class NoCapacity:
        def __getattr__(self, name):
            return getattr(clients.ec2, name)

        def run_instances(self, **kw):
            from botocore.exceptions import ClientError

            raise ClientError(
                {
                    "Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "RunInstances",
            )

    with pytest.raises(Exception, match="no capacity"):
        apply_launch(plan, Clients(s3=clients.s3, ec2=NoCapacity(), sts=clients.sts))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=dev["bucket"], Prefix=PATHS.prefix)["Contents"]}
    assert PATHS.user_configs + "run-spec.json" in keys
    assert PATHS.checkpoints + "checkpoint-40/trainer_state.json" in keys
    assert StateStore(s3, dev["bucket"], "dev").read() is None


def test_cli_resume_flag_is_documented(cli):
    proc = cli("--help", "launch")
    assert proc.returncode == 0
    assert "--resume" in proc.stdout and "newest checkpoint" in proc.stdout

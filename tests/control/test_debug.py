"""control.debug and ``invoke debug``: a debug run's instance, its session command, and the refusals.

The stack is the local provisioner's with ``debug_profile`` on (or off), in the session's
moto server; the launch is the real plan and apply (no supervisor: nothing runs on the
instance, only its record matters here).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from invoke import Context, Exit

from common import layout
from common.errors import ConfigError
from common.pricing import Price
from common.runspec import from_dict
from common.state_store import StateStore
from control.backend import Backend
from control.debug import DebugError, debug_launch_profile, find_target, missing_tools, start_session
from control.launch_apply import apply_launch
from control.launch_plan import plan_launch
from control.launch_world import World
from infra.local import ProvisionOptions, provision
from infra.outputs import StackOutputs, read_outputs

NOW = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)


class StackBackend(Backend):
    """The moto server with fixed stack outputs (what ``pulumi stack output`` would give)."""

    name, device = "test", "cpu"

    def __init__(self, server: Any, outputs: dict[str, Any], *, local: bool = False) -> None:
        super().__init__(session=server.session(), endpoint_url=server.endpoint_url)
        self.local, self._outputs = local, outputs

    def stack_outputs(self, env: str) -> StackOutputs:
        return read_outputs(self._outputs)


def _stack(server: Any, *, debug_profile: bool) -> dict[str, Any]:
    return provision(
        server.session(),
        env="dev",
        endpoint_url=server.endpoint_url,
        options=ProvisionOptions(debug_profile=debug_profile),
    )


@pytest.fixture
def debug_stack(local_aws) -> StackBackend:
    return StackBackend(local_aws, _stack(local_aws, debug_profile=True))


@pytest.fixture
def plain_stack(local_aws) -> StackBackend:
    return StackBackend(local_aws, _stack(local_aws, debug_profile=False))


def _world(backend: Backend, run_id: str) -> World:
    outputs = backend.stack_outputs("dev")
    prices = {
        ("on-demand", t, az): Price(usd_per_hour=1.0, source="test")
        for t in ("g5.xlarge",)
        for az in outputs.subnets_by_az
    }
    return World(
        env="dev",
        run_id=run_id,
        now=NOW,
        local=False,
        device="cuda",
        outputs=outputs,
        active=None,
        code_bundle=b"bundle",
        code_sha256="0" * 64,
        code_exists=False,
        data_files=1,
        data_bytes=1,
        prices=prices,
    )


def _spec(**instance: Any) -> Any:
    return from_dict({"instance": {"types": ["g5.xlarge"], "market": "on-demand", **instance}})


def _launch(backend: Backend, run_id: str, **instance: Any) -> str:
    plan = plan_launch(_spec(**instance), _world(backend, run_id))
    return apply_launch(plan, backend.clients(), clock=lambda: NOW).instance_id


def _release_lock(backend: Backend, run_id: str) -> None:
    """What the instance's cleanup does before a kept instance's wait."""
    StateStore(backend.clients().s3, backend.stack_outputs("dev").bucket, "dev").release(run_id)


# ------------------------------------------------------------------ launch


def test_a_debug_spec_launches_with_the_debug_profile(debug_stack) -> None:
    outputs = debug_stack.stack_outputs("dev")
    debug_plan = plan_launch(_spec(debug=True), _world(debug_stack, "20261125-140502"))
    request = debug_plan.run_instances_request(debug_plan.placements[0])
    assert request["IamInstanceProfile"] == {"Arn": outputs.debug_instance_profile_arn}
    plain_plan = plan_launch(_spec(), _world(debug_stack, "20261125-140502"))
    assert "IamInstanceProfile" not in plain_plan.run_instances_request(plain_plan.placements[0])


def test_a_debug_spec_is_refused_when_the_stack_has_no_debug_profile(plain_stack) -> None:
    with pytest.raises(ConfigError) as raised:
        plan_launch(_spec(debug=True), _world(plain_stack, "20261125-140502"))
    message = str(raised.value)
    assert "$.instance.debug" in message and "debug_profile" in message and "pulumi up" in message
    assert "\n" not in message
    assert debug_launch_profile(_spec(), plain_stack.stack_outputs("dev")) is None


# ------------------------------------------------------------------- debug


def test_the_session_command_for_a_running_debug_run(debug_stack) -> None:
    instance_id = _launch(debug_stack, "20261125-140502", debug=True)
    target = find_target(debug_stack, env="dev", run_id="20261125-140502")
    assert target.instance_id == instance_id and target.state == "running"
    assert target.command == ["aws", "ssm", "start-session", "--target", instance_id, "--region", "us-east-1"]
    assert target.command_line == f"aws ssm start-session --target {instance_id} --region us-east-1"
    assert find_target(debug_stack, env="dev", run_id="latest").instance_id == instance_id


def test_a_kept_instance_is_found_from_its_launch_record_once_the_lock_is_released(debug_stack) -> None:
    instance_id = _launch(debug_stack, "20261125-140502", debug=True)
    _release_lock(debug_stack, "20261125-140502")
    assert find_target(debug_stack, env="dev", run_id="20261125-140502").instance_id == instance_id


def test_no_such_run(debug_stack) -> None:
    with pytest.raises(DebugError, match=r"^no such run: 20261125-140502 .*invoke runs --env=dev"):
        find_target(debug_stack, env="dev", run_id="20261125-140502")
    with pytest.raises(ConfigError, match="run id"):
        find_target(debug_stack, env="dev", run_id="yesterday")


def test_instance_gone(debug_stack) -> None:
    instance_id = _launch(debug_stack, "20261125-140502", debug=True)
    debug_stack.clients().ec2.terminate_instances(InstanceIds=[instance_id])
    with pytest.raises(DebugError, match=rf"instance {instance_id} of run 20261125-140502 is gone"):
        find_target(debug_stack, env="dev", run_id="20261125-140502")


def test_not_launched_with_debug(debug_stack) -> None:
    _launch(debug_stack, "20261125-140502")
    with pytest.raises(DebugError, match="was not launched with debug .*debug = true"):
        find_target(debug_stack, env="dev", run_id="20261125-140502")


def test_not_launched_with_debug_on_a_stack_without_the_profile(plain_stack) -> None:
    _launch(plain_stack, "20261125-140502")
    with pytest.raises(DebugError, match="no debug instance profile; enable chronos-training:debug_profile"):
        find_target(plain_stack, env="dev", run_id="20261125-140502")


# ------------------------------------------------------------ --start


def _target(debug_stack, **changes: Any) -> Any:
    _launch(debug_stack, "20261125-140502", debug=True)
    return dataclasses.replace(find_target(debug_stack, env="dev", run_id="20261125-140502"), **changes)


def test_start_runs_the_command_when_the_cli_and_plugin_are_installed(debug_stack) -> None:
    target, ran = _target(debug_stack), []
    code = start_session(
        target, which=lambda name: f"/usr/bin/{name}", runner=lambda cmd: ran.append(list(cmd)) or 0
    )
    assert code == 0 and ran == [target.command]


def test_start_without_the_plugin_says_how_to_install_it(debug_stack) -> None:
    target = _target(debug_stack)
    only_aws = {"aws": "/usr/bin/aws"}.get
    with pytest.raises(DebugError) as raised:
        start_session(target, which=only_aws, runner=lambda cmd: pytest.fail("must not run"))
    message = str(raised.value)
    assert "Session Manager plugin" in message and "session-manager-working-with-install-plugin" in message
    assert target.command_line in message and "AWS CLI" not in message
    assert len(missing_tools(lambda name: None)) == 2


def test_start_in_local_mode_is_refused(debug_stack) -> None:
    with pytest.raises(DebugError, match="local mode has no Session Manager"):
        start_session(_target(debug_stack, local=True), which=lambda n: "/x", runner=lambda c: 0)


# ------------------------------------------------------------ the task


def test_invoke_debug_prints_the_command(debug_stack, monkeypatch, capsys) -> None:
    import tasks

    instance_id = _launch(debug_stack, "20261125-140502", debug=True)
    monkeypatch.setattr(tasks, "_backend", lambda local: debug_stack)
    tasks.debug(Context(), run_id="20261125-140502", env="dev")
    out = capsys.readouterr().out
    assert f"aws ssm start-session --target {instance_id} --region us-east-1" in out


def test_invoke_debug_errors_are_one_line_and_exit_2(plain_stack, monkeypatch, capsys) -> None:
    import tasks

    monkeypatch.setattr(tasks, "_backend", lambda local: plain_stack)
    with pytest.raises(Exit) as raised:
        tasks.debug(Context(), run_id=layout.new_run_id(NOW), env="dev")
    assert raised.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: no such run")

"""``invoke debug RUN_ID``: a shell on a run's instance through AWS Systems Manager, no SSH.

A run launched with ``debug = true`` in its spec (and a stack whose config enables
``debug_profile``) runs under the instance profile ``chronos-{env}-instance-debug``: the
instance role's permissions plus Session Manager's. Its SSM agent dials out over HTTPS,
so no port is open. The trainer keeps a FAILED instance up for ``keep_on_failure``
minutes (``trainer.keep``); meanwhile this module:

- :func:`debug_launch_profile`: what the launch passes as ``IamInstanceProfile`` (and
  the refusal when the stack has no debug profile);
- :func:`find_target` (examine): the run's instance (state file, else its launch
  record), that it is running and carries the debug profile, and the
  ``aws ssm start-session`` command;
- :func:`start_session` (act): runs that command when the AWS CLI and the Session
  Manager plugin are installed.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.ec2 import describe_instance, is_gone
from common.errors import ConfigError, UserError
from common.runspec import RunSpec
from control.backend import Backend
from infra.outputs import StackOutputs

log = logging.getLogger(__name__)

ENABLE_HINT = (
    "enable chronos-training:debug_profile (`pulumi config set debug_profile true`) and run `pulumi up`"
)
PLUGIN_DOCS = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/"
    "session-manager-working-with-install-plugin.html"
)
CLI_DOCS = "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"


class DebugError(UserError):
    """No debug session is possible for this run; the message says why and what to do."""


def debug_launch_profile(spec: RunSpec, outputs: StackOutputs) -> str | None:
    """The instance profile ARN a launch of ``spec`` overrides the template's with (``None``: keep it).

    Raises:
        ConfigError: ``debug = true`` but the stack has no debug profile (no IAM change
            may happen at launch, so it must exist already).
    """
    if not spec.instance.debug:
        return None
    if not outputs.has_debug_profile:
        raise ConfigError(
            f"run spec: $.instance.debug: the stack of env {outputs.env!r} has no debug "
            f"instance profile; {ENABLE_HINT}, or set debug = false"
        )
    return outputs.debug_instance_profile_arn


@dataclass(frozen=True, kw_only=True)
class DebugTarget:
    """A run's instance ready for a Session Manager shell."""

    env: str
    run_id: str
    instance_id: str
    region: str
    state: str
    instance_profile_arn: str
    local: bool = False

    @property
    def command(self) -> list[str]:
        """``aws ssm start-session`` for this instance (the default shell document)."""
        return ["aws", "ssm", "start-session", "--target", self.instance_id, "--region", self.region]

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def _debug_profile(instance: dict[str, Any], outputs: StackOutputs, *, env: str, run_id: str) -> str:
    """The instance's profile ARN, when it is the stack's debug profile.

    Raises:
        DebugError: the stack has no debug profile, or the instance runs under another one.
    """
    profile = str((instance.get("IamInstanceProfile") or {}).get("Arn", ""))
    if not outputs.has_debug_profile:
        raise DebugError(
            f"run {run_id} was not launched with debug: the stack of env {env!r} has no debug "
            f"instance profile; {ENABLE_HINT}, then launch with debug = true in the run spec"
        )
    if profile != outputs.debug_instance_profile_arn:
        raise DebugError(
            f"run {run_id} was not launched with debug (instance {instance.get('InstanceId')} has profile "
            f"{profile or 'none'}); relaunch with debug = true under [instance] in the run spec"
        )
    return profile


def find_target(backend: Backend, *, env: str, run_id: str | None) -> DebugTarget:
    """Examine: the instance of ``run_id`` (``None``/'latest': the newest run) and whether
    a debug session can reach it. Reads only.

    Raises:
        ConfigError: malformed run id or no run in the env.
        DebugError: no such run (never launched), its instance is gone, or it was not
            launched with the debug profile (or the stack has none).
    """
    from control.console import instance_of_run
    from control.fetch import resolve_run_id

    outputs, run_id = resolve_run_id(backend, env, run_id)
    flag = " --local" if backend.local else ""
    instance_id = instance_of_run(backend, env, run_id, outputs.bucket)
    if instance_id is None:
        raise DebugError(
            f"no such run: {run_id} has no instance in env {env!r} (no state file entry and "
            f"no launch record); list runs with `invoke runs --env={env}{flag}`"
        )
    with backend.errors("ec2:DescribeInstances", instance_id):
        instance = describe_instance(backend.clients().ec2, instance_id)
    state = str(instance["State"]["Name"]) if instance else "not found"
    if instance is None or is_gone(state):
        raise DebugError(
            f"instance {instance_id} of run {run_id} is gone ({state}); a failed debug run "
            f"stays up only keep_on_failure minutes: read its logs with "
            f"`invoke logs {run_id} --env={env}{flag}`"
        )
    profile = _debug_profile(instance, outputs, env=env, run_id=run_id)
    if state != "running":
        raise DebugError(
            f"instance {instance_id} of run {run_id} is {state}, not running; try again in a minute"
        )
    return DebugTarget(
        env=env,
        run_id=run_id,
        instance_id=instance_id,
        region=outputs.region,
        state=state,
        instance_profile_arn=profile,
        local=backend.local,
    )


Which = Callable[[str], str | None]
Runner = Callable[[Sequence[str]], int]


def missing_tools(which: Which = shutil.which) -> list[str]:
    """What ``aws ssm start-session`` needs and this machine lacks, each with how to install it."""
    missing = []
    if which("aws") is None:
        missing.append(f"the AWS CLI ({CLI_DOCS})")
    if which("session-manager-plugin") is None:
        missing.append(
            f"the Session Manager plugin (macOS: `brew install --cask session-manager-plugin`; "
            f"Linux and Windows: the package from {PLUGIN_DOCS})"
        )
    return missing


def start_session(
    target: DebugTarget, *, which: Which = shutil.which, runner: Runner = subprocess.call
) -> int:
    """Act: run ``aws ssm start-session`` in this terminal; its exit code.

    Raises:
        DebugError: local mode (there is no Session Manager), or the AWS CLI or the
            Session Manager plugin is not installed.
    """
    if target.local:
        raise DebugError(
            f"local mode has no Session Manager; instance {target.instance_id} is a local "
            f"process: read its console with `invoke logs {target.run_id} --env={target.env} "
            f"--console --local`"
        )
    missing = missing_tools(which)
    if missing:
        raise DebugError(
            f"cannot start the session: install {' and '.join(missing)}, then run {target.command_line}"
        )
    log.info("starting a Session Manager session on %s", target.instance_id)
    return runner(target.command)

"""``invoke logs RUN_ID --console``: the instance's console output while it lives.

The run's instance id comes from the state file (the live run) or, for any run
that got that far, its launch record ``{run}/user-configs/launch-record.json``.
EC2 ``GetConsoleOutput`` (base64, ``Latest=True``: the newest output rather than
the buffer posted at boot; Nitro instances only, as every g4dn and g5 is) returns
what the instance printed to its serial console: boot, cloud-init, the user data.

Locally the API path is the same (the call is made, so it is authorized like on
AWS), but moto answers every ``GetConsoleOutput`` with a fixed sample text, not the
instance's own: the local instance's console is its supervisor's log,
``.local/instances/<id>/console.log``, read through the :class:`LocalBackend`'s folder.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, replace
from typing import Any

import botocore.exceptions

from common import layout
from common.aws import error_code
from common.ec2 import NOT_FOUND, instance_state, is_gone
from common.errors import ConfigError
from common.state_store import StateStore
from control.backend import Backend
from control.s3io import DocumentError, get_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ConsoleOutput:
    """What ``logs --console`` shows: the text, or the one line saying why there is none."""

    run_id: str
    env: str
    instance_id: str | None
    state: str | None
    text: str
    source: str | None
    problem: str | None = None


def instance_of_run(backend: Backend, env: str, run_id: str, bucket: str) -> str | None:
    """The instance id of ``run_id``: the state file's if it is the live run, else its launch record's."""
    import json

    s3 = backend.clients().s3
    with backend.errors("s3:GetObject", f"s3://{bucket}/{layout.state_key(env)}"):
        live = StateStore(s3, bucket, env).read()
    if live is not None and live.doc.get("run_id") == run_id and live.doc.get("instance_id"):
        return str(live.doc["instance_id"])
    key = layout.RunPaths(env=env, run_id=run_id).launch_record
    with backend.errors("s3:GetObject", f"s3://{bucket}/{key}"):
        body = get_bytes(s3, bucket, key)
    if body is None:
        return None
    try:
        record = json.loads(body)
    except ValueError:
        log.warning("launch record s3://%s/%s is not JSON", bucket, key)
        return None
    return str(record["instance_id"]) if isinstance(record, dict) and record.get("instance_id") else None


def _decode(output: str | None) -> str:
    if not output:
        return ""
    try:
        return base64.b64decode(output).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return output  # some endpoints hand it back decoded already


def _get_console(ec2: Any, instance_id: str) -> str:
    try:
        resp = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in {
            "UnsupportedOperation",
            "InvalidParameterCombination",
            "InvalidParameterValue",
        }:
            raise
        # Latest=True is for Nitro instances only; the others keep the boot-time buffer.
        resp = ec2.get_console_output(InstanceId=instance_id)
    return _decode(resp.get("Output"))


def console_output(
    backend: Backend, *, env: str, run_id: str | None, tail: int | None = None
) -> ConsoleOutput:
    """``invoke logs RUN_ID --console``.

    Raises:
        ConfigError: a malformed run id or no run in the env.
        AccessDeniedError: ec2:GetConsoleOutput (or a read) was refused.
    """
    from control.fetch import resolve_run_id

    outputs, run_id = resolve_run_id(backend, env, run_id)
    s3_logs = f"`invoke logs {run_id} --env={env}{' --local' if backend.local else ''}`"
    try:
        instance_id = instance_of_run(backend, env, run_id, outputs.bucket)
    except DocumentError as exc:
        raise ConfigError(f"cannot find the instance of run {run_id}: {exc}") from None
    none = ConsoleOutput(run_id=run_id, env=env, instance_id=instance_id, state=None, text="", source=None)
    if instance_id is None:
        return replace(
            none,
            problem=f"run {run_id} has no recorded instance (no launch record); its logs in S3: {s3_logs}",
        )
    with backend.errors("ec2:DescribeInstances", instance_id):
        state = instance_state(backend.clients().ec2, instance_id)
    if is_gone(state):
        why = "unknown to EC2" if state == NOT_FOUND else state
        return replace(
            none,
            state=None if state == NOT_FOUND else state,
            problem=f"instance {instance_id} of run {run_id} is {why}: its console went with it; "
            f"the run's logs are in S3: {s3_logs}",
        )
    text, source = _read_console(backend, instance_id)
    if tail:
        text = "\n".join(text.splitlines()[-tail:])
    problem = None
    if not text.strip():
        problem = (
            f"instance {instance_id} ({state}) has no console output yet; EC2 "
            "posts it a few minutes after boot, try again shortly"
        )
    return replace(none, state=state, text=text, source=source, problem=problem)


def _read_console(backend: Backend, instance_id: str) -> tuple[str, str]:
    """The console text and where it came from (locally: the supervisor's log, not moto's sample)."""
    with backend.errors("ec2:GetConsoleOutput", f"instance {instance_id}"):
        text = _get_console(backend.clients().ec2, instance_id)
    local_dir = getattr(backend, "local_dir", None)
    if backend.local and local_dir is not None:
        path = local_dir.instance_dir(instance_id) / "console.log"
        return (path.read_text("utf-8", "replace") if path.exists() else ""), str(path)
    return text, f"GetConsoleOutput {instance_id}"

"""Local AWS for local mode: start it in the background, provision an env, stage data, stop it.

``invoke local.up`` = :func:`up`: a background ``python -m localaws serve`` on
127.0.0.1 (reused when already running), the local provisioner of
:mod:`infra.local` for the env and its IAM users (:mod:`localaws.identities`;
both idempotent), moto's IAM enforcement switched on, and the synthetic dataset
under ``cached-datasets/training-data/`` (uploaded as the env's operator).
:func:`exports` gives the variables that point the AWS CLI and SDKs at it, with
the operator's keys.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import layout
from common.errors import ConfigError, UserError
from control.backend import LOCAL_VAR, check_env
from control.local_backend import LocalBackend
from control.localdir import PROJECT_ROOT, LocalDir, pid_alive, read_json, write_json

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Staged:
    """The dataset in the bucket."""

    prefix: str
    files: int
    bytes: int
    uploaded: int


@dataclass(frozen=True, kw_only=True)
class LocalUp:
    """What ``local.up`` did."""

    endpoint_url: str
    pid: int | None
    started: bool
    env: str
    bucket: str
    staged: Staged
    exports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LocalDown:
    """What ``local.down`` stopped."""

    endpoint_url: str | None
    server_stopped: bool
    instances_stopped: list[str]


def start_server(local_dir: LocalDir, *, port: int = 0) -> tuple[str, int | None, bool]:
    """The running local AWS, started in the background if needed: (endpoint, pid, started)."""
    from localaws import moto

    record = read_json(local_dir.aws_file)
    if record and record.get("endpoint_url") and moto.attach(record["endpoint_url"]).is_up():
        return record["endpoint_url"], record.get("pid"), False
    local_dir.root.mkdir(parents=True, exist_ok=True)
    local_dir.aws_file.unlink(missing_ok=True)
    with open(local_dir.aws_log, "ab") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "localaws",
                "serve",
                "--port",
                str(port),
                "--state-file",
                str(local_dir.aws_file),
            ],
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        record = read_json(local_dir.aws_file)
        if record and record.get("pid") == proc.pid and moto.attach(record["endpoint_url"]).is_up():
            log.info("local AWS started at %s (pid %d)", record["endpoint_url"], proc.pid)
            return record["endpoint_url"], proc.pid, True
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise UserError(f"local AWS did not start within {START_TIMEOUT_S:.0f} s; see {local_dir.aws_log}")


def provision(
    backend: LocalBackend, env: str, *, debug_profile: bool = False, batch: bool = False
) -> dict[str, Any]:
    """Provision ``env`` and its identities (idempotent), switch IAM enforcement on.

    Order: the admin (enforcement off while it is created; an existing admin's
    keys work either way, so a second env is added to an enforcing server), the
    provisioner with the admin's keys and the env's instance-host user in the
    instance role's trust policy, the operator user, then enforcement on. The
    outputs go to ``.local/stacks/{env}.json`` and ``backend`` signs as the env's
    operator from then on: the admin's keys serve only this provisioning.
    ``debug_profile`` mirrors the stack config of that name (the debug instance profile), ``batch``
    the stack config ``batch`` (the sweep engine: queue, job definition, compute environments).

    Raises:
        ConfigError: unreadable ``.local/identities.json``.
    """
    from infra.local import ProvisionOptions
    from infra.local import provision as provision_local
    from localaws import identities, moto, principals

    aws = moto.attach(backend.endpoint_url or "")

    def provision_with(principal_arn: str) -> dict[str, Any]:
        return provision_local(
            aws.session(),
            env=env,
            endpoint_url=backend.endpoint_url,
            options=ProvisionOptions(
                region=backend.region,
                local_principal_arn=principal_arn,
                debug_profile=debug_profile,
                batch=batch,
            ),
        )

    try:
        _, outputs = principals.ensure_identities(
            aws, backend.local_dir.identities_file, env=env, provision=provision_with
        )
    except identities.IdentitiesError as exc:
        raise ConfigError(
            f"cannot set up the local identities ({exc}); restart the local AWS with "
            f"`invoke local.down` then `invoke local.up --env={env}`"
        ) from None
    finally:
        if aws.admin is not None:  # never leave the server open to anyone
            aws.enforce_iam()
    write_json(backend.local_dir.stack_file(env), dict(outputs))
    backend.stack_outputs(env)
    return dict(outputs)


def stage_dataset(s3: Any, bucket: str, data_dir: Path, *, prefix: str = layout.TRAINING_DATA) -> Staged:
    """Generate the synthetic dataset once and upload what the bucket lacks."""
    from trainer.synthetic import generate_dataset

    files = sorted(data_dir.rglob("*.parquet")) if data_dir.is_dir() else []
    if not files:
        files = generate_dataset(data_dir)
    existing: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        existing.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
    uploaded = total = 0
    for path in files:
        key = prefix + path.relative_to(data_dir).as_posix()
        size = path.stat().st_size
        total += size
        if existing.get(key) != size:
            s3.upload_file(str(path), bucket, key)
            uploaded += 1
    return Staged(prefix=prefix, files=len(files), bytes=total, uploaded=uploaded)


def up(
    *,
    env: str = "dev",
    port: int = 0,
    local_dir: LocalDir | None = None,
    debug_profile: bool = False,
    batch: bool = False,
) -> LocalUp:
    """``invoke local.up``: local AWS running, ``env`` provisioned, dataset staged."""
    check_env(env)
    local_dir = local_dir or LocalDir.default()
    endpoint, pid, started = start_server(local_dir, port=port)
    backend = LocalBackend.open(local_dir)
    outputs = provision(backend, env, debug_profile=debug_profile, batch=batch)
    staged = stage_dataset(backend.clients().s3, outputs["bucket"], local_dir.data_dir)
    return LocalUp(
        endpoint_url=endpoint,
        pid=pid,
        started=started,
        env=env,
        bucket=outputs["bucket"],
        staged=staged,
        exports=exports(local_dir, env=env),
    )


def exports(local_dir: LocalDir | None = None, *, env: str = "dev") -> dict[str, str]:
    """Variables that point the AWS CLI, SDKs and ``invoke`` at the local AWS, as ``env``'s operator.

    Without local identities (IAM enforcement off) the keys are the default chain's.

    Raises:
        control.aws_errors.LocalAWSDownError: it is not running.
        ConfigError: identities are recorded, but none for ``env``.
    """
    backend = LocalBackend.open(local_dir, env=env)
    return {**backend.credentials_env(), LOCAL_VAR: "1"}


def down(*, local_dir: LocalDir | None = None) -> LocalDown:
    """``invoke local.down``: stop the recovery pumps, local instances, sweep jobs and the local AWS."""
    from control.local_instance import terminate_processes
    from control.local_recovery import stop_all

    local_dir = local_dir or LocalDir.default()
    stop_all(local_dir)  # first: a pump would relaunch the instances stopped next
    from control import local_batch

    local_batch.stop_all(local_dir)  # sweep jobs the local executor runs (SIGTERM: they checkpoint)
    stopped = [
        str(rec.get("instance_id"))
        for rec in local_dir.instance_records()
        if terminate_processes(rec, grace_s=10.0)
    ]
    record = read_json(local_dir.aws_file) or {}
    pid = record.get("pid")
    server_stopped = False
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        server_stopped = True
    local_dir.aws_file.unlink(missing_ok=True)
    local_dir.identities_file.unlink(missing_ok=True)  # its users and keys lived in the server
    stacks = local_dir.root / "stacks"
    if stacks.is_dir():  # the emulator's state died with it
        for f in stacks.glob("*.json"):
            f.unlink()
    return LocalDown(
        endpoint_url=record.get("endpoint_url"), server_stopped=server_stopped, instances_stopped=stopped
    )


__all__ = [
    "LocalDown",
    "LocalUp",
    "Staged",
    "down",
    "exports",
    "provision",
    "stage_dataset",
    "start_server",
    "up",
]

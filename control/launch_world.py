"""What a launch reads before it decides anything: the world as the account has it now.

:func:`gather_world` reads the credentials, stack outputs, the live state (the lock),
the code bundle and whether it is uploaded, the launch template and its AMI
(:func:`read_template`), the training data, the instance's Python environment and
the prices of every placement. It writes nothing; :func:`control.launch_plan.plan_launch`
decides from what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from common import layout
from common.attempts import recovering_in_grace
from common.aws import error_code, is_not_found
from common.ec2 import instance_state, is_gone
from common.errors import ConfigError, LockHeldError, UserError
from common.placement import PriceKey, strategy_for
from common.pricing import Price, launch_price
from common.runspec import RunSpec
from common.state_doc import Snapshot
from common.state_store import StateStore
from common.status import RunStatus
from control.backend import Backend
from control.billing import run_instance_ids
from control.bundle import build_code_bundle, code_key_for
from control.launch_rules import TEMPLATE_VERSION, TemplateFacts
from control.localdir import PROJECT_ROOT
from control.placement import availability_zones
from infra.outputs import StackOutputs

PYTHON_ENV_KEY = layout.ENV_PREFIX_DIR + "chronos-env.tar.gz"
WHEELHOUSE_PREFIX = layout.ENV_PREFIX_DIR + "wheelhouse/"


@dataclass(frozen=True, kw_only=True)
class World:
    """What a launch needs to know, read by :func:`gather_world`."""

    env: str
    run_id: str
    now: datetime
    local: bool
    device: str
    outputs: StackOutputs
    active: Snapshot | None
    code_bundle: bytes = field(repr=False)
    code_sha256: str
    code_exists: bool
    data_files: int
    data_bytes: int
    prices: Mapping[PriceKey, Price]  # (market, instance type, AZ) -> price
    user_files: tuple[tuple[str, bytes], ...] = ()
    identity: Mapping[str, str] = field(default_factory=dict)
    python_env: str = "packed"  # packed | wheelhouse | missing: what the instance boots its Python from
    resume: bool = False  # run_id is an existing run's, relaunched
    template: TemplateFacts | None = None  # the launch template version and its AMI
    code_age_days: float | None = None  # age of the existing code bundle


def gather_world(
    backend: Backend,
    spec: RunSpec,
    *,
    env: str,
    now: datetime,
    user_files: tuple[tuple[str, bytes], ...] = (),
    repo_root: Path = PROJECT_ROOT,
    run_id: str | None = None,
) -> World:
    """Read everything :func:`control.launch_plan.plan_launch` needs. Writes nothing.

    Raises:
        NoCredentialsError, AccessDeniedError, ConfigError, CorruptStateError.
    """
    identity = backend.check_credentials()
    outputs = backend.stack_outputs(env)
    s3 = backend.clients().s3
    store = StateStore(s3, outputs.bucket, env)
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{layout.state_key(env)}"):
        active = store.read()
    if active is not None:
        with backend.errors("ec2:DescribeInstances", f"the instances of env {env}"):
            check_lock(backend.clients().ec2, store, active, env=env, now=now)
    bundle, sha = build_code_bundle(repo_root)
    code_key = code_key_for(sha)
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{code_key}"):
        code_age = _age_days(s3, outputs.bucket, code_key, now)
    template = read_template(backend, outputs)
    with backend.errors("s3:ListBucket", f"s3://{outputs.bucket}/{spec.data.prefix}"):
        files, size = _data_inventory(s3, outputs.bucket, spec.data.prefix)
        python_env = python_env_kind(s3, outputs.bucket)
    with backend.errors("s3:ListBucket", f"s3://{outputs.bucket}/{env}/"):
        new_id = run_id or layout.new_run_id(
            now, env=env, taken=lambda rid: _run_used(s3, outputs.bucket, env, rid)
        )
    return World(
        env=env,
        run_id=new_id,
        resume=run_id is not None,
        now=now,
        local=backend.local,
        device=backend.device,
        outputs=outputs,
        active=active,
        code_bundle=bundle,
        code_sha256=sha,
        code_exists=code_age is not None,
        code_age_days=code_age,
        data_files=files,
        data_bytes=size,
        prices=_prices(backend, spec, outputs, now),
        user_files=user_files,
        identity=identity,
        python_env=python_env,
        template=template,
    )


class StaleLockError(LockHeldError):
    """The lock is held by a run that cannot end it: its instance is gone, or was never recorded."""

    def __init__(self, active: Snapshot, *, env: str, problem: str, fix: str) -> None:
        doc = active.doc
        self.env, self.run_id, self.status, self.since = env, active.run_id, doc["status"], doc["started_at"]
        self.problem = problem
        UserError.__init__(
            self,
            f"a run is already active in env {env!r}: {active.run_id} ({self.status} since {self.since}), "
            f"but {problem}; {fix}",
        )


def check_lock(ec2: Any, store: StateStore, active: Snapshot, *, env: str, now: datetime) -> None:
    """Refuse with what to do when the lock's run cannot end it (else the plan's LockHeldError).

    - its instance is gone (terminated, unknown to EC2) and the lock is still the one read after
      the describe: nothing but ``verify --fix`` removes it (a run the recovery handler is
      relaunching is ``recovering``, and one it may still relaunch is said so);
    - no instance is recorded but one tagged with its run id bills: its launch stopped after
      RunInstances (or is recording it this second); ``kill`` finds the instance by its ``RunId``
      tag, terminates it and releases the lock (``control.kill``).

    Raises:
        StaleLockError: either case.
    """
    doc = active.doc
    status = RunStatus(doc["status"])
    if recovering_in_grace(doc, now):
        return
    iid = doc.get("instance_id")
    fix = f"`invoke verify --env={env} --fix --yes`"
    if iid:
        state = instance_state(ec2, iid)
        if not is_gone(state) or store.read_if_changed(active.etag) is not False:
            return
        problem = f"its instance {iid} is {state}: the lock is stale"
        todo = f"clear it with {fix}, then launch again"
        if not status.is_final() and int(doc.get("recoveries") or 0) < int(doc.get("max_recoveries") or 0):
            todo = f"unless the recovery handler relaunches it (`invoke monitor --env={env}`), {todo}"
        raise StaleLockError(active, env=env, problem=problem, fix=todo)
    started = run_instance_ids(ec2, env, active.run_id)
    if started:
        raise StaleLockError(
            active,
            env=env,
            problem=f"it has not recorded an instance, and {', '.join(started)} was started for it",
            fix=f"if its launch died after RunInstances, `invoke kill --env={env}` terminates the instance "
            "and releases the lock",
        )


def _prices(backend: Backend, spec: RunSpec, outputs: StackOutputs, now: datetime) -> dict[PriceKey, Price]:
    """The price of every placement the spec's strategy may try."""
    ec2 = backend.clients().ec2
    azs = availability_zones(spec.instance.availability_zones, outputs)
    return {
        (market.value, itype, az): launch_price(
            ec2, itype, az, market.value, local=backend.local, clock=lambda: now
        )
        for market in strategy_for(spec.instance.market.value).markets
        for itype in spec.instance.types
        for az in azs
    }


def read_template(backend: Backend, outputs: StackOutputs) -> TemplateFacts:
    """The launch template version a launch uses, and its AMI's name and root device.

    Raises:
        ConfigError: the template or its AMI does not exist (the stack is out of date).
        AccessDeniedError: the operator may not describe them.
    """
    ec2 = backend.clients().ec2
    lt = outputs.launch_template_id
    fix = (
        f"run `pulumi up --stack {outputs.env}`"
        if not backend.local
        else f"run `invoke local.up --env={outputs.env}`"
    )
    try:
        with backend.errors("ec2:DescribeLaunchTemplateVersions", f"launch template {lt}"):
            version = ec2.describe_launch_template_versions(LaunchTemplateId=lt, Versions=[TEMPLATE_VERSION])[
                "LaunchTemplateVersions"
            ][0]
        data = version["LaunchTemplateData"]
        image_id = str(data.get("ImageId", ""))
        with backend.errors("ec2:DescribeImages", f"image {image_id}"):
            images = ec2.describe_images(ImageIds=[image_id])["Images"] if image_id else []
    except ClientError as exc:
        raise ConfigError(f"cannot read launch template {lt} or its AMI ({error_code(exc)}); {fix}") from None
    if not images:
        raise ConfigError(
            f"the launch template's AMI {image_id or '(none)'} does not exist in "
            f"{outputs.region}; {fix} (pin a current one with `ami_id` in the stack config)"
        )
    image = images[0]
    return TemplateFacts(
        version=str(version.get("VersionNumber", TEMPLATE_VERSION)),
        data=data,
        image_id=image_id,
        image_name=image.get("Name"),
        root_device=image.get("RootDeviceName"),
    )


def python_env_kind(s3: Any, bucket: str) -> str:
    """What the instance boots its Python from: ``packed``, ``wheelhouse`` or ``missing``."""
    if _head(s3, bucket, PYTHON_ENV_KEY) is not None:
        return "packed"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=WHEELHOUSE_PREFIX, MaxKeys=5)
    if any(o["Key"].endswith(".whl") for o in listed.get("Contents", [])):
        return "wheelhouse"
    return "missing"


def _age_days(s3: Any, bucket: str, key: str, now: datetime) -> float | None:
    """Days since ``key`` was last written; ``None`` when it does not exist."""
    head = _head(s3, bucket, key)
    if head is None:
        return None
    modified = head.get("LastModified")
    return (now - modified).total_seconds() / 86400 if modified else 0.0


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``HeadObject`` of ``key``; ``None`` when it does not exist."""
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _data_inventory(s3: Any, bucket: str, prefix: str) -> tuple[int, int]:
    files = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                files += 1
                size += int(obj.get("Size", 0))
    return files, size


def _run_used(s3: Any, bucket: str, env: str, run_id: str) -> bool:
    """Whether ``run_id`` already has outputs or logs in ``env`` (a launch within the same second)."""
    paths = layout.RunPaths(env=env, run_id=run_id)
    return any(
        s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0)
        for prefix in (paths.prefix, paths.logs)
    )

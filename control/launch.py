"""Launch a run: examine the world, plan, then act.

- :func:`gather_world` does the reading (credentials, stack outputs, the lock,
  the code bundle, the training data, prices);
- :func:`plan_launch` is pure: ``(spec, world) -> LaunchPlan``; ``--dry-run``
  prints this plan and stops;
- :func:`apply_launch` takes the lock, uploads the resolved run spec, user
  configs and (if new) the content-addressed code bundle, runs the instance from
  the launch template (next instance type / AZ of the spec on a capacity error),
  records it in the state file and, in local mode, starts the supervisor.
  Any failure after the lock is taken releases it again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common import layout, runspec
from common.aws import error_code, is_access_denied
from common.errors import AccessDeniedError, ConfigError, UserError
from common.runspec import RunSpec
from common.state_store import Snapshot, StateStore, new_state
from common.status import Market
from common.timeutil import Clock, iso, utc_now
from control.backend import Backend, Clients, check_env
from control.cost import Price, launch_price
from control.debug import debug_launch_profile
from control.launch_rules import (
    QUOTA_CODES,
    TEMPLATE_VERSION,
    TemplateFacts,
    launch_problems,
    quota_message,
    root_volume_mapping,
)
from control.localdir import PROJECT_ROOT
from infra import spec as infra_spec
from infra.outputs import StackOutputs

log = logging.getLogger(__name__)

RUN_SPEC_NAME = "run-spec.json"
LAUNCH_RECORD_NAME = "launch-record.json"
PYTHON_ENV_KEY = layout.ENV_PREFIX_DIR + "chronos-env.tar.gz"
WHEELHOUSE_PREFIX = layout.ENV_PREFIX_DIR + "wheelhouse/"
MANAGED_BY = "chronos-invoke"
# Capacity: try the next type/AZ. Quotas (launch_rules.QUOTA_CODES) are not capacity: every
# other placement would be refused the same way, so the launch stops and names the quota.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "Unsupported",
        "InsufficientFreeAddressesInSubnet",
        "UnfulfillableCapacity",
    }
)
# A code bundle this close to its lifecycle expiry is uploaded again, so it cannot expire
# between the launch and the instance's download.
BUNDLE_REFRESH_MARGIN_DAYS = 2


class LaunchError(UserError):
    """Every instance type and AZ of the spec was refused; the lock was released."""

    exit_code = 1


class QuotaError(UserError):
    """A vCPU quota refused the launch: raise it (the message names it); the lock was released."""


@dataclass(frozen=True, kw_only=True)
class Placement:
    """One way to run the instance: a type in an AZ's subnet, at a price."""

    instance_type: str
    availability_zone: str
    subnet_id: str
    price: Price


@dataclass(frozen=True, kw_only=True)
class Upload:
    """An object the launch writes; ``skip_reason`` says why it is not written."""

    key: str
    body: bytes = field(repr=False)
    content_type: str = "application/octet-stream"
    skip_reason: str | None = None

    @property
    def size(self) -> int:
        return len(self.body)


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
    prices: Mapping[tuple[str, str], Price]
    user_files: tuple[tuple[str, bytes], ...] = ()
    identity: Mapping[str, str] = field(default_factory=dict)
    python_env: str = "packed"  # packed | wheelhouse | missing: what the instance boots its Python from
    resume: bool = False  # run_id is an existing run's, relaunched
    template: TemplateFacts | None = None  # the launch template version and its AMI
    code_age_days: float | None = None  # age of the existing code bundle


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """Everything :func:`apply_launch` will do, decided in advance."""

    env: str
    run_id: str
    local: bool
    bucket: str
    region: str
    spec: RunSpec
    placements: tuple[Placement, ...]
    launch_template_id: str
    security_group_id: str
    tags: Mapping[str, str]
    user_data: str = field(repr=False)
    code_key: str
    uploads: tuple[Upload, ...]
    state_doc: Mapping[str, Any]
    data_files: int
    data_bytes: int
    python_env: str = "packed"
    resume: bool = False  # relaunch of an existing run: its user-configs belong to the first attempt
    root_device: str = infra_spec.ROOT_DEVICE_NAME  # the AMI's root device: the mapping that sizes the root
    image_id: str | None = None
    image_name: str | None = None
    debug_instance_profile_arn: str | None = None  # run spec debug = true (control.debug)

    @property
    def market(self) -> Market:
        return self.spec.instance.market

    @property
    def paths(self) -> layout.RunPaths:
        return layout.RunPaths(env=self.env, run_id=self.run_id)

    def run_instances_request(self, placement: Placement) -> dict[str, Any]:
        """The ``RunInstances`` arguments for ``placement``."""
        tag_list = infra_spec.tag_list(self.tags)
        request: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "LaunchTemplate": {"LaunchTemplateId": self.launch_template_id, "Version": TEMPLATE_VERSION},
            "InstanceType": placement.instance_type,
            "UserData": self.user_data,
            "NetworkInterfaces": infra_spec.network_interface_override(
                placement.subnet_id, self.security_group_id
            ),
            "BlockDeviceMappings": root_volume_mapping(self.root_device, self.spec.instance.root_volume_gb),
            # The spot request only for spot: tagging a type the launch does not create fails it.
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": tag_list}
                for kind in infra_spec.launch_tagged_types(self.market.value)
            ],
        }
        if self.market is Market.SPOT:
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        if self.debug_instance_profile_arn:  # Session Manager's profile, created by the stack beforehand
            request["IamInstanceProfile"] = {"Arn": self.debug_instance_profile_arn}
        return request

    def summary(self) -> dict[str, Any]:
        """The plan as plain data (what ``--dry-run`` prints)."""
        first = self.placements[0]
        lines = self.user_data.splitlines()
        return {
            "env": self.env,
            "run_id": self.run_id,
            "local": self.local,
            "bucket": self.bucket,
            "region": self.region,
            "instance_type": first.instance_type,
            "availability_zone": first.availability_zone,
            "subnet_id": first.subnet_id,
            "market": self.market.value,
            "price_per_hour": first.price.usd_per_hour,
            "price_source": first.price.source,
            "max_runtime_minutes": self.spec.instance.max_runtime_minutes,
            "max_cost": first.price.cost(self.spec.instance.max_runtime_minutes * 60),
            "fallbacks": [f"{p.instance_type}/{p.availability_zone}" for p in self.placements[1:]],
            "launch_template_id": self.launch_template_id,
            "image": {
                "id": self.image_id,
                "name": self.image_name,
                "root_device": self.root_device,
                "root_volume_gb": self.spec.instance.root_volume_gb,
            },
            "tags": dict(self.tags),
            "user_data": {
                "bytes": len(self.user_data.encode()),
                "lines": len(lines),
                "first_line": lines[0] if lines else "",
            },
            "model": {
                "base": self.spec.model.base,
                "finetune_mode": self.spec.model.finetune_mode.value,
                "num_steps": self.spec.model.num_steps,
                "prediction_length": self.spec.model.prediction_length,
            },
            "data": {"prefix": self.spec.data.prefix, "files": self.data_files, "bytes": self.data_bytes},
            "state_key": self.paths.state,
            "outputs_prefix": self.paths.prefix,
            "logs_prefix": self.paths.logs,
            "python_env": self.python_env,
            "uploads": [{"key": u.key, "bytes": u.size, "skip": u.skip_reason} for u in self.uploads],
        }


@dataclass(frozen=True, kw_only=True)
class LaunchResult:
    """What :func:`apply_launch` did."""

    run_id: str
    env: str
    instance_id: str
    instance_type: str
    availability_zone: str
    market: str
    price_per_hour: float | None
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    refused: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LaunchOutcome:
    """The plan, and the result unless it was a dry run."""

    plan: LaunchPlan
    result: LaunchResult | None


# ------------------------------------------------------------------ the spec


def load_spec(
    path: Path | None,
    *,
    env: str,
    instance_type: str | None = None,
    market: str | None = None,
    max_runtime: str | None = None,
) -> RunSpec:
    """The run spec from ``path`` with the command-line overrides applied.

    Raises:
        ConfigError: a spec error with its JSON path, or an env that contradicts the file.
    """
    spec = runspec.load(path)
    if path is not None:
        raw = tomllib.loads(Path(path).read_text("utf-8"))
        if "env" in raw and raw["env"] != env:
            raise ConfigError(
                f"{path}: $.env: the spec is for env {raw['env']!r} but --env={env}; drop one of them"
            )
    return _with_overrides(
        spec,
        env=env,
        source=str(path or "run spec"),
        instance_type=instance_type,
        market=market,
        max_runtime=max_runtime,
    )


def _with_overrides(
    spec: RunSpec,
    *,
    env: str,
    source: str,
    instance_type: str | None,
    market: str | None,
    max_runtime: str | None,
) -> RunSpec:
    """``spec`` with the command line's instance overrides (the model settings never change here)."""
    overrides: dict[str, Any] = {}
    if instance_type:
        overrides["types"] = [instance_type]
    if market:
        overrides["market"] = market
    if max_runtime:
        overrides["max_runtime"] = max_runtime
    doc = spec.to_dict()
    doc["env"] = env
    doc["instance"].update(overrides)
    return runspec.from_dict(doc, source="command line" if overrides else source)


def resume_spec(
    backend: Backend,
    *,
    env: str,
    run_id: str,
    instance_type: str | None = None,
    market: str | None = None,
    max_runtime: str | None = None,
) -> RunSpec:
    """The stored spec of run ``run_id``, to relaunch it under the same id.

    The model settings are the first attempt's, unchanged (a resumed schedule
    must keep num_steps, batch size and learning rate); only the instance part
    may be overridden.

    Raises:
        ConfigError: unknown run, no stored spec, or a run that already finished normally.
    """
    from control.s3io import DocumentError, get_json

    outputs = backend.stack_outputs(env)
    s3 = backend.clients().s3
    paths = layout.RunPaths(env=env, run_id=run_id)
    key = paths.user_configs + RUN_SPEC_NAME
    try:
        with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{key}"):
            doc = get_json(s3, outputs.bucket, key, "run-spec")
            sentinel = get_json(s3, outputs.bucket, paths.success, "sentinel")
    except DocumentError as exc:
        raise ConfigError(f"cannot resume run {run_id}: {exc}") from None
    if doc is None:
        raise ConfigError(
            f"cannot resume run {run_id}: s3://{outputs.bucket}/{key} does not exist; "
            f"list the runs with `invoke runs --env={env}`"
        )
    if sentinel is not None and sentinel["completion_status"] == "normal":
        raise ConfigError(
            f"run {run_id} already finished normally; start a new run with `invoke launch --env={env}`"
        )
    spec = runspec.from_dict(doc, source=key)
    return _with_overrides(
        spec, env=env, source=key, instance_type=instance_type, market=market, max_runtime=max_runtime
    )


# ------------------------------------------------------------ examine (I/O)


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
    """Read everything :func:`plan_launch` needs. Writes nothing.

    Raises:
        NoCredentialsError, AccessDeniedError, ConfigError, CorruptStateError.
    """
    from trainer.bootstrap import build_code_bundle

    identity = backend.check_credentials()
    outputs = backend.stack_outputs(env)
    clients = backend.clients()
    store = StateStore(clients.s3, outputs.bucket, env)
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{layout.state_key(env)}"):
        active = store.read()
    bundle, sha = build_code_bundle(repo_root)
    code_key = code_key_for(sha)
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{code_key}"):
        code_age = _age_days(clients.s3, outputs.bucket, code_key, now)
    template = read_template(backend, outputs)
    with backend.errors("s3:ListBucket", f"s3://{outputs.bucket}/{spec.data.prefix}"):
        files, size = _data_inventory(clients.s3, outputs.bucket, spec.data.prefix)
        python_env = _python_env(clients.s3, outputs.bucket)
    azs = _azs(spec, outputs)
    prices: dict[tuple[str, str], Price] = {}
    for itype in spec.instance.types:
        for az in azs:
            prices[(itype, az)] = launch_price(
                clients.ec2, itype, az, spec.instance.market.value, local=backend.local, clock=lambda: now
            )
    return World(
        env=env,
        run_id=run_id or layout.new_run_id(now),
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
        prices=prices,
        user_files=user_files,
        identity=identity,
        python_env=python_env,
        template=template,
    )


def read_template(backend: Backend, outputs: StackOutputs) -> TemplateFacts:
    """The launch template version a launch uses, and its AMI's name and root device.

    Raises:
        ConfigError: the template or its AMI does not exist (the stack is out of date).
        AccessDeniedError: the operator may not describe them.
    """
    from botocore.exceptions import ClientError

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


def _age_days(s3: Any, bucket: str, key: str, now: datetime) -> float | None:
    """Days since ``key`` was last written; ``None`` when it does not exist."""
    head = _head(s3, bucket, key)
    if head is None:
        return None
    modified = head.get("LastModified")
    return (now - modified).total_seconds() / 86400 if modified else 0.0


def _python_env(s3: Any, bucket: str) -> str:
    if _exists(s3, bucket, PYTHON_ENV_KEY):
        return "packed"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=WHEELHOUSE_PREFIX, MaxKeys=5)
    if any(o["Key"].endswith(".whl") for o in listed.get("Contents", [])):
        return "wheelhouse"
    return "missing"


def code_key_for(sha256: str) -> str:
    """Content-addressed key of a code bundle."""
    return f"{layout.CODE_PREFIX}bundle-{sha256}.tar.gz"


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``HeadObject`` of ``key``; ``None`` when it does not exist."""
    from common.aws import is_not_found

    try:
        return dict(s3.head_object(Bucket=bucket, Key=key))
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return _head(s3, bucket, key) is not None


def _data_inventory(s3: Any, bucket: str, prefix: str) -> tuple[int, int]:
    files = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                files += 1
                size += int(obj.get("Size", 0))
    return files, size


def _azs(spec: RunSpec, outputs: StackOutputs) -> list[str]:
    wanted = list(spec.instance.availability_zones) or sorted(outputs.subnets_by_az)
    return [az for az in wanted if az in outputs.subnets_by_az]


# ------------------------------------------------------------- plan (pure)


def plan_launch(spec: RunSpec, world: World) -> LaunchPlan:
    """Decide the whole launch from the spec and what :func:`gather_world` saw.

    Raises:
        LockHeldError: a run is active in the env.
        ConfigError: no training data, or AZs the stack has no subnet in.
    """
    from trainer.bootstrap import render_user_data

    if world.active is not None:
        from common.errors import LockHeldError

        doc = world.active.doc
        raise LockHeldError(
            env=world.env, run_id=doc["run_id"], status=doc["status"], since=doc["started_at"]
        )
    outputs = world.outputs
    if world.data_files == 0:
        raise ConfigError(
            f"no training data: no .parquet file under "
            f"s3://{outputs.bucket}/{spec.data.prefix}; "
            f"upload your data there (aws s3 cp --recursive DIR s3://{outputs.bucket}/"
            f"{spec.data.prefix}) or set data.prefix in the spec"
        )
    unknown = [az for az in spec.instance.availability_zones if az not in outputs.subnets_by_az]
    if unknown:
        raise ConfigError(
            f"run spec: $.instance.availability_zones: {unknown} have no subnet in the stack "
            f"(it has {sorted(outputs.subnets_by_az)})"
        )
    if world.python_env == "missing" and not world.local:
        raise ConfigError(
            f"no Python environment for the instance: neither "
            f"s3://{outputs.bucket}/{PYTHON_ENV_KEY} nor wheels under "
            f"s3://{outputs.bucket}/{WHEELHOUSE_PREFIX}; upload them with "
            f"`invoke wheelhouse --env={world.env} --dir=DIR` (see README)"
        )
    resolved = spec.resolved(local=world.local)
    placements = tuple(
        Placement(
            instance_type=t,
            availability_zone=az,
            subnet_id=outputs.subnets_by_az[az],
            price=world.prices.get((t, az)) or Price(usd_per_hour=None, source="unknown"),
        )
        for t in resolved.instance.types
        for az in _azs(resolved, outputs)
    )
    paths = layout.RunPaths(env=world.env, run_id=world.run_id)
    code_key = code_key_for(world.code_sha256)
    user_data = render_user_data(
        bucket=outputs.bucket,
        env=world.env,
        run_id=world.run_id,
        region=outputs.region,
        max_runtime_minutes=resolved.instance.max_runtime_minutes,
        code_key=code_key,
        python_env_key=PYTHON_ENV_KEY if world.python_env == "packed" else None,
        wheelhouse_prefix=WHEELHOUSE_PREFIX,
        device=world.device,
        local=world.local,
    )
    spec_json = json.dumps(resolved.to_dict(), indent=2, sort_keys=True).encode()
    uploads = [
        Upload(key=paths.user_configs + RUN_SPEC_NAME, body=spec_json, content_type="application/json")
    ]
    uploads += [Upload(key=paths.user_configs + name, body=body) for name, body in world.user_files]
    uploads.append(
        Upload(
            key=code_key,
            body=world.code_bundle,
            content_type="application/gzip",
            skip_reason=_code_skip_reason(world),
        )
    )
    state = new_state(
        env=world.env,
        run_id=world.run_id,
        market=resolved.instance.market,
        total_steps=resolved.model.num_steps,
        now=iso(world.now),
        local=world.local,
        price_per_hour=placements[0].price.usd_per_hour,
    )
    template = world.template
    plan = LaunchPlan(
        env=world.env,
        run_id=world.run_id,
        local=world.local,
        bucket=outputs.bucket,
        region=outputs.region,
        spec=resolved,
        placements=placements,
        launch_template_id=outputs.launch_template_id,
        security_group_id=outputs.security_group_id,
        tags=infra_spec.tags(world.env, extra={"RunId": world.run_id}, managed_by=MANAGED_BY),
        user_data=user_data,
        code_key=code_key,
        uploads=tuple(uploads),
        state_doc=state,
        data_files=world.data_files,
        data_bytes=world.data_bytes,
        python_env=world.python_env,
        resume=world.resume,
        root_device=(template.root_device if template else None) or infra_spec.ROOT_DEVICE_NAME,
        image_id=template.image_id if template else None,
        image_name=template.image_name if template else None,
        debug_instance_profile_arn=debug_launch_profile(resolved, outputs),
    )
    if template is not None:
        problems = launch_problems(template, plan.run_instances_request(placements[0]), plan.market)
        if problems:
            raise ConfigError(
                f"AWS would refuse this launch: {'; '.join(problems)}; fix the launch template "
                f"(`pulumi up --stack {world.env}`) or the run spec"
            )
    return plan


def _code_skip_reason(world: World) -> str | None:
    """Why the code bundle is not uploaded, or ``None`` to upload it (missing, or close to expiry)."""
    if not world.code_exists:
        return None
    keep_until = infra_spec.CODE_BUNDLE_EXPIRY_DAYS - BUNDLE_REFRESH_MARGIN_DAYS
    if world.code_age_days is not None and world.code_age_days >= keep_until:
        return None
    return "unchanged code is already uploaded"


# --------------------------------------------------------------- act (I/O)

StartInstance = Callable[..., None]


def apply_launch(
    plan: LaunchPlan, clients: Clients, *, start_instance: StartInstance | None = None, clock: Clock = utc_now
) -> LaunchResult:
    """Carry out ``plan``. On any failure after the lock is taken, the launch is rolled back:
    the instance terminated, the run's user-configs deleted and the lock released.

    Raises:
        LockHeldError: another launch took the lock first.
        LaunchError: every placement was refused for capacity.
        AccessDeniedError: a write or RunInstances was refused.
    """
    store = StateStore(clients.s3, plan.bucket, plan.env, clock=clock)
    store.acquire(dict(plan.state_doc))
    try:
        uploaded, skipped = _upload(plan, clients.s3)
        placement, instance_id, refused = _run_instance(plan, clients.ec2)
        try:
            store.set_instance(
                plan.run_id,
                instance_id=instance_id,
                instance_type=placement.instance_type,
                availability_zone=placement.availability_zone,
                market=plan.market.value,
                price_per_hour=placement.price.usd_per_hour,
            )
            record = _launch_record(plan, placement, instance_id, clock)
            clients.s3.put_object(
                Bucket=plan.bucket,
                Key=plan.paths.user_configs + LAUNCH_RECORD_NAME,
                Body=json.dumps(record, indent=2).encode(),
                ContentType="application/json",
            )
            if start_instance is not None:
                start_instance(
                    instance_id=instance_id,
                    run={
                        "bucket": plan.bucket,
                        "env": plan.env,
                        "run_id": plan.run_id,
                        "region": plan.region,
                        "instance_type": placement.instance_type,
                        "availability_zone": placement.availability_zone,
                        "market": plan.market.value,
                        "max_runtime_minutes": plan.spec.instance.max_runtime_minutes,
                    },
                )
        except BaseException:
            clients.ec2.terminate_instances(InstanceIds=[instance_id])
            raise
    except BaseException:
        _roll_back(store, plan, clients.s3)
        raise
    log.info(
        "launched run %s on %s (%s, %s)",
        plan.run_id,
        instance_id,
        placement.instance_type,
        placement.availability_zone,
    )
    return LaunchResult(
        run_id=plan.run_id,
        env=plan.env,
        instance_id=instance_id,
        instance_type=placement.instance_type,
        availability_zone=placement.availability_zone,
        market=plan.market.value,
        price_per_hour=placement.price.usd_per_hour,
        uploaded=tuple(uploaded) + (plan.paths.user_configs + LAUNCH_RECORD_NAME,),
        skipped=tuple(skipped),
        refused=tuple(refused),
    )


def _upload(plan: LaunchPlan, s3: Any) -> tuple[list[str], list[str]]:
    uploaded, skipped = [], []
    for up in plan.uploads:
        if up.skip_reason is not None:
            skipped.append(up.key)
            continue
        try:
            s3.put_object(Bucket=plan.bucket, Key=up.key, Body=up.body, ContentType=up.content_type)
        except Exception as exc:
            if is_access_denied(exc):
                raise AccessDeniedError(
                    action="s3:PutObject", resource=f"s3://{plan.bucket}/{up.key}"
                ) from None
            raise
        uploaded.append(up.key)
    return uploaded, skipped


def _run_instance(plan: LaunchPlan, ec2: Any) -> tuple[Placement, str, list[str]]:
    refused: list[str] = []
    for placement in plan.placements:
        try:
            resp = ec2.run_instances(**plan.run_instances_request(placement))
        except Exception as exc:
            code = error_code(exc)
            if code in QUOTA_CODES:
                raise QuotaError(quota_message(code, plan.market, plan.region, None)) from None
            if code in CAPACITY_CODES:
                log.info("%s in %s refused: %s", placement.instance_type, placement.availability_zone, code)
                refused.append(f"{placement.instance_type}/{placement.availability_zone}: {code}")
                continue
            if is_access_denied(exc):
                raise AccessDeniedError(
                    action="ec2:RunInstances", resource=f"launch template {plan.launch_template_id}"
                ) from None
            raise
        return placement, str(resp["Instances"][0]["InstanceId"]), refused
    other = "on-demand" if plan.market is Market.SPOT else "spot"
    raise LaunchError(
        f"no capacity: every instance type and AZ was refused ({'; '.join(refused)}); "
        f"the lock was released; try other types (--instance-type) or --market={other}"
    )


def _launch_record(plan: LaunchPlan, placement: Placement, instance_id: str, clock: Clock) -> dict[str, Any]:
    return {
        "run_id": plan.run_id,
        "env": plan.env,
        "instance_id": instance_id,
        "instance_type": placement.instance_type,
        "availability_zone": placement.availability_zone,
        "market": plan.market.value,
        "price_per_hour": placement.price.usd_per_hour,
        "price_source": placement.price.source,
        "launched_at": iso(clock()),
        "local": plan.local,
        "code_key": plan.code_key,
        "max_runtime_minutes": plan.spec.instance.max_runtime_minutes,
        # the AMI resolves afresh at every `pulumi up`: record what this run booted
        "image_id": plan.image_id,
        "image_name": plan.image_name,
        "root_volume_gb": plan.spec.instance.root_volume_gb,
    }


def _roll_back(store: StateStore, plan: LaunchPlan, s3: Any) -> None:
    """Undo a failed launch (the code bundle stays: it is content-addressed and reusable).

    A failed relaunch keeps the run's user-configs: they belong to its first attempt.
    """
    try:
        for page in (
            ()
            if plan.resume
            else s3.get_paginator("list_objects_v2").paginate(
                Bucket=plan.bucket, Prefix=plan.paths.user_configs
            )
        ):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=plan.bucket, Key=obj["Key"])
        store.release(plan.run_id)
    except Exception as exc:  # keep the original error; verify reports a leftover lock
        log.warning("could not roll back the launch of run %s: %s", plan.run_id, exc)


# ------------------------------------------------------------ the operation


def launch(
    backend: Backend | Callable[[], Backend],
    *,
    env: str,
    spec_path: Path | None = None,
    instance_type: str | None = None,
    market: str | None = None,
    max_runtime: str | None = None,
    dry_run: bool = False,
    resume: str | None = None,
    skip_doctor: bool = False,
    clock: Clock = utc_now,
) -> LaunchOutcome:
    """``invoke launch``: validate, plan, run the doctor, and unless ``dry_run`` apply.

    ``backend`` may be a factory: it is called once the arguments and the spec are
    valid. Nothing is created when validation fails: every check happens before the lock.
    ``resume``: relaunch that run under its own id with its stored spec; the trainer
    resumes from its newest complete checkpoint. The doctor (:mod:`control.doctor`)
    runs on the plan, after everything has been read and before anything is created;
    ``skip_doctor`` skips it (a dry run never runs it: it creates nothing).

    Raises:
        DoctorFailedError: a doctor check failed; nothing was created.
    """
    check_env(env)
    if resume and spec_path:
        raise ConfigError(
            "--resume reuses the run's own spec; drop --spec "
            "(--instance-type, --market and --max-runtime may still change)"
        )
    if resume:
        try:
            layout.parse_run_id(resume)
        except layout.LayoutError as exc:
            raise ConfigError(f"--resume: {exc}") from None
    else:
        spec = load_spec(
            spec_path, env=env, instance_type=instance_type, market=market, max_runtime=max_runtime
        )
    if not isinstance(backend, Backend):
        backend = backend()
    if resume:
        spec = resume_spec(
            backend,
            env=env,
            run_id=resume,
            instance_type=instance_type,
            market=market,
            max_runtime=max_runtime,
        )
    user_files = ((Path(spec_path).name, Path(spec_path).read_bytes()),) if spec_path else ()
    world = gather_world(backend, spec, env=env, now=clock(), user_files=user_files, run_id=resume)
    plan = plan_launch(spec, world)
    if dry_run:
        return LaunchOutcome(plan=plan, result=None)
    if not skip_doctor:
        from control.doctor import DoctorFailedError, run_doctor

        report = run_doctor(
            backend, env, spec, plan=plan, outputs=world.outputs, identity=world.identity, clock=clock
        )
        if not report.ok:
            raise DoctorFailedError(report)
    with backend.errors("launch", f"s3://{plan.bucket}"):
        result = apply_launch(plan, backend.clients(), start_instance=backend.start_instance, clock=clock)
    return LaunchOutcome(plan=plan, result=result)


def with_spec_changes(spec: RunSpec, **model_changes: Any) -> RunSpec:
    """``spec`` with some model fields replaced (the demo uses it)."""
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, **model_changes))

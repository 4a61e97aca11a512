"""The launch plan: everything a launch will do, decided in advance and without I/O.

:func:`plan_launch` is pure: ``(spec, world) -> LaunchPlan``. It refuses a launch that
cannot work (a run holds the lock, no training data, AZs the stack has no subnet in,
no Python environment for the instance, a request AWS would refuse) before anything is
created. ``--dry-run`` prints :meth:`LaunchPlan.summary` and stops;
:func:`control.launch_apply.apply_launch` carries the plan out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common import attempts, layout
from common.errors import ConfigError, LockHeldError
from common.placement import LaunchRequest, Placement, run_instances_request, strategy_for
from common.runspec import InstanceSpec, RunSpec
from common.state_doc import new_state
from common.status import Market
from common.tags import RUN_ID_KEY, tag_list, tags
from common.timeutil import iso
from control.bundle import code_key_for
from control.debug import debug_launch_profile
from control.launch_rules import TEMPLATE_VERSION, launch_problems, root_volume_mapping
from control.launch_world import PYTHON_ENV_KEY, WHEELHOUSE_PREFIX, World
from control.placement import availability_zones
from control.userdata import UserData, render_user_data
from infra.spec import bucket as spec_bucket
from infra.spec import launch_template as spec_template
from infra.spec import network as spec_network
from infra.spec import tags as spec_tags

MANAGED_BY = "chronos-invoke"
# A code bundle this close to its lifecycle expiry is uploaded again, so it cannot expire
# between the launch and the instance's download.
BUNDLE_REFRESH_MARGIN_DAYS = 2


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
class LaunchPlan:
    """Everything :func:`control.launch_apply.apply_launch` will do, decided in advance."""

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
    root_device: str = spec_template.ROOT_DEVICE_NAME  # the AMI's: the mapping that sizes the root
    image_id: str | None = None
    image_name: str | None = None
    debug_instance_profile_arn: str | None = None  # run spec debug = true (control.debug)

    @property
    def market(self) -> str:
        """The spec's market choice (each placement says which market it buys in)."""
        return self.spec.instance.market.value

    @property
    def paths(self) -> layout.RunPaths:
        return layout.RunPaths(env=self.env, run_id=self.run_id)

    @property
    def base_request(self) -> dict[str, Any]:
        """The ``RunInstances`` arguments every placement shares (launch-request.json's ``base``).

        It tags every type a launch may tag; :func:`common.placement.run_instances_request`
        drops the spot request's tags from an on-demand launch.
        """
        tagged = tag_list(self.tags)
        interface = spec_network.network_interface_override("", self.security_group_id)[0]
        del interface["SubnetId"]  # the placement's
        request: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "LaunchTemplate": {"LaunchTemplateId": self.launch_template_id, "Version": TEMPLATE_VERSION},
            "UserData": self.user_data,
            "NetworkInterfaces": [interface],
            "BlockDeviceMappings": root_volume_mapping(self.root_device, self.spec.instance.root_volume_gb),
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": tagged}
                for kind in spec_tags.launch_tagged_types(Market.SPOT.value)
            ],
        }
        if self.debug_instance_profile_arn:  # Session Manager's profile, created by the stack beforehand
            request["IamInstanceProfile"] = {"Arn": self.debug_instance_profile_arn}
        return request

    def run_instances_request(self, placement: Placement) -> dict[str, Any]:
        """The ``RunInstances`` arguments for ``placement``."""
        return run_instances_request(self.base_request, placement)

    @property
    def launch_request(self) -> LaunchRequest:
        """What launch-request.json stores: the base request and every placement, in order."""
        return LaunchRequest(
            run_id=self.run_id,
            env=self.env,
            region=self.region,
            bucket=self.bucket,
            local=self.local,
            market=self.market,
            base=self.base_request,
            placements=self.placements,
        )

    def summary(self) -> dict[str, Any]:
        """The plan as plain data (what ``--dry-run`` prints)."""
        first = self.placements[0]
        lines = self.user_data.splitlines()
        minutes = self.spec.instance.max_runtime_minutes
        return {
            "env": self.env,
            "run_id": self.run_id,
            "local": self.local,
            "bucket": self.bucket,
            "region": self.region,
            "instance_type": first.instance_type,
            "availability_zone": first.availability_zone,
            "subnet_id": first.subnet_id,
            "market": first.market.value,  # the first placement's, as instance_type and AZ
            "market_choice": self.market,  # the spec's
            "price_per_hour": first.price_per_hour,
            "price_source": first.price_source,
            "max_runtime_minutes": minutes,
            # at most, bound by the max runtime at the first placement's price
            "max_cost": _cost(first.price_per_hour, minutes * 60),
            "cost_limit": self.spec.instance.max_cost,
            "max_recoveries": self.spec.instance.max_recoveries,
            "fallbacks": [p.label for p in self.placements[1:]],
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


def plan_launch(spec: RunSpec, world: World) -> LaunchPlan:
    """Decide the whole launch from the spec and what :func:`control.launch_world.gather_world` saw.

    Raises:
        LockHeldError: a run is active in the env.
        ConfigError: no training data, AZs the stack has no subnet in, no Python
            environment for an AWS instance, or a request AWS would refuse.
    """
    _check_world(spec, world)
    outputs = world.outputs
    resolved = spec.resolved(local=world.local)
    placements = strategy_for(resolved.instance.market.value).placements(
        resolved.instance.types,
        availability_zones(resolved.instance.availability_zones, outputs),
        outputs.subnets_by_az,
        world.prices,
    )
    code_key = code_key_for(world.code_sha256)
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
        tags=tags(world.env, extra={RUN_ID_KEY: world.run_id}, managed_by=MANAGED_BY),
        user_data=render_user_data(_user_data(resolved, world, code_key)),
        code_key=code_key,
        uploads=_uploads(resolved, world, code_key),
        state_doc=_state_doc(resolved, world, placements[0]),
        data_files=world.data_files,
        data_bytes=world.data_bytes,
        python_env=world.python_env,
        resume=world.resume,
        root_device=(template.root_device if template else None) or spec_template.ROOT_DEVICE_NAME,
        image_id=template.image_id if template else None,
        image_name=template.image_name if template else None,
        debug_instance_profile_arn=debug_launch_profile(resolved, outputs),
    )
    _check_aws_rules(plan, world)
    return _with_launch_request(plan)


def _with_launch_request(plan: LaunchPlan) -> LaunchPlan:
    """``plan`` uploading launch-request.json too (before the code bundle, and so before RunInstances)."""
    body = json.dumps(plan.launch_request.to_dict(), indent=2, sort_keys=True).encode()
    request = Upload(key=plan.paths.launch_request, body=body, content_type="application/json")
    *before, bundle = plan.uploads
    return dataclasses.replace(plan, uploads=(*before, request, bundle))


def _check_world(spec: RunSpec, world: World) -> None:
    """Refuse a launch the world cannot take: the lock is held, or something it needs is missing."""
    if world.active is not None:
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


def _user_data(resolved: RunSpec, world: World, code_key: str) -> UserData:
    return UserData(
        bucket=world.outputs.bucket,
        env=world.env,
        run_id=world.run_id,
        region=world.outputs.region,
        max_runtime_minutes=resolved.instance.max_runtime_minutes,
        code_key=code_key,
        python_env_key=PYTHON_ENV_KEY if world.python_env == "packed" else None,
        wheelhouse_prefix=WHEELHOUSE_PREFIX,
        device=world.device,
        local=world.local,
    )


def _state_doc(resolved: RunSpec, world: World, first: Placement) -> Mapping[str, Any]:
    """The state file the launch writes to take the lock (no instance yet): attempt 1."""
    doc = new_state(
        env=world.env,
        run_id=world.run_id,
        market=first.market,
        total_steps=resolved.model.num_steps,
        now=iso(world.now),
        local=world.local,
        price_per_hour=first.price_per_hour,
    )
    doc.update(recovery_policy(resolved.instance))
    if world.outputs.notify_topic_arn:  # the trainer and the recovery handler publish here
        doc["notify_topic_arn"] = world.outputs.notify_topic_arn
    return doc


def recovery_policy(instance: InstanceSpec) -> dict[str, Any]:
    """The first state document's recovery fields: attempt 1, no recovery yet, the spec's limits."""
    return {
        "attempt": 1,
        **attempts.policy(
            max_recoveries=instance.max_recoveries, max_runtime_minutes=instance.max_runtime_minutes
        ),
    }


def _cost(usd_per_hour: float | None, seconds: float) -> float | None:
    """USD for ``seconds`` at ``usd_per_hour`` (``None`` when the price is unknown)."""
    return None if usd_per_hour is None else round(usd_per_hour * max(seconds, 0.0) / 3600.0, 4)


def _uploads(resolved: RunSpec, world: World, code_key: str) -> tuple[Upload, ...]:
    """The resolved run spec, the user's own files, and the code bundle (unless it is there)."""
    paths = layout.RunPaths(env=world.env, run_id=world.run_id)
    spec_json = json.dumps(resolved.to_dict(), indent=2, sort_keys=True).encode()
    uploads = [Upload(key=paths.run_spec, body=spec_json, content_type="application/json")]
    uploads += [Upload(key=paths.user_configs + name, body=body) for name, body in world.user_files]
    uploads.append(
        Upload(
            key=code_key,
            body=world.code_bundle,
            content_type="application/gzip",
            skip_reason=_code_skip_reason(world),
        )
    )
    return tuple(uploads)


def _code_skip_reason(world: World) -> str | None:
    """Why the code bundle is not uploaded, or ``None`` to upload it (missing, or close to expiry)."""
    if not world.code_exists:
        return None
    keep_until = spec_bucket.CODE_BUNDLE_EXPIRY_DAYS - BUNDLE_REFRESH_MARGIN_DAYS
    if world.code_age_days is not None and world.code_age_days >= keep_until:
        return None
    return "unchanged code is already uploaded"


def _check_aws_rules(plan: LaunchPlan, world: World) -> None:
    """Refuse a plan whose first request AWS would refuse (rules moto does not apply)."""
    if world.template is None:
        return
    first = plan.placements[0]
    problems = launch_problems(world.template, plan.run_instances_request(first), first.market)
    if problems:
        raise ConfigError(
            f"AWS would refuse this launch: {'; '.join(problems)}; fix the launch template "
            f"(`pulumi up --stack {world.env}`) or the run spec"
        )

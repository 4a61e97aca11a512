"""``invoke sweep``'s plan: pure, ``(grid, world) -> SweepPlan``; ``--dry-run`` prints it.

Each grid point becomes a member run ``{sweep_id}-{NNN}`` with its own resolved run spec
(``user-configs/run-spec.json``), its own lock (its state file at ``RunPaths.state``, first
document ``initialization`` with the Batch fields), and one SubmitJob request to the stack's
job queue and job definition with the parameters ``env``, ``run_id`` and ``code_key`` (the job
definition's command substitutes them: ``Ref::env`` ...). The sweep manifest
(``schemas/sweep.schema.json``) lists every point, planned.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common import layout
from common.errors import ConfigError
from common.state_doc import new_state
from common.tags import RUN_ID_KEY, tags
from common.timeutil import iso
from control.launch_plan import Upload, recovery_policy
from control.sweep_grid import Grid, GridPoint
from infra.outputs import StackOutputs

SWEEP_ID_KEY = "SweepId"
MANAGED_BY = "chronos-sweep"
# The Batch job's parameters (infra/spec/batch.py's job definition substitutes Ref::<name>).
JOB_PARAMETERS = ("env", "run_id", "code_key")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
MAX_TAGS = 50
MIN_ATTEMPT_SECONDS = 60  # SubmitJob timeout.attemptDurationSeconds: "The minimum value ... is 60 seconds"


class Submission(enum.StrEnum):
    """What happened to one point at submit time (``schemas/sweep.schema.json`` members[].submission)."""

    PLANNED = "planned"
    SUBMITTED = "submitted"
    SKIPPED = "skipped"  # its lock was held: nothing of it was written
    FAILED = "failed"  # SubmitJob refused it: its lock was released


@dataclass(frozen=True, kw_only=True)
class BatchTarget:
    """The stack's job queue, job definition and compute environments."""

    job_queue: str
    job_definition: str
    compute_environments: tuple[str, ...] = ()


def batch_target(outputs: StackOutputs, *, local: bool) -> BatchTarget:
    """The Batch resources the stack exported.

    Raises:
        ConfigError: the stack has none, with how to add them.
    """
    queue, definition = outputs.batch_job_queue, outputs.batch_job_definition
    if not outputs.has_batch or not queue or not definition:
        how = (
            f"run `invoke local.up --env={outputs.env} --batch`"
            if local
            else f"`pulumi config set batch true --stack {outputs.env}` and `pulumi up --stack {outputs.env}`"
        )
        raise ConfigError(
            f"this stack has no Batch resources (no batch_job_queue/batch_job_definition outputs in env "
            f"{outputs.env!r}): set `batch: true` in the stack config and deploy it: {how}"
        )
    return BatchTarget(
        job_queue=queue,
        job_definition=definition,
        compute_environments=tuple(getattr(outputs, "batch_compute_environments", ()) or ()),
    )


@dataclass(frozen=True, kw_only=True)
class SweepWorld:
    """What a sweep reads before it decides (``control.sweep_world.gather``)."""

    env: str
    sweep_id: str
    now: datetime
    local: bool
    outputs: StackOutputs
    target: BatchTarget
    code_bundle: bytes = field(repr=False)
    code_key: str
    code_skip_reason: str | None  # why the bundle is not uploaded (already there), or None
    data_files: Mapping[str, int]  # data prefix -> parquet files under it
    grid_file: tuple[str, bytes] | None = (
        None  # the grid file's name and bytes (kept in the manifest's folder)
    )


@dataclass(frozen=True, kw_only=True)
class MemberPlan:
    """One point's run: its id, spec upload, first state document and SubmitJob request."""

    run_id: str
    number: int
    point: Mapping[str, Any]
    uploads: tuple[Upload, ...]
    state_doc: Mapping[str, Any]
    submit_request: Mapping[str, Any]

    @property
    def paths(self) -> layout.RunPaths:
        return layout.RunPaths(env=self.state_doc["env"], run_id=self.run_id)


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """Everything ``apply_sweep`` does, decided."""

    env: str
    sweep_id: str
    bucket: str
    target: BatchTarget
    code_upload: Upload
    members: tuple[MemberPlan, ...]
    manifest: Mapping[str, Any]
    grid_upload: Upload | None = None

    @property
    def manifest_key(self) -> str:
        return layout.sweep_manifest_key(self.env, self.sweep_id)

    def summary(self) -> dict[str, Any]:
        """The plan as ``--dry-run`` shows it (JSON-ready)."""
        return {
            "env": self.env,
            "sweep_id": self.sweep_id,
            "bucket": self.bucket,
            "job_queue": self.target.job_queue,
            "job_definition": self.target.job_definition,
            "manifest": f"s3://{self.bucket}/{self.manifest_key}",
            "code": {"key": self.code_upload.key, "skip": self.code_upload.skip_reason},
            "members": [
                {
                    "run_id": m.run_id,
                    "point": dict(m.point),
                    "lock": f"s3://{self.bucket}/{m.paths.state}",
                    "outputs": f"s3://{self.bucket}/{m.paths.prefix}",
                    "job_name": m.submit_request["jobName"],
                    "max_runtime_s": m.submit_request["timeout"]["attemptDurationSeconds"],
                }
                for m in self.members
            ],
        }


def plan_sweep(grid: Grid, world: SweepWorld) -> SweepPlan:
    """Decide the whole sweep from the grid and the world.

    Raises:
        ConfigError: a point whose data prefix holds no parquet file (naming the point).
    """
    members = tuple(_member(point, world) for point in grid.points)
    for point in grid.points:
        prefix = point.spec.data.prefix
        if not world.data_files.get(prefix):
            raise ConfigError(
                f"{grid.source} point {point.number}: no .parquet file under "
                f"s3://{world.outputs.bucket}/{prefix}; upload the data there or fix $.data.prefix"
            )
    code = Upload(
        key=world.code_key,
        body=world.code_bundle,
        content_type="application/gzip",
        skip_reason=world.code_skip_reason,
    )
    grid_upload = None
    if world.grid_file is not None:
        name, body = world.grid_file
        grid_upload = Upload(key=layout.sweep_prefix(world.env, world.sweep_id) + name, body=body)
    return SweepPlan(
        env=world.env,
        sweep_id=world.sweep_id,
        bucket=world.outputs.bucket,
        target=world.target,
        code_upload=code,
        members=members,
        manifest=manifest_doc(grid, world, members),
        grid_upload=grid_upload,
    )


def _member(point: GridPoint, world: SweepWorld) -> MemberPlan:
    run_id = layout.member_run_id(world.sweep_id, point.number)
    paths = layout.RunPaths(env=world.env, run_id=run_id)
    resolved = point.spec.resolved(local=world.local)
    spec_json = json.dumps(resolved.to_dict(), indent=2, sort_keys=True).encode()
    market = "on-demand" if resolved.instance.market.value == "on-demand" else "spot"
    doc = new_state(
        env=world.env,
        run_id=run_id,
        market=market,
        total_steps=resolved.model.num_steps,
        now=iso(world.now),
        local=world.local,
    )
    doc.update(recovery_policy(resolved.instance))
    doc["batch"] = {
        "sweep_id": world.sweep_id,
        "job_id": None,
        "job_queue": world.target.job_queue,
        "job_definition": world.target.job_definition,
    }
    if world.outputs.notify_topic_arn:
        doc["notify_topic_arn"] = world.outputs.notify_topic_arn
    job_tags = tags(
        world.env, extra={RUN_ID_KEY: run_id, SWEEP_ID_KEY: world.sweep_id}, managed_by=MANAGED_BY
    )
    request = {
        # jobName: 1-128 letters, digits, hyphens, underscores (SubmitJob); env and run id are both
        "jobName": f"{world.env}-{run_id}",
        "jobQueue": world.target.job_queue,
        "jobDefinition": world.target.job_definition,
        "parameters": {"env": world.env, "run_id": run_id, "code_key": world.code_key},
        # the spec's max_runtime per attempt; a retried attempt gets it again (Batch's timeout is per attempt)
        "timeout": {
            "attemptDurationSeconds": max(MIN_ATTEMPT_SECONDS, resolved.instance.max_runtime_minutes * 60)
        },
        "tags": job_tags,
        "propagateTags": True,  # the job's tags reach the ECS task (cost allocation by run and sweep)
    }
    _check_request(request)
    return MemberPlan(
        run_id=run_id,
        number=point.number,
        point=dict(point.values),
        uploads=(Upload(key=paths.run_spec, body=spec_json, content_type="application/json"),),
        state_doc=doc,
        submit_request=request,
    )


def _check_request(request: Mapping[str, Any]) -> None:
    """What SubmitJob refuses and moto takes: a job name outside AWS's rule ("up to 128 letters
    (uppercase and lowercase), numbers, hyphens, and underscores", the first a letter or number),
    more than 50 tags, a tag key over 128 or value over 256 characters (SubmitJob: jobName, tags).

    Raises:
        ConfigError: naming the rule.
    """
    name = request["jobName"]
    if not JOB_NAME.fullmatch(name):
        raise ConfigError(
            f"job name {name!r} breaks AWS Batch's rule (1-128 of A-Z a-z 0-9 - _, first alphanumeric)"
        )
    job_tags = request["tags"]
    if len(job_tags) > MAX_TAGS or any(len(k) > 128 or len(v) > 256 for k, v in job_tags.items()):
        raise ConfigError(
            f"the job's tags break AWS's limits (at most {MAX_TAGS}, keys 128, values 256 characters)"
        )


def manifest_doc(grid: Grid, world: SweepWorld, members: tuple[MemberPlan, ...]) -> dict[str, Any]:
    """The sweep manifest with every point ``planned`` (validated before it is written)."""
    return {
        "schema_version": 1,
        "sweep_id": world.sweep_id,
        "env": world.env,
        "submitted_at": iso(world.now),
        "grid": world.grid_file[0] if world.grid_file else grid.source.rsplit("/", 1)[-1],
        "keys": list(grid.keys),
        "job_queue": world.target.job_queue,
        "job_definition": world.target.job_definition,
        "code_key": world.code_key,
        "killed_at": None,
        "kill_reason": None,
        "members": [
            {
                "run_id": m.run_id,
                "number": m.number,
                "point": dict(m.point),
                "job_id": None,
                "submission": Submission.PLANNED.value,
                "reason": None,
            }
            for m in members
        ],
    }

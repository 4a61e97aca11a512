"""``invoke sweep``: a grid of runs, one AWS Batch job per point, each its own run id and lock.

The phases live apart, as the launch's do:

- the grid: :func:`control.sweep_grid.load_grid` (validates every point as a run spec);
- the world: :func:`gather` reads the stack outputs (the Batch queue and job definition), the
  code bundle and whether it is uploaded, the data prefixes the points name, and the sweep id
  (the submit second, refused if another sweep took it);
- the plan: :func:`control.sweep_plan.plan_sweep` is pure; ``--dry-run`` prints it;
- apply: :func:`control.sweep_submit.apply_sweep` writes the manifest, the specs and locks, and
  submits the jobs.

Nothing is written before the grid, the stack and every point are known to be good.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from common import layout
from common.aws import is_not_found
from common.errors import ConfigError, UserError
from common.timeutil import Clock, utc_now
from control.backend import Backend, check_env
from control.bundle import build_code_bundle, code_key_for
from control.launch_plan import BUNDLE_REFRESH_MARGIN_DAYS
from control.launch_world import WHEELHOUSE_PREFIX
from control.localdir import PROJECT_ROOT
from control.sweep_grid import Grid, load_grid
from control.sweep_plan import SweepPlan, SweepWorld, batch_target, plan_sweep
from control.sweep_submit import SweepResult, apply_sweep
from infra.spec import bucket as spec_bucket


class SweepIdTakenError(UserError):
    """Another sweep was submitted in the env within the same second (its manifest exists)."""

    def __init__(self, *, env: str, sweep_id: str) -> None:
        super().__init__(
            f"sweep id {sweep_id} is already used in env {env!r}: another sweep was submitted within the "
            "same second; submit again in a second (a sweep id is its submit second)"
        )


@dataclass(frozen=True, kw_only=True)
class SweepOutcome:
    """The plan, and the result unless it was a dry run."""

    grid: Grid
    plan: SweepPlan
    result: SweepResult | None


def sweep(
    backend: Backend | Callable[[], Backend],
    *,
    env: str,
    grid_path: Path,
    spec_path: Path | None = None,
    dry_run: bool = False,
    clock: Clock = utc_now,
    repo_root: Path = PROJECT_ROOT,
) -> SweepOutcome:
    """``invoke sweep``: expand the grid, plan, and unless ``dry_run`` submit every point.

    ``backend`` may be a factory: it is called once the grid is valid (a bad grid needs no AWS).

    Raises:
        ConfigError: a bad grid (one line with the key), no Batch resources in the stack, a
            point without data, no Python environment for the jobs.
        SweepIdTakenError: a sweep of the same second exists.
    """
    check_env(env)
    grid = load_grid(grid_path, env=env, spec_path=spec_path)
    if not isinstance(backend, Backend):
        backend = backend()
    world = gather(backend, grid, env=env, now=clock(), repo_root=repo_root, grid_path=grid_path)
    plan = plan_sweep(grid, world)
    if dry_run:
        return SweepOutcome(grid=grid, plan=plan, result=None)
    with backend.errors("sweep", f"s3://{plan.bucket}"):
        result = apply_sweep(plan, s3=backend.clients().s3, batch=backend.client("batch"), clock=clock)
    return SweepOutcome(grid=grid, plan=plan, result=result)


def gather(
    backend: Backend, grid: Grid, *, env: str, now: datetime, repo_root: Path, grid_path: Path | None = None
) -> SweepWorld:
    """Read what the plan needs. Writes nothing.

    Raises:
        ConfigError: no Batch resources; no Python environment for an AWS job.
        SweepIdTakenError: the submit second's sweep id is taken.
    """
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    target = batch_target(outputs, local=backend.local)
    s3 = backend.clients().s3
    bucket = outputs.bucket
    bundle, sha = build_code_bundle(repo_root)
    code_key = code_key_for(sha)
    with backend.errors("s3:GetObject", f"s3://{bucket}/{code_key}"):
        age = _age_days(s3, bucket, code_key, now)
    keep_until = spec_bucket.CODE_BUNDLE_EXPIRY_DAYS - BUNDLE_REFRESH_MARGIN_DAYS
    skip = "unchanged code is already uploaded" if age is not None and age < keep_until else None
    prefixes = sorted({p.spec.data.prefix for p in grid.points})
    with backend.errors("s3:ListBucket", f"s3://{bucket}/{prefixes[0]}"):
        data = {prefix: _parquet_count(s3, bucket, prefix) for prefix in prefixes}
        # trainer/batch_entry.sh installs the wheelhouse only (a packed env is for plain instances)
        if not backend.local and not _has_wheels(s3, bucket):
            raise ConfigError(
                f"no Python environment for the Batch jobs: no wheels under "
                f"s3://{bucket}/{WHEELHOUSE_PREFIX}; "
                f"upload them with `invoke wheelhouse --env={env} --dir=DIR` (see README)"
            )
    sweep_id = layout.new_run_id(now)
    with backend.errors("s3:GetObject", f"s3://{bucket}/{layout.sweep_manifest_key(env, sweep_id)}"):
        if _age_days(s3, bucket, layout.sweep_manifest_key(env, sweep_id), now) is not None:
            raise SweepIdTakenError(env=env, sweep_id=sweep_id)
    grid_file = (Path(grid_path).name, Path(grid_path).read_bytes()) if grid_path is not None else None
    return SweepWorld(
        env=env,
        sweep_id=sweep_id,
        now=now,
        local=backend.local,
        outputs=outputs,
        target=target,
        code_bundle=bundle,
        code_key=code_key,
        code_skip_reason=skip,
        data_files=data,
        grid_file=grid_file,
    )


def _age_days(s3: Any, bucket: str, key: str, now: datetime) -> float | None:
    """Days since ``key`` was written; ``None`` when it does not exist."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    modified = head.get("LastModified")
    return (now - modified).total_seconds() / 86400 if modified else 0.0


def _parquet_count(s3: Any, bucket: str, prefix: str) -> int:
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        count += sum(1 for obj in page.get("Contents", []) if obj["Key"].endswith(".parquet"))
    return count


def _has_wheels(s3: Any, bucket: str) -> bool:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=WHEELHOUSE_PREFIX, MaxKeys=50)
    return any(o["Key"].endswith(".whl") for o in listed.get("Contents", []))

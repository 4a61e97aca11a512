"""``invoke launch``: validate the run spec, examine the world, plan, then act.

The phases live apart:

- the run spec: :func:`load_spec` (a new run) and :func:`resume_spec` (a relaunch),
  with the command line's :class:`InstanceOverrides`;
- the world: :func:`control.launch_world.gather_world` reads what the launch needs
  (credentials, stack outputs, the lock, the code bundle, the data, the prices);
- the plan: :func:`control.launch_plan.plan_launch` is pure, ``(spec, world) ->
  LaunchPlan``; ``--dry-run`` prints it and stops;
- placement: :mod:`common.placement` orders the instance types and AZs by the spec's
  market and says which refusals move on to the next one;
- apply: :func:`control.launch_apply.apply_launch` does the side effects in order and
  rolls them back on failure.

:func:`launch` runs them in that order, with the doctor between plan and apply.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import layout, runspec
from common.errors import ConfigError
from common.runspec import RunSpec
from common.status import CompletionStatus
from common.timeutil import Clock, utc_now
from control.backend import Backend, check_env
from control.launch_apply import LaunchResult, apply_launch
from control.launch_plan import LaunchPlan, plan_launch
from control.launch_world import gather_world


@dataclass(frozen=True, kw_only=True)
class InstanceOverrides:
    """The command line's changes to the spec's instance part (the model part never changes)."""

    instance_type: str | None = None
    market: str | None = None
    max_runtime: str | None = None

    def as_spec(self) -> dict[str, Any]:
        """The ``instance`` fields these overrides set."""
        changes: dict[str, Any] = {}
        if self.instance_type:
            changes["types"] = [self.instance_type]
        if self.market:
            changes["market"] = self.market
        if self.max_runtime:
            changes["max_runtime"] = self.max_runtime
        return changes


NO_OVERRIDES = InstanceOverrides()


@dataclass(frozen=True, kw_only=True)
class LaunchOutcome:
    """The plan, and the result unless it was a dry run."""

    plan: LaunchPlan
    result: LaunchResult | None


# ------------------------------------------------------------------ the spec


def load_spec(path: Path | None, *, env: str, overrides: InstanceOverrides = NO_OVERRIDES) -> RunSpec:
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
    return _with_overrides(spec, env=env, source=str(path or "run spec"), overrides=overrides)


def _with_overrides(spec: RunSpec, *, env: str, source: str, overrides: InstanceOverrides) -> RunSpec:
    """``spec`` with the command line's instance overrides (the model settings never change here)."""
    changes = overrides.as_spec()
    doc = spec.to_dict()
    doc["env"] = env
    doc["instance"].update(changes)
    return runspec.from_dict(doc, source="command line" if changes else source)


def resume_spec(
    backend: Backend, *, env: str, run_id: str, overrides: InstanceOverrides = NO_OVERRIDES
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
    key = paths.run_spec
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
    if sentinel is not None and sentinel["completion_status"] == CompletionStatus.NORMAL:
        raise ConfigError(
            f"run {run_id} already finished normally; start a new run with `invoke launch --env={env}`"
        )
    spec = runspec.from_dict(doc, source=key)
    return _with_overrides(spec, env=env, source=key, overrides=overrides)


def with_spec_changes(spec: RunSpec, **model_changes: Any) -> RunSpec:
    """``spec`` with some model fields replaced (the demo uses it)."""
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, **model_changes))


# ------------------------------------------------------------ the operation


def launch(  # noqa: PLR0913 (a skip flag per pre-launch gate, as the command line has them)
    backend: Backend | Callable[[], Backend],
    *,
    env: str,
    spec_path: Path | None = None,
    overrides: InstanceOverrides = NO_OVERRIDES,
    dry_run: bool = False,
    resume: str | None = None,
    skip_doctor: bool = False,
    skip_data_check: bool = False,
    clock: Clock = utc_now,
) -> LaunchOutcome:
    """``invoke launch``: validate, plan, run the doctor, and unless ``dry_run`` apply.

    ``backend`` may be a factory: it is called once the arguments and the spec are
    valid. Nothing is created when validation fails: every check happens before the lock.
    ``resume``: relaunch that run under its own id with its stored spec; the trainer
    resumes from its newest complete checkpoint. The doctor (:mod:`control.doctor`)
    runs on the plan, after everything has been read and before anything is created;
    ``skip_doctor`` skips it (a dry run never runs it: it creates nothing). Then the
    training data is checked against the spec (:mod:`control.data_check`: parquet
    footers and a small sample); ``skip_data_check`` skips that.

    Raises:
        DoctorFailedError: a doctor check failed; nothing was created.
        DataCheckError: the data would fail the run; nothing was created.
    """
    check_env(env)
    new_spec = _check_arguments(env=env, spec_path=spec_path, overrides=overrides, resume=resume)
    if not isinstance(backend, Backend):
        backend = backend()
    spec = (
        new_spec
        if new_spec is not None
        else resume_spec(backend, env=env, run_id=str(resume), overrides=overrides)
    )
    user_files = ((Path(spec_path).name, Path(spec_path).read_bytes()),) if spec_path else ()
    world = gather_world(backend, spec, env=env, now=clock(), user_files=user_files, run_id=resume)
    plan = plan_launch(spec, world)
    if dry_run:
        return LaunchOutcome(plan=plan, result=None)
    if not skip_doctor:
        from control.doctor import run_doctor
        from control.doctor.checks import DoctorFailedError

        report = run_doctor(
            backend, env, spec, plan=plan, outputs=world.outputs, identity=world.identity, clock=clock
        )
        if not report.ok:
            raise DoctorFailedError(report)
    if not skip_data_check:
        from control.data_check import require_data

        require_data(backend.clients().s3, world.outputs.bucket, spec, guard=backend.errors)
    with backend.errors("launch", f"s3://{plan.bucket}"):
        result = apply_launch(plan, backend.clients(), start_instance=backend.start_instance, clock=clock)
    return LaunchOutcome(plan=plan, result=result)


def _check_arguments(
    *, env: str, spec_path: Path | None, overrides: InstanceOverrides, resume: str | None
) -> RunSpec | None:
    """Validate the arguments before any AWS call: the new run's spec, or ``None`` for a resume."""
    if resume and spec_path:
        raise ConfigError(
            "--resume reuses the run's own spec; drop --spec "
            "(--instance-type, --market and --max-runtime may still change)"
        )
    if not resume:
        return load_spec(spec_path, env=env, overrides=overrides)
    try:
        sweep_id = layout.sweep_of(resume)
    except layout.LayoutError as exc:
        raise ConfigError(f"--resume: {exc}") from None
    if sweep_id is not None:  # its lock and its retries are its Batch job's, not the env's
        raise ConfigError(
            f"--resume: {resume} is a member of sweep {sweep_id}: its Batch job's retries resume it; "
            f"see it with `invoke monitor --env={env} --sweep {sweep_id}`"
        )
    return None

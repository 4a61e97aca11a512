"""``invoke doctor``: examine an env and say what would stop a launch, with the fix.

Each check is one small function returning a :class:`Check` (``ok``, ``fail``,
``warn`` or ``unknown``, a detail and a fix). :func:`run_doctor` runs them in
order; a check whose prerequisite failed is ``unknown`` ("not checked"), never
``ok``. A permission the doctor needs only for itself (``iam:GetInstanceProfile``,
``servicequotas:GetServiceQuota``, ``sts:DecodeAuthorizationMessage``,
``ec2:DescribeImages``...) that is denied gives ``unknown: not permitted (<action>)``;
a denial of something the launch itself needs is a failure.

Checks, in order: credentials, region, stack outputs, bucket, bucket settings,
AMI, instance profile, RunInstances dry runs (one per instance type of the spec,
in its market, with the exact request :meth:`LaunchPlan.run_instances_request`
builds), G-family vCPU quotas, instance-type offerings, the instance's Python
env, the training data (parquet footers only).

``launch`` runs the doctor after it has read the world and planned, before it
creates anything (``--skip-doctor`` skips it); it passes its plan so the dry
runs send exactly what the launch will send.

This module runs the checks; they live by concern: the framework and report in
:mod:`~control.doctor.checks`, credentials and region in :mod:`~control.doctor.account`,
outputs, template, AMI and profile in :mod:`~control.doctor.stack`, the bucket and
Python env in :mod:`~control.doctor.bucket`, the dry runs in
:mod:`~control.doctor.run_instances`, quotas and offerings in :mod:`~control.doctor.quotas`,
the training data in :mod:`~control.doctor.data`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from common.errors import UserError
from common.runspec import RunSpec
from common.timeutil import Clock, utc_now
from control.aws_errors import user_error
from control.backend import Backend, check_env
from control.doctor.account import check_credentials, check_region, configured_region, identity_check
from control.doctor.bucket import check_bucket, check_bucket_settings, check_python_env
from control.doctor.checks import (
    Check,
    DoctorClients,
    DoctorReport,
    aws_error_text,
    doctor_clients,
    fail,
    split_fix,
    unknown,
)
from control.doctor.data import check_training_data
from control.doctor.quotas import check_offerings, check_quotas
from control.doctor.run_instances import check_run_instances
from control.doctor.stack import (
    check_ami,
    check_instance_profile,
    check_stack_outputs,
    read_launch_template,
    read_stack_outputs,
)
from infra.outputs import StackOutputs

log = logging.getLogger(__name__)

_LATER = (
    "region",
    "stack outputs",
    "bucket",
    "bucket settings",
    "ami",
    "instance profile",
    "run-instances",
    "quotas",
    "offerings",
    "python env",
    "training data",
)


def _skipped(names: Iterable[str], why: str) -> list[Check]:
    return [unknown(n, f"not checked: {why}") for n in names]


def _guard(fn: Callable[..., Any], *args: Any, name: str = "", default: Any = None) -> Any:
    """``fn(*args)``; a configuration, credential or network error becomes a failed check.

    With ``default`` (a read, not a check) that value is returned instead.
    """
    try:
        return fn(*args)
    except (UserError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if default is not None:
            log.info("doctor read failed: %s", exc)
            return default
        mapped = exc if isinstance(exc, UserError) else user_error(exc, name)
        if mapped is None:
            if isinstance(exc, botocore.exceptions.ClientError):
                return [fail(name, f"AWS refused: {aws_error_text(exc)}", "fix what the message names")]
            raise
        return [fail(name, *split_fix(str(mapped)))]


def _without_credentials(cred: Check, *, local: bool, configured: str | None) -> list[Check]:
    """The credentials check that failed, and every later check not checked (or the region failed)."""
    checks = [cred]
    if not local and configured is None:
        checks.append(
            fail(
                "region",
                "no region configured",
                "`aws configure set region REGION` or `export AWS_DEFAULT_REGION=REGION`",
            )
        )
    else:
        checks += _skipped(["region"], "no working credentials")
    return checks + _skipped(_LATER[1:], "no working credentials")


def _confirm_identity(backend: Backend, identity: Mapping[str, str]) -> tuple[Check, Mapping[str, str]]:
    """The credentials check once the env is known (local mode asks only then) and the identity."""
    if identity.get("arn"):
        return identity_check(identity), identity
    try:
        identity = dict(backend.check_credentials())
    except UserError as exc:
        return fail("credentials", *split_fix(str(exc))), identity
    return identity_check(identity), identity


@dataclass(frozen=True, kw_only=True)
class _Inputs:
    """What the checks after the bucket read: the world as far as the doctor has read it."""

    backend: Backend
    spec: RunSpec
    outputs: StackOutputs
    clients: DoctorClients
    plan: Any
    clock: Clock
    template: Mapping[str, Any] | None


def _after_bucket(i: _Inputs, *, reachable: bool) -> list[Check]:
    """The checks after the bucket's, in order; those reading the bucket only when it answered."""
    c, outputs, local = i.clients, i.outputs, i.backend.local

    def in_bucket(name: str, check: Callable[[], Check]) -> Callable[[], list[Check]]:
        return (lambda: [check()]) if reachable else (lambda: _skipped([name], "bucket not reachable"))

    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        (
            "bucket settings",
            in_bucket("bucket settings", lambda: check_bucket_settings(c.s3, outputs, local=local)),
        ),
        ("ami", lambda: [check_ami(c.ec2, i.template, outputs, local=local)]),
        ("instance profile", lambda: [check_instance_profile(c.iam, i.template, outputs)]),
        ("run-instances", lambda: check_run_instances(i.backend, c, i.spec, outputs, i.plan, clock=i.clock)),
        ("quotas", lambda: check_quotas(c.ec2, c.quotas, i.spec, outputs.region, local=local)),
        ("offerings", lambda: [check_offerings(c.ec2, i.spec, outputs)]),
        ("python env", in_bucket("python env", lambda: check_python_env(c.s3, outputs, local=local))),
        ("training data", in_bucket("training data", lambda: check_training_data(c.s3, outputs, i.spec))),
    ]
    checks: list[Check] = []
    for name, step in steps:
        checks += _guard(step, name=name)
    return checks


def run_doctor(
    backend: Backend,
    env: str,
    spec: RunSpec,
    *,
    plan: Any = None,
    outputs: StackOutputs | None = None,
    identity: Mapping[str, str] | None = None,
    clients: DoctorClients | None = None,
    clock: Clock = utc_now,
) -> DoctorReport:
    """Run every check for ``env`` and the run spec ``spec``.

    Args:
        plan: the launch's own :class:`control.launch_plan.LaunchPlan` (its requests are dry-run);
            ``None`` plans one.
        outputs, identity: what the caller has read already (not read again).
        clients: fakes for tests; default: :func:`control.doctor.checks.doctor_clients`.

    Raises:
        ConfigError: an invalid env name (a user error, not a check).
    """
    check_env(env)
    local = backend.local
    configured = configured_region(backend)
    cred, identity = check_credentials(backend, identity)
    if cred.status.is_failure():
        return DoctorReport(
            env=env, local=local, checks=tuple(_without_credentials(cred, local=local, configured=configured))
        )
    if outputs is None:
        found = read_stack_outputs(backend, env)
        if isinstance(found, Check):
            skipped = _skipped(["region"], "no stack outputs")
            later = _skipped(_LATER[2:], "no stack outputs")
            return DoctorReport(env=env, local=local, checks=(cred, *skipped, found, *later))
        outputs = found
    cred, identity = _confirm_identity(backend, identity)
    c = clients or doctor_clients(backend)
    checks = [cred, check_region(configured, c.ec2.meta.region_name, outputs, local=local)]
    template, template_error = _guard(
        read_launch_template, c.ec2, outputs.launch_template_id, default=(None, "could not be read")
    )
    checks += _guard(
        lambda: [check_stack_outputs(outputs, identity, template, template_error)], name="stack outputs"
    )
    bucket = _guard(lambda: [check_bucket(c.s3, outputs)], name="bucket")[0]
    checks.append(bucket)
    inputs = _Inputs(
        backend=backend, spec=spec, outputs=outputs, clients=c, plan=plan, clock=clock, template=template
    )
    checks += _after_bucket(inputs, reachable=not bucket.status.is_failure())
    report = DoctorReport(env=env, local=local, checks=tuple(checks))
    log.info(
        "doctor for env %s: %d checks, failed: %s",
        env,
        len(checks),
        ", ".join(x.name for x in report.failed) or "none",
    )
    return report


def doctor(
    backend: Backend | Callable[[], Backend], *, env: str, spec_path: Any = None, clock: Clock = utc_now
) -> DoctorReport:
    """``invoke doctor``: validate the arguments, then :func:`run_doctor`.

    Raises:
        ConfigError: an invalid env name or run spec (exit 2 at the edge).
    """
    from control.launch import load_spec

    check_env(env)
    spec = load_spec(spec_path, env=env)
    if not isinstance(backend, Backend):
        backend = backend()
    return run_doctor(backend, env, spec, clock=clock)

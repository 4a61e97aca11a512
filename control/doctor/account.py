"""The doctor's account checks: whose credentials these are, and which region calls go to."""

from __future__ import annotations

from collections.abc import Mapping

import boto3
import botocore.exceptions

from common.errors import UserError
from control.backend import Backend
from control.doctor.checks import Check, fail, ok, redo_command, split_fix, warn
from infra.outputs import StackOutputs


def check_credentials(backend: Backend, identity: Mapping[str, str] | None) -> tuple[Check, dict[str, str]]:
    """``sts get-caller-identity``: the check, and the identity (the very dict the backend returned:
    local mode fills it in once the env, and so its operator, is known)."""
    name = "credentials"
    if identity is None:
        try:
            identity = backend.check_credentials()
        except UserError as exc:
            problem, fix = split_fix(str(exc))
            return fail(name, problem, fix), {}
        except botocore.exceptions.BotoCoreError as exc:
            fix = (
                "set a region: `aws configure set region REGION` or `export AWS_DEFAULT_REGION=REGION`"
                if isinstance(exc, botocore.exceptions.NoRegionError)
                else "fix the AWS configuration (`aws configure list` shows what is used)"
            )
            return fail(name, f"cannot ask AWS who you are: {exc}", fix), {}
    return identity_check(identity), identity  # type: ignore[return-value]


def identity_check(identity: Mapping[str, str]) -> Check:
    return ok("credentials", f"{identity.get('arn')} (account {identity.get('account')})")


def configured_region(backend: Backend) -> str | None:
    """The region the user configured (profile or AWS_DEFAULT_REGION), before any switch."""
    if backend.local:
        return str(getattr(backend, "region", "") or backend.session.region_name or "") or None
    try:
        profile = backend.session.profile_name
        # "default" is what botocore reports when no profile is named; naming it raises
        # ProfileNotFound when no config file defines it (credentials from the environment).
        return boto3.Session(profile_name=None if profile == "default" else profile).region_name
    except botocore.exceptions.BotoCoreError:
        return None


def check_region(configured: str | None, effective: str, outputs: StackOutputs, *, local: bool) -> Check:
    """The region calls go to, the configured one and the stack's must agree."""
    name, stack = "region", outputs.region
    if effective != stack:
        where = "the local AWS runs" if local else "calls go"
        return fail(
            name,
            f"{where} in {effective} but the stack outputs say {stack}",
            f"re-create the outputs with {redo_command(local, outputs.env)}"
            if local
            else f"export AWS_DEFAULT_REGION={stack}",
        )
    if configured is None:
        return warn(
            name,
            f"no region configured; the stack's region {stack} is used",
            f"`aws configure set region {stack}` so aws CLI commands go there too",
        )
    if configured != stack:
        return warn(
            name,
            f"configured region {configured} differs from the stack's {stack}; invoke uses "
            f"{stack}, aws CLI commands you type go to {configured}",
            f"export AWS_DEFAULT_REGION={stack}",
        )
    return ok(name, f"{stack} (configured and the stack's)")

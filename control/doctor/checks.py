"""The doctor's check framework: a check's status, a check, the report, and what every check shares.

A check is a :class:`Check` (``ok``, ``fail``, ``warn`` or ``unknown``, a detail and a
fix) built with :func:`ok`, :func:`fail`, :func:`warn`, :func:`unknown` or
:func:`not_permitted`; only ``fail`` stops a launch. :class:`DoctorReport` holds every
check of one run, :class:`DoctorClients` the clients the checks use.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import botocore.exceptions
from botocore.config import Config

from common.aws import client as make_client
from common.errors import UserError
from control.backend import Backend

_ONCE = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)


class Status(StrEnum):
    """The outcome of one check; only ``fail`` stops a launch."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    UNKNOWN = "unknown"

    def is_failure(self) -> bool:
        return self is Status.FAIL


@dataclass(frozen=True, kw_only=True)
class Check:
    """One check: its name, status, what was seen and, unless ok, how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.OK, detail=detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.FAIL, detail=detail, fix=fix)


def warn(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name=name, status=Status.WARN, detail=detail, fix=fix)


def unknown(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name=name, status=Status.UNKNOWN, detail=detail, fix=fix)


def not_permitted(name: str, action: str, extra: str = "") -> Check:
    """``unknown: not permitted (<action>)``: a permission only the doctor needs is missing."""
    detail = f"not permitted ({action})" + (f"; {extra}" if extra else "")
    return unknown(name, detail, f"grant {action} to these credentials to check this")


@dataclass(frozen=True, kw_only=True)
class DoctorReport:
    """Every check of one doctor run."""

    env: str
    local: bool
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status.is_failure())

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise (warnings and unknowns do not fail)."""
        return 0 if self.ok else 1

    def command(self) -> str:
        return f"invoke doctor --env={self.env}" + (" --local" if self.local else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "local": self.local,
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
        }


class DoctorFailedError(UserError):
    """The doctor found a problem before a launch: nothing was created."""

    def __init__(self, report: DoctorReport) -> None:
        self.report = report
        names = ", ".join(c.name for c in report.failed)
        super().__init__(
            f"launch stopped before creating anything: {len(report.failed)} doctor check(s) "
            f"failed ({names}); see `{report.command()}` for details and fixes "
            "(or launch with --skip-doctor)"
        )


@dataclass(frozen=True)
class DoctorClients:
    """The clients the checks use (tests pass fakes). ``sts_once`` does not retry."""

    s3: Any
    ec2: Any
    sts: Any
    iam: Any
    quotas: Any
    sts_once: Any


def doctor_clients(backend: Backend) -> DoctorClients:
    """The backend's clients plus IAM, Service Quotas and a no-retry STS client.

    Calls that moto does not implement answer 5xx; retrying them only adds seconds.
    """
    base = backend.clients()

    def once(service: str) -> Any:
        return make_client(backend.session, service, endpoint_url=backend.endpoint_url, config=_ONCE)

    return DoctorClients(
        s3=base.s3,
        ec2=base.ec2,
        sts=base.sts,
        iam=backend.client("iam"),
        quotas=once("service-quotas"),
        sts_once=once("sts"),
    )


def split_fix(message: str) -> tuple[str, str]:
    """A one-line user error 'problem; fix' as (problem, fix)."""
    problem, _, fix = message.partition("; ")
    return problem, fix or "see the detail"


def aws_error_text(exc: BaseException) -> str:
    """``Code: Message`` of an AWS error (the exception's type and text for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {exc}"


def redo_command(local: bool, env: str) -> str:
    """The command that (re-)creates ``env``'s stack, quoted for a fix."""
    return f"`invoke local.up --env={env}`" if local else f"`pulumi up --stack {env}`"


def name_from_arn(arn: str) -> str:
    """The last path part of an ARN (a role's or instance profile's name)."""
    return arn.rsplit("/", 1)[-1]

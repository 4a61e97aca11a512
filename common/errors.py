"""Errors a user can cause. Each carries a one-line message that says what to do.

The invoke edge catches :class:`UserError`, prints its message and exits 2;
library code raises these instead of letting a traceback reach the user.
"""

from __future__ import annotations

from common.exitcodes import ExitCode


class UserError(Exception):
    """An error with a one-line, actionable message (exit code 2 at the edge)."""

    exit_code = ExitCode.USAGE


class ConfigError(UserError):
    """A bad run spec, stack config or command-line value."""


class LockHeldError(UserError):
    """Another run of the same env holds the state file."""

    def __init__(self, *, env: str, run_id: str, status: str, since: str) -> None:
        self.env, self.run_id, self.status, self.since = env, run_id, status, since
        super().__init__(
            f"a run is already active in env {env!r}: {run_id} ({status} since {since}); "
            f"watch it with `invoke monitor --env={env}` or stop it with `invoke kill --env={env}`"
        )


class CorruptStateError(UserError):
    """The state file exists but is not valid JSON or does not match its schema."""

    def __init__(self, *, location: str, env: str, reason: str) -> None:
        self.location, self.reason = location, reason
        super().__init__(
            f"state file {location} is corrupt ({reason}); look at it with "
            f"`invoke monitor --env={env} --json` and clear it with `invoke verify --env={env} --fix --yes`"
        )


class AccessDeniedError(UserError):
    """AWS refused an action for lack of permission."""

    def __init__(self, *, action: str, resource: str, detail: str = "") -> None:
        self.action, self.resource = action, resource
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"access denied: {action} on {resource}{extra}; grant that permission to these "
            "credentials (the stack's operator policy has it) or use another AWS profile"
        )


class NoCredentialsError(UserError):
    """No AWS credentials could be found."""

    def __init__(self) -> None:
        super().__init__(
            "no AWS credentials found; run `aws configure` or set AWS_PROFILE, "
            "or use local mode (`--local`) which needs no AWS account"
        )

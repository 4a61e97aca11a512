"""AWS failures a user can fix, as one-line :class:`~common.errors.UserError` s with the fix.

:func:`user_error` maps one botocore error (no credentials, no region, an unknown
profile, an expired SSO login, incomplete or rejected keys, an invalid configuration,
an unreachable endpoint); :func:`aws_errors` is the context manager every backend call
runs in, adding access denied and "the local AWS is not running".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions

from common.aws import error_code, is_access_denied
from common.errors import AccessDeniedError, NoCredentialsError, UserError

_BAD_CREDENTIAL_CODES = {
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "UnrecognizedClientException",
    "AuthFailure",
}


class LocalAWSDownError(UserError):
    """Local mode was asked for but the local AWS is not running."""

    def __init__(self, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"local AWS is not running{extra}; start it with `invoke local.up` (or run `make demo`)"
        )


_EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
_SSO_ERRORS = (botocore.exceptions.SSOError, botocore.exceptions.TokenRetrievalError)
_UNREACHABLE_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)
_CONFIG_ERRORS = (
    botocore.exceptions.InvalidConfigError,
    botocore.exceptions.ConfigParseError,
    botocore.exceptions.ConfigNotFound,
    botocore.exceptions.InvalidRegionError,
    botocore.exceptions.UnknownEndpointError,
)


def _profile_flag(profile: str | None) -> str:
    profile = profile or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
    return f" --profile {profile}" if profile and profile != "default" else ""


def _unreachable(exc: BaseException, action: str) -> UserError:
    url = getattr(exc, "kwargs", {}).get("endpoint_url") or "its endpoint"
    override = os.environ.get("AWS_ENDPOINT_URL")
    if override:
        fix = (
            f"AWS_ENDPOINT_URL is set to {override}: unset it to use AWS's own endpoints, "
            "or start the service it points at"
        )
    else:
        fix = "check your network or proxy, and that the region is right (AWS_REGION or the profile's region)"
    return UserError(f"cannot reach AWS at {url} for {action} ({type(exc).__name__}); {fix}")


def _credential_error(exc: BaseException, profile: str | None) -> UserError | None:
    """No credentials, no region, an unknown profile, an SSO login to renew, partial keys."""
    e = botocore.exceptions
    if isinstance(exc, e.NoCredentialsError):
        return NoCredentialsError()
    if isinstance(exc, e.NoRegionError):
        return UserError(
            "no AWS region configured; set AWS_REGION to the region of your stack "
            "(e.g. `export AWS_REGION=us-east-1`) or run `aws configure set region REGION`"
        )
    if isinstance(exc, e.ProfileNotFound):
        name = exc.kwargs.get("profile", "?")
        return UserError(
            f"AWS profile {name!r} is not in ~/.aws/config or ~/.aws/credentials; list the "
            "profiles with `aws configure list-profiles` and fix AWS_PROFILE (or unset it)"
        )
    if isinstance(exc, _SSO_ERRORS):
        return UserError(
            f"the AWS SSO login of this profile has expired or was never made; run "
            f"`aws sso login{_profile_flag(profile)}` and try again"
        )
    if isinstance(exc, e.PartialCredentialsError):
        provider, missing = exc.kwargs.get("provider", "?"), exc.kwargs.get("cred_var", "?")
        fix = (
            "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or unset them and use AWS_PROFILE"
            if provider == "env"
            else "complete that profile with `aws configure` or pick another AWS_PROFILE"
        )
        return UserError(f"incomplete AWS credentials in {provider}: {missing} is missing; {fix}")
    return None


def _source_error(exc: BaseException, action: str, profile: str | None) -> UserError | None:
    """A credential source that failed, an invalid configuration, an unreachable endpoint, a code."""
    if isinstance(exc, botocore.exceptions.CredentialRetrievalError):
        return UserError(
            f"AWS credentials could not be obtained from {exc.kwargs.get('provider', '?')} "
            f"({exc.kwargs.get('error_msg', exc)}); fix that credential source in "
            "~/.aws/config or pick another AWS_PROFILE"
        )
    if isinstance(exc, _CONFIG_ERRORS):
        return UserError(
            f"the AWS configuration is invalid ({exc}); fix ~/.aws/config (or the file "
            "AWS_CONFIG_FILE names) or pick another AWS_PROFILE"
        )
    if isinstance(exc, _UNREACHABLE_ERRORS):
        return _unreachable(exc, action)
    code = error_code(exc)
    if code in _EXPIRED_CODES:
        return UserError(
            f"these AWS credentials have expired ({code} on {action}); refresh them "
            f"(`aws sso login{_profile_flag(profile)}`, or a new session token) and try again"
        )
    if code in _BAD_CREDENTIAL_CODES:
        return UserError(
            f"AWS rejected these credentials ({code}) on {action}; refresh them "
            "(`aws sso login`, `aws configure`) or pick another AWS_PROFILE"
        )
    return None


def user_error(exc: BaseException, action: str, *, profile: str | None = None) -> UserError | None:
    """The one-line :class:`UserError` for a botocore configuration or credential error.

    Args:
        exc: what botocore raised.
        action: the API action or step it happened in (named in the message).
        profile: the AWS profile in use, named in ``aws sso login --profile ...``.

    Returns:
        The error to raise instead, or ``None`` for anything a user cannot fix this way.
    """
    return _credential_error(exc, profile) or _source_error(exc, action, profile)


@contextmanager
def aws_errors(
    action: str, resource: str, *, local_endpoint: str | None = None, profile: str | None = None
) -> Iterator[None]:
    """Turn AWS failures a user can fix into one-line :class:`UserError` s.

    Args:
        action: the API action or step, named in the message.
        resource: what it touched, named when access is denied.
        local_endpoint: the local AWS endpoint (local mode): unreachable means it is not running.
        profile: the AWS profile in use.

    Raises:
        UserError: configuration, credential or network problems, with the fix.
        AccessDeniedError: a permission is missing.
    """
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if local_endpoint and isinstance(exc, _UNREACHABLE_ERRORS):
            raise LocalAWSDownError(f"{local_endpoint} does not answer") from None
        mapped = user_error(exc, action, profile=profile)
        if mapped is not None:
            raise mapped from None
        if isinstance(exc, botocore.exceptions.ClientError) and is_access_denied(exc):
            raise AccessDeniedError(action=action, resource=resource) from None
        raise

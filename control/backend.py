"""One interface, two backends: real AWS and local mode (moto on 127.0.0.1).

Everything the control plane does (launch, monitor, kill, verify, runs, fetch)
goes through a :class:`Backend`: it hands out boto3 clients, checks the
credentials, reads the stack outputs and starts what stands for the instance
after ``RunInstances``. Only :class:`LocalBackend` has something to start (a
supervisor subprocess); on AWS the instance boots from its user data.

- AWS: boto3's default credential chain (``AWS_PROFILE``, env variables, SSO,
  instance role), the region from the stack outputs, outputs from
  ``pulumi stack output --json --stack {env}`` or the JSON file named by
  ``CHRONOS_STACK_OUTPUTS`` (``{env}`` in the path is replaced).
- local: the endpoint from ``.local/aws.json`` (``invoke local.up``), outputs from
  ``.local/stacks/{env}.json`` (written by the local provisioner), and the
  credentials of the env's operator IAM user from ``.local/identities.json``
  (:mod:`localaws.identities`): moto enforces IAM there, so the control plane works
  under the operator policy only, as on AWS. Without that record (IAM
  enforcement off), the default credential chain as on AWS.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from common import layout
from common.aws import client as make_client
from common.aws import error_code, is_access_denied
from common.errors import AccessDeniedError, ConfigError, NoCredentialsError, UserError
from control.localdir import PROJECT_ROOT, LocalDir, read_json
from infra.outputs import OutputsError, StackOutputs, read_outputs

log = logging.getLogger(__name__)

OUTPUTS_FILE_VAR = "CHRONOS_STACK_OUTPUTS"
LOCAL_VAR = "CHRONOS_LOCAL"
LOCAL_ACCESS_KEY = "testing"
LOCAL_REGION = "us-east-1"
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


@dataclass(frozen=True)
class Clients:
    """The boto3 clients an operation uses (tests may pass fakes)."""

    s3: Any
    ec2: Any
    sts: Any


def check_env(env: str) -> str:
    """``env`` if it is a valid environment name.

    Raises:
        ConfigError: 'unknown env' with the naming rule.
    """
    try:
        return layout.check_env(env)
    except layout.LayoutError as exc:
        raise ConfigError(f"unknown env: {exc}") from None


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


def env_region() -> str | None:
    """The region from ``AWS_REGION`` when botocore's own ``AWS_DEFAULT_REGION`` is unset.

    botocore (1.44) reads only ``AWS_DEFAULT_REGION`` and the profile's ``region``;
    every other AWS SDK and the AWS CLI v2 read ``AWS_REGION`` first (AWS SDKs and
    Tools Reference Guide, "AWS Region":
    https://docs.aws.amazon.com/sdkref/latest/guide/feature-region.html), so users set it.
    """
    if os.environ.get("AWS_DEFAULT_REGION"):
        return None
    return os.environ.get("AWS_REGION") or None


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


def user_error(exc: BaseException, action: str, *, profile: str | None = None) -> UserError | None:
    """The one-line :class:`UserError` for a botocore configuration or credential error.

    Args:
        exc: what botocore raised.
        action: the API action or step it happened in (named in the message).
        profile: the AWS profile in use, named in ``aws sso login --profile ...``.

    Returns:
        The error to raise instead, or ``None`` for anything a user cannot fix this way.
    """
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
    if isinstance(exc, e.CredentialRetrievalError):
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


class Backend(ABC):
    """Where runs happen. Subclasses differ only in where clients, outputs and instances come from."""

    name: str
    local: bool
    device: str

    def __init__(self, *, session: boto3.Session, endpoint_url: str | None = None) -> None:
        self._session = session
        self.endpoint_url = endpoint_url
        self._clients: Clients | None = None

    @property
    def session(self) -> boto3.Session:
        return self._session

    def client(self, service: str) -> Any:
        return make_client(self._session, service, endpoint_url=self.endpoint_url)

    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(s3=self.client("s3"), ec2=self.client("ec2"), sts=self.client("sts"))
        return self._clients

    def errors(self, action: str, resource: str = "*") -> Any:
        """Context manager mapping AWS errors to user errors for this backend."""
        return aws_errors(
            action,
            resource,
            local_endpoint=self.endpoint_url if self.local else None,
            profile=_session_profile(self._session),
        )

    def check_credentials(self) -> dict[str, str]:
        """``sts get-caller-identity``: who these credentials are.

        Raises:
            NoCredentialsError: none found. AccessDeniedError: refused.
        """
        with self.errors("sts:GetCallerIdentity"):
            ident = self.clients().sts.get_caller_identity()
        return {"account": ident.get("Account", ""), "arn": ident.get("Arn", "")}

    @abstractmethod
    def stack_outputs(self, env: str) -> StackOutputs:
        """The env's stack outputs.

        Raises:
            ConfigError: unknown env or missing outputs, with the command that creates them.
        """

    def start_instance(self, *, instance_id: str, run: dict[str, Any]) -> None:  # noqa: B027
        """Start what stands for the instance (nothing on AWS: it boots by itself)."""


def _session_profile(session: boto3.Session) -> str | None:
    try:
        return session.profile_name
    except botocore.exceptions.BotoCoreError:
        return None


def _outputs_from_mapping(mapping: Any, env: str, source: str, how_to_fix: str) -> StackOutputs:
    try:
        outputs = read_outputs(mapping)
    except OutputsError as exc:
        raise ConfigError(f"missing stack outputs for env {env!r} ({source}): {exc}; {how_to_fix}") from None
    if outputs.env != env:
        raise ConfigError(f"stack outputs in {source} are for env {outputs.env!r}, not {env!r}; {how_to_fix}")
    return outputs


class AwsBackend(Backend):
    """Real AWS through boto3's default credential chain.

    The region is, in order: ``region``, ``AWS_DEFAULT_REGION``, ``AWS_REGION``, the
    profile's ``region``; the stack outputs' region replaces it once they are read.
    Configuration and credential errors become one-line :class:`UserError` s.
    """

    name, local, device = "aws", False, "cuda"

    def __init__(self, *, session: boto3.Session | None = None, region: str | None = None) -> None:
        with aws_errors("reading the AWS configuration", "*"):
            # boto3.Session resolves AWS_PROFILE at once: ProfileNotFound is raised here
            super().__init__(session=session or boto3.Session(region_name=region or env_region()))

    def clients(self) -> Clients:
        with self.errors("creating AWS clients"):
            return super().clients()

    def stack_outputs(self, env: str) -> StackOutputs:
        check_env(env)
        path = os.environ.get(OUTPUTS_FILE_VAR)
        fix = f"run `pulumi up --stack {env}` first"
        if path:
            file = Path(path.replace("{env}", env))
            doc = read_json(file)
            if doc is None:
                raise ConfigError(
                    f"unknown env {env!r}: no stack outputs file {file} "
                    f"(from ${OUTPUTS_FILE_VAR}); {fix} and save "
                    f"`pulumi stack output --json` there"
                )
            outputs = _outputs_from_mapping(doc, env, str(file), fix)
        else:
            outputs = _outputs_from_mapping(self._pulumi_outputs(env), env, f"stack {env}", fix)
        if self._session.region_name != outputs.region:
            with self.errors("reading the AWS configuration"):
                # The profile that was chosen, or None: ``Session.profile_name`` says "default"
                # when none was, and naming it would drop credentials held in the environment.
                self._session = boto3.Session(
                    profile_name=self._session._session.profile, region_name=outputs.region
                )
            self._clients = None
        return outputs

    def _pulumi_outputs(self, env: str) -> dict[str, Any]:
        pulumi = shutil.which("pulumi")
        if pulumi is None:
            raise ConfigError(
                f"missing stack outputs for env {env!r}: the pulumi CLI is not installed; "
                f"install it or save `pulumi stack output --json --stack {env}` to a file "
                f"and set {OUTPUTS_FILE_VAR}=that-file"
            )
        proc = subprocess.run(
            [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", env],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            detail = err[-1] if err else f"exit {proc.returncode}"
            if "no stack named" in detail.lower() or "not found" in detail.lower():
                raise ConfigError(
                    f"unknown env {env!r}: no Pulumi stack named {env!r}; create it with "
                    f"`pulumi stack init {env} && pulumi up`"
                )
            raise ConfigError(
                f"missing stack outputs for env {env!r}: `pulumi stack output` failed "
                f"({detail}); run `pulumi up --stack {env}`"
            )
        try:
            return json.loads(proc.stdout or "{}")
        except json.JSONDecodeError:
            raise ConfigError(
                f"missing stack outputs for env {env!r}: `pulumi stack output --json` printed no JSON"
            ) from None


class LocalBackend(Backend):
    """moto on 127.0.0.1, with a supervisor subprocess per instance.

    Credentials follow the env, as :class:`AwsBackend`'s region does: the first
    :meth:`stack_outputs` (or :meth:`select_env`) switches the session to that env's
    operator keys. A :meth:`check_credentials` made before the env is known runs
    then, as the operator; the dict it returned is filled in at that moment.
    """

    name, local, device = "local", True, "cpu"

    def __init__(self, *, endpoint_url: str, local_dir: LocalDir, region: str = LOCAL_REGION) -> None:
        from control import local_audit

        local_audit.install_from_env()  # CHRONOS_IAM_AUDIT_LOG: record every call this side makes
        session = boto3.Session(region_name=region)
        if session.get_credentials() is None:
            session = boto3.Session(
                aws_access_key_id=LOCAL_ACCESS_KEY, aws_secret_access_key=LOCAL_ACCESS_KEY, region_name=region
            )
        super().__init__(session=session, endpoint_url=endpoint_url)
        self.local_dir = local_dir
        self.region = region
        self.env: str | None = None
        self._pending_identity: dict[str, str] | None = None

    @classmethod
    def open(cls, local_dir: LocalDir | None = None, *, env: str | None = None) -> LocalBackend:
        """The backend of the running local AWS.

        Args:
            local_dir: the local-mode folder (default: ``$CHRONOS_LOCAL_DIR`` or ``.local``).
            env: sign as this env's operator from the start (see :meth:`select_env`).

        Raises:
            LocalAWSDownError: nothing recorded in ``.local/aws.json`` or it does not answer.
            ConfigError: ``env`` has no local identities.
        """
        local_dir = local_dir or LocalDir.default()
        record = read_json(local_dir.aws_file)
        if not record or not record.get("endpoint_url"):
            raise LocalAWSDownError()
        from localaws import moto

        if not moto.attach(record["endpoint_url"]).is_up():
            raise LocalAWSDownError(f"{record['endpoint_url']} does not answer")
        backend = cls(
            endpoint_url=record["endpoint_url"],
            local_dir=local_dir,
            region=record.get("region") or LOCAL_REGION,
        )
        if env is not None:
            backend.select_env(env)
        return backend

    def _identities(self) -> Any:
        from localaws import identities

        try:
            return identities.load(self.local_dir.identities_file)
        except identities.IdentitiesError as exc:
            raise ConfigError(
                f"local identities are unreadable ({exc}); recreate them with "
                "`invoke local.down` then `invoke local.up`"
            ) from None

    def select_env(self, env: str) -> None:
        """Sign every later call with ``env``'s operator keys (no record: keep the default chain).

        Raises:
            ConfigError: identities are recorded, but none for ``env``.
        """
        check_env(env)
        if env == self.env:
            return
        record = self._identities()
        if record is not None:
            ids = record.envs.get(env)
            if ids is None:
                raise ConfigError(
                    f"env {env!r} has no local identities (local AWS enforces IAM); "
                    f"run `invoke local.up --env={env}`"
                )
            self._session = ids.operator.session(self.region)
            self._clients = None
        self.env = env
        if self._pending_identity is not None:
            pending, self._pending_identity = self._pending_identity, None
            pending.update(super().check_credentials())

    def check_credentials(self) -> dict[str, str]:
        """``sts get-caller-identity`` as the env's operator (deferred until the env is known).

        Raises:
            NoCredentialsError: none found. AccessDeniedError: refused.
        """
        if self.env is None and self._identities() is not None:
            self._pending_identity = {}
            return self._pending_identity
        return super().check_credentials()

    def credentials_env(self) -> dict[str, str]:
        """Environment variables that point SDKs and CLIs at the local AWS (the current keys)."""
        creds = self._session.get_credentials().get_frozen_credentials()
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url or "",
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }
        if creds.token:
            env["AWS_SESSION_TOKEN"] = creds.token
        return env

    def stack_outputs(self, env: str) -> StackOutputs:
        check_env(env)
        file = self.local_dir.stack_file(env)
        doc = read_json(file)
        fix = f"run `invoke local.up --env={env}`"
        if doc is None:
            known = ", ".join(self.local_dir.known_envs()) or "none"
            raise ConfigError(
                f"unknown env {env!r}: it is not provisioned in local mode (provisioned: {known}); {fix}"
            )
        outputs = _outputs_from_mapping(doc, env, str(file), fix)
        self.select_env(env)
        return outputs

    def start_instance(self, *, instance_id: str, run: dict[str, Any]) -> None:
        """Spawn the detached supervisor that runs the trainer for ``instance_id``."""
        from control import local_instance

        local_instance.spawn(
            local_dir=self.local_dir,
            instance_id=instance_id,
            endpoint_url=self.endpoint_url or "",
            env_vars=self.credentials_env(),
            python=sys.executable,
            **run,
        )


def open_backend(*, local: bool | None = None, region: str | None = None) -> Backend:
    """The backend a task asked for: ``--local`` or ``CHRONOS_LOCAL=1`` -> local, else AWS."""
    if local is None or local is False:
        local = local or os.environ.get(LOCAL_VAR, "").lower() in {"1", "true", "yes"}
    return LocalBackend.open() if local else AwsBackend(region=region)

"""One interface, two backends: real AWS and local mode (moto on 127.0.0.1).

Everything the control plane does (launch, monitor, kill, verify, runs, fetch)
goes through a :class:`Backend`: it hands out boto3 clients, checks the
credentials, reads the stack outputs and starts what stands for the instance
after ``RunInstances``. Only :class:`control.local_backend.LocalBackend` has
something to start (a supervisor subprocess); on AWS the instance boots from its
user data. AWS errors a user can fix become one-line errors
(:mod:`control.aws_errors`).

- AWS (:class:`AwsBackend`, here): boto3's default credential chain (``AWS_PROFILE``,
  env variables, SSO, instance role), the region from the stack outputs, outputs from
  ``pulumi stack output --json --stack {env}`` or the JSON file named by
  ``CHRONOS_STACK_OUTPUTS`` (``{env}`` in the path is replaced).
- local (:mod:`control.local_backend`): the endpoint from ``.local/aws.json``
  (``invoke local.up``), outputs from ``.local/stacks/{env}.json`` and the env's
  operator credentials.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from common import layout
from common.aws import client as make_client
from common.errors import ConfigError
from control.aws_errors import aws_errors
from control.localdir import PROJECT_ROOT, read_json
from infra.outputs import OutputsError, StackOutputs, read_outputs

log = logging.getLogger(__name__)

OUTPUTS_FILE_VAR = "CHRONOS_STACK_OUTPUTS"
LOCAL_VAR = "CHRONOS_LOCAL"


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


def outputs_from_mapping(mapping: Any, env: str, source: str, how_to_fix: str) -> StackOutputs:
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
            outputs = outputs_from_mapping(doc, env, str(file), fix)
        else:
            outputs = outputs_from_mapping(self._pulumi_outputs(env), env, f"stack {env}", fix)
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


def open_backend(*, local: bool | None = None, region: str | None = None) -> Backend:
    """The backend a task asked for: ``--local`` or ``CHRONOS_LOCAL=1`` -> local, else AWS."""
    from control.local_backend import LocalBackend

    if local is None or local is False:
        local = local or os.environ.get(LOCAL_VAR, "").lower() in {"1", "true", "yes"}
    return LocalBackend.open() if local else AwsBackend(region=region)

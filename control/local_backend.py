"""The local-mode backend: moto on 127.0.0.1, signing as the env's operator, a supervisor per instance.

The endpoint comes from ``.local/aws.json`` (``invoke local.up``), outputs from
``.local/stacks/{env}.json`` (written by the local provisioner), and the credentials
of the env's operator IAM user from ``.local/identities.json``
(:mod:`localaws.identities`): moto enforces IAM there, so the control plane works
under the operator policy only, as on AWS. Without that record (IAM enforcement
off), the default credential chain as on AWS. After ``RunInstances`` the instance
is a detached supervisor (:mod:`control.local_instance`).
"""

from __future__ import annotations

import sys
from typing import Any

import boto3

from common.errors import ConfigError
from control.aws_errors import LocalAWSDownError
from control.backend import Backend, check_env, outputs_from_mapping
from control.localdir import LocalDir, read_json
from infra.outputs import StackOutputs

LOCAL_ACCESS_KEY = "testing"
LOCAL_REGION = "us-east-1"


class LocalBackend(Backend):
    """moto on 127.0.0.1, with a supervisor subprocess per instance.

    Credentials follow the env, as :class:`AwsBackend`'s region does: the first
    :meth:`stack_outputs` (or :meth:`select_env`) switches the session to that env's
    operator keys. A :meth:`check_credentials` made before the env is known runs
    then, as the operator; the dict it returned is filled in at that moment.
    """

    name, local, device = "local", True, "cpu"

    def __init__(self, *, endpoint_url: str, local_dir: LocalDir, region: str = LOCAL_REGION) -> None:
        from localaws import audit

        audit.install_from_env()  # CHRONOS_IAM_AUDIT_LOG: record every call this side makes
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

    def client(self, service: str) -> Any:
        """A boto3 client on the local AWS; for ``batch`` one whose jobs the local executor runs
        (:mod:`control.local_batch_client`: moto alone would mark each job SUCCEEDED unrun)."""
        raw = super().client(service)
        if service != "batch":
            return raw
        from control.local_batch_client import LocalBatchClient

        return LocalBatchClient(
            raw,
            local_dir=self.local_dir,
            endpoint_url=self.endpoint_url or "",
            region=self.region,
            env_vars=self.credentials_env,
            identities_path=self.local_dir.identities_file,
        )

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
        outputs = outputs_from_mapping(doc, env, str(file), fix)
        self.select_env(env)
        return outputs

    def start_instance(self, *, instance_id: str, run: dict[str, Any]) -> None:
        """Spawn the detached supervisor that runs the trainer for ``instance_id``, and make
        sure the env's recovery pump runs (:mod:`control.local_recovery`: the events AWS would
        send to the recovery handler)."""
        from control import local_instance, local_recovery

        local_recovery.ensure_running(
            self.local_dir,
            env=run["env"],
            endpoint_url=self.endpoint_url or "",
            env_vars=self.credentials_env(),
        )
        local_instance.spawn(
            local_dir=self.local_dir,
            instance_id=instance_id,
            endpoint_url=self.endpoint_url or "",
            env_vars=self.credentials_env(),
            python=sys.executable,
            facts=local_instance.InstanceFacts(**run),
        )

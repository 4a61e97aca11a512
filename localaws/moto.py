"""Local AWS: moto in server mode on 127.0.0.1, for tests and local mode.

``start()`` runs the server in a thread of this process; ``python -m localaws serve``
runs it as a background process for ``invoke local.up``. Either way the caller
gets an endpoint and a boto3 session whose every request goes to 127.0.0.1.

IAM enforcement: :meth:`LocalAWS.enforce_iam` switches moto's request
authentication on (then only IAM-user and assumed-role keys work, and only for
what their policies allow), :meth:`LocalAWS.relax_iam` off. The switch is
process-wide on the server. Once the admin's keys are known
(:mod:`localaws.identities`), a handle's default :meth:`~LocalAWS.session` signs
with them, so helpers keep working under enforcement; handles on the same
endpoint in this process share them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests

from common.aws import client as make_client
from localaws.identities import Keys

# moto's admin calls (reset, reset-auth) walk every resource of the process-wide server; on a
# loaded 2-core machine a reset after a whole run was seen taking more than 10 s.
ADMIN_TIMEOUT_S = 60
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

_ADMIN_BY_ENDPOINT: dict[str, Keys] = {}  # admin keys known in this process, per endpoint


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalAWS:
    """A running local AWS endpoint.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT``.
        region: the region every client uses.
    """

    endpoint_url: str
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    _server: Any = field(default=None, repr=False)

    @property
    def admin(self) -> Keys | None:
        """The admin's keys once known (see :mod:`localaws.identities`), else ``None``."""
        return _ADMIN_BY_ENDPOINT.get(self.endpoint_url)

    def use_admin(self, keys: Keys | None) -> None:
        """Sign default sessions with ``keys`` (``None``: the default test keys again)."""
        if keys is None:
            _ADMIN_BY_ENDPOINT.pop(self.endpoint_url, None)
        else:
            _ADMIN_BY_ENDPOINT[self.endpoint_url] = keys

    def session(
        self, access_key: str | None = None, secret_key: str | None = None, token: str | None = None
    ) -> boto3.Session:
        """A session with these credentials; default: the admin's if known, else the test keys."""
        if access_key is None and self.admin is not None:
            access_key, secret_key = self.admin.access_key_id, self.admin.secret_access_key
        return boto3.Session(
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            aws_session_token=token,
            region_name=self.region,
        )

    def client(self, service: str, session: boto3.Session | None = None) -> Any:
        """A client for ``service`` on this endpoint."""
        return make_client(session or self.session(), service, endpoint_url=self.endpoint_url)

    def env(self) -> dict[str, str]:
        """Environment variables that point the AWS SDKs and CLIs here (keys of :meth:`session`)."""
        creds = self.session().get_credentials().get_frozen_credentials()
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def enforce_iam(self) -> None:
        """Switch moto's IAM enforcement on: every later request must be signed and allowed.

        Create the admin (an IAM user with a key) first: afterwards only IAM-user
        and assumed-role keys are accepted.
        """
        self._reset_auth(b"0")

    def relax_iam(self) -> None:
        """Switch moto's IAM enforcement off: any key may do anything."""
        self._reset_auth(b"inf")

    def _reset_auth(self, count: bytes) -> None:
        # moto's admin API: the number of requests served before authentication starts
        # ("inf": never, "0": from now on). Process-wide on the server.
        resp = requests.post(f"{self.endpoint_url}/moto-api/reset-auth", data=count, timeout=ADMIN_TIMEOUT_S)
        resp.raise_for_status()

    def reset(self) -> None:
        """Forget every resource and the admin's keys, and switch IAM enforcement off."""
        self.relax_iam()
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=ADMIN_TIMEOUT_S)
        self.use_admin(None)

    def is_up(self) -> bool:
        try:
            return requests.get(f"{self.endpoint_url}/moto-api/", timeout=2).status_code < 500
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Stop a server started by :func:`start` (no-op for an attached one)."""
        if self._server is not None:
            self._server.stop()
            self._server = None


def match_actions_case_insensitively() -> None:
    """moto compares a policy's ``Action`` with the request's action case-sensitively, and names
    some actions in lower case (Batch: ``batch:submitjob``), so ``batch:SubmitJob`` never matched.
    On AWS "the prefix and the action name are case insensitive" (IAM User Guide, "IAM JSON
    policy elements: Action"): matched so here too. Idempotent; patches moto in this process.
    """
    from moto.iam import access_control

    statement = access_control.IAMPolicyStatement
    original = statement._check_element_matches
    if getattr(original, "case_insensitive_actions", False):
        return

    def check(self: Any, element: str, value: str) -> bool:
        if element not in ("Action", "NotAction"):
            return bool(original(self, element, value))
        patterns = self._statement[element]
        patterns = patterns if isinstance(patterns, list) else [patterns]
        return any(self._match(str(p).lower(), value.lower()) is not None for p in patterns)

    check.case_insensitive_actions = True  # type: ignore[attr-defined]
    statement._check_element_matches = check


def start(port: int = 0) -> LocalAWS:
    """Start moto's server in a thread of this process, on 127.0.0.1 only (actions matched
    case-insensitively, as AWS does: :func:`match_actions_case_insensitively`)."""
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
    match_actions_case_insensitively()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port or free_port(), verbose=False)
    server.start()
    host, real_port = server.get_host_and_port()
    return LocalAWS(endpoint_url=f"http://{host}:{real_port}", _server=server)


def attach(endpoint_url: str, *, admin: Keys | None = None) -> LocalAWS:
    """A handle on a server already running at ``endpoint_url`` (e.g. from ``local.up``).

    Args:
        endpoint_url: the server.
        admin: its admin's keys (``identities.load(...).admin``), to sign default sessions.
    """
    aws = LocalAWS(endpoint_url=endpoint_url.rstrip("/"))
    if admin is not None:
        aws.use_admin(admin)
    return aws

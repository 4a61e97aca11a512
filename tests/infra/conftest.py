"""Fixtures of the infra tests: no network but 127.0.0.1, parliament, an IAM-enforcing moto."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)

REGION = "us-east-1"

# The suite imports test modules with --import-mode=importlib, which puts no test
# directory on sys.path: make this directory's helpers (iam_eval, pulumi_harness)
# importable by name.
sys.path.insert(0, str(Path(__file__).parent))


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="module")
def only_loopback_network() -> Iterator[None]:
    """Any connection to a host other than 127.0.0.1 fails the test loudly."""
    original = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise RuntimeError(f"infra tests may only connect to 127.0.0.1, not {address!r}")
        return original(sock, address)

    socket.socket.connect = guarded  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def parliament_module() -> types.ModuleType:
    """parliament (it needs ``pkg_resources``, hence the ``setuptools<81`` pin)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import parliament
    return parliament


@dataclass
class EnforcingAWS:
    """A moto server with IAM enforcement on, and an admin allowed everything."""

    endpoint_url: str
    admin: boto3.Session
    admin_arn: str
    _clients: dict[tuple[int, str], Any] = field(default_factory=dict)

    def client(self, service: str, session: boto3.Session | None = None) -> Any:
        """A client of ``session`` (default: the admin's), cached: building one is slow."""
        session = session or self.admin
        key = (id(session), service)
        if key not in self._clients:
            self._clients[key] = session.client(service, region_name=REGION, endpoint_url=self.endpoint_url)
        return self._clients[key]

    def set_enforcement(self, on: bool) -> None:
        body = b"0" if on else b"inf"
        requests.post(f"{self.endpoint_url}/moto-api/reset-auth", data=body, timeout=10)


def _create_admin(endpoint_url: str) -> tuple[boto3.Session, str]:
    """Admin user with an inline ``*:*`` policy and a key (made before enforcement)."""
    iam = boto3.Session("testing", "testing", region_name=REGION).client("iam", endpoint_url=endpoint_url)
    user = iam.create_user(UserName="admin")["User"]
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(everything))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    session = boto3.Session(key["AccessKeyId"], key["SecretAccessKey"], region_name=REGION)
    return session, user["Arn"]


@pytest.fixture(scope="module")
def enforcing_aws() -> Iterator[EnforcingAWS]:
    """A separate moto server (IAM enforcement is process-wide): reset on both ends.

    Enforcement starts off so the test can set up resources as admin; the test
    switches it on. Teardown switches it off and forgets everything.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    try:
        admin, admin_arn = _create_admin(endpoint)
        yield EnforcingAWS(endpoint_url=endpoint, admin=admin, admin_arn=admin_arn)
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """What each ComponentResource passes to ``register_outputs``, by class name, as the test declares."""
    import pulumi

    seen: dict[str, dict[str, Any]] = {}
    original = pulumi.ComponentResource.register_outputs

    def spy(self: pulumi.ComponentResource, outputs: dict[str, Any]) -> None:
        seen[type(self).__name__] = outputs
        original(self, outputs)

    monkeypatch.setattr(pulumi.ComponentResource, "register_outputs", spy)
    return seen


def fake_installer(requirements, target: Path) -> None:
    """Stands in for pip: one tiny package per requirement, with its dist-info (no network)."""
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        package = target / name.replace("-", "_")
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(f'__version__ = "{version}"\n')
        info = target / f"{name.replace('-', '_')}-{version or '0'}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Name: {name}\nVersion: {version}\n")


@pytest.fixture(autouse=True)
def no_pip_for_the_lambda_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The Pulumi program builds the recovery package: with the fake installer, into a temporary folder."""
    from infra import lambda_package

    monkeypatch.setattr(lambda_package, "pip_installer", fake_installer)
    monkeypatch.setattr(lambda_package, "BUILD_DIR", tmp_path_factory.mktemp("lambda-build"))

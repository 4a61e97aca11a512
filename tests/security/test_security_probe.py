"""The probes the end-to-end run's security checks rely on can see what they look for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from localaws.identities import EnvIdentities, Identities, Keys
from reliability import security_probe

LISTENER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print("ready", flush=True); time.sleep(120)
"""
QUIET = """
import socket, time
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", 9))
print("ready", flush=True); time.sleep(120)
"""


def _spawn_tree(child_code: str) -> subprocess.Popen[str]:
    """A leader in its own session whose child runs ``child_code`` (like the user data and the trainer)."""
    leader = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child_code!r}]); p.wait()"
    return subprocess.Popen(
        [sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True
    )


@pytest.mark.row("instance-listens-on-no-port")
@pytest.mark.parametrize(("code", "expected"), [(LISTENER, {"tcp LISTEN", "udp bound"}), (QUIET, set())])
def test_a_listening_socket_anywhere_in_the_tree_is_seen(code: str, expected: set[str]) -> None:
    proc = _spawn_tree(code)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while True:
            tree = security_probe.instance_tree(proc.pid)
            if len(tree) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(tree) >= 2, "the child is part of the tree"
        found = [s for p in tree for s in security_probe.listening_sockets(p, "i-0test")]
        assert {s.kind for s in found} == expected, found
        assert all(s.address.startswith("127.0.0.1:") and s.pid != proc.pid for s in found)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _keys(n: int) -> Keys:
    return Keys(
        arn=f"arn:aws:iam::123456789012:user/u{n}",
        access_key_id=f"AKIA{n:016d}",
        secret_access_key=f"{n}" * 40,
    )


@pytest.mark.row("no-secrets-in-run-outputs")
def test_every_identity_and_every_served_session_is_looked_for() -> None:
    env = EnvIdentities(
        operator=_keys(1),
        instance_host=_keys(2),
        instance_role_arn="arn:aws:iam::123456789012:role/chronos-dev-instance",
        instance_role_name="chronos-dev-instance",
        instance_profile_name="chronos-dev-instance",
        recovery_host=_keys(3),
        recovery_role_arn="arn:aws:iam::123456789012:role/chronos-dev-recovery",
    )
    ids = Identities(account="123456789012", admin=_keys(0), envs={"dev": env})
    served = {"ASIA0000000000000009": {"SecretAccessKey": "9" * 40, "Token": "T" * 300}}
    secrets, key_ids = security_probe.secrets_in_play(ids, served)
    assert {s.value for s in secrets} == {f"{n}" * 40 for n in (0, 1, 2, 3, 9)} | {"T" * 300}
    assert {k.value for k in key_ids} == {f"AKIA{n:016d}" for n in range(4)} | {"ASIA0000000000000009"}


class _EC2:
    def describe_launch_template_versions(self, **kw):
        assert kw == {"LaunchTemplateId": "lt-0abc", "Versions": ["$Latest"]}
        options = {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"}
        return {"LaunchTemplateVersions": [{"LaunchTemplateData": {"MetadataOptions": options}}]}


@pytest.mark.row("imdsv2-required-at-launch")
def test_a_requests_own_metadata_options_win_over_the_templates() -> None:
    template = {"LaunchTemplate": {"LaunchTemplateId": "lt-0abc", "Version": "$Latest"}}
    calls = [
        {"pid": 1, "params": {**template, "DryRun": True}},
        {"pid": 2, "params": {**template, "MetadataOptions": {"HttpTokens": "optional"}}},
    ]
    from_template, overridden = security_probe.run_instances_metadata(calls, _EC2())
    assert from_template.dry_run and from_template.options["HttpTokens"] == "required"
    assert overridden.source == "request" and overridden.options == {"HttpTokens": "optional"}

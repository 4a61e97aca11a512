"""A local run's security properties, observed from outside while it runs and after.

- :class:`InstanceProbe` samples every local instance's process tree (the user data's
  process group: bootstrap, trainer, training child; found through ``.local/instances/``)
  with psutil and records any socket it listens on, and asks each instance's fake IMDS for
  the role credentials it serves (the secret values a scan must then look for). The fake
  IMDS and moto belong to the laptop side (the supervisor, the test process): they are not in
  the tree.
- :func:`run_instances_metadata` reads the IAM call audit log for every RunInstances call
  and returns the metadata options each instance got (the request's own, else its launch
  template version's), for the IMDSv2 check.
- :func:`secrets_in_play` lists the secret values of every local identity and served session.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from reliability.secrets_scan import Secret

TRAINING_CHILD = "trainer.train"  # the training child's module: its presence is the training phase
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
CREDENTIALS = "/latest/meta-data/iam/security-credentials/"


@dataclass(frozen=True)
class Listener:
    """A socket an instance process listens on."""

    instance_id: str
    pid: int
    cmdline: str
    kind: str  # "tcp LISTEN" or "udp bound"
    address: str

    def __str__(self) -> str:
        return f"{self.instance_id} pid {self.pid} ({self.cmdline[:80]}): {self.kind} {self.address}"


@dataclass
class ProbeReport:
    """What the probe saw."""

    samples: int = 0
    training_samples: int = 0
    processes_seen: set[int] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)
    listeners: list[Listener] = field(default_factory=list)
    credentials: dict[str, dict[str, Any]] = field(default_factory=dict)  # AccessKeyId -> the document
    errors: list[str] = field(default_factory=list)  # the probe itself failed
    imds_misses: list[str] = field(default_factory=list)  # an IMDS that did not answer (powering off)


class InstanceProbe:
    """Samples the local instances of ``local_dir`` every ``interval_s`` in a thread.

    Args:
        local_dir: the local-mode folder (a :class:`control.localdir.LocalDir`).
        interval_s: between samples.
        credentials_every_s: between two reads of an instance's served credentials.
    """

    def __init__(self, local_dir: Any, *, interval_s: float = 0.5, credentials_every_s: float = 3.0) -> None:
        self.local_dir = local_dir
        self.interval_s = interval_s
        self.credentials_every_s = credentials_every_s
        self.report = ProbeReport()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._asked: dict[str, float] = {}

    def start(self) -> InstanceProbe:
        self._thread = threading.Thread(target=self._loop, name="instance-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> ProbeReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        return self.report

    def __enter__(self) -> InstanceProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a probe failure is reported, never hidden
                self.report.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        """One look at every live instance: its tree's sockets, and (now and then) its credentials."""
        for record in self.local_dir.instance_records():
            instance_id, leader = str(record.get("instance_id")), record.get("trainer_pid")
            if not leader or record.get("ended_at"):
                continue
            self.report.instances.add(instance_id)
            tree = instance_tree(int(leader))
            if not tree:
                continue
            self.report.samples += 1
            self.report.training_samples += any(TRAINING_CHILD in _cmdline(p) for p in tree)
            for proc in tree:
                self.report.processes_seen.add(proc.pid)
                self.report.listeners += listening_sockets(proc, instance_id)
            self._credentials(instance_id, record.get("imds_url"))

    def _credentials(self, instance_id: str, imds_url: str | None) -> None:
        now = time.monotonic()
        if not imds_url or now - self._asked.get(instance_id, -1e9) < self.credentials_every_s:
            return
        self._asked[instance_id] = now
        try:
            doc = served_credentials(imds_url)
        except (requests.RequestException, ValueError) as exc:  # the instance may be powering off
            self.report.imds_misses.append(f"{instance_id}: IMDS credentials: {exc}")
            return
        if doc and doc.get("AccessKeyId"):
            self.report.credentials[str(doc["AccessKeyId"])] = doc


def instance_tree(leader: int) -> list[psutil.Process]:
    """The user data's process and every descendant, plus anything still in its session."""
    try:
        root = psutil.Process(leader)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.Error:
        found = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid not in found and os.getsid(proc.pid) == leader:
                found[proc.pid] = proc
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def listening_sockets(proc: psutil.Process, instance_id: str = "") -> list[Listener]:
    """The TCP sockets ``proc`` listens on and its UDP sockets bound without a peer."""
    try:
        connections = proc.net_connections(kind="inet")
    except psutil.Error:
        return []
    found = []
    for conn in connections:
        tcp = conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN
        udp = conn.type == socket.SOCK_DGRAM and bool(conn.laddr) and not conn.raddr
        if tcp or udp:
            address = f"{conn.laddr.ip}:{conn.laddr.port}" if conn.laddr else "?"
            found.append(
                Listener(instance_id, proc.pid, _cmdline(proc), "tcp LISTEN" if tcp else "udp bound", address)
            )
    return found


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def served_credentials(imds_url: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The role credentials the IMDS at ``imds_url`` serves (IMDSv2: a token first), or ``None``."""
    base = imds_url.rstrip("/")
    token = requests.put(f"{base}/latest/api/token", headers={TOKEN_TTL_HEADER: "60"}, timeout=timeout)
    token.raise_for_status()
    headers = {TOKEN_HEADER: token.text}
    roles = requests.get(base + CREDENTIALS, headers=headers, timeout=timeout)
    if roles.status_code == 404:
        return None
    roles.raise_for_status()
    role = roles.text.strip().splitlines()[0]
    doc = requests.get(base + CREDENTIALS + role, headers=headers, timeout=timeout)
    doc.raise_for_status()
    return json.loads(doc.text)


# -- the secrets in play -----------------------------------------------------------------------------
def secrets_in_play(
    identities: Any, served: Mapping[str, Mapping[str, Any]]
) -> tuple[list[Secret], list[Secret]]:
    """``(secret values, access key ids)`` of every local identity and every served role session.

    Args:
        identities: a :class:`localaws.identities.Identities` (``None``: none recorded).
        served: the role credentials the IMDS served, by access key id.
    """
    secrets: list[Secret] = []
    key_ids: list[Secret] = []

    def keys(label: str, keys_: Any) -> None:
        if keys_ is not None:
            secrets.append(Secret(f"{label}'s secret key", keys_.secret_access_key))
            key_ids.append(Secret(f"{label}'s key id", keys_.access_key_id))

    if identities is not None:
        keys("the local admin", identities.admin)
        for env, ids in sorted(identities.envs.items()):
            keys(f"the {env} operator", ids.operator)
            keys(f"the {env} instance host", ids.instance_host)
            keys(f"the {env} recovery host", ids.recovery_host)
    for key_id, doc in served.items():
        secrets.append(Secret("a served role session's secret key", str(doc.get("SecretAccessKey", ""))))
        secrets.append(Secret("a served role session's token", str(doc.get("Token", ""))))
        key_ids.append(Secret("a served role session's key id", key_id))
    return secrets, key_ids


# -- RunInstances and IMDSv2 ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchSeen:
    """One RunInstances call of the audit log and the metadata options its instance gets."""

    pid: int
    dry_run: bool
    options: Mapping[str, Any]
    source: str  # "request" or "launch template <id> version <v>"


def audit_calls(path: Path, operation: str) -> list[dict[str, Any]]:
    """The audit log's ``call`` records of ``operation``."""
    calls = []
    for line in Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []:
        doc = json.loads(line)
        if doc.get("kind") == "call" and doc.get("operation") == operation:
            calls.append(doc)
    return calls


def run_instances_metadata(calls: Iterable[Mapping[str, Any]], ec2: Any) -> list[LaunchSeen]:
    """The metadata options of every RunInstances in ``calls`` (``ec2``: an admin client).

    A request's own ``MetadataOptions`` decide (RunInstances parameters override the launch
    template's, EC2 User Guide, "Launch an instance from a launch template"); without them
    the template version's do.
    """
    seen = []
    for call in calls:
        params = call.get("params") or {}
        own = params.get("MetadataOptions")
        if own:
            options, source = own, "request"
        else:
            template = params.get("LaunchTemplate") or {}
            options, source = _template_options(ec2, template), f"launch template {template}"
        seen.append(LaunchSeen(int(call.get("pid") or 0), bool(params.get("DryRun")), options or {}, source))
    return seen


def _template_options(ec2: Any, template: Mapping[str, Any]) -> Mapping[str, Any]:
    ident = {k: template[k] for k in ("LaunchTemplateId", "LaunchTemplateName") if template.get(k)}
    if not ident:
        return {}
    version = str(template.get("Version") or "$Default")
    versions = ec2.describe_launch_template_versions(**ident, Versions=[version])["LaunchTemplateVersions"]
    return versions[0]["LaunchTemplateData"].get("MetadataOptions", {}) if versions else {}

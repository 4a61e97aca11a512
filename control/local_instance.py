"""A local "instance": start its supervisor, stop its processes.

After ``RunInstances`` on the local AWS, :func:`spawn` starts the detached
supervisor (``python -m control.local_supervisor``) that plays the EC2 host of the
moto instance: it boots the user data with ``bash`` on a machine made of folders
(:mod:`control.local_machine`), serves the instance role's credentials from a fake
IMDS (:mod:`control.local_role`) and mirrors the moto instance's life onto the
processes (powering off terminates the moto instance; terminated from outside, the
processes get an OS shutdown). :func:`terminate_processes` is the OS shutdown seen
from outside (``invoke local.down``, ``verify --fix``).

Its record ``.local/instances/{instance_id}.json`` holds the supervisor pid, the
user data's pid (``trainer_pid``: the leader of the instance's process group), the
fake IMDS url and, at the end, the user data's exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.timeutil import iso, utc_now
from control.localdir import PROJECT_ROOT, LocalDir, pid_alive, write_json

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
SUPERVISOR_MODULE = "control.local_supervisor"


@dataclass(frozen=True, kw_only=True)
class InstanceFacts:
    """What a local instance is: what its IMDS answers and its record names."""

    bucket: str
    env: str
    run_id: str
    region: str
    instance_type: str
    availability_zone: str
    market: str
    max_runtime_minutes: int

    def arguments(self) -> list[str]:
        """The supervisor's command-line options for these facts."""
        return [
            "--bucket",
            self.bucket,
            "--env",
            self.env,
            "--run-id",
            self.run_id,
            "--region",
            self.region,
            "--instance-type",
            self.instance_type,
            "--availability-zone",
            self.availability_zone,
            "--market",
            self.market,
            "--max-runtime-minutes",
            str(self.max_runtime_minutes),
        ]


def spawn_detached(cmd: list[str], *, env_vars: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, its output appended to ``log_path``.

    The child gets this environment less any AWS profile (a local process must use only the
    credentials it is given) plus ``env_vars``, and never asks a real IMDS. A daemon thread
    waits for it, so a long-lived launcher (the recovery pump, an in-process launch, the bench)
    leaves no zombie behind when the child ends; the thread ends with the child.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    child_env.update({**env_vars, "PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    with open(log_path, "ab") as console:
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def spawn(
    *,
    local_dir: LocalDir,
    instance_id: str,
    endpoint_url: str,
    env_vars: dict[str, str],
    python: str,
    facts: InstanceFacts,
    identities_path: Path | None = None,
) -> int:
    """Start the supervisor for ``instance_id`` detached from this process; return its pid.

    Args:
        local_dir: the local-mode folder (its ``identities.json`` holds the admin keys).
        instance_id: the moto instance.
        endpoint_url: the local AWS.
        env_vars: environment of the supervisor (the caller's credentials: the fallback
            when no identities are recorded, i.e. IAM enforcement off).
        python: the interpreter of the supervisor (and base of the AMI-like venv).
        facts: what the instance is (IMDS answers) and its record.
        identities_path: default ``local_dir.identities_file``.
    """
    folder = local_dir.instance_dir(instance_id)
    folder.mkdir(parents=True, exist_ok=True)
    identities_path = identities_path or _identities_file(local_dir)
    cmd = [
        python,
        "-m",
        SUPERVISOR_MODULE,
        "--endpoint-url",
        endpoint_url,
        "--instance-id",
        instance_id,
        "--local-dir",
        str(local_dir.root),
        *facts.arguments(),
        "--identities",
        str(identities_path),
    ]
    proc = spawn_detached(cmd, env_vars=env_vars, log_path=folder / "console.log")
    write_json(local_dir.instance_file(instance_id), _first_record(folder, instance_id, facts, proc.pid))
    log.info("local instance %s: supervisor pid %d", instance_id, proc.pid)
    return proc.pid


def _first_record(folder: Path, instance_id: str, facts: InstanceFacts, pid: int) -> dict[str, Any]:
    """The instance's record as the supervisor starts: its pid, no user data yet."""
    root = folder / "root"
    return {
        "instance_id": instance_id,
        "run_id": facts.run_id,
        "env": facts.env,
        "supervisor_pid": pid,
        "trainer_pid": None,
        "imds_url": None,
        "started_at": iso(utc_now()),
        "ended_at": None,
        "exit_code": None,
        "console_log": str(folder / "console.log"),
        "workdir": str(root / "opt" / "chronos" / "work"),
        "root": str(root),
    }


def _identities_file(local_dir: LocalDir) -> Path:
    return Path(getattr(local_dir, "identities_file", local_dir.root / "identities.json"))


def terminate_processes(record: dict[str, Any], *, grace_s: float = SHUTDOWN_GRACE_S) -> bool:
    """SIGTERM (then SIGKILL) the supervisor and the instance's process group. True if any was alive."""
    group = record.get("trainer_pid")
    alive_group = bool(group) and group_alive(int(group))
    sup = record.get("supervisor_pid")
    pids = [p for p in (sup,) if pid_alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    if alive_group:
        signal_group(int(group), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (
        any(pid_alive(p) for p in pids) or (alive_group and group_alive(int(group)))
    ):
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    if alive_group:
        signal_group(int(group), signal.SIGKILL)
    return bool(pids) or alive_group


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid`` (gone or not ours: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False

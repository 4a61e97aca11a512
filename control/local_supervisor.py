"""The supervisor of a local instance: boots its user data and mirrors the moto instance's life.

``python -m control.local_supervisor ...`` (started by :func:`control.local_instance.spawn`
after ``RunInstances`` on the local AWS) plays the EC2 host of the instance it stands for:

- reads the instance's ``UserData`` from moto (``DescribeInstanceAttribute``, as
  the local admin) and runs it with ``bash``, as cloud-init does, in its own
  process group, on the machine :mod:`control.local_machine` makes
  (``CHRONOS_ROOT=<instance dir>/root`` standing for ``/``);
- serves the instance role's credentials from a fake IMDSv2 (:mod:`control.local_role`);
- powering off (``shutdown -h now``, the dead-man deadline) terminates the moto
  instance (the launch template's shutdown behaviour is ``terminate``), then the
  processes get SIGTERM and, after a grace period, SIGKILL (an OS shutdown);
  terminated from outside (``invoke kill``, ``verify --fix``) -> the same OS shutdown.
  An instance that EC2 no longer knows counts as terminated (:func:`common.ec2.is_gone`).
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from common import logfmt
from common.aws import client as make_client
from common.ec2 import describe_instance, instance_state, is_gone
from common.timeutil import iso, utc_now
from control import local_faults
from control.local_instance import SHUTDOWN_GRACE_S, group_alive, signal_group
from control.local_machine import (
    AUDIT_VAR,
    PowerControl,
    instance_environment,
    make_ami_python,
    write_shims,
)
from control.local_role import InstanceRole, env_identities, load_identities
from control.localdir import LocalDir, read_json, write_json
from localaws.identities import EnvIdentities
from localaws.imds import FakeIMDS, RoleMetadata

# Named, not __name__: run with ``python -m`` this module is ``__main__``, and its log lines
# say "supervisor" (the instance's own processes log to the same console).
log = logging.getLogger("control.local_supervisor")

POLL_S = 1.0
EXIT_AFTER_POWEROFF_S = 3.0
UNREACHABLE_LIMIT_S = 20.0
_AWS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class Supervisor:
    """Boots the user data and mirrors the moto instance's life onto its processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.local_dir = LocalDir(Path(args.local_dir))
        self.record_path = self.local_dir.instance_file(args.instance_id)
        self.folder = self.local_dir.instance_dir(args.instance_id)
        self.root = self.folder / "root"
        self.audit_log = os.environ.get(AUDIT_VAR) or None
        fault = os.environ.get(local_faults.ENV_VAR)  # the fault matrix's full disk, for this instance
        self.faults = (
            {local_faults.ENV_VAR: fault, local_faults.LOG_VAR: str(self.folder / "faults.log")}
            if fault
            else {}
        )
        recorded = load_identities(Path(args.identities) if args.identities else None)
        if recorded is not None:
            admin = recorded.admin.session(args.region)
        else:  # IAM enforcement off: the credentials this supervisor was spawned with
            admin = boto3.Session(region_name=args.region)
        self.ec2 = make_client(admin, "ec2", endpoint_url=args.endpoint_url)
        env_ids = env_identities(
            recorded, admin, env=args.env, stack_file=self.local_dir.stack_file(args.env)
        )
        self.imds = self._imds(env_ids, account=recorded.account if recorded else "123456789012")
        self.power = PowerControl(self.folder / "power")
        self.stop_requested = threading.Event()
        self.wake = threading.Event()

    def _imds(self, env_ids: EnvIdentities | None, *, account: str) -> FakeIMDS:
        """The fake IMDS of this instance (role credentials only when the env has a role)."""
        role = None
        if env_ids is not None:
            instance_role = InstanceRole(
                env_ids,
                endpoint_url=self.args.endpoint_url,
                region=self.args.region,
                instance_id=self.args.instance_id,
                audit_log=self.audit_log,
            )
            role = RoleMetadata(
                name=env_ids.instance_role_name,
                credentials=instance_role.credentials,
                instance_profile_arn=f"arn:aws:iam::{account}:instance-profile/{env_ids.instance_profile_name}",
            )
        return FakeIMDS(
            instance_id=self.args.instance_id,
            instance_type=self.args.instance_type,
            availability_zone=self.args.availability_zone,
            image_id=self._image_id(),
            lifecycle="spot" if self.args.market == "spot" else "on-demand",
            role=role,
        )

    def _image_id(self) -> str:
        """The AMI the moto instance was launched from (IMDS ``ami-id``)."""
        try:
            return str((describe_instance(self.ec2, self.args.instance_id) or {})["ImageId"])
        except (*_AWS_ERRORS, KeyError) as exc:  # unknown rather than failing the boot
            log.info("image id of %s unknown: %s", self.args.instance_id, exc)
            return ""

    # -- boot ---------------------------------------------------------------------------------------
    def user_data(self) -> str:
        """The instance's user data, as cloud-init would fetch it."""
        resp = self.ec2.describe_instance_attribute(InstanceId=self.args.instance_id, Attribute="userData")
        value = resp.get("UserData", {}).get("Value")
        if not value:
            raise RuntimeError(f"instance {self.args.instance_id} has no user data")
        return base64.b64decode(value).decode("utf-8")

    def boot(self) -> subprocess.Popen[bytes]:
        """Make the machine (root, AMI-like Python, shims) and start ``bash <user data>``."""
        started = time.monotonic()
        script = self.folder / "user-data.sh"
        script.write_text(self.user_data())
        ami_python = make_ami_python(self.root, audit=self.audit_log is not None, faults=bool(self.faults))
        shims = self.folder / "shims"
        write_shims(shims, control_dir=self.power.dir, supervisor_pid=os.getpid(), ami_python=ami_python)
        env = instance_environment(
            root=self.root,
            shims=shims,
            endpoint_url=self.args.endpoint_url,
            imds_url=self.imds.url,
            audit_log=self.audit_log,
            faults=self.faults,
        )
        log.info("boot: bash %s (machine ready in %.2f s)", script, time.monotonic() - started)
        return subprocess.Popen(
            ["bash", str(script)], cwd=self.root, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def run(self) -> int:
        """Boot, then watch until the instance powers off or is terminated; record the exit code."""
        self.imds.start()
        try:
            try:
                child = self.boot()
            except Exception as exc:  # noqa: BLE001 - any failed boot terminates the instance, as EC2 would
                log.error("cannot boot %s: %s; terminating it", self.args.instance_id, exc)
                self._terminate_instance()
                self._update(ended_at=iso(utc_now()), exit_code=None, boot_error=str(exc))
                return 1
            self._update(trainer_pid=child.pid, imds_url=self.imds.url, supervisor_pid=os.getpid())
            code = self._watch(child)
        finally:
            self.imds.stop()
        self._update(ended_at=iso(utc_now()), exit_code=code)
        return 0

    # -- life ---------------------------------------------------------------------------------------
    def _power_off(self) -> float | None:
        """How long the processes get to exit by themselves when the host powers off now, else ``None``."""
        request = self.power.poweroff_requested()
        if request is not None:
            log.info("shutdown %s: powering off (terminate)", request)
            return EXIT_AFTER_POWEROFF_S
        deadline = self.power.deadline()
        if deadline is not None and time.time() >= deadline:
            log.info("max runtime reached: the dead-man switch powers off")
            return 0.0
        if self.stop_requested.is_set():
            log.info("supervisor stopped: shutting the instance down")
            return 0.0
        return None

    def _watch(self, child: subprocess.Popen[bytes]) -> int:
        unreachable_since: float | None = None
        reported_exit = False
        while True:
            wait_first_s = self._power_off()
            if wait_first_s is not None:
                self._terminate_instance()
                return self._os_shutdown(child, wait_first_s=wait_first_s)
            code = child.poll()
            if code is not None and not reported_exit:
                reported_exit = True
                log.info("user data exited with %s; the instance runs until it is powered off", code)
                self._update(exit_code=code)
            state = self._instance_state()
            if state is None:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_LIMIT_S:
                    log.info("local AWS unreachable for %.0f s: shutting down", UNREACHABLE_LIMIT_S)
                    return self._os_shutdown(child, wait_first_s=0.0)
            else:
                unreachable_since = None
                if is_gone(state) and self.power.poweroff_requested() is None:
                    log.info("instance is %s from outside: OS shutdown", state)
                    return self._os_shutdown(child, wait_first_s=0.0)
            self.wake.wait(POLL_S)
            self.wake.clear()

    def _os_shutdown(self, child: subprocess.Popen[bytes], *, wait_first_s: float) -> int:
        """Stop every process of the instance: a moment to exit, then SIGTERM, then SIGKILL."""
        group = child.pid
        self._wait_group(child, wait_first_s)
        if group_alive(group):
            signal_group(group, signal.SIGTERM)
            self._wait_group(child, SHUTDOWN_GRACE_S)
            if group_alive(group):
                log.info("processes did not stop within %.0f s: SIGKILL", SHUTDOWN_GRACE_S)
                signal_group(group, signal.SIGKILL)
        return int(child.wait())

    @staticmethod
    def _wait_group(child: subprocess.Popen[bytes], seconds: float) -> None:
        """Up to ``seconds`` for the instance's process group to end (reaping the user data)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and group_alive(child.pid):
            child.poll()
            time.sleep(0.1)

    def _instance_state(self) -> str | None:
        """The moto instance state (NOT_FOUND once it no longer exists); None while unreachable."""
        try:
            return instance_state(self.ec2, self.args.instance_id)
        except _AWS_ERRORS:
            return None

    def _terminate_instance(self) -> None:
        if is_gone(self._instance_state()):
            return
        try:
            self.ec2.terminate_instances(InstanceIds=[self.args.instance_id])
        except _AWS_ERRORS as exc:  # the instance may be gone already
            log.info("terminate %s: %s", self.args.instance_id, exc)

    def _update(self, **fields: Any) -> None:
        doc = read_json(self.record_path) or {"instance_id": self.args.instance_id}
        doc.update(fields)
        write_json(self.record_path, doc)


def _on(event: threading.Event) -> Callable[..., None]:
    return lambda *_: event.set()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The supervisor's options (what :func:`control.local_instance.spawn` passes)."""
    parser = argparse.ArgumentParser(prog="python -m control.local_supervisor")
    for name in (
        "endpoint-url",
        "instance-id",
        "local-dir",
        "bucket",
        "env",
        "run-id",
        "region",
        "instance-type",
        "availability-zone",
        "market",
    ):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--max-runtime-minutes", type=int, required=True)
    parser.add_argument("--identities", default=None, help="identities.json (admin keys, instance role)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logfmt.configure(logging.INFO, sys.stdout)
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sup = Supervisor(args)
    stop = _on(sup.stop_requested)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: (stop(*a), sup.wake.set()))
    signal.signal(signal.SIGUSR1, _on(sup.wake))
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())

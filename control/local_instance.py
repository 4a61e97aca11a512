"""A local "instance": a detached supervisor that runs the trainer for one moto instance.

``python -m control.local_instance ...`` (started by :func:`spawn` after
``RunInstances`` on the local AWS) behaves like the EC2 instance it stands for:

- serves a fake IMDSv2 (:class:`localaws.imds.FakeIMDS`) for its instance id,
  type, AZ and market;
- runs ``python -m trainer run ... --device cpu --local --imds-endpoint URL`` as
  its child, with ``AWS_ENDPOINT_URL`` and credentials pointing at the local AWS;
- polls the moto instance: terminated from outside (``invoke kill``, ``verify --fix``,
  the console) -> the child gets SIGTERM, then SIGKILL after a grace period, as
  an OS shutdown would do;
- the child exiting is the OS powering off: the launch template's shutdown
  behaviour is ``terminate``, so the supervisor terminates the moto instance;
- ``shutdown -P +max_runtime`` (the dead-man switch of the user data) is emulated
  with the same deadline.

Its record ``.local/instances/{instance_id}.json`` holds the supervisor and
trainer pids, the fake IMDS url and, at the end, the trainer's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.timeutil import iso, utc_now
from control.localdir import PROJECT_ROOT, LocalDir, read_json, write_json

log = logging.getLogger(__name__)

POLL_S = 1.0
SHUTDOWN_GRACE_S = 10.0
EXIT_AFTER_TERMINATE_S = 3.0
UNREACHABLE_LIMIT_S = 20.0
GONE_STATES = {"shutting-down", "terminated"}


def spawn(*, local_dir: LocalDir, instance_id: str, endpoint_url: str, env_vars: dict[str, str],
          python: str, bucket: str, env: str, run_id: str, region: str, instance_type: str,
          availability_zone: str, market: str, max_runtime_minutes: int) -> int:
    """Start the supervisor for ``instance_id`` detached from this process; return its pid."""
    folder = local_dir.instance_dir(instance_id)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "control.local_instance",
           "--endpoint-url", endpoint_url, "--instance-id", instance_id,
           "--local-dir", str(local_dir.root), "--bucket", bucket, "--env", env, "--run-id", run_id,
           "--region", region, "--instance-type", instance_type,
           "--availability-zone", availability_zone, "--market", market,
           "--max-runtime-minutes", str(max_runtime_minutes)]
    child_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    child_env.update(env_vars)
    child_env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                      "AWS_EC2_METADATA_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false"})
    with open(folder / "console.log", "ab") as console:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=child_env, stdin=subprocess.DEVNULL,
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    write_json(local_dir.instance_file(instance_id), {
        "instance_id": instance_id, "run_id": run_id, "env": env, "supervisor_pid": proc.pid,
        "trainer_pid": None, "imds_url": None, "started_at": iso(utc_now()), "ended_at": None,
        "exit_code": None, "console_log": str(folder / "console.log"), "workdir": str(folder / "work"),
    })
    log.info("local instance %s: supervisor pid %d", instance_id, proc.pid)
    return proc.pid


def terminate_processes(record: dict[str, Any], *, grace_s: float = SHUTDOWN_GRACE_S) -> bool:
    """SIGTERM (then SIGKILL) the supervisor and trainer of a record. True if any was alive."""
    from control.localdir import pid_alive

    pids = [p for p in (record.get("trainer_pid"), record.get("supervisor_pid")) if pid_alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    return bool(pids)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class Supervisor:
    """Runs the trainer child and mirrors the moto instance's life onto it."""

    def __init__(self, args: argparse.Namespace) -> None:
        from localaws import moto
        from localaws.imds import FakeIMDS

        self.args = args
        self.local_dir = LocalDir(Path(args.local_dir))
        self.record_path = self.local_dir.instance_file(args.instance_id)
        self.ec2 = moto.attach(args.endpoint_url).client(
            "ec2", session=_session(args.region))
        self.imds = FakeIMDS(instance_id=args.instance_id, instance_type=args.instance_type,
                             availability_zone=args.availability_zone,
                             lifecycle="spot" if args.market == "spot" else "on-demand")
        self.stop_requested = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        self.imds.start()
        workdir = self.local_dir.instance_dir(self.args.instance_id) / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "trainer", "run", "--bucket", self.args.bucket, "--env", self.args.env,
               "--run-id", self.args.run_id, "--region", self.args.region, "--device", "cpu", "--local",
               "--imds-endpoint", self.imds.url, "--workdir", str(workdir)]
        log.info("boot: %s", " ".join(cmd))
        self.child = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL)
        self._update(trainer_pid=self.child.pid, imds_url=self.imds.url, supervisor_pid=os.getpid())
        try:
            code = self._watch()
        finally:
            self.imds.stop()
        self._update(ended_at=iso(utc_now()), exit_code=code)
        return 0

    def _watch(self) -> int:
        assert self.child is not None
        deadline = time.monotonic() + self.args.max_runtime_minutes * 60
        unreachable_since: float | None = None
        while True:
            code = self.child.poll()
            if code is not None:
                log.info("trainer exited with %s: powering off (terminate)", code)
                self._terminate_instance()
                return code
            if self.stop_requested.is_set():
                log.info("supervisor stopped: shutting the instance down")
                return self._shutdown(terminate=True)
            if time.monotonic() >= deadline:
                log.info("max runtime reached: dead-man switch powers off")
                return self._shutdown(terminate=True)
            state = self._instance_state()
            if state is None:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_LIMIT_S:
                    log.info("local AWS unreachable for %.0f s: shutting down", UNREACHABLE_LIMIT_S)
                    return self._shutdown(terminate=False)
            else:
                unreachable_since = None
                if state in GONE_STATES:
                    try:  # the trainer terminates its own instance as its very last step
                        return self.child.wait(EXIT_AFTER_TERMINATE_S)
                    except subprocess.TimeoutExpired:
                        pass
                    log.info("instance is %s from outside: OS shutdown of the trainer", state)
                    return self._shutdown(terminate=False)
            self.stop_requested.wait(POLL_S)

    def _shutdown(self, *, terminate: bool) -> int:
        assert self.child is not None
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(SHUTDOWN_GRACE_S)
            except subprocess.TimeoutExpired:
                log.info("trainer did not stop within %.0f s: SIGKILL", SHUTDOWN_GRACE_S)
                self.child.kill()
                self.child.wait()
        if terminate:
            self._terminate_instance()
        return int(self.child.returncode if self.child.returncode is not None else -1)

    def _instance_state(self) -> str | None:
        """The moto instance state; ``terminated`` when it no longer exists; None if unreachable."""
        try:
            resp = self.ec2.describe_instances(InstanceIds=[self.args.instance_id])
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code == "InvalidInstanceID.NotFound":
                return "terminated"
            return None
        for res in resp.get("Reservations", []):
            for inst in res.get("Instances", []):
                return str(inst["State"]["Name"])
        return "terminated"

    def _terminate_instance(self) -> None:
        if self._instance_state() in GONE_STATES:
            return
        try:
            self.ec2.terminate_instances(InstanceIds=[self.args.instance_id])
        except Exception as exc:  # the instance may be gone already
            log.info("terminate %s: %s", self.args.instance_id, exc)

    def _update(self, **fields: Any) -> None:
        doc = read_json(self.record_path) or {"instance_id": self.args.instance_id}
        doc.update(fields)
        write_json(self.record_path, doc)


def _session(region: str) -> Any:
    import boto3

    return boto3.Session(region_name=region)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control.local_instance")
    for name in ("endpoint-url", "instance-id", "local-dir", "bucket", "env", "run-id", "region",
                 "instance-type", "availability-zone", "market"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--max-runtime-minutes", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s supervisor %(levelname)s: %(message)s")
    sup = Supervisor(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sup.stop_requested.set())
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())

"""A local "instance": a detached supervisor that boots one moto instance from its user data.

``python -m control.local_instance ...`` (started by :func:`spawn` after
``RunInstances`` on the local AWS) plays the EC2 host of the instance it stands for:

- reads the instance's ``UserData`` from moto (``DescribeInstanceAttribute``, as
  the local admin) and runs it with ``bash``, as cloud-init does, in its own
  process group, with ``CHRONOS_ROOT=<instance dir>/root`` standing for ``/``;
- ``<root>/opt/pytorch`` is an AMI-like Python made for this instance: a venv
  (``--without-pip``) whose ``.pth`` adds the project venv's site-packages (torch,
  chronos, boto3, pip, awscli), as the Deep Learning AMI's ``/opt/pytorch`` venv
  holds torch; nothing is installed into the project's ``.venv``;
- shims first on ``PATH`` for what a laptop cannot do: ``shutdown`` (``+N`` sets
  the dead-man deadline, ``now`` powers off), ``poweroff``, ``sudo`` (runs its
  command) and ``aws`` (the AWS CLI of the AMI-like Python);
- the instance's AWS credentials come only from a fake IMDSv2
  (:class:`localaws.imds.FakeIMDS`): the instance role's, assumed for this
  instance id (``localaws.identities.assume_instance_role``); the user data's
  environment holds no AWS keys;
- powering off (``shutdown -h now``, the dead-man deadline) terminates the moto
  instance (the launch template's shutdown behaviour is ``terminate``), then the
  processes get SIGTERM and, after a grace period, SIGKILL (an OS shutdown);
  terminated from outside (``invoke kill``, ``verify --fix``) -> the same OS shutdown.

Its record ``.local/instances/{instance_id}.json`` holds the supervisor pid, the
user data's pid (``trainer_pid``: the leader of the instance's process group), the
fake IMDS url and, at the end, the user data's exit code.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import venv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.timeutil import iso, utc_now
from control.localdir import PROJECT_ROOT, LocalDir, read_json, write_json

log = logging.getLogger(__name__)

POLL_S = 1.0
SHUTDOWN_GRACE_S = 10.0
EXIT_AFTER_POWEROFF_S = 3.0
UNREACHABLE_LIMIT_S = 20.0
GONE_STATES = {"shutting-down", "terminated"}
AUDIT_VAR = "CHRONOS_IAM_AUDIT_LOG"
AMI_PTH = "chronos-ami.pth"
# What the user data's environment is made of (nothing else of the supervisor's leaks in).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def spawn(
    *,
    local_dir: LocalDir,
    instance_id: str,
    endpoint_url: str,
    env_vars: dict[str, str],
    python: str,
    bucket: str,
    env: str,
    run_id: str,
    region: str,
    instance_type: str,
    availability_zone: str,
    market: str,
    max_runtime_minutes: int,
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
        bucket, env, run_id, region, instance_type, availability_zone, market,
            max_runtime_minutes: what the instance is (IMDS answers) and its record.
        identities_path: default ``local_dir.identities_file``.
    """
    folder = local_dir.instance_dir(instance_id)
    folder.mkdir(parents=True, exist_ok=True)
    identities_path = identities_path or _identities_file(local_dir)
    cmd = [
        python,
        "-m",
        "control.local_instance",
        "--endpoint-url",
        endpoint_url,
        "--instance-id",
        instance_id,
        "--local-dir",
        str(local_dir.root),
        "--bucket",
        bucket,
        "--env",
        env,
        "--run-id",
        run_id,
        "--region",
        region,
        "--instance-type",
        instance_type,
        "--availability-zone",
        availability_zone,
        "--market",
        market,
        "--max-runtime-minutes",
        str(max_runtime_minutes),
        "--identities",
        str(identities_path),
    ]
    child_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    child_env.update(env_vars)
    child_env.update({"PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    root = folder / "root"
    with open(folder / "console.log", "ab") as console:
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    write_json(
        local_dir.instance_file(instance_id),
        {
            "instance_id": instance_id,
            "run_id": run_id,
            "env": env,
            "supervisor_pid": proc.pid,
            "trainer_pid": None,
            "imds_url": None,
            "started_at": iso(utc_now()),
            "ended_at": None,
            "exit_code": None,
            "console_log": str(folder / "console.log"),
            "workdir": str(root / "opt" / "chronos" / "work"),
            "root": str(root),
        },
    )
    log.info("local instance %s: supervisor pid %d", instance_id, proc.pid)
    return proc.pid


def _identities_file(local_dir: LocalDir) -> Path:
    return Path(getattr(local_dir, "identities_file", local_dir.root / "identities.json"))


def terminate_processes(record: dict[str, Any], *, grace_s: float = SHUTDOWN_GRACE_S) -> bool:
    """SIGTERM (then SIGKILL) the supervisor and the instance's process group. True if any was alive."""
    from control.localdir import pid_alive

    group = record.get("trainer_pid")
    alive_group = bool(group) and _group_alive(int(group))
    sup = record.get("supervisor_pid")
    pids = [p for p in (sup,) if pid_alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    if alive_group:
        _signal_group(int(group), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (
        any(pid_alive(p) for p in pids) or (alive_group and _group_alive(int(group)))
    ):
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    if alive_group:
        _signal_group(int(group), signal.SIGKILL)
    return bool(pids) or alive_group


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
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


# -- the machine: root, AMI-like Python, shims ------------------------------------------------------


def project_site_packages() -> list[str]:
    """The site-packages folders of the interpreter running this (the project venv)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def make_ami_python(root: Path, *, site_dirs: Sequence[str] | None = None, audit: bool = False) -> Path:
    """``<root>/opt/pytorch``: a venv that sees the project's packages, like the DLAMI's torch venv.

    Args:
        root: the folder standing for ``/``.
        site_dirs: folders its ``.pth`` adds with ``site.addsitedir`` (default: this venv's
            site-packages; empty: a bare Python, e.g. to test a failing ``import torch``).
        audit: also install the IAM call audit (``localaws.audit.install_from_env()``) at
            startup when ``CHRONOS_IAM_AUDIT_LOG`` is set (a missing module is skipped).

    Returns:
        Its ``bin/python3``.
    """
    env_dir = root / "opt" / "pytorch"
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env_dir)
    site_dirs = project_site_packages() if site_dirs is None else list(site_dirs)
    lines = [f"import site; site.addsitedir({d!r})" for d in site_dirs]
    if audit:
        lines.append(
            'import sys; exec("try:\\n import localaws.audit as _audit\\nexcept ImportError:\\n'
            ' _audit = None\\nif _audit is not None:\\n _audit.install_from_env()")'
        )
    purelib = sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)})["purelib"]
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / AMI_PTH).write_text("\n".join(lines) + "\n" if lines else "")
    return env_dir / "bin" / "python3"


SHUTDOWN_SHIM = """#!/bin/bash
# shutdown(8) of a local instance: +N schedules the power-off (the dead-man switch),
# now powers off (the launch template's shutdown behaviour: terminate), -c cancels.
ctl=@CTL@
when=""
cancel=""
for arg in "$@"; do
  case "$arg" in
    -c) cancel=1 ;;
    -*) ;;
    now) when=0 ;;
    +[0-9]*) when="${arg#+}" ;;
    *) break ;;
  esac
done
if [ -n "$cancel" ]; then
  rm -f "$ctl/deadline"
  echo "shutdown cancelled"
elif [ "${when:-1}" = 0 ]; then
  echo "$*" > "$ctl/poweroff.tmp" && mv "$ctl/poweroff.tmp" "$ctl/poweroff"
  echo "powering off"
else
  echo $(( $(date +%s) + ${when:-1} * 60 )) > "$ctl/deadline.tmp" && mv "$ctl/deadline.tmp" "$ctl/deadline"
  echo "Shutdown scheduled in ${when:-1} min"
fi
@WAKE@
"""
POWEROFF_SHIM = '#!/bin/bash\nexec @SHIMS@/shutdown -P now "$@"\n'
SUDO_SHIM = """#!/bin/bash
# sudo of a local instance: already "root", run the command.
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -u|-g|-C|-D|-h|-p|-U|-r|-t) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"""
AWS_SHIM = '#!/bin/bash\nexec @PY@ -m awscli "$@"\n'


def write_shims(
    shims: Path, *, control_dir: Path, supervisor_pid: int | None, ami_python: Path | None
) -> None:
    """The commands a laptop cannot run for real: ``shutdown``, ``poweroff``, ``sudo`` and ``aws``.

    Args:
        shims: the folder (first on the user data's PATH).
        control_dir: where ``shutdown`` leaves ``deadline`` / ``poweroff`` for the supervisor.
        supervisor_pid: woken with SIGUSR1 after each request (``None``: nobody to wake).
        ami_python: runs ``python -m awscli`` for ``aws``; ``None``: no ``aws`` on PATH.
    """
    shims.mkdir(parents=True, exist_ok=True)
    control_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "shutdown": SHUTDOWN_SHIM.replace("@CTL@", shlex.quote(str(control_dir))).replace(
            "@WAKE@",
            "" if supervisor_pid is None else f"kill -USR1 {int(supervisor_pid)} 2>/dev/null || true",
        ),
        "poweroff": POWEROFF_SHIM.replace("@SHIMS@", shlex.quote(str(shims))),
        "sudo": SUDO_SHIM,
    }
    if ami_python is not None:
        scripts["aws"] = AWS_SHIM.replace("@PY@", shlex.quote(str(ami_python)))
    for name, text in scripts.items():
        path = shims / name
        path.write_text(text)
        path.chmod(0o755)
    if ami_python is None:
        (shims / "aws").unlink(missing_ok=True)


class PowerControl:
    """What the ``shutdown`` shim asked for: a deadline (``+N``) or a power-off now."""

    def __init__(self, control_dir: Path) -> None:
        self.dir = control_dir

    def deadline(self) -> float | None:
        """Epoch seconds of the scheduled power-off, ``None`` when none is scheduled."""
        try:
            return float((self.dir / "deadline").read_text().strip())
        except (OSError, ValueError):
            return None

    def poweroff_requested(self) -> str | None:
        """The ``shutdown`` arguments of a power-off request, ``None`` while there is none."""
        try:
            return (self.dir / "poweroff").read_text().strip() or "now"
        except OSError:
            return None


def instance_environment(
    *,
    root: Path,
    shims: Path,
    endpoint_url: str,
    imds_url: str,
    audit_log: str | None = None,
    path: str = SYSTEM_PATH,
) -> dict[str, str]:
    """The user data's whole environment: no AWS keys, the IMDS and the local AWS endpoints.

    Args:
        root: ``CHRONOS_ROOT``. shims: first on PATH. endpoint_url: ``AWS_ENDPOINT_URL``.
        imds_url: ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore's variable; the user
            data reads it too). audit_log: ``CHRONOS_IAM_AUDIT_LOG`` when set.
        path: the system part of PATH.
    """
    home = root / "root"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{shims}:{path}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CHRONOS_ROOT": str(root),
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if audit_log:
        env[AUDIT_VAR] = audit_log
    return env


# -- credentials --------------------------------------------------------------------------------------


def record_credentials(
    audit_log: str, *, access_key_id: str, role_arn: str, role_id: str, session_name: str
) -> None:
    """The audit log's line naming the owner of an assumed-role key (``localaws.audit`` format)."""
    try:
        from localaws import audit
    except ImportError:
        audit = None  # type: ignore[assignment]
    if audit is not None and hasattr(audit, "record_credentials"):
        audit.record_credentials(
            access_key_id=access_key_id,
            role_arn=role_arn,
            role_id=role_id,
            session_name=session_name,
            path=audit_log,
        )
        return
    line = json.dumps(
        {
            "kind": "credentials",
            "ts": iso(utc_now()),
            "access_key_id": access_key_id,
            "role_arn": role_arn,
            "role_id": role_id,
            "session_name": session_name,
        }
    )
    fd = os.open(audit_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Supervisor:
    """Boots the user data and mirrors the moto instance's life onto its processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        import boto3

        from common.aws import client as make_client
        from localaws.imds import FakeIMDS

        self.args = args
        self.local_dir = LocalDir(Path(args.local_dir))
        self.record_path = self.local_dir.instance_file(args.instance_id)
        self.folder = self.local_dir.instance_dir(args.instance_id)
        self.root = self.folder / "root"
        self.audit_log = os.environ.get(AUDIT_VAR) or None
        self.identities = self._load_identities(Path(args.identities) if args.identities else None)
        if self.identities is not None:
            admin = self.identities.admin.session(args.region)
        else:  # IAM enforcement off: the credentials this supervisor was spawned with
            admin = boto3.Session(region_name=args.region)
        self.ec2 = make_client(admin, "ec2", endpoint_url=args.endpoint_url)
        self.env_ids = self._env_identities(admin)
        role = self.env_ids.instance_role_name if self.env_ids else None
        profile = self.env_ids.instance_profile_name if self.env_ids else ""
        account = self.identities.account if self.identities else "123456789012"
        self.imds = FakeIMDS(
            instance_id=args.instance_id,
            instance_type=args.instance_type,
            availability_zone=args.availability_zone,
            image_id=self._image_id(),
            lifecycle="spot" if args.market == "spot" else "on-demand",
            role_name=role,
            credentials=self._instance_credentials if role else None,
            instance_profile_arn=f"arn:aws:iam::{account}:instance-profile/{profile}",
        )
        self.power = PowerControl(self.folder / "power")
        self.stop_requested = threading.Event()
        self.wake = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def _image_id(self) -> str:
        """The AMI the moto instance was launched from (IMDS ``ami-id``)."""
        try:
            resp = self.ec2.describe_instances(InstanceIds=[self.args.instance_id])
            return str(resp["Reservations"][0]["Instances"][0]["ImageId"])
        except Exception as exc:  # the record says unknown rather than failing the boot
            log.info("image id of %s unknown: %s", self.args.instance_id, exc)
            return ""

    # -- identities -------------------------------------------------------------------------------
    def _load_identities(self, path: Path | None) -> Any:
        if path is None:
            return None
        from localaws import identities

        return identities.load(path)

    def _env_identities(self, admin: Any) -> Any:
        """The env's instance host and role: recorded, or (enforcement off) the stack's role."""
        from localaws.identities import EnvIdentities, Keys

        if self.identities is not None:
            found = self.identities.envs.get(self.args.env)
            if found is None:
                log.error(
                    "no local identities for env %s: the instance gets no role credentials", self.args.env
                )
            return found
        outputs = read_json(self.local_dir.stack_file(self.args.env)) or {}
        role_arn, profile_arn = outputs.get("instance_role_arn"), outputs.get("instance_profile_arn", "")
        creds = admin.get_credentials()
        if not role_arn or creds is None:
            log.error(
                "no instance role for env %s in %s: the instance gets no role credentials",
                self.args.env,
                self.local_dir.stack_file(self.args.env),
            )
            return None
        frozen = creds.get_frozen_credentials()
        host = Keys(arn="", access_key_id=frozen.access_key, secret_access_key=frozen.secret_key)
        return EnvIdentities(
            operator=host,
            instance_host=host,
            instance_role_arn=str(role_arn),
            instance_role_name=str(role_arn).rsplit("/", 1)[1],
            instance_profile_name=str(profile_arn).rsplit("/", 1)[-1],
        )

    def _instance_credentials(self) -> dict[str, Any]:
        """Fresh credentials of the instance role for this instance (what the IMDS serves)."""
        from localaws.identities import assume_instance_role

        assert self.env_ids is not None
        creds = assume_instance_role(
            self.args.endpoint_url, self.args.region, self.env_ids, self.args.instance_id
        )
        log.info("instance role credentials %s (until %s)", creds["AccessKeyId"], creds["Expiration"])
        if self.audit_log:
            try:
                self._audit_credentials(creds)
            except Exception as exc:  # never costs the instance its credentials; the audit then
                # finds calls signed by a key no principal owns, so it fails closed
                log.warning("could not record instance credentials in the IAM audit log: %s", exc)
        return creds

    def _audit_credentials(self, creds: Mapping[str, Any]) -> None:
        import boto3

        from common.aws import client as make_client

        assumed = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["Token"],
            region_name=self.args.region,
        )
        sts = make_client(assumed, "sts", endpoint_url=self.args.endpoint_url)
        user_id = sts.get_caller_identity()["UserId"]
        assert self.env_ids is not None and self.audit_log is not None
        record_credentials(
            self.audit_log,
            access_key_id=str(creds["AccessKeyId"]),
            role_arn=self.env_ids.instance_role_arn,
            role_id=str(user_id).split(":", 1)[0],
            session_name=self.args.instance_id,
        )

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
        ami_python = make_ami_python(self.root, audit=self.audit_log is not None)
        shims = self.folder / "shims"
        write_shims(shims, control_dir=self.power.dir, supervisor_pid=os.getpid(), ami_python=ami_python)
        env = instance_environment(
            root=self.root,
            shims=shims,
            endpoint_url=self.args.endpoint_url,
            imds_url=self.imds.url,
            audit_log=self.audit_log,
        )
        log.info("boot: bash %s (machine ready in %.2f s)", script, time.monotonic() - started)
        return subprocess.Popen(
            ["bash", str(script)], cwd=self.root, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def run(self) -> int:
        self.imds.start()
        try:
            try:
                self.child = self.boot()
            except Exception as exc:
                log.error("cannot boot %s: %s; terminating it", self.args.instance_id, exc)
                self._terminate_instance()
                self._update(ended_at=iso(utc_now()), exit_code=None, boot_error=str(exc))
                return 1
            self._update(trainer_pid=self.child.pid, imds_url=self.imds.url, supervisor_pid=os.getpid())
            code = self._watch()
        finally:
            self.imds.stop()
        self._update(ended_at=iso(utc_now()), exit_code=code)
        return 0

    # -- life ---------------------------------------------------------------------------------------
    def _watch(self) -> int:
        assert self.child is not None
        unreachable_since: float | None = None
        reported_exit = False
        while True:
            request = self.power.poweroff_requested()
            if request is not None:
                log.info("shutdown %s: powering off (terminate)", request)
                self._terminate_instance()
                return self._os_shutdown(wait_first_s=EXIT_AFTER_POWEROFF_S)
            deadline = self.power.deadline()
            if deadline is not None and time.time() >= deadline:
                log.info("max runtime reached: the dead-man switch powers off")
                self._terminate_instance()
                return self._os_shutdown(wait_first_s=0.0)
            if self.stop_requested.is_set():
                log.info("supervisor stopped: shutting the instance down")
                self._terminate_instance()
                return self._os_shutdown(wait_first_s=0.0)
            code = self.child.poll()
            if code is not None and not reported_exit:
                reported_exit = True
                log.info("user data exited with %s; the instance runs until it is powered off", code)
                self._update(exit_code=code)
            state = self._instance_state()
            if state is None:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_LIMIT_S:
                    log.info("local AWS unreachable for %.0f s: shutting down", UNREACHABLE_LIMIT_S)
                    return self._os_shutdown(wait_first_s=0.0)
            else:
                unreachable_since = None
                if state in GONE_STATES and self.power.poweroff_requested() is None:
                    log.info("instance is %s from outside: OS shutdown", state)
                    return self._os_shutdown(wait_first_s=0.0)
            self.wake.wait(POLL_S)
            self.wake.clear()

    def _os_shutdown(self, *, wait_first_s: float) -> int:
        """Stop every process of the instance: a moment to exit, then SIGTERM, then SIGKILL."""
        assert self.child is not None
        group = self.child.pid
        end = time.monotonic() + wait_first_s
        while time.monotonic() < end and _group_alive(group):
            self.child.poll()
            time.sleep(0.1)
        if _group_alive(group):
            _signal_group(group, signal.SIGTERM)
            end = time.monotonic() + SHUTDOWN_GRACE_S
            while time.monotonic() < end and _group_alive(group):
                self.child.poll()
                time.sleep(0.1)
            if _group_alive(group):
                log.info("processes did not stop within %.0f s: SIGKILL", SHUTDOWN_GRACE_S)
                _signal_group(group, signal.SIGKILL)
        code = self.child.wait()
        return int(code)

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


def _on(event: threading.Event) -> Callable[..., None]:
    return lambda *_: event.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control.local_instance")
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
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s supervisor %(levelname)s: %(message)s"
    )
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

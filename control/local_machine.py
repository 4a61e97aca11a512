"""The machine a local instance runs on: a root folder, an AMI-like Python, shims, its environment.

- ``<root>`` stands for ``/`` (``CHRONOS_ROOT``); ``<root>/opt/pytorch`` is an AMI-like
  Python made for the instance: a venv (``--without-pip``) whose ``.pth`` adds the
  project venv's site-packages (torch, chronos, boto3, pip, awscli), as the Deep
  Learning AMI's ``/opt/pytorch`` venv holds torch; nothing is installed into the
  project's ``.venv``;
- shims first on ``PATH`` for what a laptop cannot do: ``shutdown`` (``+N`` sets
  the dead-man deadline, ``now`` powers off), ``poweroff``, ``sudo`` (runs its
  command) and ``aws`` (the AWS CLI of the AMI-like Python); :class:`PowerControl`
  reads what ``shutdown`` asked for;
- the user data's whole environment (:func:`instance_environment`) holds no AWS keys:
  its credentials come from the fake IMDS only.
"""

from __future__ import annotations

import shlex
import sysconfig
import venv
from collections.abc import Mapping, Sequence
from pathlib import Path

from localaws.audit import ENV_VAR as AUDIT_VAR

AMI_PTH = "chronos-ami.pth"
# What the user data's environment is made of (nothing else of the supervisor's leaks in).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def project_site_packages() -> list[str]:
    """The site-packages folders of the interpreter running this (the project venv)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def make_ami_python(
    root: Path, *, site_dirs: Sequence[str] | None = None, audit: bool = False, faults: bool = False
) -> Path:
    """``<root>/opt/pytorch``: a venv that sees the project's packages, like the DLAMI's torch venv.

    Args:
        root: the folder standing for ``/``.
        site_dirs: folders its ``.pth`` adds with ``site.addsitedir`` (default: this venv's
            site-packages; empty: a bare Python, e.g. to test a failing ``import torch``).
        audit: also install the IAM call audit (``localaws.audit.install_from_env()``) at
            startup when ``CHRONOS_IAM_AUDIT_LOG`` is set (a missing module is skipped).
        faults: also install the fault ``CHRONOS_LOCAL_FAULTS`` names
            (:func:`control.local_faults.install_from_env`: the fault matrix's full disk).

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
    if faults:
        lines.append("import control.local_faults as _faults; _faults.install_from_env()")
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
    faults: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The user data's whole environment: no AWS keys, the IMDS and the local AWS endpoints.

    Args:
        root: ``CHRONOS_ROOT``. shims: first on PATH. endpoint_url: ``AWS_ENDPOINT_URL``.
        imds_url: ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore's variable; the user
            data reads it too). audit_log: ``CHRONOS_IAM_AUDIT_LOG`` when set.
        path: the system part of PATH. faults: the fault variables (:mod:`control.local_faults`).
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
    env.update(faults or {})
    return env

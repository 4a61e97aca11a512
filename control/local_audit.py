"""Local mode's IAM call audit, switched on for a whole run: record, then judge.

moto enforces neither IAM conditions nor EC2 resource ARNs, so a local run also
records every AWS call of both sides (``CHRONOS_IAM_AUDIT_LOG``: the control plane
installs the recorder, :func:`localaws.audit.install_from_env`, in
:class:`~control.local_backend.LocalBackend`, the local instance's Python at
start-up) and :func:`audit` evaluates each against the exact policies of its
caller (:func:`localaws.iam_audit.audit_run`). ``make demo`` and the end-to-end
tests fail on any call AWS would refuse.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from control.local_backend import LOCAL_REGION
from control.localdir import LocalDir, read_json
from localaws import audit as recorder


class AuditUnavailableError(RuntimeError):
    """The audit cannot run: no identities (IAM enforcement off) or no endpoint."""


def start(path: Path) -> Path:
    """Record this process's calls, and its children's (they inherit the variable), to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ[recorder.ENV_VAR] = str(path)
    recorder.install(path)
    return path


def audit(local_dir: LocalDir, log_path: Path) -> Any:
    """Evaluate every call recorded in ``log_path`` (an :class:`~localaws.iam_audit.AuditReport`).

    Raises:
        AuditUnavailableError: no identities record or no local AWS endpoint.
    """
    from localaws import identities, moto
    from localaws.iam_audit import audit_run

    ids = identities.load(local_dir.identities_file)
    record = read_json(local_dir.aws_file) or {}
    endpoint = record.get("endpoint_url")
    if ids is None or not endpoint:
        raise AuditUnavailableError(
            f"no local identities in {local_dir.identities_file} (IAM enforcement "
            "off): nothing to audit against"
        )
    region = record.get("region") or LOCAL_REGION
    return audit_run(
        log_path,
        admin_session=ids.admin.session(region),
        endpoint_url=endpoint,
        unaudited_keys=(moto.ACCESS_KEY,),
    )

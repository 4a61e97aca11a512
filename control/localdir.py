"""Where local mode keeps its bookkeeping: ``.local/`` next to ``tasks.py``.

::

    .local/aws.json                      endpoint and pid of the background moto server
    .local/aws.log                       its log
    .local/identities.json               local IAM users and keys (mode 0600), see localaws.identities
    .local/stacks/{env}.json             outputs of the local provisioner (same shape as
                                         ``pulumi stack output --json``)
    .local/data/synthetic/               the generated synthetic parquet dataset
    .local/instances/{instance_id}.json  one local "instance": supervisor pid, fake IMDS url
    .local/instances/{instance_id}/      its console log and trainer workdir

``CHRONOS_LOCAL_DIR`` moves the whole folder (tests use a temporary one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_DIR_VAR = "CHRONOS_LOCAL_DIR"


@dataclass(frozen=True)
class LocalDir:
    """Paths under the local-mode folder."""

    root: Path

    @classmethod
    def default(cls) -> LocalDir:
        """``$CHRONOS_LOCAL_DIR`` or ``<project>/.local``."""
        return cls(Path(os.environ.get(LOCAL_DIR_VAR) or PROJECT_ROOT / ".local").resolve())

    @property
    def aws_file(self) -> Path:
        return self.root / "aws.json"

    @property
    def aws_log(self) -> Path:
        return self.root / "aws.log"

    @property
    def identities_file(self) -> Path:
        return self.root / "identities.json"

    def stack_file(self, env: str) -> Path:
        return self.root / "stacks" / f"{env}.json"

    def known_envs(self) -> list[str]:
        folder = self.root / "stacks"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "synthetic"

    @property
    def instances_dir(self) -> Path:
        return self.root / "instances"

    def instance_file(self, instance_id: str) -> Path:
        return self.instances_dir / f"{instance_id}.json"

    def instance_dir(self, instance_id: str) -> Path:
        return self.instances_dir / instance_id

    def instance_records(self) -> list[dict[str, Any]]:
        """Every recorded local instance (unreadable records are skipped)."""
        out = []
        for path in sorted(self.instances_dir.glob("i-*.json")):
            doc = read_json(path)
            if doc is not None:
                out.append(doc)
        return out


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", "utf-8")
    tmp.replace(path)


def pid_alive(pid: int | None) -> bool:
    """True when a process with ``pid`` exists (zombies count as gone)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True

"""What the running code was built from: the instance reads the bundle's ``BUILD_INFO.json``.

The control plane writes ``BUILD_INFO.json`` into the code bundle (``control.bundle``);
on the instance :func:`build_info` reads it back, and a checkout without one asks git.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

BUILD_INFO = "BUILD_INFO.json"


def git_info(root: Path) -> dict[str, Any]:
    """``{"git_commit": <short sha>}`` of the checkout at ``root`` (``None`` without git)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None}
    return {"git_commit": done.stdout.strip() if done.returncode == 0 else None}


@cache
def build_info() -> dict[str, Any]:
    """What the running code was built from: ``BUILD_INFO.json`` of a bundle, else git."""
    root = Path(__file__).resolve().parent.parent
    try:
        return dict(json.loads((root / BUILD_INFO).read_text()))
    except (OSError, ValueError):
        return git_info(root)

"""Faults a local instance can be told to suffer: a full disk (an injected ``ENOSPC``).

A local instance has no disk of its own to fill, and mounting a size-limited tmpfs needs
privileges a test machine does not grant, so the fault matrix tells the instance's Python
(every process of its user data: the AMI-like venv's ``.pth`` calls :func:`install_from_env`)
to fail writes the way a full disk does. ``CHRONOS_LOCAL_FAULTS=enospc:<glob>`` makes every
open for writing of a file whose absolute path matches the glob raise
``OSError(ENOSPC, "No space left on device", path)``; each refusal appends a line (pid, path)
to ``$CHRONOS_LOCAL_FAULTS_LOG``. Writes made by native code (torch's and safetensors'
writers) are not seen; the Python writes that every checkpoint also makes (its config,
``trainer_state.json``, the run's own files) are. Set by the supervisor only when its own
environment asks for it (:mod:`control.local_supervisor`); nothing else reads these variables.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import io
import os
from typing import Any

ENV_VAR = "CHRONOS_LOCAL_FAULTS"
LOG_VAR = "CHRONOS_LOCAL_FAULTS_LOG"
KINDS = ("enospc",)


def parse(value: str) -> tuple[str, str]:
    """``enospc:<glob>`` -> ``("enospc", glob)``.

    Raises:
        ValueError: not one of :data:`KINDS` with a glob.
    """
    kind, _, pattern = value.partition(":")
    if kind not in KINDS or not pattern:
        raise ValueError(
            f"{ENV_VAR}={value!r}: expected one of {KINDS} and a glob, e.g. enospc:*/checkpoint-30/*"
        )
    return kind, pattern


def _writing(mode: Any) -> bool:
    return isinstance(mode, str) and any(c in mode for c in "wax+")


def install_from_env() -> bool:
    """Install the fault ``$CHRONOS_LOCAL_FAULTS`` names in this process; ``False`` when unset."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return False
    _, pattern = parse(value)
    log_path = os.environ.get(LOG_VAR)
    real_open = builtins.open

    def full_disk_open(file: Any, mode: Any = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and _writing(mode):
            path = os.path.abspath(os.fspath(file))
            if fnmatch.fnmatch(path, pattern):
                if log_path:
                    with real_open(log_path, "a", encoding="utf-8") as log:
                        log.write(f"{os.getpid()} {path}\n")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = full_disk_open
    io.open = full_disk_open
    return True

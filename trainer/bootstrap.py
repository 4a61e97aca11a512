"""User data and code bundle: how an instance gets from boot to ``python -m trainer run``.

- :func:`render_user_data` fills ``trainer/bootstrap.sh``: every placeholder gets
  a ``shlex.quote``-d value, so no value can break out of its assignment.
- :func:`build_code_bundle` packs what the instance imports (``common``,
  ``schemas``, ``trainer``, ``infra/spec.py`` for the tag names, ``pyproject.toml``
  and a ``BUILD_INFO.json`` with the git commit) into a byte-for-byte
  reproducible tar.gz; the control plane uploads it under its sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shlex
import subprocess
import tarfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from common.layout import RunPaths

TEMPLATE = "bootstrap.sh"
BUILD_INFO = "BUILD_INFO.json"
BUNDLE_DIRS = ("common", "schemas", "trainer")
BUNDLE_FILES = ("pyproject.toml", "infra/__init__.py", "infra/spec.py")
_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
DEVICES = ("cuda", "cpu")
# "User data is limited to 16 KB, in raw form, before it is base64-encoded" (EC2 User Guide,
# "Work with instance user data": https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html).
# moto accepts more, so the limit is checked here.
USER_DATA_LIMIT_BYTES = 16 * 1024


def render_user_data(
    *,
    bucket: str,
    env: str,
    run_id: str,
    region: str,
    max_runtime_minutes: int,
    code_key: str,
    python_env_key: str | None,
    wheelhouse_prefix: str,
    device: str = "cuda",
    local: bool = False,
    extra_env: dict[str, str] | None = None,
) -> str:
    """The bash user data for one run.

    Args:
        bucket, env, run_id, region: where the run lives.
        max_runtime_minutes: the dead-man switch (``shutdown -P +N``), scheduled first.
        code_key: key of the code bundle tar.gz.
        python_env_key: key of a packed Python env tar.gz, or ``None`` to use the
            AMI's Python plus ``pip install --no-index`` from ``wheelhouse_prefix``.
        wheelhouse_prefix: prefix of the wheels for that fallback.
        device: ``cuda`` (``cpu`` in local mode).
        local: local mode: the trainer runs with ``--local`` (the base model ``auto``
            resolves to the tiny one); empty on AWS.
        extra_env: more exported variables (names ``[A-Z_][A-Z0-9_]*``).

    Raises:
        ValueError: a bad run id/env, runtime, device or variable name, or user data
            over EC2's 16 KB limit.
    """
    paths = RunPaths(env=env, run_id=run_id)
    if not isinstance(max_runtime_minutes, int) or max_runtime_minutes < 1:
        raise ValueError(f"max_runtime_minutes must be a positive integer, got {max_runtime_minutes!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    values = {
        "BUCKET": bucket,
        "ENV": env,
        "RUN_ID": run_id,
        "REGION": region,
        "MAX_RUNTIME_MINUTES": str(max_runtime_minutes),
        "CODE_KEY": code_key,
        "PYTHON_ENV_KEY": python_env_key or "",
        "WHEELHOUSE_PREFIX": wheelhouse_prefix,
        "DEVICE": device,
        "LOCAL_MODE": "1" if local else "",
        "BOOTSTRAP_LOG_KEY": paths.bootstrap_log,
    }
    quoted = {k: shlex.quote(v) for k, v in values.items()}
    quoted["EXTRA_ENV"] = _exports(extra_env or {})
    text = _PLACEHOLDER.sub(lambda m: quoted[m.group(1)], template())
    if "@@" in text:
        raise ValueError("user data template has a placeholder render_user_data does not fill")
    size = len(text.encode("utf-8"))
    if size > USER_DATA_LIMIT_BYTES:
        raise ValueError(
            f"user data is {size} bytes, over EC2's limit of {USER_DATA_LIMIT_BYTES} "
            "(16 KB before base64): shorten the values or the extra environment"
        )
    return text


def _exports(extra: dict[str, str]) -> str:
    bad = [k for k in extra if not _ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"extra_env names must match [A-Z_][A-Z0-9_]*: {bad}")
    if not extra:
        return "# (no extra environment)"
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in sorted(extra.items()))


@cache
def template() -> str:
    """The raw ``bootstrap.sh`` template."""
    return resources.files("trainer").joinpath(TEMPLATE).read_text("utf-8")


def placeholders() -> set[str]:
    """Names of every ``@@NAME@@`` in the template."""
    return set(_PLACEHOLDER.findall(template()))


# -- code bundle ------------------------------------------------------------------------------------


def bundle_files(repo_root: Path) -> list[Path]:
    """Every file the bundle holds, relative to ``repo_root``, sorted."""
    root = Path(repo_root)
    found = [Path(f) for f in BUNDLE_FILES if (root / f).is_file()]
    for folder in BUNDLE_DIRS:
        found += [
            p.relative_to(root)
            for p in (root / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        ]
    return sorted(set(found), key=lambda p: p.as_posix())


def build_code_bundle(repo_root: Path) -> tuple[bytes, str]:
    """A reproducible tar.gz of the instance's code, and its sha256.

    Same files and commit -> same bytes: sorted entries, mtime 0, owner root,
    modes 0644/0755, gzip without name or time.
    """
    root = Path(repo_root)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in bundle_files(root):
            _add(
                tar,
                rel.as_posix(),
                (root / rel).read_bytes(),
                executable=(root / rel).stat().st_mode & 0o111 != 0,
            )
        info = json.dumps(_git_info(root), sort_keys=True).encode()
        _add(tar, BUILD_INFO, info, executable=False)
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    data = out.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes, *, executable: bool) -> None:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mtime, entry.mode = len(data), 0, 0o755 if executable else 0o644
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    tar.addfile(entry, io.BytesIO(data))


def _git_info(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    return {"git_commit": commit}


@cache
def build_info() -> dict[str, Any]:
    """What the running code was built from: ``BUILD_INFO.json`` of a bundle, else git."""
    root = Path(__file__).resolve().parent.parent
    try:
        return dict(json.loads((root / BUILD_INFO).read_text()))
    except (OSError, ValueError):
        return _git_info(root)

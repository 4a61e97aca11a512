"""The recovery function's code: a deterministic zip built at ``pulumi up``.

The zip holds the rooms the handler imports (``common/``, ``schemas/``, ``recovery/``,
taken from the working tree by path) and the third-party packages they need beyond the
Lambda runtime's own (``jsonschema`` and its dependencies; boto3 ships with the python3.12
runtime). Those are installed for the Lambda platform, not this machine's:
``pip install --platform manylinux2014_x86_64 --only-binary=:all: --python-version 3.12
--target DIR`` (pip's documented way to install for another platform: binary wheels only),
so compiled dependencies such as ``rpds-py`` match the runtime.

The same sources and wheels give the same bytes (sorted entries, fixed timestamps and
modes, no bytecode), so ``pulumi up`` changes the function only when its code changed.
The installer is injected: tests pass one that needs no network.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

ROOMS: tuple[str, ...] = ("common", "schemas", "recovery")
REQUIREMENTS: tuple[str, ...] = ("jsonschema",)
PLATFORM = "manylinux2014_x86_64"
PYTHON_VERSION = "3.12"
REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "build" / "lambda"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SITE_TOPS = frozenset({"bin"})  # console scripts: their shebang names this machine's Python
_SKIPPED_SUFFIXES = (".pyc", ".pyo")

Installer = Callable[[Sequence[str], Path], None]
"""``installer(requirements, target)``: put the packages (and their dependencies) into ``target``."""


class PackageError(RuntimeError):
    """The package could not be built; the message says what to do."""


@dataclass(frozen=True)
class LambdaPackage:
    """A built package: where the zip lies and its SHA-256 (base64, Lambda's ``CodeSha256``)."""

    path: Path
    sha256: str


def pinned_requirements(names: Sequence[str] = REQUIREMENTS) -> list[str]:
    """``name==version`` of each requirement as installed here: the function runs what the tests ran.

    Raises:
        PackageError: a requirement is not installed in this environment.
    """
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise PackageError(f"{name} is not installed here: run `pip install {name}` first") from None
    return pins


def pip_installer(requirements: Sequence[str], target: Path) -> None:
    """Install ``requirements`` for the Lambda platform into ``target`` (needs the package index).

    Raises:
        PackageError: pip failed (its last lines are in the message).
    """
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
        "--platform", PLATFORM, "--only-binary=:all:", "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--target", str(target), *requirements,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise PackageError(f"pip could not install {list(requirements)} for {PLATFORM}: {tail}")


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        skipped = _SKIPPED_DIRS & set(path.relative_to(root).parts) or path.name.endswith(_SKIPPED_SUFFIXES)
        if path.is_file() and not skipped:
            yield path


def _entries(source_root: Path, site: Path) -> dict[str, Path]:
    """Archive name -> file, rooms first; a site package may not shadow a room."""
    entries: dict[str, Path] = {}
    for room in ROOMS:
        folder = source_root / room
        if not (folder / "__init__.py").is_file():
            raise PackageError(f"{folder} is not a Python package: the recovery function needs {room}/")
        for path in _files(folder):
            entries[path.relative_to(source_root).as_posix()] = path
    for path in _files(site):
        name = path.relative_to(site).as_posix()
        if name.split("/", 1)[0] in _SKIPPED_SITE_TOPS:
            continue
        if name.split("/", 1)[0] in ROOMS:
            raise PackageError(
                f"the installed package {name!r} would shadow the project's own {name.split('/')[0]}/"
            )
        entries[name] = path
    return entries


def zip_bytes(entries: dict[str, Path]) -> bytes:
    """A zip of ``entries`` whose bytes depend only on the names and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            info.create_system = 3  # Unix, so the mode above is read as one
            archive.writestr(info, entries[name].read_bytes())
    return buffer.getvalue()


def build_bytes(source_root: Path, installer: Installer, requirements: Sequence[str]) -> bytes:
    """The package's bytes: the rooms of ``source_root`` and ``requirements`` installed by ``installer``."""
    with tempfile.TemporaryDirectory(prefix="chronos-lambda-") as tmp:
        site = Path(tmp)
        installer(list(requirements), site)
        return zip_bytes(_entries(source_root, site))


def build(
    *,
    source_root: Path = REPO_ROOT,
    build_dir: Path | None = None,
    installer: Installer | None = None,
    requirements: Sequence[str] | None = None,
    name: str = "recovery",
) -> LambdaPackage:
    """Build the package into ``build_dir/{name}.zip`` (rewritten only when its bytes changed).

    Args:
        source_root: the working tree holding the rooms.
        build_dir: where the zip goes (default ``build/lambda/`` of the working tree).
        installer: installs the requirements (default :func:`pip_installer`).
        requirements: what to install (default :func:`pinned_requirements`).
        name: the zip's file name without ``.zip``.

    Raises:
        PackageError: a room is missing, a requirement cannot be installed or would
            shadow a room.
    """
    reqs = list(requirements) if requirements is not None else pinned_requirements()
    data = build_bytes(source_root, installer or pip_installer, reqs)
    folder = build_dir or BUILD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.zip"
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
        log.info("wrote the recovery function package %s (%d bytes)", path, len(data))
    return LambdaPackage(path=path, sha256=base64.b64encode(hashlib.sha256(data).digest()).decode())

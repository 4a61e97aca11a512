"""The code bundle: what the instance imports, packed reproducibly and stored under its hash.

:func:`build_code_bundle` packs the bundle packages (``common``, ``schemas``,
``trainer``), ``pyproject.toml`` and a ``BUILD_INFO.json`` with the git commit into a
byte-for-byte reproducible tar.gz; the launch uploads it under :func:`code_key_for` of
its sha256, and the user data downloads it from there. The bundle needs nothing from
``infra/`` or ``control/``: the instance side never imports the laptop side.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from common import layout
from trainer.build_info import BUILD_INFO, git_info

BUNDLE_DIRS = ("common", "schemas", "trainer")
BUNDLE_FILES = ("pyproject.toml",)


def code_key_for(sha256: str) -> str:
    """Content-addressed key of a code bundle."""
    return f"{layout.CODE_PREFIX}bundle-{sha256}.tar.gz"


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
        info = json.dumps(git_info(root), sort_keys=True).encode()
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

"""The code bundle: reproducible, holds what the instance imports and nothing of the laptop side."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from control.bundle import BUNDLE_DIRS, build_code_bundle, bundle_files, code_key_for
from trainer.build_info import BUILD_INFO

ROOT = Path(__file__).resolve().parents[2]


def test_code_bundle_is_reproducible_and_holds_what_the_instance_imports():
    first, sha = build_code_bundle(ROOT)
    second, sha2 = build_code_bundle(ROOT)
    assert first == second and sha == sha2 and len(sha) == 64
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names[:-1]) + [BUILD_INFO]
    for needed in (
        "trainer/run.py",
        "trainer/bootstrap.sh",
        "common/layout.py",
        "common/tags.py",
        "schemas/training.schema.json",
        "pyproject.toml",
    ):
        assert needed in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # the instance side never needs the laptop side (control/) or the stack (infra/)
    assert not any(n.startswith(("control/", "tests/", "infra/")) for n in names)
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
    assert code_key_for(sha) == f"cached-datasets/scripts/bundle-{sha}.tar.gz"


def _imported_packages(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source`` (at any depth: lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_bundled_module_imports_only_bundle_packages_or_installed_ones():
    """A bundled module that imports infra/, control/ or localaws/ would fail on the instance."""
    project = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    foreign = project - set(BUNDLE_DIRS)
    assert {"control", "infra"} <= foreign
    bad = {}
    for rel in bundle_files(ROOT):
        if rel.suffix == ".py":
            wrong = _imported_packages((ROOT / rel).read_text("utf-8")) & foreign
            if wrong:
                bad[rel.as_posix()] = sorted(wrong)
    assert bad == {}


def test_the_import_walk_sees_lazy_imports():
    source = "import json\ndef f():\n    from infra.spec import PROJECT_TAG\n    import control.launch\n"
    assert _imported_packages(source) == {"json", "infra", "control"}


def test_the_bundle_runs_on_its_own(tmp_path: Path):
    data, _ = build_code_bundle(ROOT)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = (
        "import trainer.run, trainer.__main__, trainer.cleanup, schemas; "
        "from trainer.build_info import build_info; "
        "import sys; schemas.validate('sentinel', schemas.examples('sentinel')[0]); "
        "print(build_info()); print(trainer.run.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) in done.stdout and "git_commit" in done.stdout

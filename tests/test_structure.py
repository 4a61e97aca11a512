"""The code base's own rules, enforced: who may import whom, module size, no ``assert``, lint.

The rooms and their import contract are drawn in ``docs/ARCHITECTURE.md``; this test is
what keeps the drawing true. Every import is read from the AST, including imports inside
functions, so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "schemas",
    "common",
    "trainer",
    "infra",
    "localaws",
    "control",
    "bench",
    "recovery",
    "reliability",
)
EDGE_MODULES = ("tasks.py", "__main__.py")
PROJECT = set(PACKAGES) | {"tasks"}

# Each room may import itself and what is listed here, nothing else of the project.
# Bottom: the contract (schemas) and the facts both sides share (common). The instance
# side (trainer) never imports the laptop side. The CLI edge (tasks.py) sits on top.
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "common": frozenset({"schemas"}),
    "trainer": frozenset({"common", "schemas"}),
    "recovery": frozenset({"common", "schemas"}),  # the handler: the Lambda bundle holds these three
    "infra": frozenset({"common", "schemas"}),
    "localaws": frozenset({"common", "schemas", "infra"}),
    "control": frozenset({"common", "schemas", "trainer", "infra", "localaws", "recovery"}),
    "bench": frozenset({"common", "schemas", "trainer", "infra", "localaws", "control", "recovery"}),
    "reliability": frozenset({"common", "schemas", "trainer", "infra", "localaws", "control", "recovery"}),
    "tasks": frozenset({"common", "schemas", "control"}),
    "__main__": frozenset({"common", "schemas", "infra"}),  # the Pulumi program
}
# The code bundle the instance runs holds only these packages (control/bundle.py).
INSTANCE_SIDE = frozenset({"common", "schemas", "trainer"})

MAX_MODULE_LINES = 420  # "a few hundred lines"; ~400 with a little slack for docstrings


def product_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return files + [ROOT / name for name in EDGE_MODULES]


def room_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) for every absolute import in ``path``."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        out += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in PROJECT]
    return out


def test_every_room_imports_only_what_the_contract_allows():
    broken = []
    for path in product_files():
        room = room_of(path)
        for line, target in project_imports(path):
            if target != room and target not in ALLOWED[room]:
                broken.append(f"{path.relative_to(ROOT)}:{line} ({room} imports {target})")
    assert not broken, "imports across the rooms' contract (docs/ARCHITECTURE.md):\n" + "\n".join(broken)


def test_the_instance_side_never_imports_the_laptop_side():
    for room in INSTANCE_SIDE:
        assert ALLOWED[room] <= INSTANCE_SIDE, room


def test_the_contract_table_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("def f():\n    from control.launch import x\n")
    assert project_imports(bad) == [(2, "control")]
    assert "control" not in ALLOWED["trainer"]


def test_every_room_is_in_the_contract():
    rooms = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms <= set(PACKAGES), f"a package without import rules: {sorted(rooms - set(PACKAGES))}"


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern"


def test_no_assert_in_product_code():
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in product_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert not found, "assert in product code (raise an error with a message instead):\n" + "\n".join(found)


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: `make test` installs it with the dev extras")
    return [found]


def test_ruff_check_is_clean():
    """`make lint` in the suite, so CI enforces it: blind excepts, argument counts, complexity."""
    proc = subprocess.run([*_ruff(), "check", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = subprocess.run([*_ruff(), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_one_log_format():
    """Every process logs through common/logfmt.py: no module spells out its own format."""
    home = ROOT / "common" / "logfmt.py"
    own = [str(p.relative_to(ROOT)) for p in product_files() if p != home and "%(asctime)" in p.read_text()]
    assert not own, f"a log format outside common/logfmt.py: {own}"


def _dict_keys(path: Path) -> set[str]:
    """String keys of the dict literals built in ``path`` (documents a module writes)."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            keys |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys


@pytest.mark.parametrize(
    ("key", "home"),
    [
        ("state_file_removed", "common/cleanup_status.py"),  # cleanup_status.json: CleanupLog
        ("finalized_at", "trainer/finalize.py"),  # _SUCCESS / _FAILED_UPLOAD: sentinel()
    ],
)
def test_each_document_is_built_in_one_place(key, home):
    """cleanup_status.json and the sentinel each have one builder (cleanup, kill and verify share one)."""
    builders = [str(p.relative_to(ROOT)) for p in product_files() if key in _dict_keys(p)]
    assert builders == [home], f"documents with {key!r} are built in {builders}, not only in {home}"

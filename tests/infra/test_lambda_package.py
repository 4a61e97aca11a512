"""The recovery function's package: the three rooms plus the installed wheels, byte for byte the same."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import fake_installer

from infra import lambda_package
from infra.lambda_package import PackageError

REPO = Path(__file__).resolve().parents[2]
# Taken at import, before the autouse fixture puts the fake installer in its place.
PIP_INSTALLER = lambda_package.pip_installer


def _tree(root: Path) -> Path:
    """A small working tree with the three rooms, a stray bytecode file and a test folder."""
    for room in lambda_package.ROOMS:
        (root / room).mkdir(parents=True)
        (root / room / "__init__.py").write_text(f"# {room}\n")
    (root / "recovery" / "lambda_entry.py").write_text("def handler(event, context):\n    return {}\n")
    (root / "schemas" / "system-state.schema.json").write_text("{}\n")
    (root / "common" / "__pycache__").mkdir()
    (root / "common" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "common" / "stale.pyc").write_bytes(b"\0")
    (root / "trainer").mkdir()
    (root / "trainer" / "__init__.py").write_text("")
    return root


def _names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_the_zip_holds_the_rooms_and_the_installed_packages_only(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    built = lambda_package.build(
        source_root=root,
        build_dir=tmp_path / "out",
        installer=fake_installer,
        requirements=["jsonschema==4.0"],
    )
    names = _names(built.path)
    assert names == sorted(names)
    assert set(names) == {
        "common/__init__.py",
        "recovery/__init__.py",
        "recovery/lambda_entry.py",
        "schemas/__init__.py",
        "schemas/system-state.schema.json",
        "jsonschema/__init__.py",
        "jsonschema-4.0.dist-info/METADATA",
    }  # no bytecode, no other room (trainer/ is not the handler's)


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    first = lambda_package.build(
        source_root=root, build_dir=tmp_path / "a", installer=fake_installer, requirements=["x==1"]
    )
    (root / "recovery" / "lambda_entry.py").touch()  # a newer mtime changes nothing
    second = lambda_package.build(
        source_root=root, build_dir=tmp_path / "b", installer=fake_installer, requirements=["x==1"]
    )
    assert first.path.read_bytes() == second.path.read_bytes()
    assert (
        first.sha256
        == second.sha256
        == base64.b64encode(hashlib.sha256(first.path.read_bytes()).digest()).decode()
    )
    with zipfile.ZipFile(first.path) as archive:
        infos = archive.infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_a_changed_source_changes_the_package_and_rewrites_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    out = tmp_path / "out"
    first = lambda_package.build(source_root=root, build_dir=out, installer=fake_installer, requirements=[])
    (root / "recovery" / "lambda_entry.py").write_text("def handler(event, context):\n    return {'v': 2}\n")
    second = lambda_package.build(source_root=root, build_dir=out, installer=fake_installer, requirements=[])
    assert second.path == first.path and second.sha256 != first.sha256
    assert hashlib.sha256(second.path.read_bytes()).digest() == base64.b64decode(second.sha256)


def test_the_real_tree_packages_the_handler_the_schemas_and_jsonschema(tmp_path: Path) -> None:
    built = lambda_package.build(source_root=REPO, build_dir=tmp_path, installer=fake_installer)
    names = set(_names(built.path))
    assert {
        "recovery/lambda_entry.py",
        "common/notify.py",
        "common/state_store.py",
        "schemas/__init__.py",
    } <= names
    assert {f"schemas/{p.name}" for p in (REPO / "schemas").glob("*.schema.json")} <= names
    assert not any(n.startswith(("trainer/", "control/", "infra/", "tests/")) for n in names)
    version = lambda_package.pinned_requirements()[0].split("==")[1]
    assert f"jsonschema-{version}.dist-info/METADATA" in names


def test_a_missing_room_is_one_line_naming_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    (root / "recovery" / "__init__.py").unlink()
    with pytest.raises(
        PackageError, match=r"recovery is not a Python package: the recovery function needs recovery/"
    ):
        lambda_package.build(
            source_root=root, build_dir=tmp_path / "out", installer=fake_installer, requirements=[]
        )


def test_an_installed_package_may_not_shadow_a_room(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    with pytest.raises(PackageError, match="would shadow the project's own common/"):
        lambda_package.build(
            source_root=root, build_dir=tmp_path / "out", installer=fake_installer, requirements=["common==1"]
        )


def test_requirements_are_pinned_to_what_is_installed_here() -> None:
    (pin,) = lambda_package.pinned_requirements()
    assert pin.startswith("jsonschema==") and pin.split("==")[1][0].isdigit()
    with pytest.raises(PackageError, match="no-such-package-xyz is not installed here: run `pip install"):
        lambda_package.pinned_requirements(["no-such-package-xyz"])


def test_pip_installs_binary_wheels_for_the_lambda_platform(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[list[str]] = []

    def fake_run(command, **kwargs):
        seen.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(lambda_package.subprocess, "run", fake_run)
    PIP_INSTALLER(["jsonschema==4.23.0"], tmp_path)
    (command,) = seen
    joined = " ".join(command)
    for flag in (
        "--platform manylinux2014_x86_64",
        "--only-binary=:all:",
        "--python-version 3.12",
        "--implementation cp",
        f"--target {tmp_path}",
        "--no-compile",
    ):
        assert flag in joined
    assert command[-1] == "jsonschema==4.23.0"


def test_a_failing_pip_is_one_line_with_its_last_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_run(command, **kwargs):
        return subprocess.CompletedProcess(
            command, 1, "", "Looking in indexes\nERROR: No matching distribution"
        )

    monkeypatch.setattr(lambda_package.subprocess, "run", fake_run)
    with pytest.raises(PackageError, match="pip could not install .* No matching distribution") as raised:
        PIP_INSTALLER(["jsonschema==0"], tmp_path)
    assert "\n" not in str(raised.value)


def test_console_scripts_stay_out(tmp_path: Path) -> None:
    """pip's bin/ holds scripts whose shebang names this machine's Python: useless in Lambda."""

    def installer(requirements, target: Path) -> None:
        fake_installer(requirements, target)
        (target / "bin").mkdir()
        (target / "bin" / "jsonschema").write_text("#!/home/me/.venv/bin/python\n")

    root = _tree(tmp_path / "src")
    built = lambda_package.build(
        source_root=root, build_dir=tmp_path, installer=installer, requirements=["j==1"]
    )
    assert not any(n.startswith("bin/") for n in _names(built.path))

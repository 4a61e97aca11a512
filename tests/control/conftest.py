"""Fixtures for the control plane: a local-mode folder on the session's moto server, the
``dev`` env provisioned with the synthetic dataset, and a runner for ``invoke`` itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from control.local_backend import LocalBackend
from control.local_instance import terminate_processes
from control.localdir import PROJECT_ROOT, LocalDir, write_json
from control.localenv import provision, stage_dataset

INVOKE = str(Path(sys.executable).with_name("invoke"))


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    """The synthetic dataset, generated once per session."""
    from trainer.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(out)
    return out


@pytest.fixture
def local_dir(tmp_path, local_aws, monkeypatch) -> LocalDir:
    """A ``.local/`` folder that points local mode at the test's (clean) moto server."""
    folder = LocalDir(tmp_path / ".local")
    write_json(folder.aws_file, {"endpoint_url": local_aws.endpoint_url, "pid": None, "region": "us-east-1"})
    monkeypatch.setenv("CHRONOS_LOCAL_DIR", str(folder.root))
    yield folder
    for record in folder.instance_records():  # never leave a trainer behind
        terminate_processes(record, grace_s=5.0)


@pytest.fixture
def backend(local_dir) -> LocalBackend:
    return LocalBackend.open(local_dir)


@pytest.fixture
def dev(backend, dataset_dir) -> dict:
    """``dev`` provisioned in the local AWS (the real local provisioner) with the dataset staged.

    As ``invoke local.up``: the env's identities in ``.local/identities.json``, moto's IAM
    enforcement ON, ``backend`` (and every ``invoke`` the test runs) signing as the env's
    operator; ``local_aws``'s default session signs as the admin. ``local_aws``'s teardown
    switches enforcement off and forgets everything (the switch is process-wide).
    """
    outputs = provision(backend, "dev")
    stage_dataset(backend.clients().s3, outputs["bucket"], dataset_dir)
    return outputs


@pytest.fixture
def inventory(local_aws) -> Callable[[], dict]:
    """Everything that exists in the local AWS: object keys and ETags, instances, volumes (as the admin)."""

    def take() -> dict:
        s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
        objects = {}
        for b in s3.list_buckets()["Buckets"]:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
                objects.update({f"{b['Name']}/{o['Key']}": o["ETag"] for o in page.get("Contents", [])})
        instances = {
            i["InstanceId"]: i["State"]["Name"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        volumes = {v["VolumeId"]: v["State"] for v in ec2.describe_volumes()["Volumes"]}
        return {"objects": objects, "instances": instances, "volumes": volumes}

    return take


@pytest.fixture
def cli(local_dir) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``invoke ARGS`` as a user would, against the test's local AWS."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 240, drop: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess:
        full = {**os.environ, "CHRONOS_LOCAL_DIR": str(local_dir.root), "COLUMNS": "200", **(env or {})}
        for name in drop:
            full.pop(name, None)
        return subprocess.run(
            [INVOKE, *args], cwd=PROJECT_ROOT, env=full, capture_output=True, text=True, timeout=timeout
        )

    return run


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single error line a failed task prints (and proof there is no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, f"no error printed; stdout: {proc.stdout}"
    return lines[-1]


@pytest.fixture
def error_line() -> Callable[[subprocess.CompletedProcess], str]:
    return one_line_error

"""Fixtures for the control plane: a local-mode folder on the session's moto server, the
``dev`` env provisioned with the synthetic dataset, and a runner for ``invoke`` itself."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from control.backend import Backend
from control.local_backend import LocalBackend
from control.local_instance import terminate_processes
from control.localdir import PROJECT_ROOT, LocalDir, write_json
from control.localenv import provision, stage_dataset
from infra.outputs import StackOutputs, read_outputs

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


# ---------------------------------------------------------------- sweeps: moto's Batch
# moto's Batch (``use_docker: false``) marks a submitted job SUCCEEDED at once and never runs it; AWS
# keeps a job RUNNABLE until capacity comes, then STARTING and RUNNING. ``MotoBatch.hold`` puts a job
# where AWS would have it (moto runs in this process), so cancellation is tested against AWS's states.

ACCOUNT, REGION = "123456789012", "us-east-1"
QUEUE, DEFINITION = "chronos-dev-batch-queue", "chronos-dev-batch-job"


def batch_outputs(bucket: str, **batch: Any) -> StackOutputs:
    base = read_outputs(
        {
            "bucket": bucket, "region": REGION, "env": "dev", "account_id": ACCOUNT,
            "subnets_by_az": {"us-east-1a": "subnet-1"}, "security_group_id": "sg-1",
            "launch_template_id": "lt-1",
            "instance_profile_arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/chronos-dev-instance",
            "instance_role_arn": f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance",
            "operator_policy_arn": f"arn:aws:iam::{ACCOUNT}:policy/chronos-dev-operator",
        }
    )  # fmt: skip
    return dataclasses.replace(base, **batch)


def _create_batch(aws: Any) -> dict[str, str]:
    """A compute environment, the job queue and the job definition, in moto (jobs never run)."""
    requests.post(f"{aws.endpoint_url}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=5)
    batch, iam = aws.client("batch"), aws.client("iam")
    role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    ce = batch.create_compute_environment(
        computeEnvironmentName="chronos-dev-batch-spot", type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    batch.create_job_queue(
        jobQueueName=QUEUE, state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce["computeEnvironmentArn"]}],
    )  # fmt: skip
    jd = batch.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        parameters={"env": "dev", "run_id": "unset", "code_key": "unset"},
        containerProperties={
            "image": "chronos-trainer",
            "command": ["bash", "-c", "true", "chronos-batch", "Ref::env", "Ref::run_id", "Ref::code_key"],
            "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "15000"}],
        },
    )
    return {
        "queue": QUEUE,
        "definition": jd["jobDefinitionArn"],
        "compute_environment": "chronos-dev-batch-spot",
    }


def _moto_job(job_id: str) -> Any:
    from moto.batch.models import batch_backends

    return batch_backends[ACCOUNT][REGION]._jobs[job_id]


def hold(job_id: str, status: str) -> None:
    """Put a job in ``status`` as AWS would have it (queued, or on a host), not stopped."""
    job = _moto_job(job_id)
    job.status, job.job_stopped, job.stop = status, False, False


def honour_stops(job_id: str) -> None:
    """What AWS does after a CancelJob/TerminateJob moto only flagged: the job ends FAILED."""
    job = _moto_job(job_id)
    if job.stop:
        job.status = "FAILED"


class _MotoBackend(Backend):
    """A backend on the test's moto whose stack has the Batch outputs (signs with the test keys)."""

    name, local, device = "local", True, "cpu"

    def __init__(self, aws: Any, outputs: StackOutputs) -> None:
        super().__init__(session=aws.session(), endpoint_url=aws.endpoint_url)
        self._outputs = outputs

    def stack_outputs(self, env: str) -> StackOutputs:
        return self._outputs


class MotoBatch:
    """The env's Batch resources in moto and the holds on its jobs (the ``moto_batch`` fixture)."""

    def __init__(self, aws: Any) -> None:
        made = _create_batch(aws)
        self.aws = aws
        self.queue, self.definition = made["queue"], made["definition"]
        self.compute_environment = made["compute_environment"]
        self.hold, self.honour_stops, self.outputs = hold, honour_stops, batch_outputs

    def scale(self, desired: int) -> None:
        """The compute environment at ``desired`` vCPUs, as Batch would have scaled it (moto never scales)."""
        from moto.batch.models import batch_backends

        for ce in batch_backends[ACCOUNT][REGION]._compute_environments.values():
            if ce.name == self.compute_environment:
                ce.env_type = "MANAGED"
                ce.compute_resources = {
                    "type": "SPOT",
                    "minvCpus": 0,
                    "maxvCpus": 16,
                    "desiredvCpus": desired,
                }

    def backend(self, bucket: str) -> Backend:
        """A backend whose stack exports this queue and job definition."""
        outputs = batch_outputs(
            bucket, batch_job_queue=self.queue, batch_job_definition=self.definition,
            batch_spot_compute_environment=self.compute_environment,
            batch_on_demand_compute_environment=self.compute_environment,
            batch_job_role_arn=f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-batch-job",
        )  # fmt: skip
        return _MotoBackend(self.aws, outputs)


@pytest.fixture
def moto_batch(local_aws) -> MotoBatch:
    """The env's job queue and job definition in the test's moto (jobs are never executed)."""
    return MotoBatch(local_aws)

"""The phase driver end to end in local mode: moto on 127.0.0.1, a fake IMDSv2, the tiny model on CPU.

Each test stages what ``invoke launch`` leaves behind (data under
``cached-datasets/training-data/``, the resolved run spec in ``user-configs/``,
the state file in ``initialization`` with the instance id, a moto instance),
then runs the trainer like the instance would and checks what a user sees in S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common import runspec
from common.exitcodes import ExitCode
from common.layout import RunPaths
from common.state_doc import new_state
from common.state_store import StateStore
from common.timeutil import iso, utc_now
from localaws.imds import FakeIMDS
from schemas import validate
from trainer.context import Deps, RunOptions
from trainer.errors import CLIENT_CONFIG
from trainer.run import run

ROOT = Path(__file__).resolve().parents[2]
ENV = "dev"
RUN_ID = "20261125-140502"
DATA_PREFIX = "cached-datasets/training-data/"
PATHS = RunPaths(env=ENV, run_id=RUN_ID)
PROJECT_TAGS = [{"Key": "Project", "Value": "Chronos-Training"}, {"Key": "Environment", "Value": ENV}]


def spec_doc(**model: Any) -> dict[str, Any]:
    """A run spec on the synthetic data (covariates on), tiny model."""
    base = {
        "base": "tiny",
        "prediction_length": 24,
        "context_length": 128,
        "num_steps": 40,
        "batch_size": 32,
        "learning_rate": 0.001,
        "checkpoint_interval": 20,
        "seed": 7,
    }
    return {
        "env": ENV,
        "instance": {"types": ["g5.xlarge"], "market": "spot", "max_runtime": 60},
        "data": {"prefix": DATA_PREFIX, "past_covariates": ["temperature"], "known_covariates": ["promo"]},
        "model": {**base, **model},
    }


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """The synthetic parquet dataset, generated once: (file, key under the data prefix)."""
    from trainer.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    files = generate_dataset(root, n_items=24, length=24 * 42, seed=0)
    return [(f, DATA_PREFIX + f.relative_to(root).as_posix()) for f in files]


@dataclass
class Staged:
    """A launched run as the instance finds it."""

    s3: Any
    ec2: Any
    bucket: str
    instance_id: str
    imds: FakeIMDS
    store: StateStore
    endpoint_url: str
    workdir: Path

    def options(self, **overrides: Any) -> RunOptions:
        base = dict(
            bucket=self.bucket,
            env=ENV,
            run_id=RUN_ID,
            device="cpu",
            local=True,
            imds_endpoint=self.imds.url,
            workdir=self.workdir,
            endpoint_url=self.endpoint_url,
            heartbeat_interval_s=1.0,
            state_interval_s=0.5,
            spot_interval_s=0.5,
        )
        return RunOptions(**{**base, **overrides})

    def relaunch(self) -> None:
        """What launch does for a resume: re-acquire the lock for the same run id."""
        acquire(self.store, self.instance_id)

    def json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def objects(self, prefix: str = "") -> dict[str, Any]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o for p in pages for o in p.get("Contents", [])}

    def instance_state(self) -> str:
        resp = self.ec2.describe_instances(InstanceIds=[self.instance_id])
        return resp["Reservations"][0]["Instances"][0]["State"]["Name"]


def acquire(store: StateStore, instance_id: str) -> None:
    store.acquire(
        new_state(env=ENV, run_id=RUN_ID, market="spot", total_steps=1, now=iso(utc_now()), local=True)
    )
    store.set_instance(
        RUN_ID,
        instance_id=instance_id,
        instance_type="g5.xlarge",
        availability_zone="us-east-1a",
        market="spot",
    )


def stage(
    local_aws: Any,
    bucket: str,
    files: list[tuple[Path, str]],
    workdir: Path,
    imds_factory: Callable,
    doc: dict[str, Any],
) -> Staged:
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    for path, key in files:
        s3.upload_file(str(path), bucket, key)
    spec = runspec.from_dict(doc).resolved(local=True)
    s3.put_object(
        Bucket=bucket, Key=PATHS.user_configs + "run-spec.json", Body=json.dumps(spec.to_dict()).encode()
    )
    image = "ami-03cf127a"  # one of moto's built-in AMIs (describe_images takes seconds)
    instance_id = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": PROJECT_TAGS}],
    )["Instances"][0]["InstanceId"]
    store = StateStore(s3, bucket, ENV)
    acquire(store, instance_id)
    return Staged(
        s3=s3,
        ec2=ec2,
        bucket=bucket,
        instance_id=instance_id,
        imds=imds_factory(instance_id),
        store=store,
        endpoint_url=local_aws.endpoint_url,
        workdir=workdir,
    )


@pytest.fixture
def imds_factory() -> Iterator[Callable[[str], FakeIMDS]]:
    started: list[FakeIMDS] = []

    def make(instance_id: str) -> FakeIMDS:
        server = FakeIMDS(instance_id=instance_id).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def staged_factory(
    local_aws: Any, bucket: str, synthetic_files: list, tmp_path: Path, imds_factory: Callable
) -> Callable[..., Staged]:
    def make(**model: Any) -> Staged:
        return stage(local_aws, bucket, synthetic_files, tmp_path / "work", imds_factory, spec_doc(**model))

    return make


class StateWrites:
    """Every successful PUT the client makes (keys in order), and the statuses written to the state file."""

    def __init__(self, s3: Any) -> None:
        self.statuses: list[str] = []
        self.puts: list[str] = []
        s3.meta.events.register("before-parameter-build.s3.PutObject", self._before)
        s3.meta.events.register("after-call.s3.PutObject", self._after)

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["test_put"] = (params.get("Key", ""), params.get("Body"))

    def _after(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        key, body = context.get("test_put", ("", None))
        if http_response.status_code != 200:
            return  # e.g. a 412 of a conditional state write that lost a race
        self.puts.append(key)
        if key.endswith("system-state.json") and isinstance(body, bytes | bytearray):
            status = json.loads(body)["status"]
            if not self.statuses or self.statuses[-1] != status:
                self.statuses.append(status)


def trainer_client(local_aws: Any, service: str) -> Any:
    from common.aws import client

    return client(local_aws.session(), service, endpoint_url=local_aws.endpoint_url, config=CLIENT_CONFIG)


# -- happy path -----------------------------------------------------------------------------------


def download_model(staged: Staged, dest: Path) -> Path:
    for key in staged.objects(PATHS.models):
        target = dest / key[len(PATHS.models) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.s3.download_file(staged.bucket, key, str(target))
    return dest


@pytest.mark.slow
def test_happy_path_every_phase_succeeds_and_model_beats_seasonal_naive(
    local_aws: Any, staged_factory: Callable, tmp_path: Path
):
    from trainer.synthetic import TINY_TRAINING

    steps = int(TINY_TRAINING["num_steps"])
    staged = staged_factory(
        num_steps=steps,
        batch_size=int(TINY_TRAINING["batch_size"]),
        learning_rate=float(TINY_TRAINING["learning_rate"]),
        checkpoint_interval=steps // 3,
    )
    s3 = trainer_client(local_aws, "s3")
    writes = StateWrites(s3)
    started = time.monotonic()
    code = run(staged.options(), Deps(s3=s3))
    elapsed = time.monotonic() - started
    assert code == 0, (staged.workdir / "trainer.log").read_text()[-3000:]

    # training.json: every phase succeeded, the state went through every status
    training = validate("training", staged.json(PATHS.training_log))
    assert training["status"] == "results_sync"
    assert (
        training["completion_status"] == "normal" and training["exit_code"] == 0 and training["errors"] == []
    )
    assert [p["name"] for p in training["phases"]] == [
        "preflight",
        "data_sync",
        "training",
        "evaluation",
        "results_sync",
        "finalize",
    ]
    assert all(p["status"] == "succeeded" for p in training["phases"]), training["phases"]
    assert training["phases"][0]["details"]["gpu_check"] == "skipped"
    assert writes.statuses == ["initialization", "data_sync", "training", "results_sync", "cleanup"]
    assert writes.puts.count(PATHS.state) > len(writes.statuses) + 1  # heartbeats too
    assert [s for s, _ in training["loss_curve"]] == list(range(1, steps + 1))
    assert training["resumed_from_step"] is None
    assert training["instance"]["instance_id"] == staged.instance_id and training["instance"]["local"] is True
    assert training["instance"]["image_id"] == "ami-0123456789abcdef0"  # IMDS ami-id: the AMI it booted

    # every artifact is there and schema-valid; sha256 in training.json matches S3
    keys = staged.objects()
    expected = [
        PATHS.models + "config.json",
        PATHS.models + "model.safetensors",
        PATHS.model_metadata,
        PATHS.prefix + "evaluation/forecasts.json",
        PATHS.user_configs + "run-spec.json",
        PATHS.success,
        PATHS.training_log,
        PATHS.cleanup_status,
        PATHS.logs + "trainer.log",
    ]
    expected += [
        f"{PATHS.checkpoints}checkpoint-{n}/trainer_state.json" for n in (steps // 3, 2 * steps // 3, steps)
    ]
    assert not [k for k in expected if k not in keys]
    assert PATHS.failed_upload not in keys
    validate("model-metadata", staged.json(PATHS.model_metadata))
    validate("sentinel", staged.json(PATHS.success))
    cleanup = validate("cleanup-status", staged.json(PATHS.cleanup_status))
    assert cleanup["written_by"] == "instance" and cleanup["state_file_removed"] is True
    import hashlib

    for artifact in training["artifacts"]:
        body = staged.s3.get_object(Bucket=staged.bucket, Key=artifact["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == artifact["sha256"], artifact["key"]

    # _SUCCESS is written last, by order of writes and by LastModified
    run_puts = [k for k in writes.puts if k.startswith(PATHS.prefix)]
    assert run_puts[-1] == PATHS.success
    assert writes.puts.index(PATHS.training_log) < writes.puts.index(PATHS.success)
    newest = max(o["LastModified"] for k, o in keys.items() if k.startswith(PATHS.prefix))
    assert keys[PATHS.success]["LastModified"] == newest

    # the model is better than seasonal naive, and loads from S3
    metrics = training["metrics"]
    assert metrics["model_wql"] < metrics["baseline_wql"], metrics
    from chronos.chronos2 import Chronos2Pipeline

    Chronos2Pipeline.from_pretrained(str(download_model(staged, tmp_path / "model")))
    forecasts = staged.json(PATHS.prefix + "evaluation/forecasts.json")
    assert 1 <= len(forecasts["items"]) <= 8
    item = forecasts["items"][0]
    assert len(item["context_values"]) == len(item["context_timestamps"]) == 72
    assert (
        len(item["median"])
        == len(item["q10"])
        == len(item["actual"])
        == len(item["horizon_timestamps"])
        == 24
    )
    assert item["horizon_timestamps"][-1] == "2024-02-11T23:00:00Z"  # the data's last hour

    # the lock is released and the instance terminated itself
    assert staged.store.read() is None
    assert staged.instance_state() in ("shutting-down", "terminated")
    print(f"\nhappy path: {elapsed:.1f} s; metrics {metrics}")


def _trainer_cli(staged: Any, *, device: str) -> list[str]:
    """``python -m trainer run`` for the staged run, as the local instance starts it."""
    return [
        sys.executable,
        "-m",
        "trainer",
        "run",
        "--bucket",
        staged.bucket,
        "--env",
        ENV,
        "--run-id",
        RUN_ID,
        "--region",
        "us-east-1",
        "--device",
        device,
        "--local",
        "--imds-endpoint",
        staged.imds.url,
        "--workdir",
        str(staged.workdir),
    ]


# -- failures and stops ------------------------------------------------------------------------------


def test_gpu_preflight_on_this_cpu_machine_fails_uploads_logs_and_terminates(
    local_aws: Any, staged_factory: Callable
):
    staged = staged_factory()
    cmd = _trainer_cli(staged, device="cuda")
    done = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **local_aws.env()}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr[-3000:]
    training = validate("training", staged.json(PATHS.training_log))
    assert training["status"] == "failed" and training["completion_status"] == "failed"
    [record] = [e for e in training["errors"] if e["error_class"] == "terminal"]
    assert record["component"] == "preflight" and record["message"].startswith("no GPU")
    assert record["severity"] == "critical"
    assert [(p["name"], p["status"]) for p in training["phases"]][0] == ("preflight", "failed")
    assert validate("sentinel", staged.json(PATHS.success))["completion_status"] == "failed"
    log_text = (
        staged.s3.get_object(Bucket=staged.bucket, Key=PATHS.logs + "trainer.log")["Body"].read().decode()
    )
    assert "no GPU" in log_text and "STATE: TERMINATING" in log_text
    validate("cleanup-status", staged.json(PATHS.cleanup_status))
    assert staged.store.read() is None
    assert staged.instance_state() in ("shutting-down", "terminated")
    assert not any(k.startswith(PATHS.models) for k in staged.objects())


def start_in_thread(staged: Staged, **options: Any) -> tuple[Any, threading.Thread, dict[str, int]]:
    from trainer.run import Driver, run_driver

    driver = Driver(staged.options(**options), Deps())
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(code=run_driver(driver)), daemon=True)
    thread.start()
    return driver, thread, result


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def notice_to_checkpoint_s(trainer_log: Path, staged: Staged, step: int) -> float:
    """Seconds from the watcher's STOP REQUESTED line (spot notice) to checkpoint ``step``'s
    trainer_state.json landing in S3 (its LastModified), both stamped by the run (second precision)."""
    from common.timeutil import parse_iso

    [line] = [x for x in trainer_log.read_text().splitlines() if "STOP REQUESTED" in x and "spot" in x]
    key = f"{PATHS.checkpoints}checkpoint-{step}/trainer_state.json"
    landed = staged.objects(PATHS.checkpoints)[key]["LastModified"]
    return (landed - parse_iso(line.split()[0])).total_seconds()


def checkpoint_steps(staged: Staged) -> list[int]:
    return sorted(
        int(k.split("/checkpoint-")[1].split("/")[0])
        for k in staged.objects(PATHS.checkpoints)
        if k.endswith("/trainer_state.json")
    )


@pytest.mark.slow
def test_spot_notice_checkpoints_within_seconds_and_a_relaunch_resumes_at_that_step(
    local_aws: Any, staged_factory: Callable, imds_factory: Callable, tmp_path: Path
):
    staged = staged_factory(num_steps=60, checkpoint_interval=50)
    driver, thread, result = start_in_thread(staged, step_delay_s=0.1)
    wait_for(lambda: driver.progress.step >= 8, 240, "training to reach step 8")
    staged.imds.set_spot_notice()
    saved = wait_for(lambda: checkpoint_steps(staged), 60, "a checkpoint in S3")
    thread.join(120)
    assert result["code"] == ExitCode.INTERRUPTED
    # the latency from the run's own timestamps (the watcher's log line, S3's LastModified), not the test's
    to_s3 = notice_to_checkpoint_s(driver.ctx.opts.work / "trainer.log", staged, saved[0])
    assert to_s3 < 15, f"checkpoint reached S3 {to_s3:.1f} s after the notice"
    [step] = saved
    assert 8 <= step < 50
    training = validate("training", staged.json(PATHS.training_log))
    assert training["completion_status"] == "interrupted" and training["status"] == "interrupted"
    assert {p["name"]: p["status"] for p in training["phases"]}["training"] == "interrupted"
    stop = {p["name"]: p["details"] for p in training["phases"]}["training"]["stop"]
    assert stop["source"] == "spot" and stop["reason"].startswith("spot interruption notice: terminate at")
    assert validate("sentinel", staged.json(PATHS.success))["completion_status"] == "interrupted"
    assert staged.store.read() is None and staged.instance_state() in ("shutting-down", "terminated")

    # the control plane relaunches the same run id on a new instance (a fresh disk)
    second = imds_factory(
        staged.ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")[
            "Instances"
        ][0]["InstanceId"]
    )
    acquire(staged.store, second.values["instance-id"])
    resumed = Staged(
        **{
            **staged.__dict__,
            "imds": second,
            "instance_id": second.values["instance-id"],
            "workdir": tmp_path / "second-instance",
        }
    )
    assert run(resumed.options(), Deps()) == 0
    training = validate("training", resumed.json(PATHS.training_log))
    assert training["completion_status"] == "normal" and training["resumed_from_step"] == step
    assert [s for s, _ in training["loss_curve"]] == list(range(1, 61))
    details = {p["name"]: p["details"] for p in training["phases"]}
    assert details["data_sync"]["restored_checkpoint_step"] == step
    assert details["data_sync"]["previous_attempt"] == "interrupted"
    assert details["training"]["final_step"] == 60 and details["training"]["start_step"] == step
    assert checkpoint_steps(resumed)[-1] == 60
    assert validate("sentinel", resumed.json(PATHS.success))["completion_status"] == "normal"
    print(f"\nspot notice -> checkpoint-{step} in S3 after {to_s3:.2f} s")


@pytest.mark.slow
def test_killed_from_outside_checkpoints_and_ends_killed(local_aws: Any, staged_factory: Callable):
    staged = staged_factory(num_steps=60, checkpoint_interval=50)
    driver, thread, result = start_in_thread(staged, step_delay_s=0.1)
    wait_for(lambda: driver.progress.step >= 5, 240, "training to reach step 5")
    staged.store.request_kill(RUN_ID, reason="killed by test")
    thread.join(120)
    assert result["code"] == ExitCode.KILLED
    training = validate("training", staged.json(PATHS.training_log))
    assert training["completion_status"] == "killed" and training["status"] == "killed"
    sentinel = validate("sentinel", staged.json(PATHS.success))
    assert sentinel["completion_status"] == "killed" and sentinel["exit_code"] == ExitCode.KILLED
    assert sentinel["status"] == "success" and sentinel["reason"] == "killed by test"
    steps = checkpoint_steps(staged)
    assert steps and steps[-1] < 60
    assert staged.store.read() is None and staged.instance_state() in ("shutting-down", "terminated")
    log_text = (
        staged.s3.get_object(Bucket=staged.bucket, Key=PATHS.logs + "trainer.log")["Body"].read().decode()
    )
    assert "killed by test" in log_text


class Faults:
    """Injects S3 errors with a ``before-call`` hook: a real error response, as botocore's Stubber."""

    def __init__(self, s3: Any, plan: list[tuple[str, str, str, int, int]]) -> None:
        self.plan = [list(p) for p in plan]  # (operation, substring of the request, code, status, times)
        self.injected = 0
        s3.meta.events.register("before-call.s3.*", self._maybe_fail)

    def _maybe_fail(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        where = params.get("url_path", "") + json.dumps(params.get("query_string", {}))
        for entry in self.plan:
            op, needle, code, status, times = entry
            if model.name == op and needle in where and times > 0:
                entry[4] -= 1
                self.injected += 1
                response = AWSResponse(url="http://127.0.0.1/", status_code=status, headers={}, raw=None)
                return response, {
                    "Error": {"Code": code, "Message": f"injected {code}"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                }
        return None


@pytest.mark.slow
def test_throttling_and_5xx_on_s3_are_retried_and_the_run_succeeds(
    local_aws: Any, staged_factory: Callable, monkeypatch: pytest.MonkeyPatch
):
    # The faults are injected into boto3's calls; the data sync's s5cmd engine makes its own
    # requests, so this run takes the boto3 path for the data (the engine's fallback) to retry
    # the injected SlowDowns on the parquet GETs.
    monkeypatch.setattr("trainer.fast_sync.s5cmd_binary", lambda: None)
    staged = staged_factory(num_steps=20, checkpoint_interval=10)
    s3 = trainer_client(local_aws, "s3")
    faults = Faults(
        s3,
        [
            ("ListObjectsV2", "training-data", "SlowDown", 503, 1),
            ("GetObject", ".parquet", "SlowDown", 503, 2),
            ("GetObject", "run-spec.json", "InternalError", 500, 1),
            ("PutObject", "/models/model.safetensors", "InternalError", 500, 1),
            ("PutObject", "training.json", "ServiceUnavailable", 503, 1),
        ],
    )
    sleeps: list[float] = []
    assert run(staged.options(), Deps(s3=s3, sleep=sleeps.append)) == 0
    assert faults.injected == 6
    training = validate("training", staged.json(PATHS.training_log))
    retried = [e for e in training["errors"] if e["error_class"] == "retriable"]
    assert training["completion_status"] == "normal"
    assert len(retried) == 5  # the training.json PUT's own retry happened after it was serialized
    assert all(e["retry_count"] >= 1 and e["max_retries"] == 6 for e in retried)
    assert {e["component"] for e in retried} >= {"data_sync", "run_spec", "results_sync"}
    assert any("SlowDown" in e["message"] and ".parquet" in e["message"] for e in retried)
    assert len(sleeps) == 6 and set(sleeps) <= {1, 2}  # 1 s before a first retry, 2 s before a second
    data_sync = next(p for p in training["phases"] if p["name"] == "data_sync")
    assert data_sync["details"]["verification"]["engine"] == "boto3"


# -- access denied (IAM enforced on a moto server of its own) ------------------------------------------

INSTANCE_POLICY_WITHOUT_DATA = {  # the instance may use its env prefix, but not read cached-datasets/
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": "arn:aws:s3:::{bucket}/dev/*",
        },
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::{bucket}"},
        {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    ],
}


@pytest.fixture
def enforcing_aws(moto_server: Any) -> Iterator[Any]:
    """A second moto server whose IAM enforcement the test switches on (and always off again)."""
    import requests
    from moto.server import ThreadedMotoServer

    from localaws.moto import LocalAWS

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = LocalAWS(endpoint_url=f"http://{host}:{port}")
    aws.reset()
    try:
        yield aws
    finally:
        requests.post(f"{aws.endpoint_url}/moto-api/reset-auth", data=b"inf", timeout=10)
        aws.reset()
        server.stop()
        moto_server.reset()


def iam_user(aws: Any, name: str, policy: dict[str, Any]) -> Any:
    iam = aws.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return aws.session(key["AccessKeyId"], key["SecretAccessKey"])


def test_access_denied_on_the_data_is_terminal_and_names_key_and_permission(
    enforcing_aws: Any, synthetic_files: list, tmp_path: Path, imds_factory: Callable
):
    import requests

    aws = enforcing_aws
    bucket = "chronos-training-dev-123456789012-us-east-1"
    aws.client("s3").create_bucket(Bucket=bucket)
    admin = iam_user(
        aws,
        "admin",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
    )
    policy = json.loads(json.dumps(INSTANCE_POLICY_WITHOUT_DATA).replace("{bucket}", bucket))
    instance = iam_user(aws, "instance", policy)
    staged = stage(aws, bucket, synthetic_files, tmp_path / "work", imds_factory, spec_doc())
    requests.post(f"{aws.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10)  # enforcement on

    from common.aws import client

    s3 = client(instance, "s3", endpoint_url=aws.endpoint_url, config=CLIENT_CONFIG)
    ec2 = client(instance, "ec2", endpoint_url=aws.endpoint_url, config=CLIENT_CONFIG)
    sleeps: list[float] = []
    code = run(staged.options(endpoint_url=aws.endpoint_url), Deps(s3=s3, ec2=ec2, sleep=sleeps.append))
    assert code == 1
    admin_s3 = client(admin, "s3", endpoint_url=aws.endpoint_url)
    training = validate(
        "training", json.loads(admin_s3.get_object(Bucket=bucket, Key=PATHS.training_log)["Body"].read())
    )
    [record] = [e for e in training["errors"] if e["error_class"] == "terminal"]
    assert record["component"] == "data_sync" and record["retry_count"] == 0 and sleeps == []
    assert "s3:GetObject" in record["message"]
    assert f"s3://{bucket}/cached-datasets/training-data/2024/" in record["message"]
    assert ".parquet" in record["message"]
    assert training["status"] == "failed" and training["completion_status"] == "failed"
    keys = {o["Key"] for o in admin_s3.list_objects_v2(Bucket=bucket, Prefix="dev/")["Contents"]}
    assert {PATHS.logs + "trainer.log", PATHS.cleanup_status, PATHS.success} <= keys
    assert PATHS.state not in keys
    state = client(admin, "ec2", endpoint_url=aws.endpoint_url).describe_instances(
        InstanceIds=[staged.instance_id]
    )
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")


@pytest.mark.slow
def test_sigterm_to_the_cli_checkpoints_and_ends_interrupted(local_aws: Any, staged_factory: Callable):
    """What the OS (or the local instance after a terminate) does: SIGTERM, a grace period, then gone."""
    import signal

    staged = staged_factory(num_steps=400, checkpoint_interval=400)
    cmd = _trainer_cli(staged, device="cpu")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **local_aws.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = staged.workdir / "progress.jsonl"
    wait_for(lambda: progress.exists() and '"event": "step"' in progress.read_text(), 240, "a training step")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr[-3000:]
    training = validate("training", staged.json(PATHS.training_log))
    assert training["completion_status"] == "interrupted"
    assert checkpoint_steps(staged) and checkpoint_steps(staged)[-1] < 400
    assert "SIGTERM" in stderr
    assert staged.store.read() is None and staged.instance_state() in ("shutting-down", "terminated")


def test_invalid_data_is_terminal_and_names_file_and_item(
    local_aws: Any, bucket: str, tmp_path: Path, imds_factory: Callable
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"
    stamps = [f"2024-01-01T{h:02d}:00:00" for h in range(24)] * 4
    stamps[5] = stamps[4]  # a duplicate timestamp in item_000
    table = pa.table(
        {
            "item_id": ["item_000"] * 96,
            "timestamp": pa.array(stamps).cast(pa.timestamp("s")),
            "target": [float(v) for v in range(96)],
            "temperature": [1.0] * 96,
            "promo": [0.0] * 96,
        }
    )
    pq.write_table(table, bad)
    staged = stage(
        local_aws,
        bucket,
        [(bad, DATA_PREFIX + "2024/01/bad.parquet")],
        tmp_path / "work",
        imds_factory,
        spec_doc(),
    )
    assert run(staged.options(), Deps()) == 1
    training = validate("training", staged.json(PATHS.training_log))
    [record] = [e for e in training["errors"] if e["error_class"] == "terminal"]
    assert record["component"] == "data_sync" and "item_000" in record["message"]
    assert "bad.parquet" in record["message"] and record["details"]["item"] == "item_000"
    assert staged.store.read() is None


def test_the_driver_and_the_training_child_agree_on_folders(tmp_path: Path):
    from trainer.train_config import TrainConfig
    from trainer.training import child_config, local_checkpoints

    spec = runspec.from_dict(spec_doc()).resolved(local=True)
    config = child_config(spec, workdir=tmp_path, device="cpu", base_model="tiny", inputs=tmp_path / "i.npz")
    train = TrainConfig.from_dict(config["train"])
    assert train.checkpoints_dir == local_checkpoints(tmp_path)
    assert train.num_steps == spec.model.num_steps and train.learning_rate == spec.model.learning_rate


class Monotonic:
    """A monotonic clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_max_runtime_counts_from_launch_and_keeps_a_margin_to_finalize(local_aws: Any, bucket: str, clock):
    from datetime import timedelta

    from trainer.run import Driver

    s3 = local_aws.client("s3")
    store = StateStore(s3, bucket, ENV)
    launched = clock.now - timedelta(minutes=10)
    store.acquire(new_state(env=ENV, run_id=RUN_ID, market="spot", total_steps=1, now=iso(launched)))
    monotonic = Monotonic()
    driver = Driver(
        RunOptions(bucket=bucket, env=ENV, run_id=RUN_ID, endpoint_url=local_aws.endpoint_url),
        Deps(s3=s3, clock=clock, monotonic=monotonic),
    )
    driver.ctx.spec = runspec.from_dict(spec_doc()).resolved(local=True)  # max_runtime 60 min
    deadline, minutes = driver.deadline()
    assert (
        minutes == 60 and deadline == monotonic.now + 3600 - 300 - 600
    )  # 60 min - 5 min margin - 10 min gone
    clock.tick(60)  # a minute later the same launch leaves a minute less
    assert driver.deadline()[0] == monotonic.now + 3600 - 300 - 660


@pytest.mark.row("records-deadline-from-launch")
def test_a_run_without_a_readable_state_counts_max_runtime_from_its_launch_not_now(
    local_aws: Any, bucket: str, clock
):
    """Max runtime counts from the launch record, else the run id's second; never from now (a
    late boot or a restart would get a fresh max runtime and bill past it)."""
    from trainer.run import Driver

    monotonic = Monotonic()
    s3 = local_aws.client("s3")
    driver = Driver(
        RunOptions(bucket=bucket, env=ENV, run_id=RUN_ID, endpoint_url=local_aws.endpoint_url),
        Deps(s3=s3, clock=clock, monotonic=monotonic),
    )
    driver.ctx.spec = runspec.from_dict(spec_doc()).resolved(local=True)
    clock.tick(600)  # the instance boots 10 minutes after launch
    # no state file, no launch record: from the run id's second (14:05:02), not now
    assert driver.deadline() == (monotonic.now + 3600 - 300 - 600, 60)
    record = {"run_id": RUN_ID, "launched_at": "2026-11-25T14:06:02Z"}
    s3.put_object(Bucket=bucket, Key=PATHS.launch_record, Body=json.dumps(record).encode())
    assert driver.deadline() == (monotonic.now + 3600 - 300 - 540, 60)  # from the launch record

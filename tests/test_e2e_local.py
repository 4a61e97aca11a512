"""Local end to end: the real trainer in a local "instance", driven through ``invoke`` as a user would.

Each test provisions ``dev`` in the session's moto server with the real local
provisioner, stages the synthetic dataset and runs ``invoke launch / monitor /
kill / verify / fetch / report --local`` as subprocesses. IAM is enforced (the
control plane signs as the operator, the instance as its role) and every AWS call
of both sides is recorded and audited against the caller's policies as AWS would
evaluate them: each test ends by proving AWS would have refused none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import layout
from common.exitcodes import ExitCode
from common.state_store import StateStore
from control import local_audit
from control.local_backend import LocalBackend
from control.local_instance import terminate_processes
from control.local_recovery import stop_all
from control.localdir import PROJECT_ROOT, LocalDir, read_json, write_json
from control.localenv import provision, stage_dataset
from localaws import identities as local_identities
from localaws.audit import ENV_VAR as AUDIT_VAR
from reliability import record as reliability_record
from reliability import secrets_scan, security_probe
from schemas import validate

pytestmark = pytest.mark.slow

INVOKE = str(Path(sys.executable).with_name("invoke"))
SHORT_RUN = """\
[instance]
max_runtime = "20m"
{instance}
[model]
base = "tiny"
num_steps = {steps}
batch_size = 16
checkpoint_interval = {every}
"""


@pytest.fixture
def world(tmp_path, local_aws, monkeypatch):
    """``dev`` provisioned in a clean local AWS, a ``.local/`` folder for it, and an ``invoke`` runner."""
    from trainer.synthetic import generate_dataset

    local_dir = LocalDir(tmp_path / ".local")
    write_json(local_dir.aws_file, {"endpoint_url": local_aws.endpoint_url, "pid": None})
    monkeypatch.setenv("CHRONOS_LOCAL_DIR", str(local_dir.root))
    backend = LocalBackend.open(local_dir)
    outputs = provision(backend, "dev")
    data = tmp_path / "data"
    generate_dataset(data)
    stage_dataset(backend.clients().s3, outputs["bucket"], data)

    calls = tmp_path / "audit" / "calls.jsonl"

    def invoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "CHRONOS_LOCAL_DIR": str(local_dir.root),
            "COLUMNS": "200",
            AUDIT_VAR: str(calls),
        }
        return subprocess.run(
            [INVOKE, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    def spec(name: str, steps: int, every: int, instance: str = "") -> str:
        path = tmp_path / f"{name}.toml"
        path.write_text(SHORT_RUN.format(steps=steps, every=every, instance=instance))
        return str(path)

    yield {
        "invoke": invoke,
        "spec": spec,
        "s3": local_aws.client("s3"),
        "ec2": local_aws.client("ec2"),
        "bucket": outputs["bucket"],
        "local_dir": local_dir,
        "local_aws": local_aws,
        "runs": tmp_path / "runs",
        "audit": lambda: local_audit.audit(local_dir, calls),
        "calls": calls,
    }
    stop_all(local_dir)  # the recovery pumps first: they would relaunch what is stopped next
    for record in local_dir.instance_records():
        terminate_processes(record, grace_s=5.0)


def _launched(proc: subprocess.CompletedProcess) -> tuple[str, str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    words = proc.stdout.split()
    run_id = words[words.index("run") + 1]
    instance_id = words[words.index("on") + 1]
    layout.parse_run_id(run_id)
    return run_id, instance_id


def _aws_would_allow_every_call(world) -> object:
    """The run's audit: both sides made calls, and AWS would have refused none of them."""
    report = world["audit"]()
    assert report.ok, report.summary()
    principals = set(report.calls_by_principal)
    assert any(p.startswith("user/chronos-dev-operator") for p in principals), principals
    assert any(p.startswith("assumed-role/chronos-dev-instance/") for p in principals), principals
    return report


def _instance_state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.row("no-secrets-in-run-outputs")
@pytest.mark.row("instance-listens-on-no-port")
@pytest.mark.row("imdsv2-required-at-launch")
def test_launch_monitor_verify_fetch_then_the_next_launch_and_demo(world):
    invoke, s3, ec2, bucket = world["invoke"], world["s3"], world["ec2"], world["bucket"]
    probe = security_probe.InstanceProbe(world["local_dir"]).start()  # both runs' instance trees
    first, instance = _launched(
        invoke("launch", "--env=dev", "--local", f"--spec={world['spec']('a', 40, 20)}")
    )
    assert _instance_state(ec2, instance) in ("pending", "running")

    # A second launch while the first is active is refused with the clear message, creating nothing.
    instances_before = {
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    refused = invoke("launch", "--env=dev", "--local")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"a run is already active in env 'dev': {first} (" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert {
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    } == instances_before

    watched = invoke("monitor", "--env=dev", "--local", "--follow", "--interval=0.5", "--json")
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr
    assert '"outcome": "succeeded"' in watched.stdout
    assert '"status": "training"' in watched.stdout  # the live view saw the training phase

    verified = invoke("verify", "--env=dev", "--local")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "clean" in verified.stdout
    assert _instance_state(ec2, instance) == "terminated"
    assert StateStore(s3, bucket, "dev").read() is None

    fetched = invoke("fetch", first, "--env=dev", "--local", f"--dest={world['runs']}")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    run_dir = world["runs"] / "dev" / first
    for rel, kind in (
        ("logs/training.json", "training"),
        ("logs/cleanup_status.json", "cleanup-status"),
        ("model_metadata.json", "model-metadata"),
        ("_SUCCESS", "sentinel"),
    ):
        validate(kind, json.loads((run_dir / rel).read_text()), source=rel)
    training = json.loads((run_dir / "logs/training.json").read_text())
    assert training["completion_status"] == "normal" and training["exit_code"] == 0
    assert {"model_wql", "baseline_wql"} <= set(training["metrics"])
    assert (run_dir / "models").is_dir() and (run_dir / "evaluation/forecasts.json").exists()
    assert (run_dir / "user-configs/run-spec.json").exists()
    assert not (run_dir / "checkpoints").exists()  # large; only with --checkpoints

    reported = invoke("report", first, "--env=dev", "--local", f"--dest={world['runs']}")
    assert reported.returncode == 0, reported.stdout + reported.stderr
    for name in ("index.html", "loss.png", "forecasts.png", "phases.png", "cost.png"):
        assert (run_dir / "report" / name).stat().st_size > 0, name

    # Once the first run has ended, the next launch succeeds: here the one `make demo` makes
    # (`invoke demo` on this local AWS: provisioning and staging are idempotent, the run is real).
    time.sleep(1.0)  # run ids have one-second resolution
    demo = invoke("demo", "--steps=4", f"--dest={world['runs']}")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr
    for expected in (
        "local AWS already running",
        "env dev provisioned",
        "launched run",
        "succeeded",
        "verify: clean",
        "fetched",
        "test WQL over 3 windows: fine-tuned",  # the three models on the same backtest windows
        "zero-shot (base)",
        "report:",
    ):
        assert expected in demo.stdout, expected
    second = demo.stdout.split("launched run ", 1)[1].split()[0]
    assert (world["runs"] / "dev" / second / "report" / "forecasts.png").exists()
    history = invoke("runs", "--env=dev", "--local", "--json")
    statuses = {r["run_id"]: r["status"] for r in json.loads(history.stdout)}
    assert statuses == {first: "succeeded", second: "succeeded"}
    assert "IAM audit:" in demo.stdout and " 0 findings." in demo.stdout
    _aws_would_allow_every_call(world)
    _security_properties(world, probe.stop())


def _security_properties(world, seen: security_probe.ProbeReport) -> None:
    """The security rows of both runs: no listening port, IMDSv2 on every launch, no secret written."""
    assert not seen.errors, seen.errors
    assert len(seen.instances) == 2 and seen.training_samples > 0, seen  # sampled while training
    assert not seen.listeners, "the instance listens:\n" + "\n".join(map(str, seen.listeners))
    reliability_record.note(
        "instance-listens-on-no-port", f"{seen.samples} samples of {len(seen.processes_seen)} processes"
    )

    logs = [world["calls"], *sorted((world["local_dir"].root / "audit").glob("*.jsonl"))]  # the demo's own
    calls = [c for log in logs for c in security_probe.audit_calls(log, "RunInstances")]
    launches = security_probe.run_instances_metadata(calls, world["ec2"])
    assert sum(not launch.dry_run for launch in launches) == 2, launches
    for launch in launches:
        assert launch.options.get("HttpTokens") == "required", launch
        assert launch.options.get("HttpEndpoint", "enabled") == "enabled", launch
        assert launch.options.get("HttpPutResponseHopLimit") == 1, launch

    # every secret value in play: each local identity's, and the role sessions the IMDS served
    ids = local_identities.load(world["local_dir"].identities_file)
    secrets, key_ids = security_probe.secrets_in_play(ids, seen.credentials)
    assert ids is not None and seen.credentials, "no identities or served credentials to look for"
    strict = secrets_scan.Scanner(secrets, key_ids=key_ids)  # artifacts have no reason to hold a key id
    report = strict.scan_bucket(world["s3"], world["bucket"])
    report.add(strict.scan_path(world["runs"], name="runs"))
    for instance_id in sorted(seen.instances):
        folder = world["local_dir"].instance_dir(instance_id)
        user_data = world["ec2"].describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        report.add(strict.scan_blob(user_data["UserData"]["Value"].encode(), f"{instance_id} user data"))
        for part in sorted(folder.iterdir()):
            # the console log also holds the host's (supervisor's) lines, which name the key id it served
            scanner = secrets_scan.Scanner(secrets) if part.name == "console.log" else strict
            report.add(scanner.scan_path(part, name=f"{instance_id}/{part.name}"))
    # the rest of .local/ (audit and recovery logs, stacks), but identities.json: the secrets' own store
    lenient = secrets_scan.Scanner(secrets)  # the audit logs name the key id of every call
    for part in sorted(world["local_dir"].root.iterdir()):
        if part.name not in ("identities.json", "instances"):
            report.add(lenient.scan_path(part, name=f".local/{part.name}"))
    assert report.files > 50 and not report.skipped, report.summary() + str(report.skipped)
    assert not report.findings, report.summary()
    reliability_record.note("no-secrets-in-run-outputs", f"{len(secrets)} secret values; {report.summary()}")


def test_kill_during_training(world):
    invoke, s3, ec2, bucket = world["invoke"], world["s3"], world["ec2"], world["bucket"]
    run_id, instance = _launched(
        invoke("launch", "--env=dev", "--local", f"--spec={world['spec']('long', 100000, 5)}")
    )
    store = StateStore(s3, bucket, "dev")
    paths = layout.RunPaths(env="dev", run_id=run_id)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until it trains and has uploaded a checkpoint
        snap = store.read()
        assert snap is not None, "the run ended by itself"
        if snap.doc["status"] == "training" and any(
            k.endswith("trainer_state.json") for k in _keys(s3, bucket, paths.checkpoints)
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the run did not reach a checkpoint in training")

    killed = invoke("kill", "--env=dev", "--local", "--grace=90")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert f"killed run {run_id} (was training)" in killed.stdout
    assert _instance_state(ec2, instance) == "terminated"
    assert store.read() is None

    assert any(k.endswith("trainer_state.json") for k in _keys(s3, bucket, paths.checkpoints)), (
        "checkpoint kept"
    )
    cleanup = json.loads(s3.get_object(Bucket=bucket, Key=paths.cleanup_status)["Body"].read())
    validate("cleanup-status", cleanup)
    training = json.loads(s3.get_object(Bucket=bucket, Key=paths.training_log)["Body"].read())
    assert training["completion_status"] == "killed"

    status = invoke("monitor", "--env=dev", "--local")
    assert status.returncode == ExitCode.KILLED and "killed" in status.stdout
    verified = invoke("verify", "--env=dev", "--local")
    assert verified.returncode == 0 and "clean" in verified.stdout

    again = invoke("kill", "--env=dev", "--local")  # idempotent
    assert again.returncode == 0 and "nothing to kill" in again.stdout
    record = read_json(world["local_dir"].instance_file(instance))
    assert record and record["ended_at"], "the local instance's processes ended"
    _aws_would_allow_every_call(world)


def test_spot_interruption_then_launch_resume_finishes_the_same_run(world):
    """A spot notice mid-training ends the run `interrupted`; `launch --resume` finishes it.

    ``max_recoveries = 0``: no automatic recovery, the lock is released and the user
    resumes by hand (automatic recovery: tests/test_e2e_recovery.py).
    """
    import requests

    invoke, s3, bucket = world["invoke"], world["s3"], world["bucket"]
    steps = 300  # the notice lands near step 80 (a checkpoint every 20), far from the end
    run_id, instance = _launched(
        invoke(
            "launch",
            "--env=dev",
            "--local",
            f"--spec={world['spec']('spot', steps, 20, 'max_recoveries = 0')}",
        )
    )
    paths = layout.RunPaths(env="dev", run_id=run_id)
    store = StateStore(s3, bucket, "dev")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # a checkpoint in S3, then the two-minute notice
        record = read_json(world["local_dir"].instance_file(instance)) or {}
        if record.get("imds_url") and any(
            k.endswith("trainer_state.json") for k in _keys(s3, bucket, paths.checkpoints)
        ):
            requests.post(record["imds_url"] + "/_fake/spot-notice", timeout=5)
            break
        time.sleep(0.3)
    else:
        pytest.fail("the run did not reach a checkpoint")
    while time.monotonic() < deadline and store.read() is not None:
        time.sleep(0.5)
    first = json.loads(s3.get_object(Bucket=bucket, Key=paths.training_log)["Body"].read())
    assert first["completion_status"] == "interrupted"
    stopped_at = first["loss_curve"][-1][0]
    assert stopped_at < steps
    status = invoke("monitor", "--env=dev", "--local")
    assert status.returncode == ExitCode.INTERRUPTED and f"--resume={run_id}" in status.stdout, status.stdout

    resumed = invoke("launch", "--env=dev", "--local", f"--resume={run_id}", "--market=on-demand")
    assert _launched(resumed)[0] == run_id
    done = invoke("monitor", "--env=dev", "--local", "--follow", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    body = s3.get_object(Bucket=bucket, Key=paths.training_log)["Body"].read()
    final = validate("training", json.loads(body))
    assert final["completion_status"] == "normal"
    assert 0 < final["resumed_from_step"] <= stopped_at
    assert final["loss_curve"][-1][0] == steps
    sentinel = json.loads(s3.get_object(Bucket=bucket, Key=paths.success)["Body"].read())
    assert sentinel["completion_status"] == "normal"
    assert invoke("verify", "--env=dev", "--local").returncode == 0

    # Spot first, on-demand after: the audit covers both markets' RunInstances...
    report = _aws_would_allow_every_call(world)
    assert report.calls_by_principal
    # ...and it would have caught the spot defect: without the spot-request statement, AWS
    # refuses the first launch's RunInstances on its spot-instances-request.
    _without_statement(world["local_aws"], "chronos-dev-operator", "RunSpotRequestsTaggedForThisEnv")
    broken = world["audit"]()
    assert not broken.ok
    assert any(
        f.action == "ec2:RunInstances" and "spot-instances-request" in f.resource for f in broken.findings
    ), broken.summary()


def _without_statement(aws, user: str, sid: str) -> None:
    """Make ``sid`` vanish from the operator policy attached to ``user`` (a new default version)."""
    iam = aws.client("iam")
    (attached,) = [
        p
        for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
        if "operator" in p["PolicyName"]
    ]
    arn = attached["PolicyArn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    kept = [s for s in doc["Statement"] if s.get("Sid") != sid]
    assert len(kept) == len(doc["Statement"]) - 1, f"{sid} not in the operator policy"
    for old in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not old["IsDefaultVersion"]:
            iam.delete_policy_version(PolicyArn=arn, VersionId=old["VersionId"])
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=json.dumps({**doc, "Statement": kept}), SetAsDefault=True
    )

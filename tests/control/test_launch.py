"""launch: the pure plan, --dry-run changing nothing, apply's tags, market, fallbacks and lock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from common import layout
from common.errors import AccessDeniedError, ConfigError, LockHeldError
from common.runspec import from_dict
from common.state_doc import Snapshot, new_state
from common.state_store import StateStore
from control.backend import Clients
from control.launch import InstanceOverrides, load_spec
from control.launch_apply import apply_launch
from control.launch_plan import plan_launch
from control.launch_world import gather_world
from control.placement import LaunchError, QuotaError

NOW = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path):
    """A small fixed code tree, so the bundle hash does not follow edits of the real one."""
    (tmp_path / "repo" / "trainer").mkdir(parents=True)
    (tmp_path / "repo" / "trainer" / "__init__.py").write_text("")
    return tmp_path / "repo"


@pytest.fixture
def world(backend, dev, repo):
    """The spec and what gather_world sees for it."""
    spec = from_dict({"instance": {"types": ["g5.xlarge", "g4dn.xlarge"]}})
    return spec, gather_world(backend, spec, env="dev", now=NOW, repo_root=repo)


def test_dry_run_prints_the_plan_and_changes_nothing(dev, cli, inventory):
    before = inventory()
    proc = cli("launch", "--env=dev", "--local", "--dry-run", "--market=on-demand", "--max-runtime=90m")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert inventory() == before
    out = proc.stdout
    assert "dry run: nothing was created or changed" in out
    for expected in (
        "g5.xlarge on-demand in us-east-1a",
        "90 min",
        "user data",
        "#!/bin/bash",
        "dev/system-state.json",
        "user-configs/run-spec.json",
        "cached-datasets/scripts/bundle-",
        "Project=Chronos-Training",
        "RunId=",
    ):
        assert expected in out, expected


def test_plan_is_pure_and_complete(world):
    spec, seen = world
    plan = plan_launch(spec, seen)
    assert plan == plan_launch(spec, seen)  # same inputs, same plan
    assert plan.run_id == "20261125-140502" and plan.local
    assert [(p.instance_type, p.availability_zone) for p in plan.placements][:2] == [
        ("g5.xlarge", "us-east-1a"),
        ("g5.xlarge", "us-east-1b"),
    ]
    assert plan.placements[-1].instance_type == "g4dn.xlarge"
    assert (
        plan.spec.model.base == "tiny-pretrained"
    )  # 'auto' resolved for local mode: the shipped pretrained tiny model
    request = plan.run_instances_request(plan.placements[0])
    assert request["InstanceMarketOptions"]["MarketType"] == "spot"
    assert request["LaunchTemplate"]["LaunchTemplateId"] == seen.outputs.launch_template_id
    tags = {t["Key"]: t["Value"] for t in request["TagSpecifications"][0]["Tags"]}
    assert (
        tags["Project"] == "Chronos-Training"
        and tags["RunId"] == plan.run_id
        and tags["Environment"] == "dev"
    )
    # spot: the request tags the spot request it creates (the template may not: on-demand has none)
    assert {s["ResourceType"] for s in request["TagSpecifications"]} == {
        "instance",
        "volume",
        "spot-instances-request",
    }
    assert "cpu" in plan.user_data  # local mode: the instance trains on CPU
    assert plan.state_doc["status"] == "initialization" and plan.state_doc["instance_id"] is None


def test_on_demand_has_no_market_options(world):
    spec, seen = world
    on_demand = load_spec(None, env="dev", overrides=InstanceOverrides(market="on-demand"))
    plan = plan_launch(on_demand, seen)
    request = plan.run_instances_request(plan.placements[0])
    assert "InstanceMarketOptions" not in request
    # Defect: tagging a spot request an on-demand launch does not create fails the launch on AWS.
    tagged = {s["ResourceType"] for s in request["TagSpecifications"]} | seen.template.tagged_types
    assert "spot-instances-request" not in tagged


def test_root_volume_gb_is_applied_on_the_amis_root_device(world):
    """Defect: instance.root_volume_gb was validated and suggested, and never applied."""
    spec, seen = world
    big = from_dict({"instance": {"root_volume_gb": 400}})
    plan = plan_launch(big, seen)
    (mapping,) = plan.run_instances_request(plan.placements[0])["BlockDeviceMappings"]
    assert mapping["DeviceName"] == seen.template.root_device == "/dev/sda1"
    assert mapping["Ebs"] == {
        "VolumeSize": 400,
        "VolumeType": "gp3",
        "Encrypted": True,
        "DeleteOnTermination": True,
    }
    assert plan.summary()["image"]["root_volume_gb"] == 400


def test_a_launch_aws_would_refuse_is_stopped_before_anything_is_created(world):
    from dataclasses import replace

    spec, seen = world
    other_root = replace(seen, template=replace(seen.template, root_device="/dev/xvda"))
    with pytest.raises(ConfigError, match="AWS would refuse this launch: block device /dev/sda1"):
        plan_launch(spec, other_root)


def test_quota_errors_stop_the_launch_and_name_the_quota(world, backend):
    """Defect: VcpuLimitExceeded and friends were taken for 'no capacity' and every AZ was tried."""
    spec, seen = world
    clients = backend.clients()
    for code in ("MaxSpotInstanceCountExceeded", "VcpuLimitExceeded"):
        ec2 = _Refusing(clients.ec2, {"g5.xlarge": code})
        with pytest.raises(QuotaError, match=f"quota \\({code}\\).*All G and VT Spot Instance Requests"):
            apply_launch(plan_launch(spec, seen), Clients(s3=clients.s3, ec2=ec2, sts=clients.sts))
        assert len(ec2.calls) == 1  # no other type or AZ tried: they count against the same quota
        assert StateStore(clients.s3, seen.outputs.bucket, "dev").read() is None
    on_demand = load_spec(None, env="dev", overrides=InstanceOverrides(market="on-demand"))
    ec2 = _Refusing(clients.ec2, {"g5.xlarge": "InstanceLimitExceeded"})
    with pytest.raises(QuotaError, match="Running On-Demand G and VT instances.*L-DB2E81BA"):
        apply_launch(plan_launch(on_demand, seen), Clients(s3=clients.s3, ec2=ec2, sts=clients.sts))


def test_the_launch_record_names_the_ami(world, backend):
    """The AMI resolves afresh at every `pulumi up`: a run records the one it booted."""
    spec, seen = world
    clients = backend.clients()
    result = apply_launch(plan_launch(spec, seen), clients, clock=lambda: NOW)
    key = layout.RunPaths(env="dev", run_id=result.run_id).user_configs + "launch-record.json"
    record = json.loads(clients.s3.get_object(Bucket=seen.outputs.bucket, Key=key)["Body"].read())
    image = clients.ec2.describe_images(ImageIds=[record["image_id"]])["Images"][0]
    assert record["image_name"] == image["Name"] and record["root_volume_gb"] == 100


def test_a_code_bundle_close_to_expiry_is_uploaded_again(world):
    from dataclasses import replace

    from infra.spec.bucket import CODE_BUNDLE_EXPIRY_DAYS

    spec, seen = world
    code_key = f"cached-datasets/scripts/bundle-{seen.code_sha256}.tar.gz"

    def upload_of(age_days):
        plan = plan_launch(spec, replace(seen, code_exists=True, code_age_days=age_days))
        (up,) = [u for u in plan.uploads if u.key == code_key]
        return up.skip_reason

    assert upload_of(1.0) == "unchanged code is already uploaded"
    assert upload_of(CODE_BUNDLE_EXPIRY_DAYS - 1.0) is None


def test_plan_refuses_without_data_and_with_a_lock(world):
    from dataclasses import replace

    spec, seen = world
    with pytest.raises(ConfigError, match="no training data"):
        plan_launch(spec, replace(seen, data_files=0))
    bad_az = from_dict({"instance": {"availability_zones": ["us-east-1z"]}})
    with pytest.raises(ConfigError, match=r"\$.instance.availability_zones"):
        plan_launch(bad_az, seen)
    held = Snapshot(
        new_state(
            env="dev", run_id="20261125-130000", market="spot", total_steps=5, now="2026-11-25T13:00:00Z"
        ),
        '"etag"',
    )
    with pytest.raises(
        LockHeldError, match="20261125-130000 \\(initialization since 2026-11-25T13:00:00Z\\)"
    ):
        plan_launch(spec, replace(seen, active=held))


def test_apply_uploads_launches_records_and_skips_unchanged_code(world, backend, repo):
    spec, seen = world
    clients = backend.clients()
    result = apply_launch(plan_launch(spec, seen), clients, clock=lambda: NOW)
    paths = layout.RunPaths(env="dev", run_id=result.run_id)
    state = StateStore(clients.s3, seen.outputs.bucket, "dev").read()
    assert state.doc["instance_id"] == result.instance_id and state.doc["availability_zone"] == "us-east-1a"
    stored = json.loads(
        clients.s3.get_object(Bucket=seen.outputs.bucket, Key=paths.user_configs + "run-spec.json")[
            "Body"
        ].read()
    )
    assert stored["model"]["base"] == "tiny-pretrained" and stored["model"]["learning_rate"] == 0.001
    inst = clients.ec2.describe_instances(InstanceIds=[result.instance_id])["Reservations"][0]["Instances"][0]
    assert inst["InstanceLifecycle"] == "spot"
    assert {"Key": "RunId", "Value": result.run_id} in inst["Tags"]
    assert any(k.startswith("cached-datasets/scripts/bundle-") for k in result.uploaded)

    # The next run with the same code does not upload the bundle again.
    StateStore(clients.s3, seen.outputs.bucket, "dev").release(result.run_id)
    later = gather_world(backend, spec, env="dev", now=NOW.replace(minute=6), repo_root=repo)
    assert later.code_exists
    again = apply_launch(plan_launch(spec, later), clients)
    assert again.skipped == (f"cached-datasets/scripts/bundle-{seen.code_sha256}.tar.gz",)


class _Refusing:
    """An EC2 client whose RunInstances is refused for some instance types."""

    def __init__(self, ec2, refuse: dict[str, str]) -> None:
        self.ec2, self.refuse, self.calls = ec2, refuse, []

    def run_instances(self, **kwargs):
        self.calls.append((kwargs["InstanceType"], kwargs["NetworkInterfaces"][0]["SubnetId"]))
        code = self.refuse.get(kwargs["InstanceType"])
        if code:
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "RunInstances")
        return self.ec2.run_instances(**kwargs)

    def __getattr__(self, name):
        return getattr(self.ec2, name)


def test_capacity_errors_fall_back_to_the_next_type_and_az(world, backend):
    spec, seen = world
    clients = backend.clients()
    ec2 = _Refusing(clients.ec2, {"g5.xlarge": "InsufficientInstanceCapacity"})
    result = apply_launch(plan_launch(spec, seen), Clients(s3=clients.s3, ec2=ec2, sts=clients.sts))
    assert result.instance_type == "g4dn.xlarge" and len(result.refused) == 3
    assert all("InsufficientInstanceCapacity" in r for r in result.refused)


def test_when_everything_is_refused_the_lock_is_released(world, backend):
    spec, seen = world
    clients = backend.clients()
    ec2 = _Refusing(
        clients.ec2, {"g5.xlarge": "InsufficientInstanceCapacity", "g4dn.xlarge": "SpotMaxPriceTooLow"}
    )
    with pytest.raises(LaunchError, match="no capacity.*the lock was released.*--market=spot-then-on-demand"):
        apply_launch(plan_launch(spec, seen), Clients(s3=clients.s3, ec2=ec2, sts=clients.sts))
    assert StateStore(clients.s3, seen.outputs.bucket, "dev").read() is None
    prefix = layout.RunPaths(env="dev", run_id=seen.run_id).prefix
    assert "Contents" not in clients.s3.list_objects_v2(Bucket=seen.outputs.bucket, Prefix=prefix)
    denied = _Refusing(clients.ec2, {"g5.xlarge": "UnauthorizedOperation"})
    with pytest.raises(AccessDeniedError, match="ec2:RunInstances"):
        apply_launch(plan_launch(spec, seen), Clients(s3=clients.s3, ec2=denied, sts=clients.sts))
    assert StateStore(clients.s3, seen.outputs.bucket, "dev").read() is None


def test_a_lock_taken_between_plan_and_apply_is_refused(world, backend):
    spec, seen = world
    clients = backend.clients()
    plan = plan_launch(spec, seen)
    apply_launch(plan, clients)
    with pytest.raises(LockHeldError):
        apply_launch(plan_launch(spec, seen), clients)


def test_an_aws_launch_needs_a_python_env_for_the_instance(world, cli, tmp_path):
    from dataclasses import replace

    spec, seen = world
    aws_world = replace(seen, local=False, device="cuda", python_env="missing")
    with pytest.raises(ConfigError, match="no Python environment for the instance.*invoke wheelhouse"):
        plan_launch(spec, aws_world)
    plan = plan_launch(spec, replace(aws_world, python_env="wheelhouse"))
    assert plan.summary()["python_env"] == "wheelhouse" and plan.spec.model.base == "amazon/chronos-2"

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo_pkg-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    first = cli("wheelhouse", "--env=dev", "--local", f"--dir={wheels}")
    assert first.returncode == 0 and "uploaded 1 file(s)" in first.stdout
    second = cli("wheelhouse", "--env=dev", "--local", f"--dir={wheels}")
    assert (
        second.returncode == 0
        and "uploaded 0 file(s)" in second.stdout
        and "1 already there" in second.stdout
    )

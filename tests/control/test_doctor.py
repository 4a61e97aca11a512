"""invoke doctor: the provisioned local env, each failure mode with its fix, the launch gate."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from common import layout
from common.errors import ConfigError
from common.runspec import from_dict
from control import doctor as doc
from control import parquet_footer
from control.backend import AwsBackend
from control.doctor import bucket as bucket_checks
from control.doctor import checks as doctor_checks
from control.doctor import quotas, run_doctor, run_instances, stack
from control.doctor.checks import DoctorFailedError, Status
from control.launch import launch
from control.localdir import write_json

SPEC = from_dict({})
DATA = layout.TRAINING_DATA


def by_name(report) -> dict[str, doctor_checks.Check]:
    return {c.name: c for c in report.checks}


def failed(report) -> dict[str, doctor_checks.Check]:
    return {c.name: c for c in report.failed}


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _error(code: str, message: str = "no", op: str = "RunInstances") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


# ------------------------------------------------------------ the good case


def test_the_provisioned_local_env_passes_or_is_honestly_unknown(backend, dev, monkeypatch):
    run_doctor(backend, "dev", SPEC)  # warm the imports, as a launch has them
    from botocore.client import BaseClient

    calls: list[str] = []  # what the doctor costs, counted (not timed: a loaded core times anything)
    real_call = BaseClient._make_api_call

    def counted(client, operation, params):
        calls.append(operation)
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)
    report = run_doctor(backend, "dev", SPEC)
    monkeypatch.undo()
    print(f"doctor made {len(calls)} AWS calls: {sorted((c, calls.count(c)) for c in set(calls))}")
    checks = by_name(report)
    assert report.ok, [c.to_dict() for c in report.failed]
    assert {c.status for c in report.checks} <= {Status.OK, Status.UNKNOWN}, report.to_dict()
    for c in report.checks:
        if c.status is Status.UNKNOWN:
            assert c.detail and "ok" not in c.detail.split()[:1], c  # always says why
    # moto implements no EC2 quota: unknown with the reason, never ok
    quota = checks["quota All G and VT Spot Instance Requests"]
    assert quota.status is Status.UNKNOWN and ("moto" in quota.detail or "not permitted" in quota.detail)
    assert checks["credentials"].detail.startswith("arn:aws:iam::")
    # granted by the operator policy (and, locally, by the moto-only allowance of ARN-scoped actions)
    assert checks["instance profile"].status is Status.OK, checks["instance profile"]
    for t in ("g5.xlarge", "g4dn.xlarge"):
        dry = [c for n, c in checks.items() if n.startswith(f"run-instances {t} spot")]
        assert dry and dry[0].status is Status.OK and "DryRunOperation" in dry[0].detail
    assert "footers of 3 sampled" in checks["training data"].detail
    assert 0 < len(calls) <= 40, calls  # a fixed handful of reads (23 measured), whatever the load


# --------------------------------------------------------- failure modes


def test_no_training_data(backend, dev, local_aws):
    s3 = local_aws.client("s3")
    for obj in s3.list_objects_v2(Bucket=dev["bucket"], Prefix=DATA)["Contents"]:
        s3.delete_object(Bucket=dev["bucket"], Key=obj["Key"])
    check = failed(run_doctor(backend, "dev", SPEC))["training data"]
    assert "no .parquet file" in check.detail and "aws s3 cp --recursive" in check.fix


def test_wrong_parquet_columns(backend, dev, local_aws):
    table = pa.table({"series": ["a", "a"], "ts": pa.array([1, 2], pa.timestamp("s")), "value": [1.0, 2.0]})
    local_aws.client("s3").put_object(
        Bucket=dev["bucket"], Key=DATA + "0000/bad.parquet", Body=_parquet(table)
    )
    check = failed(run_doctor(backend, "dev", SPEC))["training data"]
    assert (
        "0000/bad.parquet" in check.detail and "missing column(s) item_id, timestamp, target" in check.detail
    )
    assert "item_id_column" in check.fix


def test_spec_naming_columns_the_data_lacks(backend, dev):
    spec = from_dict({"data": {"target_column": "sales", "known_covariates": ["holiday"]}})
    check = failed(run_doctor(backend, "dev", spec))["training data"]
    assert "missing column(s) sales, holiday" in check.detail


def test_footer_only_reads(backend, dev, local_aws):
    """A big file's schema comes from its tail: the ranged GETs are all that is read."""
    rows = 200_000
    table = pa.table(
        {
            "item_id": ["x"] * rows,
            "timestamp": pa.array(range(rows), pa.timestamp("s")),
            "target": [float(i) for i in range(rows)],
        }
    )
    body = _parquet(table)
    assert len(body) > 4 * parquet_footer.FOOTER_READ_BYTES
    s3 = local_aws.client("s3")
    s3.put_object(Bucket=dev["bucket"], Key="cached-datasets/big.parquet", Body=body)
    ranges = []

    class Counting:
        def get_object(self, **kw):
            ranges.append(kw["Range"])
            return s3.get_object(**kw)

    schema = parquet_footer.read_footer_schema(
        Counting(), dev["bucket"], "cached-datasets/big.parquet", len(body)
    )
    assert schema.names == ["item_id", "timestamp", "target"]
    tail = parquet_footer.FOOTER_READ_BYTES
    assert len(ranges) == 1 and ranges[0] == f"bytes={len(body) - tail}-{len(body) - 1}"
    assert parquet_footer.schema_problems(schema, SPEC.data) == []


def test_bucket_with_a_setting_changed(backend, dev, local_aws):
    s3 = local_aws.client("s3")
    s3.delete_public_access_block(Bucket=dev["bucket"])
    s3.delete_bucket_lifecycle(Bucket=dev["bucket"])
    check = failed(run_doctor(backend, "dev", SPEC))["bucket settings"]
    assert "public access block" in check.detail and "lifecycle rule expire-logs missing" in check.detail
    assert "invoke local.up --env=dev" in check.fix


def test_bucket_settings_compare_with_infra_spec():
    from infra.spec import bucket as spec_bucket

    good = {
        "public access block": dict(spec_bucket.PUBLIC_ACCESS_BLOCK),
        "encryption": spec_bucket.encryption_configuration(),
        "lifecycle": spec_bucket.lifecycle_rules("dev"),
        "ownership": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    }
    assert bucket_checks.bucket_settings_problems(good, "dev") == ([], [])
    kms = {
        **good,
        "encryption": {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]},
        "ownership": bucket_checks.Denied("s3:GetBucketOwnershipControls"),
    }
    problems, denied = bucket_checks.bucket_settings_problems(kms, "dev")
    assert problems == ["encryption: ['aws:kms'], expected AES256 (SSE-S3)"]
    assert denied == ["s3:GetBucketOwnershipControls"]
    shorter = [dict(r) for r in good["lifecycle"]]
    shorter[1]["Expiration"] = {"Days": 400}
    assert bucket_checks.bucket_settings_problems({**good, "lifecycle": shorter}, "dev")[0] == [
        "lifecycle rule expire-logs differs in Expiration"
    ]


def test_wrong_region_in_the_stack_outputs(backend, dev, local_dir):
    write_json(local_dir.stack_file("dev"), {**dev, "region": "eu-west-1"})
    report = run_doctor(backend, "dev", SPEC)
    region = failed(report)["region"]
    assert "us-east-1 but the stack outputs say eu-west-1" in region.detail
    assert "invoke local.up --env=dev" in region.fix
    assert "bucket" in failed(report)


def test_missing_stack_outputs(backend, dev, local_dir):
    write_json(local_dir.stack_file("dev"), {k: v for k, v in dev.items() if k != "launch_template_id"})
    report = run_doctor(backend, "dev", SPEC)
    assert list(failed(report)) == ["stack outputs"]
    check = failed(report)["stack outputs"]
    assert "launch_template_id" in check.detail and check.fix
    assert all(
        c.status is Status.UNKNOWN and "not checked" in c.detail
        for c in report.checks
        if c.name not in ("credentials", "stack outputs")
    )


def test_a_policy_without_run_instances_is_a_denied_dry_run(backend, dev, local_aws, local_dir):
    from localaws import identities

    ids = identities.load(local_dir.identities_file)
    if ids is None:
        pytest.skip("local AWS runs without IAM enforcement")
    iam = local_aws.client("iam")
    user = ids.envs["dev"].operator.arn.rsplit("/", 1)[-1]
    allowance = json.loads(
        json.dumps(
            iam.get_user_policy(UserName=user, PolicyName=identities.MOTO_ONLY_POLICY_NAME)["PolicyDocument"]
        )
    )
    for statement in allowance["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = [a for a in actions if a != "ec2:RunInstances"]
    iam.put_user_policy(
        UserName=user, PolicyName=identities.MOTO_ONLY_POLICY_NAME, PolicyDocument=json.dumps(allowance)
    )
    dry = [c for c in run_doctor(backend, "dev", SPEC).failed if c.name.startswith("run-instances")]
    assert len(dry) == 2
    assert "denied" in dry[0].detail and "ec2:RunInstances" in dry[0].detail
    assert dev["operator_policy_arn"] in dry[0].fix


ENCODED = "EncodedBlobAbc123"
DECODED = {
    "allowed": False,
    "explicitDeny": False,
    "context": {
        "action": "ec2:RunInstances",
        "resource": "arn:aws:ec2:us-east-1:123456789012:spot-instances-request/*",
        "conditions": {
            "items": [{"key": "aws:RequestTag/Project", "values": {"items": [{"value": "Chronos"}]}}]
        },
    },
}


class _DeniedEc2:
    def __init__(self) -> None:
        self.calls = []

    def run_instances(self, **kwargs):
        self.calls.append(kwargs)
        raise _error(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation. "
            f"Encoded authorization failure message: {ENCODED}",
        )


class _Sts:
    def __init__(self, allowed: bool) -> None:
        self.allowed, self.messages = allowed, []

    def decode_authorization_message(self, EncodedMessage):  # noqa: N803
        self.messages.append(EncodedMessage)
        if not self.allowed:
            raise _error("AccessDenied", "not authorized", "DecodeAuthorizationMessage")
        return {"DecodedMessage": json.dumps(DECODED)}


def test_unauthorized_operation_is_decoded_where_permitted(backend, dev):
    outputs = backend.stack_outputs("dev")
    ec2, sts = _DeniedEc2(), _Sts(allowed=True)
    check = run_instances.check_dry_run(
        ec2, sts, {"InstanceType": "g5.xlarge"}, label="g5.xlarge spot", outputs=outputs
    )
    assert ec2.calls == [{"InstanceType": "g5.xlarge", "DryRun": True}] and sts.messages == [ENCODED]
    assert check.status is Status.FAIL
    assert (
        "ec2:RunInstances on arn:aws:ec2:us-east-1:123456789012:spot-instances-request/* denied: "
        "no statement allows it (context: aws:RequestTag/Project=Chronos)"
    ) in check.detail
    denied = run_instances.check_dry_run(
        ec2, _Sts(allowed=False), {}, label="g5.xlarge spot", outputs=outputs
    )
    assert "not permitted (sts:DecodeAuthorizationMessage)" in denied.detail
    assert f"aws sts decode-authorization-message --encoded-message {ENCODED}" in denied.detail


def test_the_dry_run_sends_the_launchs_own_request(backend, dev, monkeypatch):
    """Through run_doctor: the request is LaunchPlan.run_instances_request of the plan a launch makes."""
    from control.launch_plan import plan_launch
    from control.launch_world import gather_world

    world = gather_world(backend, SPEC, env="dev", now=datetime.now(UTC))
    plan = plan_launch(SPEC, world)
    sent = []
    real = doctor_checks.doctor_clients(backend)

    class Recording:
        def __init__(self, ec2):
            self.ec2 = ec2

        def run_instances(self, **kw):
            sent.append(kw)
            return self.ec2.run_instances(**kw)

        def __getattr__(self, name):
            return getattr(self.ec2, name)

    clients = replace(real, ec2=Recording(real.ec2))
    report = run_doctor(backend, "dev", SPEC, plan=plan, clients=clients)
    assert report.ok
    firsts = {}
    for p in plan.placements:
        firsts.setdefault(p.instance_type, p)
    assert sent == [{**plan.run_instances_request(p), "DryRun": True} for p in firsts.values()]


def test_quotas_against_the_first_types_vcpus():
    from common.status import Market
    from control.launch_rules import quota_for

    spot = quota_for(Market.SPOT)
    zero = quotas.quota_check(
        0.0, 4, quota=spot, instance_type="g5.xlarge", region="us-east-1", required=True
    )
    assert zero.status is Status.FAIL and "0 vCPUs < 4" in zero.detail
    assert "--quota-code L-3819A6DF --desired-value 4 --region us-east-1" in zero.fix
    other = quotas.quota_check(
        0.0,
        4,
        quota=quota_for(Market.ON_DEMAND),
        instance_type="g5.xlarge",
        region="us-east-1",
        required=False,
    )
    assert other.status is Status.WARN and "L-DB2E81BA" in other.fix
    assert (
        quotas.quota_check(
            8.0, 4, quota=spot, instance_type="g5.xlarge", region="us-east-1", required=True
        ).status
        is Status.OK
    )
    assert (
        quotas.quota_check(
            None,
            4,
            quota=spot,
            instance_type="g5.xlarge",
            region="us-east-1",
            required=True,
            reason="not permitted (servicequotas:GetServiceQuota)",
        ).status
        is Status.UNKNOWN
    )


def test_quota_read_from_service_quotas(backend, dev):
    class Quotas:
        def get_service_quota(self, ServiceCode, QuotaCode):  # noqa: N803
            assert ServiceCode == "ec2"
            return {"Quota": {"QuotaCode": QuotaCode, "Value": 0.0 if QuotaCode == "L-3819A6DF" else 8.0}}

    real = doctor_checks.doctor_clients(backend)
    checks = by_name(run_doctor(backend, "dev", SPEC, clients=replace(real, quotas=Quotas())))
    assert checks["quota All G and VT Spot Instance Requests"].status is Status.FAIL
    assert checks["quota Running On-Demand G and VT instances"].status is Status.OK


def test_offerings_fail_only_when_no_type_is_offered():
    assert (
        quotas.offering_check(
            {"g5.xlarge": ["us-east-1a"]}, ["g5.xlarge", "g4dn.xlarge"], ["us-east-1a"]
        ).status
        is Status.WARN
    )
    none = quotas.offering_check({}, ["g5.xlarge"], ["us-east-1a"])
    assert none.status is Status.FAIL and "--instance-type" in none.fix


def test_instance_profile_inferred_when_get_instance_profile_is_denied(backend, dev):
    class DeniedIam:
        def get_instance_profile(self, **kw):
            raise _error("AccessDenied", "no", "GetInstanceProfile")

    outputs = backend.stack_outputs("dev")
    template = {"IamInstanceProfile": {"Arn": outputs.instance_profile_arn}}
    check = stack.check_instance_profile(DeniedIam(), template, outputs)
    assert check.status is Status.UNKNOWN and check.detail.startswith(
        "not permitted (iam:GetInstanceProfile)"
    )
    assert "matches the stack output" in check.detail


# -------------------------------------------------------------- AWS mode


@pytest.fixture
def aws_mode(backend, dev, local_dir, local_aws, monkeypatch, tmp_path):
    """The AWS backend pointed at the local AWS with saved outputs and the operator's keys."""
    outputs = tmp_path / "dev.json"
    outputs.write_text(json.dumps(dev))
    creds = backend.credentials_env()
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("CHRONOS_STACK_OUTPUTS", str(outputs))
    return outputs


def test_aws_mode_missing_python_env(aws_mode):
    report = run_doctor(AwsBackend(), "dev", SPEC)
    check = failed(report)["python env"]
    assert "chronos-env.tar.gz" in check.detail and "invoke wheelhouse --env=dev --dir=DIR" in check.fix


def test_aws_mode_configured_region_differs(aws_mode, monkeypatch, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\n")
    creds = tmp_path / "aws-credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    for name in ("AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    region = by_name(run_doctor(AwsBackend(), "dev", SPEC))["region"]
    assert region.status is Status.WARN, region
    assert "eu-west-1 differs from the stack's us-east-1" in region.detail
    assert region.fix == "export AWS_DEFAULT_REGION=us-east-1"


# ------------------------------------------------------- the command line


def test_json_parses_and_exit_codes(dev, cli, local_dir, error_line):
    proc = cli("doctor", "--env=dev", "--local", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["env"] == "dev" and len(report["checks"]) >= 12
    assert {c["status"] for c in report["checks"]} <= {"ok", "unknown"}
    table = cli("doctor", "--env=dev", "--local")
    assert table.returncode == 0 and "ready to launch" in table.stdout and "run-instances" in table.stdout

    bad = cli("doctor", "--env=Prod_1", "--local")
    assert bad.returncode == 2 and error_line(bad).startswith("error: unknown env")
    write_json(local_dir.stack_file("dev"), {k: v for k, v in dev.items() if k != "launch_template_id"})
    broken = cli("doctor", "--env=dev", "--local", "--json")
    assert broken.returncode == 1
    assert [c["name"] for c in json.loads(broken.stdout)["checks"] if c["status"] == "fail"] == [
        "stack outputs"
    ]


def test_launch_refuses_when_the_doctor_fails(dev, cli, inventory, local_aws, error_line):
    table = pa.table({"series": ["a"], "ts": pa.array([1], pa.timestamp("s")), "value": [1.0]})
    local_aws.client("s3").put_object(
        Bucket=dev["bucket"], Key=DATA + "0000/bad.parquet", Body=_parquet(table)
    )
    before = inventory()
    proc = cli("launch", "--env=dev", "--local")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "launch stopped before creating anything" in line and "(training data)" in line
    assert "invoke doctor --env=dev --local" in line
    assert inventory() == before


def test_launch_runs_the_doctor_unless_skipped(backend, dev, monkeypatch):
    calls = []
    monkeypatch.setattr(backend, "start_instance", lambda **kw: None)
    real = doc.run_doctor

    def spy(*args, **kwargs):
        calls.append(kwargs.get("plan"))
        return real(*args, **kwargs)

    monkeypatch.setattr(doc, "run_doctor", spy)
    first = launch(backend, env="dev")
    assert first.result is not None and len(calls) == 1 and calls[0].run_id == first.plan.run_id
    from common.state_store import StateStore

    StateStore(backend.clients().s3, dev["bucket"], "dev").release(first.result.run_id)

    def failing(*args, **kwargs):
        raise AssertionError("the doctor ran")

    monkeypatch.setattr(doc, "run_doctor", failing)
    later = launch(
        backend, env="dev", skip_doctor=True, clock=lambda: datetime.now(UTC) + timedelta(seconds=5)
    )
    assert later.result is not None
    StateStore(backend.clients().s3, dev["bucket"], "dev").release(later.result.run_id)
    # a second later than both (the first launch's run id is its start second: on a fast machine the
    # dry run came within it and was refused as a launch within the same second)
    dry = launch(backend, env="dev", dry_run=True, clock=lambda: datetime.now(UTC) + timedelta(seconds=10))
    assert dry.result is None  # a dry run never runs it


def test_doctor_failed_error_is_one_line():
    report = doctor_checks.DoctorReport(
        env="dev",
        local=True,
        checks=(
            doctor_checks.ok("credentials", "me"),
            doctor_checks.fail("training data", "none", "upload"),
            doctor_checks.fail("bucket", "x", "y"),
        ),
    )
    err = DoctorFailedError(report)
    assert "\n" not in str(err) and err.exit_code == 2
    assert "2 doctor check(s) failed (training data, bucket)" in str(err)
    assert "`invoke doctor --env=dev --local`" in str(err)
    with pytest.raises(ConfigError):
        doc.doctor(lambda: None, env="Prod_1")


def test_summarize_decoded_explicit_deny():
    text = run_instances.summarize_decoded(
        {"explicitDeny": True, "context": {"action": "iam:PassRole", "resource": "r"}}
    )
    assert text == "iam:PassRole on r denied: an explicit Deny"
    assert run_instances.decode_denial(_Sts(True), "plain message")[0] == "plain message"


def test_a_missing_local_ami_fails_with_the_local_fix(backend, dev):
    """Local mode: an image the local AWS lacks fails with the fix, not an ImportError."""
    outputs = stack.read_stack_outputs(backend, "dev")
    ec2 = backend.clients().ec2
    check = stack.check_ami(ec2, {"ImageId": "ami-0123456789abcdef0"}, outputs, local=True)
    assert check.status is Status.FAIL, check
    assert "not in the local AWS" in check.detail and "invoke local.up" in (check.fix or ""), check

"""infra.spec: names, tags, validation, bucket rules, network and launch-template data."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import layout
from common import tags as common_tags
from common.layout import RunPaths, state_key
from infra.spec import SpecError
from infra.spec import bucket as spec_bucket
from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names
from infra.spec import network as spec_network
from infra.spec import pulumi_inputs as spec_pulumi

ENV_RE = re.compile(layout.ENV_PATTERN)


def test_bucket_name_follows_the_documented_pattern() -> None:
    name = spec_names.bucket_name("dev", "123456789012", "eu-west-1")
    assert name == "chronos-training-dev-123456789012-eu-west-1"


def test_longest_env_still_gives_a_valid_bucket_name() -> None:
    name = spec_names.bucket_name("a" * 16, "123456789012", "ap-southeast-2")
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name)


@given(st.from_regex(ENV_RE, fullmatch=True))
def test_every_name_matching_the_rule_is_accepted(env: str) -> None:
    assert spec_names.validate_env(env) == env


@given(st.text(max_size=20).filter(lambda s: not ENV_RE.fullmatch(s)))
def test_every_other_name_is_rejected_with_the_rule(env: str) -> None:
    with pytest.raises(SpecError, match="lowercase"):
        spec_names.validate_env(env)


@pytest.mark.parametrize("bad", ["", "d", "Dev", "1dev", "dev_1", "dev.1", "a" * 17, "dév", "dev\n", " dev"])
def test_typical_bad_env_names_are_rejected(bad: str) -> None:
    with pytest.raises(SpecError):
        spec_names.validate_env(bad)


def test_instance_type_allowlist_is_exactly_g4dn_and_g5() -> None:
    families = {t.split(".")[0] for t in spec_names.GPU_INSTANCE_TYPES}
    assert families == {"g4dn", "g5"}
    assert "g5.xlarge" in spec_names.GPU_INSTANCE_TYPES
    assert spec_names.DEFAULT_INSTANCE_TYPE in spec_names.GPU_INSTANCE_TYPES


@pytest.mark.parametrize("bad", ["p4d.24xlarge", "g6.xlarge", "t3.micro", "g5", "g4dn.nano", ""])
def test_other_instance_types_are_refused_listing_the_allowed(bad: str) -> None:
    with pytest.raises(SpecError, match="g5.xlarge"):
        spec_names.validate_instance_type(bad)


def test_tags_carry_the_four_required_keys_and_extra_cannot_override() -> None:
    tags = common_tags.tags("dev", "research", extra={"Project": "other", "Owner": "me"})
    assert tags == {
        "Project": "Chronos-Training",
        "Environment": "dev",
        "CostCenter": "research",
        "ManagedBy": "pulumi",
        "Owner": "me",
    }


# ---------------------------------------------------------------- lifecycle


def _rules_matching(env: str, key: str) -> list[dict]:
    return [r for r in spec_bucket.lifecycle_rules(env) if key.startswith(r["Filter"]["Prefix"])]


def _expiring(env: str, key: str) -> list[dict]:
    return [r for r in _rules_matching(env, key) if "Expiration" in r or "Transitions" in r]


def test_run_outputs_go_to_standard_ia_at_30_days_and_expire_at_60() -> None:
    run = RunPaths(env="dev", run_id="20261125-140502")
    for key in (run.success, run.model_metadata, run.checkpoints + "checkpoint-40/x"):
        (rule,) = _expiring("dev", key)
        assert rule["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
        assert rule["Expiration"] == {"Days": 60}
        assert rule["Status"] == "Enabled"


def test_logs_expire_at_14_days_and_nothing_else_touches_them() -> None:
    run = RunPaths(env="dev", run_id="20261125-140502")
    for key in (run.training_log, run.cleanup_status):
        (rule,) = _expiring("dev", key)
        assert rule["Expiration"] == {"Days": 14}
        assert "Transitions" not in rule


@pytest.mark.parametrize(
    "key",
    [
        "cached-datasets/training-data/2026/01/a.parquet",
        "cached-datasets/python-env/env.tar.gz",
        state_key("dev"),
    ],
)
def test_cached_datasets_and_the_live_state_never_expire(key: str) -> None:
    assert _expiring("dev", key) == []


def test_another_envs_objects_are_not_touched_by_this_envs_rules() -> None:
    assert _expiring("dev", "prod/2026/11/25-140502/_SUCCESS") == []
    assert _expiring("dev", "devx/logs/20261125-140502/training.json") == []


def test_incomplete_multipart_uploads_are_aborted_after_one_day_everywhere() -> None:
    aborts = [r for r in spec_bucket.lifecycle_rules("dev") if "AbortIncompleteMultipartUpload" in r]
    assert aborts == [
        {
            "ID": "abort-incomplete-multipart",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]


def test_lifecycle_rules_convert_to_the_provider_shape() -> None:
    converted = spec_pulumi.to_pulumi_inputs(spec_bucket.lifecycle_rules("dev"))
    outputs = next(r for r in converted if r["id"] == "run-outputs-ia-then-expire")
    assert outputs["filter"] == {"prefix": "dev/2"}
    assert outputs["transitions"] == [{"days": 30, "storage_class": "STANDARD_IA"}]
    abort = next(r for r in converted if r["id"] == "abort-incomplete-multipart")
    assert abort["abort_incomplete_multipart_upload"] == {"days_after_initiation": 1}


def test_encryption_converts_acronyms_to_snake_case() -> None:
    (rule,) = spec_pulumi.to_pulumi_inputs(spec_bucket.encryption_configuration())["rules"]
    assert rule["apply_server_side_encryption_by_default"] == {"sse_algorithm": "AES256"}


# ------------------------------------------------------------------ network


def test_subnet_cidrs_are_disjoint_and_inside_the_vpc() -> None:
    cidrs = [ipaddress.ip_network(c) for c in spec_network.subnet_cidrs(6)]
    vpc = ipaddress.ip_network(spec_network.VPC_CIDR)
    assert all(c.subnet_of(vpc) for c in cidrs)
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])


def test_fewer_than_two_zones_is_refused() -> None:
    with pytest.raises(SpecError, match="at least 2"):
        spec_network.select_availability_zones(["us-east-1a"])
    assert spec_network.select_availability_zones(["b", "a", "c", "a"], 2) == ["a", "b"]


def test_security_group_rules_are_no_ingress_and_https_egress_only() -> None:
    assert spec_network.security_group_ingress() == []
    (rule,) = spec_pulumi.to_pulumi_sg_rules(spec_network.security_group_egress())
    assert (rule["protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 443, 443)


# ---------------------------------------------------------- launch template


def _lt_data() -> dict:
    return spec_template.launch_template_data(
        image_id="ami-0123456789abcdef0",
        instance_type="g5.xlarge",
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/p",
        security_group_id="sg-1",
        resource_tags=common_tags.tags("dev"),
    )


def test_launch_template_data_has_no_key_pair_and_no_user_data() -> None:
    data = _lt_data()
    assert "KeyName" not in data and "UserData" not in data


def test_launch_template_refuses_a_non_gpu_default_type() -> None:
    with pytest.raises(SpecError):
        spec_template.launch_template_data(
            image_id="ami-1",
            instance_type="m5.large",
            instance_profile_arn="arn",
            security_group_id="sg-1",
            resource_tags={},
        )


def test_launch_template_converts_booleans_to_the_providers_strings() -> None:
    args = spec_pulumi.to_pulumi_launch_template_args(_lt_data())
    ebs = args["block_device_mappings"][0]["ebs"]
    assert ebs == {
        "volume_size": 100,
        "volume_type": "gp3",
        "encrypted": "true",
        "delete_on_termination": "true",
    }
    nic = args["network_interfaces"][0]
    assert nic["associate_public_ip_address"] == "true"
    assert nic["security_groups"] == ["sg-1"]


def test_network_interface_override_keeps_the_security_group_and_public_ip() -> None:
    (nic,) = spec_network.network_interface_override("subnet-1", "sg-1")
    assert nic == {
        "DeviceIndex": 0,
        "SubnetId": "subnet-1",
        "Groups": ["sg-1"],
        "AssociatePublicIpAddress": True,
        "DeleteOnTermination": True,
    }


def test_the_schema_admits_exactly_the_instance_types_the_product_launches() -> None:
    """One list: the run spec used to admit g5.metal and g4dn.24xlarge, refused later."""
    from common.errors import ConfigError
    from common.runspec import from_dict

    for itype in sorted(spec_names.GPU_INSTANCE_TYPES):
        assert from_dict({"instance": {"types": [itype]}}).instance.types == (itype,)
    for bad in ("g5.metal", "g4dn.24xlarge", "g4dn.48xlarge", "p4d.24xlarge", "g5.xlarge "):
        with pytest.raises(ConfigError, match=r"\$\.instance\.types\[0\]"):
            from_dict({"instance": {"types": [bad]}})


def test_code_bundles_expire_and_nothing_else_in_cached_datasets_does() -> None:
    rules = {r["ID"]: r for r in spec_bucket.lifecycle_rules("dev")}
    bundles = rules["expire-code-bundles"]
    assert bundles["Filter"] == {"Prefix": "cached-datasets/scripts/"}
    assert bundles["Expiration"] == {"Days": spec_bucket.CODE_BUNDLE_EXPIRY_DAYS}
    expiring = [r["Filter"]["Prefix"] for r in rules.values() if "Expiration" in r]
    for kept in (
        "cached-datasets/training-data/x.parquet",
        "cached-datasets/python-env/chronos-env.tar.gz",
        "dev/system-state.json",
    ):
        assert not any(kept.startswith(prefix) for prefix in expiring), kept

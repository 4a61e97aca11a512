import re

import pytest

from common import runspec
from common.errors import ConfigError
from common.placement import MarketChoice
from common.status import FinetuneMode


def test_an_empty_spec_is_a_valid_local_run(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("")
    spec = runspec.load(f).resolved(local=True)
    assert spec.env == "dev"
    # local mode fine-tunes the shipped tiny pretrained Chronos-2, at a fine-tuning learning rate
    assert spec.model.base == "tiny-pretrained" and spec.model.context_length == 128
    assert spec.model.learning_rate == pytest.approx(1e-3)
    assert spec.data.frequency is None  # "auto": inferred from the timestamps
    assert spec.instance.market is MarketChoice.SPOT
    assert spec.instance.max_runtime_minutes == 240


def test_the_random_init_tiny_model_learns_from_scratch_at_a_higher_rate():
    spec = runspec.from_dict({"model": {"base": "tiny"}}).resolved(local=True)
    assert spec.model.context_length == 128 and spec.model.learning_rate == pytest.approx(1e-3)


def test_auto_on_aws_means_pretrained_chronos2():
    spec = runspec.from_dict({"model": {"finetune_mode": "lora"}}).resolved(local=False)
    assert spec.model.base == "amazon/chronos-2"
    assert spec.model.finetune_mode is FinetuneMode.LORA
    assert spec.model.learning_rate == pytest.approx(1e-4)


def test_a_full_spec_round_trips(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text(
        'env = "prod"\n[instance]\ntypes = ["g4dn.2xlarge"]\nmarket = "on-demand"\nmax_runtime = "1h30m"\n'
        '[data]\nknown_covariates = ["promo"]\nfrequency = "D"\n'
        '[model]\nbase = "amazon/chronos-2"\nnum_steps = 50\ncheckpoint_interval = 10\n'
    )
    spec = runspec.load(f)
    assert spec.instance.types == ("g4dn.2xlarge",)
    assert spec.instance.max_runtime_minutes == 90
    assert spec.data.known_covariates == ("promo",)
    assert runspec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[model]\nnum_steps = -1\n", "$.model.num_steps"),
        ("[model]\nfinetune_mode = 'qlora'\n", "$.model.finetune_mode"),
        ("[instance]\ntypes = ['p3.2xlarge']\n", "$.instance.types[0]"),
        ("[moddel]\n", "$"),
    ],
)
def test_malformed_spec_names_the_json_path(tmp_path, text, where):
    f = tmp_path / "run.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        runspec.load(f)
    assert f"{f}: {where}: " in str(info.value)


def test_toml_syntax_error_and_missing_file(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        runspec.load(f)
    with pytest.raises(ConfigError, match="not found"):
        runspec.load(tmp_path / "nope.toml")


def test_covariate_in_both_lists_is_refused():
    with pytest.raises(ConfigError, match="both past and known"):
        runspec.from_dict({"data": {"past_covariates": ["a"], "known_covariates": ["a"]}})


def test_a_column_named_twice_is_refused_with_its_path():
    """The one DataSpec checks its columns, so launch refuses what the trainer would."""
    with pytest.raises(ConfigError, match=r"run spec: \$\.data: .*twice: target"):
        runspec.from_dict({"data": {"past_covariates": ["target"]}})


def test_the_data_section_round_trips_alone():
    spec = runspec.from_dict({"data": {"known_covariates": ["promo"], "frequency": "D"}})
    assert runspec.DataSpec.from_dict(spec.data.to_dict()) == spec.data
    assert spec.data.columns == ("item_id", "timestamp", "target", "promo")


def test_recovery_and_cost_limits_default_from_the_schema():
    inst = runspec.from_dict({}).instance
    assert inst.max_recoveries == 3 and inst.max_cost is None
    chosen = runspec.from_dict(
        {"instance": {"market": "spot-then-on-demand", "max_recoveries": 0, "max_cost": 12}}
    ).instance
    assert chosen.market is MarketChoice.SPOT_THEN_ON_DEMAND
    assert chosen.max_recoveries == 0 and chosen.max_cost == 12.0
    assert (
        runspec.from_dict(runspec.from_dict({"instance": {"max_cost": 2.5}}).to_dict()).instance.max_cost
        == 2.5
    )


@pytest.mark.parametrize(
    ("instance", "where"),
    [
        ({"max_recoveries": -1}, "$.instance.max_recoveries"),
        ({"max_cost": 0}, "$.instance.max_cost"),
        ({"market": "spot-or-else"}, "$.instance.market"),
    ],
)
def test_recovery_and_cost_limits_are_checked(instance, where):
    with pytest.raises(ConfigError, match=re.escape(where)):
        runspec.from_dict({"instance": instance})


def test_a_batch_that_does_not_split_over_a_multi_gpu_type_is_refused_before_launch():
    # g5.12xlarge carries 4 GPUs: each takes batch_size / 4 series a step, so 30 cannot be trained on all four
    with pytest.raises(ConfigError, match=r"\$\.model\.batch_size: .*4 GPUs.*28 or 32.*g5\.12xlarge"):
        runspec.from_dict({"instance": {"types": ["g5.xlarge", "g5.12xlarge"]}, "model": {"batch_size": 30}})
    spec = runspec.from_dict({"instance": {"types": ["g5.12xlarge"]}, "model": {"batch_size": 32}})
    assert spec.model.batch_size == 32
    # a single-GPU type takes any batch
    assert (
        runspec.from_dict(
            {"instance": {"types": ["g4dn.xlarge"]}, "model": {"batch_size": 30}}
        ).model.batch_size
        == 30
    )

"""TrainConfig: built from the validated run spec, with the schema as the only source of defaults."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from common import runspec
from trainer.train_config import TrainConfig

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "run-spec.schema.json"


def _model_defaults() -> dict[str, object]:
    props = json.loads(SCHEMA.read_text())["properties"]["model"]["properties"]
    return {name: prop["default"] for name, prop in props.items()}


def test_a_minimal_spec_trains_with_the_schemas_defaults(tmp_path: Path) -> None:
    """Batch 32 and seed 42 (the schema), not a default of TrainConfig's own."""
    spec = runspec.from_dict({}).resolved(local=True)
    config = TrainConfig.from_spec(spec.model, output_dir=tmp_path)
    defaults = _model_defaults()
    assert (config.batch_size, config.seed) == (defaults["batch_size"], defaults["seed"]) == (32, 42)
    for name in ("prediction_length", "num_steps", "finetune_mode", "checkpoint_interval"):
        assert getattr(config, name) == defaults[name], name
    assert config.context_length == spec.model.context_length == 128  # "auto" for the tiny model
    assert config.learning_rate == spec.model.learning_rate


def test_no_train_config_field_has_a_default_the_schema_could_contradict() -> None:
    schema_fields = set(_model_defaults())
    with_default = {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    assert not with_default & schema_fields
    # every field the run spec's model section shares with TrainConfig comes from the spec
    shared = schema_fields & {f.name for f in dataclasses.fields(TrainConfig)}
    assert shared == {
        "prediction_length", "context_length", "num_steps", "learning_rate",
        "batch_size", "finetune_mode", "checkpoint_interval", "seed",
        "eval_interval", "early_stopping_patience", "precision", "log_interval",
    }  # fmt: skip


def test_the_spec_values_reach_the_trainer(tmp_path: Path) -> None:
    """A spec's batch size and seed are what the transformers Trainer is given."""
    from trainer.finetune import training_arguments

    doc = {"model": {"batch_size": 8, "seed": 3, "num_steps": 50, "checkpoint_interval": 10}}
    config = TrainConfig.from_spec(runspec.from_dict(doc).resolved(local=True).model, output_dir=tmp_path)
    args = training_arguments(config)
    assert (args.per_device_train_batch_size, args.seed, args.max_steps, args.save_steps) == (8, 3, 50, 10)
    defaults = training_arguments(
        TrainConfig.from_spec(runspec.from_dict({}).resolved(local=True).model, output_dir=tmp_path)
    )
    assert (defaults.per_device_train_batch_size, defaults.seed) == (32, 42)


def test_an_unresolved_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auto"):
        TrainConfig.from_spec(runspec.from_dict({}).model, output_dir=tmp_path)


def test_round_trip_through_the_child_config(tmp_path: Path) -> None:
    config = TrainConfig.from_spec(runspec.from_dict({}).resolved(local=True).model, output_dir=tmp_path)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config

"""The run spec, random and mutated, as a dict (the stored JSON) and as a TOML file (``--spec``).

Property: :func:`common.runspec.from_dict` and :func:`control.launch.load_spec` either
return a spec the launch and the trainer can act on, or raise :class:`ConfigError`: one
line naming the file and the JSON path. Nothing else escapes (no ``KeyError``, ``TypeError``,
``ValueError``, ``UnicodeDecodeError`` traceback).
"""

from __future__ import annotations

import json
import os

import fuzzkit
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from common import runspec
from common.errors import ConfigError
from common.runspec import RunSpec
from control.launch import load_spec
from schemas import examples

VALID = examples("run-spec")
FULL = VALID[1]
ROW = "runspec-mutated"
TOML_ROW = "runspec-toml-file"


def check_accepted(spec: RunSpec) -> None:
    """What the launch and the trainer do with an accepted spec works (the spec's promises hold)."""
    local = spec.resolved(local=True)
    assert isinstance(local.model.context_length, int) and isinstance(local.model.learning_rate, float)
    spec.resolved(local=False)
    # the dead-man switch and the state file need the max runtime the schema's integer form allows
    assert spec.instance.max_runtime_minutes >= 5, spec.instance
    assert 0 <= spec.instance.keep_on_failure_minutes < spec.instance.max_runtime_minutes
    np.random.SeedSequence(spec.model.seed)  # the trainer seeds numpy and torch with it
    assert spec.model.seed < 2**32, "numpy's legacy seed (transformers.set_seed) takes 32 bits"
    again = runspec.from_dict(spec.to_dict())  # the stored spec reads back as the same spec
    assert again == spec


def check_refused(exc: ConfigError, source: str) -> None:
    line = fuzzkit.one_line(str(exc))
    assert source in line, line
    assert fuzzkit.names_a_path(line), f"no JSON path in {line!r}"


specs = st.one_of(
    fuzzkit.mutated(FULL),
    fuzzkit.mutated({}),
    st.dictionaries(
        st.sampled_from(("env", "instance", "data", "model", "x")), fuzzkit.json_values, max_size=4
    ),
    fuzzkit.json_values,
)


@pytest.mark.row(ROW)
@settings(max_examples=fuzzkit.scaled(150))
@given(doc=specs)
def test_a_mutated_run_spec_is_a_spec_or_one_line_with_its_json_path(doc):
    fuzzkit.example()
    try:
        spec = runspec.from_dict(doc, source="run-spec.json")
    except ConfigError as exc:
        check_refused(exc, "run-spec.json")
        return
    check_accepted(spec)


@pytest.mark.row(ROW)
@settings(max_examples=fuzzkit.scaled(60))
@given(
    section=st.sampled_from(("instance", "model", "data")),
    name=st.sampled_from(
        ("max_runtime", "keep_on_failure", "seed", "num_steps", "prediction_length", "max_cost", "frequency")
    ),
    value=st.one_of(
        st.sampled_from(("0m", "1m", "4m", "5m", "0h", "00m", "0h4m", "99999999h", "1h", "auto", "", "h")),
        st.sampled_from(fuzzkit.HUGE + fuzzkit.ODD_FLOATS),
        st.integers(-5, 2**33),
        st.sampled_from((2**32 - 1, 2**32, 2**63 - 1)),
    ),
)
@example(section="instance", name="max_runtime", value=1e308)  # an "integer" to JSON Schema: a traceback
@example(section="model", name="seed", value=10.0)
def test_edge_values_of_each_field_are_accepted_only_when_usable(section, name, value):
    fuzzkit.example()
    doc = json.loads(json.dumps(FULL))
    doc[section][name] = value
    try:
        spec = runspec.from_dict(doc, source="run-spec.json")
    except ConfigError as exc:
        check_refused(exc, "run-spec.json")
        return
    check_accepted(spec)


@pytest.mark.row(TOML_ROW)
@settings(max_examples=fuzzkit.scaled(80))
@given(doc=st.one_of(fuzzkit.mutated(FULL), fuzzkit.mutated({"model": {"num_steps": 10}})))
def test_a_mutated_toml_file_is_a_spec_or_one_line_naming_the_file_and_path(doc, tmp_path_factory):
    fuzzkit.example()
    if not isinstance(doc, dict):
        doc = {"model": doc}
    try:
        text = fuzzkit.to_toml(doc)
    except TypeError:
        text = "model = 1\n"
    path = tmp_path_factory.mktemp("spec") / "run.toml"
    path.write_text(text, encoding="utf-8")
    try:
        spec = load_spec(path, env="dev")
    except ConfigError as exc:
        line = fuzzkit.one_line(str(exc))
        assert str(path) in line or "command line" in line, line
        assert fuzzkit.names_a_path(line) or "not valid TOML" in line, line
        return
    assert spec.env == "dev"
    check_accepted(spec)


@pytest.mark.row(TOML_ROW)
@settings(max_examples=fuzzkit.scaled(60))
@given(
    body=st.one_of(
        st.binary(max_size=300),
        fuzzkit.damaged_bytes(FULL),
        st.builds(lambda d: fuzzkit.to_toml(d).encode()[: len(fuzzkit.to_toml(d)) // 2], st.just(FULL)),
        st.just(b"[model]\nnum_steps = 10\n\xff\xfe"),
        st.just('[model]\nbase = "\u00e9t\u00e9"\n'.encode("utf-16")),
    )
)
def test_a_spec_file_of_any_bytes_is_one_line_naming_the_file(body, tmp_path_factory):
    fuzzkit.example()
    path = tmp_path_factory.mktemp("spec") / "run.toml"
    path.write_bytes(body)
    try:
        spec = load_spec(path, env="dev")
    except ConfigError as exc:
        line = fuzzkit.one_line(str(exc))
        assert str(path) in line, line
        return
    check_accepted(spec)


@pytest.mark.row(TOML_ROW)
def test_a_spec_path_that_is_a_folder_or_unreadable_is_one_line(tmp_path):
    fuzzkit.example()
    for path in (tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(ConfigError) as info:
            load_spec(path, env="dev")
        assert str(path) in fuzzkit.one_line(str(info.value))
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.toml"
        locked.write_text("[model]\n")
        locked.chmod(0)
        with pytest.raises(ConfigError) as info:
            load_spec(locked, env="dev")
        assert str(locked) in fuzzkit.one_line(str(info.value))

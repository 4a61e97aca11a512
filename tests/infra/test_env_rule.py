"""The env-name rule exists once (common.layout) and every reader agrees with it.

The schema's ``$defs/env``, the run-prefix parser, the infra spec's validation and the
stack names all follow :data:`common.layout.ENV_PATTERN`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import layout
from infra.spec import SpecError
from infra.spec import names as spec_names

ENV_RE = re.compile(layout.ENV_PATTERN)
DEFS = Path(__file__).resolve().parents[2] / "schemas" / "defs.schema.json"


def test_the_schemas_env_pattern_is_the_layout_rule() -> None:
    defs = json.loads(DEFS.read_text("utf-8"))["$defs"]
    assert defs["env"]["pattern"] == layout.ENV_PATTERN


@given(st.from_regex(ENV_RE, fullmatch=True))
def test_a_run_prefix_parses_for_every_name_the_rule_accepts(env: str) -> None:
    paths = layout.RunPaths.from_prefix(f"{env}/2026/11/25-140502/models/")
    assert (paths.env, paths.run_id) == (env, "20261125-140502")
    assert layout.check_env(env) == spec_names.validate_env(env) == env


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzA-_.0123456789é", max_size=20))
def test_a_run_prefix_refuses_every_name_the_rule_refuses(env: str) -> None:
    if ENV_RE.fullmatch(env):
        return
    with pytest.raises(layout.LayoutError):
        layout.RunPaths.from_prefix(f"{env}/2026/11/25-140502/")
    with pytest.raises(layout.LayoutError):
        layout.check_env(env)
    with pytest.raises(SpecError, match="lowercase"):
        spec_names.validate_env(env)

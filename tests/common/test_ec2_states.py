"""One set of EC2 instance states and one tag filter: every control-side reader uses common's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common import ec2, tags

ROOT = Path(__file__).resolve().parents[2]
STATE_NAMES = {"pending", "running", "stopping", "stopped", "shutting-down", "terminated", "not-found"}


@pytest.mark.parametrize("module", ["control.monitor", "control.kill", "control.console", "control.debug"])
def test_every_reader_judges_gone_with_the_one_rule(module):
    mod = __import__(module, fromlist=["is_gone"])
    assert mod.is_gone is ec2.is_gone


def test_billing_lists_count_billing_instances_and_filter_by_tags_as_common_says():
    from control import billing

    assert billing.BILLING_STATES is ec2.BILLING_STATES
    assert billing.env_filters is tags.env_filters


def _state_sets(path: Path) -> list[int]:
    """Lines of collection literals holding two or more EC2 instance state names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Set | ast.Tuple | ast.List):
            names = {e.value for e in node.elts if isinstance(e, ast.Constant)} & STATE_NAMES
            if len(names) >= 2:
                found.append(node.lineno)
    return found


def test_no_module_but_common_ec2_spells_out_a_set_of_instance_states():
    files = [p for d in ("common", "control", "trainer") for p in (ROOT / d).rglob("*.py")]
    offenders = {
        str(p.relative_to(ROOT)): lines
        for p in files
        if p != ROOT / "common" / "ec2.py" and (lines := _state_sets(p))
    }
    assert offenders == {}


def test_an_unknown_instance_is_gone():
    assert ec2.is_gone(ec2.NOT_FOUND) and ec2.is_gone("terminated") and ec2.is_gone("shutting-down")
    assert not any(ec2.is_gone(s) for s in ec2.BILLING_STATES)

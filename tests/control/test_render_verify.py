"""verify --fix's output says "fixed" only for what a describe or read confirmed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rich.console import Console

from control.cli import render


@pytest.mark.row("records-verify-fix-confirmed")
def test_an_action_only_requested_is_not_printed_as_fixed(monkeypatch):
    monkeypatch.setattr(render, "inventory_table", lambda inventory, title: title)
    out = Console(record=True, width=200, color_system=None)
    fixed = [
        "terminated i-0aaa",
        "requested termination of i-0bbb; DescribeInstances still shows shutting-down after 60 s",
        "asked S3 to delete the stale lock dev/system-state.json, but a read still finds it",
    ]
    result = SimpleNamespace(before=None, after=None, fixed=fixed, final=SimpleNamespace(clean=True))
    render.verify(out, result, env="dev", local=True, as_json=False)
    text = out.export_text()
    assert "fixed: terminated i-0aaa" in text
    assert "not yet confirmed: requested termination of i-0bbb" in text
    assert "not yet confirmed: asked S3 to delete the stale lock" in text
    assert text.count("fixed:") == 1


@pytest.mark.row("records-kill-confirmed")
@pytest.mark.parametrize(
    "confirmed, expected", [(True, "killed run 2026"), (False, "killed, termination requested")]
)
def test_kill_says_killed_outright_only_once_a_describe_saw_the_instance_terminated(confirmed, expected):
    out = Console(record=True, width=200, color_system=None)
    result = SimpleNamespace(
        nothing_to_kill=False,
        run_id="20261125-140502",
        status_before="training",
        waited_s=3.0,
        actions=[],
        cleanup_written_by="control",
        termination_requested=True,
        terminated_by_control=confirmed,
    )
    render.kill(out, result, env="dev", local=True)
    text = out.export_text()
    assert expected in text
    assert ("confirm with invoke verify" in text) is not confirmed

"""The CLI edge (control/cli): one-line errors and exit codes, flags from a dataclass, number formats."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from invoke import Context, Exit, task

from common.errors import UserError
from common.exitcodes import ExitCode
from control.cli.edge import edge, takes_flags
from control.cli.formats import duration, metric, money


def test_a_botocore_error_outside_an_aws_errors_block_is_still_one_line(capsys):
    """The invoke edge maps what escapes the backend (e.g. an SSO token expiring mid-command)."""
    from botocore.exceptions import ProfileNotFound, UnauthorizedSSOTokenError

    for exc, expected in (
        (ProfileNotFound(profile="dve"), "AWS profile 'dve'"),
        (UnauthorizedSSOTokenError(), "aws sso login"),
    ):

        def fail(exc=exc):
            raise exc

        with pytest.raises(Exit) as info:
            edge(fail)()
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err, err

    def bug():
        raise ValueError("a bug, not a user error")

    with pytest.raises(ValueError):  # anything else still surfaces as itself
        edge(bug)()


def test_a_user_error_is_one_red_line_with_its_exit_code_and_ctrl_c_is_130(capsys):
    class Refused(UserError):
        exit_code = 7

    def refuse():
        raise Refused("no, and here is how to fix it")

    with pytest.raises(Exit) as info:
        edge(refuse)()
    assert info.value.code == 7
    assert capsys.readouterr().err.strip() == "error: no, and here is how to fix it"

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(Exit) as info:
        edge(interrupted)()
    assert info.value.code == ExitCode.CTRL_C == 130


@dataclass(frozen=True, kw_only=True)
class _Flags:
    env: str = "dev"
    market: str | None = None
    max_runtime: str | None = None
    dry_run: bool = False
    json_: bool = False


@task(help={"env": "the env"})
@takes_flags(_Flags)
def _flagged(c, flags: _Flags):
    """A task that takes its flags as one value."""
    return flags


def test_flags_from_a_dataclass_are_the_tasks_flags_in_order():
    args = {a.name: a for a in _flagged.get_arguments()}
    assert list(args) == ["env", "market", "max_runtime", "dry_run", "json_"]
    assert args["env"].default == "dev" and args["dry_run"].kind is bool
    assert "--json" in [f"--{n}" for n in args["json_"].names] or "json" in args["json_"].names
    assert args["market"].names[-1] == "m" and args["max_runtime"].names[-1] == "a"  # short flags by order
    assert _flagged(Context(), env="prod", dry_run=True) == _Flags(env="prod", dry_run=True)
    assert _flagged.__doc__ == "A task that takes its flags as one value."


def test_number_formats():
    assert money(None) == "-" and money(0.526) == "$0.5260"
    assert duration(None) == "-" and duration(245.9) == "4m05s" and duration(3723) == "1h02m03s"
    assert metric(0.12345) == "0.1235" and metric("n/a") is None and metric(None) is None


def test_the_demo_prints_each_step_the_final_view_and_its_verdict():
    from pathlib import Path

    from rich.console import Console

    from control.cli import render
    from control.demo import DemoEvent
    from control.monitor import MonitorView, Outcome
    from control.report import ReportResult

    view = MonitorView(  # the real view, so the renderer and the view cannot drift apart
        run_id="20261125-140502",
        env="dev",
        outcome=Outcome.SUCCEEDED,
        status="results_sync",
        step=4,
        total_steps=4,
        loss=0.5,
        eta_s=None,
        elapsed_s=65,
        cost_usd=0.01,
        price_per_hour=0.526,
        local=True,
        instance_id="i-1",
        instance_type="g5.xlarge",
        instance_state="terminated",
        heartbeat_age_s=3.0,
        last_error=None,
        metrics={"model_wql": 0.03},
        changed=True,
        advice=None,
    )
    report = ReportResult(
        run_id="20261125-140502",
        index=Path("runs/dev/x/report/index.html"),
        images=(),
        metrics={"model_wql": 0.03, "baseline_wql": 0.07},
    )
    events = [
        DemoEvent(kind="info", message="local AWS already running at http://127.0.0.1:1"),
        DemoEvent(kind="view", message="training", data=view),
        DemoEvent(kind="report", message="report: index.html (60 s)", data=report),
    ]
    out = Console(width=200, record=True, force_terminal=False)
    render.demo(out, events)
    text = out.export_text()
    assert "> local AWS already running" in text
    assert "run 20261125-140502 succeeded phase=results_sync step=4/4 loss=0.5000" in text
    assert "1m05s" in text and "$0.0100" in text  # the final view's table
    assert "beats the seasonal-naive baseline: WQL 0.0300 vs 0.0700" in text
    assert "open runs/dev/x/report/index.html in a browser; the local AWS keeps running" in text

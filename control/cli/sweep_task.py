"""The ``invoke sweep`` task, and the sweep branches of ``monitor`` and ``kill`` (``tasks.py`` composes them).

Each parses its flags, calls one function of ``control/`` and renders with
:mod:`control.cli.sweeps`; :func:`control.cli.edge.edge` turns a user error into one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke import Exit, task

from control.cli import sweeps as render
from control.cli.edge import console as open_console
from control.cli.edge import edge
from control.cli.flags import given

HELP = {
    "env": "environment name (a Pulumi stack / a local env), e.g. dev",
    "grid": "the grid TOML file: a base spec (spec = 'base.toml' or [base]) and [grid] run-spec paths",
    "spec": "the base run spec (TOML or JSON) instead of the grid file's own",
    "dry-run": "print every point's run id, lock and job and change nothing",
    "local": "use local mode (moto on 127.0.0.1; `invoke local.up` first); also CHRONOS_LOCAL=1",
    "json": "print JSON instead of tables",
}


def _backend(local: bool) -> Any:
    from control.backend import open_backend

    return open_backend(local=local)


@task(help=HELP)
@edge
def sweep(c, grid, env="dev", spec=None, dry_run=False, local=False, json_=False):
    """Submit one AWS Batch job per grid point: each its own run id ({sweep_id}-NNN) and lock."""
    from control.sweep import sweep as do_sweep

    spec_path = given(spec, "--spec")
    outcome = do_sweep(
        lambda: _backend(local),
        env=env,
        grid_path=Path(given(grid, "--grid") or ""),
        spec_path=Path(spec_path) if spec_path else None,
        dry_run=dry_run,
    )
    render.sweep(open_console(), outcome, local=local, as_json=json_)
    if outcome.result is not None and not outcome.result.ok:
        from common.exitcodes import ExitCode

        raise Exit(code=ExitCode.FAILED)


def monitor_sweep(
    *, env: str, sweep_id: str, follow: bool, local: bool, as_json: bool, interval_s: float
) -> None:
    """``invoke monitor --sweep ID``: every member, again every ``interval_s`` with ``follow``."""
    from control.sweep_status import watch_sweep

    out, last = open_console(), None
    for view in watch_sweep(
        _backend(local), env=env, sweep_id=sweep_id, follow=follow, interval_s=interval_s
    ):
        render.sweep_view(out, view, as_json=as_json)
        last = view
    if last is not None and last.exit_code:
        raise Exit(code=last.exit_code)


def kill_sweep(*, env: str, sweep_id: str | None, run_id: str | None, grace_s: float, local: bool) -> None:
    """``invoke kill --sweep ID`` or ``--run-id MEMBER``."""
    from control.sweep_kill import kill_sweep as do_kill

    result = do_kill(_backend(local), env=env, sweep_id=sweep_id, run_id=run_id, grace_s=grace_s)
    render.sweep_kill(open_console(), result, local=local)

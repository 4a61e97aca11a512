"""The ``invoke local.*`` tasks: the local AWS (moto on 127.0.0.1) and its envs (tasks.py composes them)."""

from __future__ import annotations

from invoke import task

from control.cli import render
from control.cli.edge import console as open_console
from control.cli.edge import edge
from control.cli.flags import whole


@task(
    help={
        "env": "env to provision in the local AWS",
        "port": "TCP port on 127.0.0.1 (0: any free one)",
        "debug-profile": "also create the debug instance profile (stack config debug_profile)",
        "batch": "also create the sweep engine: Batch queue, job definition, compute envs (config batch)",
    }
)
@edge
def up(c, env="dev", port="0", debug_profile=False, batch=False):
    """Start local AWS (moto) in the background, provision an env, stage the synthetic data."""
    from control.localenv import up as local_up

    render.local_up(
        open_console(),
        local_up(
            env=env,
            port=whole(port, "--port", most=65535),
            debug_profile=bool(debug_profile),
            batch=bool(batch),
        ),
    )


@task
@edge
def down(c):
    """Stop local instances and the background local AWS."""
    from control.localenv import down as local_down

    render.local_down(open_console(), local_down())


@task(name="env", help={"env": "env whose operator keys to export"})
@edge
def env_(c, env="dev"):
    """Print `export ...` lines for the local AWS, as the env's operator (use: eval "$(invoke local.env)")."""
    from control.localenv import exports

    render.exports(open_console(), exports(env=env))

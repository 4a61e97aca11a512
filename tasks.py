"""invoke tasks: the command-line namespace; the work lives in ``control/``.

Every task parses its flags, calls one function of ``control/`` and prints its result
with :mod:`control.cli.render`. :func:`control.cli.edge.edge` turns a
:class:`common.errors.UserError` into one red line on stderr and its exit code (2 for
anything the user can fix); never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke import Collection, Exit, task

from common.exitcodes import ExitCode
from control.cli import render
from control.cli.edge import console as open_console
from control.cli.edge import edge, takes_flags
from control.cli.flags import given, seconds, whole
from control.cli.local_tasks import down, env_, up
from control.cli.sweep_task import kill_sweep, monitor_sweep, sweep

LOCAL_HELP = "use local mode (moto on 127.0.0.1; `invoke local.up` first); also CHRONOS_LOCAL=1"
ENV_HELP = "environment name (a Pulumi stack / a local env), e.g. dev"
JSON_HELP = "print JSON instead of tables"
RUN_ID_HELP = "run id YYYYMMDD-HHMMSS, or 'latest'"


def _backend(local: bool) -> Any:
    from control.backend import open_backend

    return open_backend(local=local)


def _path(value: str | None, flag: str = "--spec") -> Path | None:
    return Path(value) if given(value, flag) is not None else None


# ------------------------------------------------------------------ launch


@dataclass(frozen=True, kw_only=True)
class LaunchFlags:
    """The flags of ``invoke launch``, in the order invoke gives them short names."""

    env: str = "dev"
    spec: str | None = None
    instance_type: str | None = None
    market: str | None = None
    max_runtime: str | None = None
    dry_run: bool = False
    resume: str | None = None
    skip_doctor: bool = False
    skip_data_check: bool = False
    local: bool = False
    json_: bool = False


@task(
    help={
        "env": ENV_HELP,
        "spec": "run spec TOML file (defaults for everything it leaves out)",
        "instance-type": "override the spec's instance types with this one (g4dn.* or g5.*)",
        "market": "spot, on-demand or spot-then-on-demand (overrides the spec)",
        "max-runtime": "hard limit like 90m, 12h, 1h30m (overrides the spec)",
        "dry-run": "print the full plan and change nothing",
        "resume": "relaunch this interrupted/killed run (RUN_ID) with its own spec; training resumes "
        "from its newest checkpoint",
        "skip-doctor": "do not run `invoke doctor`'s checks before creating anything",
        "skip-data-check": "do not check the S3 training data against the spec first (`invoke data.check`)",
        "local": LOCAL_HELP,
        "json": JSON_HELP,
    }
)
@edge
@takes_flags(LaunchFlags)
def launch(c, flags: LaunchFlags):
    """Launch a training run: lock, upload configs and code, start the instance."""
    from control.launch import InstanceOverrides
    from control.launch import launch as do_launch

    outcome = do_launch(
        lambda: _backend(flags.local),
        env=flags.env,
        spec_path=_path(flags.spec),
        overrides=InstanceOverrides(
            instance_type=given(flags.instance_type, "--instance-type"),
            market=given(flags.market, "--market"),
            max_runtime=given(flags.max_runtime, "--max-runtime"),
        ),
        dry_run=flags.dry_run,
        resume=given(flags.resume, "--resume"),
        skip_doctor=flags.skip_doctor,
        skip_data_check=flags.skip_data_check,
    )
    render.launch(open_console(), outcome, as_json=flags.json_)


# ------------------------------------------------- doctor, monitor, kill, verify, runs


@task(
    help={
        "env": ENV_HELP,
        "spec": "run spec TOML file whose instance types, market and data to check",
        "local": LOCAL_HELP,
        "json": JSON_HELP,
    }
)
@edge
def doctor(c, env="dev", spec=None, local=False, json_=False):
    """Check an env before a launch: credentials, stack, bucket, AMI, IAM, quotas, data; exit 1 on failure."""
    from control.doctor import doctor as do_doctor

    report = do_doctor(lambda: _backend(local), env=env, spec_path=_path(spec))
    render.doctor(open_console(), report, env=env, as_json=json_)
    if report.exit_code:
        raise Exit(code=report.exit_code)


@task(
    help={
        "env": ENV_HELP,
        "follow": "keep watching until the run ends",
        "json": JSON_HELP,
        "local": LOCAL_HELP,
        "interval": "seconds between polls with --follow",
        "sweep": "watch every member of this sweep (SWEEP_ID) with its Batch job instead",
    }
)
@edge
def monitor(c, env="dev", follow=False, json_=False, local=False, interval="2", sweep=None):
    """Watch the active run: phase, step, loss, ETA, cost; exit 0 success, non-zero failure."""
    from control.cli.live import ViewPrinter
    from control.monitor import watch

    if given(sweep, "--sweep"):
        wait = seconds(interval, "--interval", above=True)
        return monitor_sweep(
            env=env, sweep_id=sweep, follow=follow, local=local, as_json=json_, interval_s=wait
        )
    printer = ViewPrinter(open_console(), as_json=json_, err=open_console(stderr=True))
    try:
        for view in watch(
            _backend(local), env=env, follow=follow, interval_s=seconds(interval, "--interval", above=True)
        ):
            printer.show(view)
    finally:
        last = printer.close()
    if last is not None and last.outcome.exit_code:
        raise Exit(code=last.outcome.exit_code)


@task(
    help={
        "env": ENV_HELP,
        "grace": "seconds the instance gets to checkpoint and finalize",
        "local": LOCAL_HELP,
        "sweep": "kill every member of this sweep (SWEEP_ID): cancel queued jobs, terminate running ones",
        "run-id": "kill this one sweep member (SWEEP_ID-NNN)",
    }
)
@edge
def kill(c, env="dev", grace="120", local=False, sweep=None, run_id=None):
    """Stop the active run: mark it killed, let it checkpoint, then terminate the instance."""
    from control.kill import kill_run

    if given(sweep, "--sweep") or given(run_id, "--run-id"):
        wait = seconds(grace, "--grace")
        return kill_sweep(env=env, sweep_id=sweep or None, run_id=run_id or None, grace_s=wait, local=local)
    r = kill_run(_backend(local), env=env, grace_s=seconds(grace, "--grace"))
    render.kill(open_console(), r, env=env, local=local)


@task(
    help={
        "env": ENV_HELP,
        "fix": "remove orphaned resources (needs --yes)",
        "yes": "confirm --fix",
        "local": LOCAL_HELP,
        "json": JSON_HELP,
    }
)
@edge
def verify(c, env="dev", fix=False, yes=False, local=False, json_=False):
    """Prove nothing bills: tagged instances, volumes, spot requests, stale lock; exit 1 on orphans."""
    from control.verify import verify as do_verify

    r = do_verify(_backend(local), env=env, fix=fix, yes=yes)
    render.verify(open_console(), r, env=env, local=local, as_json=json_)
    if r.exit_code:
        raise Exit(code=r.exit_code)


@task(help={"env": ENV_HELP, "limit": "how many runs, newest first", "local": LOCAL_HELP, "json": JSON_HELP})
@edge
def runs(c, env="dev", limit="20", local=False, json_=False):
    """List runs: id, status, duration, cost, metrics."""
    from control.runs import list_runs

    render.runs(
        open_console(),
        list_runs(_backend(local), env=env, limit=whole(limit, "--limit", least=1)),
        env=env,
        as_json=json_,
    )


@task(
    help={
        "env": ENV_HELP,
        "since": "how far back, by run start: 30d, 12h, 90m or 2w",
        "sweep": "only this sweep's members (SWEEP_ID), and their total",
        "local": LOCAL_HELP,
        "json": JSON_HELP,
    }
)
@edge
def cost(c, env="dev", since="30d", sweep=None, local=False, json_=False):
    """What the runs cost: per run and in total, per attempt from each run's ledger, with the savings."""
    from control.cost import cost_report

    report = cost_report(_backend(local), env=env, since=since, sweep=given(sweep, "--sweep"))
    render.cost(open_console(), report, as_json=json_)


# ----------------------------------------------------- logs, fetch, report


@task(
    help={
        "run-id": RUN_ID_HELP,
        "env": ENV_HELP,
        "tail": "only the last N lines of the trainer log (0: all)",
        "attempt": "the trainer log of this attempt (1 = the launch; 0, the default: the newest)",
        "console": "the instance's console output (EC2 GetConsoleOutput) while it lives",
        "local": LOCAL_HELP,
    }
)
@edge
def logs(c, run_id, env="dev", tail="0", attempt="0", console=False, local=False):
    """Show a run's log: phases, errors and trainer log; --console: the live instance's console."""
    lines = whole(tail, "--tail") or None
    which = whole(attempt, "--attempt") or None
    out = open_console()
    if console:
        from control.console import console_output

        render.console_output(out, console_output(_backend(local), env=env, run_id=run_id, tail=lines))
        return
    from control.fetch import read_logs

    render.logs(out, read_logs(_backend(local), env=env, run_id=run_id, tail=lines, attempt=which))


@task(
    help={
        "run-id": RUN_ID_HELP,
        "env": ENV_HELP,
        "dest": "folder that receives {env}/{run_id}/ (default: runs/)",
        "checkpoints": "also download checkpoints/ (large; only needed to resume)",
        "local": LOCAL_HELP,
    }
)
@edge
def fetch(c, run_id, env="dev", dest=None, checkpoints=False, local=False):
    """Download a run's artifacts and logs to runs/{env}/{run_id}/ and validate them."""
    from control.fetch import fetch_run

    r = fetch_run(
        _backend(local), env=env, run_id=run_id, dest_root=_path(dest, "--dest"), checkpoints=checkpoints
    )
    render.fetch(open_console(), r)
    if not r.ok:
        raise Exit(code=ExitCode.FAILED)


@task(
    help={
        "run-id": RUN_ID_HELP,
        "env": ENV_HELP,
        "dest": "folder holding {env}/{run_id}/ (default: runs/)",
        "local": LOCAL_HELP,
    }
)
@edge
def report(c, run_id, env="dev", dest=None, local=False):
    """Write an HTML report with plots (loss, forecasts, phases, cost) for a run."""
    from control.report import report_run

    render.report(
        open_console(), report_run(_backend(local), env=env, run_id=run_id, runs_dir=_path(dest, "--dest"))
    )


@task(
    help={
        "env": ENV_HELP,
        "dir": "folder of *.whl files the instance installs with pip --no-index",
        "packed": "a packed Python env (tar.gz) to use instead of the wheelhouse",
        "local": LOCAL_HELP,
    }
)
@edge
def wheelhouse(c, env="dev", dir=None, packed=None, local=False):  # noqa: A002
    """Upload the instance's Python packages (wheels or a packed env) to cached-datasets/python-env/."""
    from control.pyenv import upload_python_env

    r = upload_python_env(
        _backend(local), env=env, wheels_dir=_path(dir, "--dir"), packed=_path(packed, "--packed")
    )
    render.wheelhouse(open_console(), r)


@task(
    help={
        "run-id": RUN_ID_HELP,
        "env": ENV_HELP,
        "start": "start the session here (needs the AWS CLI and the Session Manager plugin)",
        "local": LOCAL_HELP,
    }
)
@edge
def debug(c, run_id, env="dev", start=False, local=False):
    """A shell on a debug run's instance through Session Manager: no SSH, no open port."""
    from control.debug import find_target, start_session

    target = find_target(_backend(local), env=env, run_id=run_id)
    if not start:
        render.debug(open_console(), target)
        return
    code = start_session(target)
    if code:
        raise Exit(code=code)


# -------------------------------------------------------------------- data


@task(
    name="check",
    help={
        "env": ENV_HELP,
        "spec": "run spec TOML file whose data section (prefix, columns, frequency) and horizon to check",
        "local": LOCAL_HELP,
        "json": JSON_HELP,
    },
)
@edge
def data_check(c, env="dev", spec=None, local=False, json_=False):
    """Check the training data in S3 against the run spec (footers and a small sample); exit 2 on an error."""
    from control.cli.data_check import data_check as show
    from control.data_check import DataCheckError
    from control.data_check import data_check as check

    result = check(lambda: _backend(local), env=env, spec_path=_path(spec))
    show(open_console(), result, as_json=json_)
    if not result.ok:
        raise DataCheckError(result, listed=True)


# -------------------------------------------------------------------- demo


@task(
    help={
        "steps": "training steps of the demo run",
        "env": ENV_HELP,
        "dest": "folder that receives {env}/{run_id}/ (default: runs/)",
    }
)
@edge
def demo(c, steps="0", env="dev", dest=None):
    """Local demo: local AWS, provision, launch, monitor, verify, fetch, report."""
    from control.demo import DEMO_STEPS, run_demo

    render.demo(
        open_console(),
        run_demo(env=env, steps=whole(steps, "--steps") or DEMO_STEPS, runs_dir=_path(dest, "--dest")),
    )


local_ns = Collection("local", up, down, env_)  # control/cli/local_tasks.py
ns = Collection(
    launch, sweep, doctor, monitor, kill, verify, runs, cost, logs, fetch, report, wheelhouse, demo, debug
)
ns.add_collection(local_ns)
ns.add_collection(Collection("data", data_check))

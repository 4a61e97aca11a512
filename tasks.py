"""invoke tasks: argument parsing and printing only; the work lives in ``control/``.

Every task calls one function of ``control/`` and renders its result with rich.
A :class:`common.errors.UserError` becomes one red line on stderr and its exit
code (2 for anything the user can fix); never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Collection, Exit, task
from rich.console import Console
from rich.table import Table

LOCAL_HELP = "use local mode (moto on 127.0.0.1; `invoke local.up` first); also CHRONOS_LOCAL=1"
ENV_HELP = "environment name (a Pulumi stack / a local env), e.g. dev"
JSON_HELP = "print JSON instead of tables"


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 240, highlight=False)


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one red line and their exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from common.errors import UserError

        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _console(stderr=True).print(f"error: {exc}", style="red", soft_wrap=True, markup=False)
            raise Exit(code=exc.exit_code) from None
        except Exception as exc:  # a botocore configuration/credential error outside an aws_errors block
            mapped = _aws_user_error(exc)
            if mapped is None:
                raise
            _console(stderr=True).print(f"error: {mapped}", style="red", soft_wrap=True, markup=False)
            raise Exit(code=mapped.exit_code) from None
        except KeyboardInterrupt:
            _console(stderr=True).print("interrupted", style="yellow")
            raise Exit(code=130) from None

    return wrapper


def _aws_user_error(exc: Exception) -> Any:
    if not type(exc).__module__.startswith("botocore"):
        return None
    from control.backend import user_error

    return user_error(exc, "this command")


def _backend(local: bool) -> Any:
    from control.backend import open_backend

    return open_backend(local=local)


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


# ------------------------------------------------------------------ launch


@task(
    help={
        "env": ENV_HELP,
        "spec": "run spec TOML file (defaults for everything it leaves out)",
        "instance-type": "override the spec's instance types with this one (g4dn.* or g5.*)",
        "market": "spot or on-demand (overrides the spec)",
        "max-runtime": "hard limit like 90m, 12h, 1h30m (overrides the spec)",
        "dry-run": "print the full plan and change nothing",
        "resume": "relaunch this interrupted/killed run (RUN_ID) with its own spec; training resumes "
        "from its newest checkpoint",
        "skip-doctor": "do not run `invoke doctor`'s checks before creating anything",
        "local": LOCAL_HELP,
        "json": JSON_HELP,
    }
)
@edge
def launch(
    c,
    env="dev",
    spec=None,
    instance_type=None,
    market=None,
    max_runtime=None,
    dry_run=False,
    resume=None,
    skip_doctor=False,
    local=False,
    json_=False,
):
    """Launch a training run: lock, upload configs and code, start the instance."""
    from control.launch import launch as do_launch

    outcome = do_launch(
        lambda: _backend(local),
        env=env,
        spec_path=Path(spec) if spec else None,
        instance_type=instance_type,
        market=market,
        max_runtime=max_runtime,
        dry_run=dry_run,
        resume=resume,
        skip_doctor=skip_doctor,
    )
    out = _console()
    plan = outcome.plan.summary()
    if json_:
        doc = {"plan": plan, "result": outcome.result.__dict__ if outcome.result else None}
        out.print_json(json.dumps(doc, default=str))
        return
    if outcome.result is None:
        out.print(_plan_table(plan))
        uploads = Table("S3 key", "bytes", "note", title="uploads", title_justify="left")
        for u in plan["uploads"]:
            uploads.add_row(u["key"], str(u["bytes"]), u["skip"] or "")
        out.print(uploads)
        out.print("dry run: nothing was created or changed")
        return
    r = outcome.result
    flag = " --local" if outcome.plan.local else ""
    out.print(
        f"[green]launched[/] run [bold]{r.run_id}[/] on {r.instance_id} "
        f"({r.instance_type}, {r.market}, {r.availability_zone}, {_money(r.price_per_hour)}/h)"
    )
    if r.skipped:
        out.print(f"unchanged, not uploaded again: {', '.join(r.skipped)}")
    out.print(f"next: invoke monitor --env={r.env}{flag} --follow")


def _plan_table(plan: dict[str, Any]) -> Table:
    ud = plan["user_data"]
    return _kv_table(
        f"launch plan for run {plan['run_id']} ({'local' if plan['local'] else 'AWS'})",
        [
            (
                "instance",
                f"{plan['instance_type']} {plan['market']} in {plan['availability_zone']} "
                f"({plan['subnet_id']})",
            ),
            ("fallbacks", ", ".join(plan["fallbacks"]) or "none"),
            ("price", f"{_money(plan['price_per_hour'])}/h ({plan['price_source']})"),
            ("max runtime", f"{plan['max_runtime_minutes']} min, at most {_money(plan['max_cost'])}"),
            ("launch template", plan["launch_template_id"]),
            (
                "model",
                f"{plan['model']['base']} {plan['model']['finetune_mode']}, "
                f"{plan['model']['num_steps']} steps, horizon {plan['model']['prediction_length']}",
            ),
            (
                "data",
                f"s3://{plan['bucket']}/{plan['data']['prefix']} ({plan['data']['files']} files, "
                f"{plan['data']['bytes']} bytes)",
            ),
            ("user data", f"{ud['lines']} lines, {ud['bytes']} bytes: {ud['first_line']}"),
            ("state / lock", f"s3://{plan['bucket']}/{plan['state_key']}"),
            ("outputs", f"s3://{plan['bucket']}/{plan['outputs_prefix']}"),
            ("logs", f"s3://{plan['bucket']}/{plan['logs_prefix']}"),
            ("tags", ", ".join(f"{k}={v}" for k, v in sorted(plan["tags"].items()))),
        ],
    )


# ------------------------------------------------------------------ doctor

_STATUS_STYLE = {"ok": "green", "fail": "red", "warn": "yellow", "unknown": "cyan"}


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

    report = do_doctor(lambda: _backend(local), env=env, spec_path=Path(spec) if spec else None)
    out = _console()
    if json_:
        out.print_json(json.dumps(report.to_dict()))
    else:
        table = Table(
            "check",
            "status",
            "detail",
            "fix",
            title=f"doctor: env {env} ({'local' if report.local else 'AWS'})",
            title_justify="left",
        )
        for check in report.checks:
            style = _STATUS_STYLE[check.status.value]
            table.add_row(check.name, f"[{style}]{check.status.value}[/]", check.detail, check.fix or "")
        out.print(table)
        failed = ", ".join(x.name for x in report.failed)
        out.print(
            f"[red]{len(report.failed)} check(s) failed[/]: {failed}"
            if failed
            else "[green]ready to launch[/] (warn and unknown do not stop a launch)",
            soft_wrap=True,
        )
    if report.exit_code:
        raise Exit(code=report.exit_code)


# ----------------------------------------------------------------- monitor


def _view_table(v: Any) -> Table:
    step = f"{v.step}/{v.total_steps}" if v.step is not None else "-"
    rows = [
        ("run", v.run_id),
        ("outcome", v.outcome.value),
        ("phase", v.status),
        ("step", step),
        ("loss", f"{v.loss:.4f}" if isinstance(v.loss, int | float) else None),
        ("ETA", _duration(v.eta_s) if v.eta_s is not None else None),
        ("elapsed", _duration(v.elapsed_s)),
        (
            "cost so far",
            f"{_money(v.cost_usd)} at {_money(v.price_per_hour)}/h"
            + (" (list price; local run is free)" if v.local else ""),
        ),
        ("instance", f"{v.instance_id or '-'} {v.instance_type or ''} {v.instance_state or ''}".strip()),
        ("heartbeat", f"{v.heartbeat_age_s:.0f} s ago" if v.heartbeat_age_s is not None else None),
        ("last error", v.last_error),
    ]
    for key in ("model_wql", "baseline_wql", "model_mase", "baseline_mase", "final_loss"):
        if key in v.metrics and v.metrics[key] is not None:
            rows.append((key, f"{v.metrics[key]:.4f}"))
    return _kv_table(f"env {v.env}", [(k, x) for k, x in rows if x is not None])


def _view_line(v: Any) -> str:
    parts = [f"run {v.run_id}", v.outcome.value, f"phase={v.status}"]
    if v.step is not None:
        parts.append(f"step={v.step}/{v.total_steps}")
    if isinstance(v.loss, int | float):
        parts.append(f"loss={v.loss:.4f}")
    if v.eta_s is not None:
        parts.append(f"eta={_duration(v.eta_s)}")
    parts.append(f"elapsed={_duration(v.elapsed_s)}")
    if v.cost_usd is not None:
        parts.append(f"cost={_money(v.cost_usd)}")
    return " ".join(parts)


class ViewPrinter:
    """Shows monitor views: a live table on a terminal, one line per change otherwise."""

    def __init__(self, console: Console, *, as_json: bool = False) -> None:
        self.console, self.as_json = console, as_json
        self.last: Any = None
        self.live: Any = None

    def show(self, v: Any) -> None:
        self.last = v
        if self.as_json:
            if v.changed or v.outcome.is_final():
                self.console.print_json(json.dumps(v.to_dict()))
        elif self.console.is_terminal:
            if self.live is None:
                from rich.live import Live

                self.live = Live(console=self.console, refresh_per_second=4)
                self.live.start()
            self.live.update(_view_table(v))
        elif v.changed or v.outcome.is_final() or v.advice:
            self.console.print(_view_line(v), soft_wrap=True)

    def close(self) -> Any:
        """Stop the live view, print the final table and advice; return the last view."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.last is not None and not self.as_json:
            self.console.print(_view_table(self.last))
        if self.last is not None and self.last.advice and not self.as_json:
            self.console.print(f"[yellow]{self.last.advice}[/]", soft_wrap=True)
        return self.last


@task(
    help={
        "env": ENV_HELP,
        "follow": "keep watching until the run ends",
        "json": JSON_HELP,
        "local": LOCAL_HELP,
        "interval": "seconds between polls with --follow",
    }
)
@edge
def monitor(c, env="dev", follow=False, json_=False, local=False, interval=2.0):
    """Watch the active run: phase, step, loss, ETA, cost; exit 0 success, non-zero failure."""
    from control.monitor import watch

    printer = ViewPrinter(_console(), as_json=json_)
    try:
        for view in watch(_backend(local), env=env, follow=follow, interval_s=float(interval)):
            printer.show(view)
    finally:
        last = printer.close()
    if last is not None and last.outcome.exit_code:
        raise Exit(code=last.outcome.exit_code)


# -------------------------------------------------------------------- kill


@task(
    help={
        "env": ENV_HELP,
        "grace": "seconds the instance gets to checkpoint and finalize",
        "local": LOCAL_HELP,
    }
)
@edge
def kill(c, env="dev", grace=120, local=False):
    """Stop the active run: mark it killed, let it checkpoint, then terminate the instance."""
    from control.kill import kill_run

    r = kill_run(_backend(local), env=env, grace_s=float(grace))
    out = _console()
    if r.nothing_to_kill:
        out.print(f"no active run in env {env}: nothing to kill")
        return
    out.print(f"[green]killed[/] run [bold]{r.run_id}[/] (was {r.status_before}) after {r.waited_s:.0f} s")
    for action in r.actions:
        out.print(f"  - {action}", soft_wrap=True)
    who = "the instance" if r.cleanup_written_by == "instance" else "this command (the instance could not)"
    out.print(
        f"cleanup_status.json written by {who}; "
        f"check with: invoke verify --env={env}{' --local' if local else ''}"
    )


# ------------------------------------------------------------------ verify


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
    out = _console()
    if json_:
        out.print_json(
            json.dumps(
                {
                    "before": r.before.to_dict(),
                    "fixed": r.fixed,
                    "after": r.after.to_dict() if r.after else None,
                }
            )
        )
    else:
        _print_inventory(out, r.before, "inventory")
        for action in r.fixed:
            out.print(f"[green]fixed[/]: {action}", soft_wrap=True)
        if r.after is not None:
            _print_inventory(out, r.after, "after --fix")
        if r.final.clean:
            out.print(f"[green]clean[/]: nothing orphaned bills in env {env}")
        else:
            flag = " --local" if local else ""
            out.print(
                f"[red]{len(r.final.orphans)} orphaned[/]: remove with "
                f"invoke verify --env={env}{flag} --fix --yes",
                soft_wrap=True,
            )
    if r.exit_code:
        raise Exit(code=r.exit_code)


def _print_inventory(out: Console, inv: Any, title: str) -> None:
    table = Table(
        "kind",
        "state",
        "orphaned",
        "run",
        "detail",
        title=f"{title}: env {inv.env} at {inv.checked_at}",
        title_justify="left",
    )
    table.add_column("resource", no_wrap=True)
    for f in inv.findings:
        table.add_row(
            f.kind, f.state, "[red]yes[/]" if f.orphaned else "no", f.run_id or "-", f.detail, f.resource
        )
    if not inv.findings:
        table.add_row("-", "-", "no", "-", "nothing that bills", "-")
    out.print(table)


# -------------------------------------------------------------------- runs


@task(help={"env": ENV_HELP, "limit": "how many runs, newest first", "local": LOCAL_HELP, "json": JSON_HELP})
@edge
def runs(c, env="dev", limit=20, local=False, json_=False):
    """List runs: id, status, duration, cost, metrics."""
    from control.runs import list_runs

    found = list_runs(_backend(local), env=env, limit=int(limit))
    out = _console()
    if json_:
        out.print_json(json.dumps([r.to_dict() for r in found]))
        return
    table = Table(
        "run id",
        "status",
        "duration",
        "cost",
        "instance",
        "model WQL",
        "baseline WQL",
        "final loss",
        "note",
        title=f"runs in env {env}",
        title_justify="left",
    )
    for r in found:
        m = r.metrics
        table.add_row(
            r.run_id,
            r.status,
            _duration(r.duration_s),
            _money(r.cost_usd),
            f"{r.instance_type or '-'} {r.market or ''}",
            *(
                f"{m[k]:.4f}" if isinstance(m.get(k), int | float) else "-"
                for k in ("model_wql", "baseline_wql", "final_loss")
            ),
            r.problem or r.last_error or "",
        )
    if not found:
        table.add_row("-", "no runs yet", "-", "-", "-", "-", "-", "-", f"invoke launch --env={env}")
    out.print(table)


# ----------------------------------------------------- logs, fetch, report


@task(
    help={
        "run-id": "run id YYYYMMDD-HHMMSS, or 'latest'",
        "env": ENV_HELP,
        "tail": "only the last N lines of the trainer log (0: all)",
        "console": "the instance's console output (EC2 GetConsoleOutput) while it lives",
        "local": LOCAL_HELP,
    }
)
@edge
def logs(c, run_id, env="dev", tail=0, console=False, local=False):
    """Show a run's log: phases, errors and trainer.log; --console: the live instance's console."""
    out = _console()
    if console:
        from control.console import console_output

        con = console_output(_backend(local), env=env, run_id=run_id, tail=int(tail) or None)
        if con.text:
            out.print(f"--- console of {con.instance_id} ({con.state}): {con.source}", style="bold")
            out.print(con.text, markup=False, soft_wrap=True, highlight=False)
        if con.problem:
            out.print(f"[yellow]{con.problem}[/]", soft_wrap=True)
        return
    from control.fetch import read_logs

    r = read_logs(_backend(local), env=env, run_id=run_id, tail=int(tail) or None)
    if r.training:
        t = r.training
        phases = Table(
            "phase",
            "status",
            "started",
            "duration",
            title=f"run {r.run_id}: {t.get('completion_status') or t.get('status')}",
            title_justify="left",
        )
        for p in t.get("phases", []):
            dur = p.get("duration_s")
            phases.add_row(p["name"], p["status"], p["started_at"], "-" if dur is None else f"{dur:.1f} s")
        out.print(phases)
        for e in t.get("errors", []):
            out.print(f"[red]{e['error_class']}[/] {e['component']}: {e['message']}", soft_wrap=True)
    if r.text:
        out.print(f"--- {r.source}", style="bold")
        out.print(r.text, markup=False, soft_wrap=True)
    if r.problem:
        out.print(f"[yellow]{r.problem}[/]", soft_wrap=True)


@task(
    help={
        "run-id": "run id YYYYMMDD-HHMMSS, or 'latest'",
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
        _backend(local),
        env=env,
        run_id=run_id,
        dest_root=Path(dest) if dest else None,
        checkpoints=checkpoints,
    )
    out = _console()
    out.print(f"fetched {len(r.files)} files ({r.bytes} bytes) of run {r.run_id} to {r.dest}")
    if r.skipped:
        out.print(f"skipped {len(r.skipped)} checkpoint files (add --checkpoints to download them)")
    out.print(f"schema-valid: {', '.join(r.valid) or 'none found'}")
    for rel, problem in r.invalid.items():
        out.print(f"[red]invalid[/] {rel}: {problem}", soft_wrap=True)
    if not r.ok:
        raise Exit(code=1)


@task(
    help={
        "run-id": "run id YYYYMMDD-HHMMSS, or 'latest'",
        "env": ENV_HELP,
        "dest": "folder holding {env}/{run_id}/ (default: runs/)",
        "local": LOCAL_HELP,
    }
)
@edge
def report(c, run_id, env="dev", dest=None, local=False):
    """Write an HTML report with plots (loss, forecasts, phases, cost) for a run."""
    from control.report import report_run

    r = report_run(_backend(local), env=env, run_id=run_id, runs_dir=Path(dest) if dest else None)
    out = _console()
    out.print(f"report of run {r.run_id}: {r.index}")
    for note in r.notes:
        out.print(f"  not shown: {note}", soft_wrap=True)


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
        _backend(local),
        env=env,
        wheels_dir=Path(dir) if dir else None,
        packed=Path(packed) if packed else None,
    )
    out = _console()
    out.print(
        f"uploaded {len(r.uploaded)} file(s) to s3://{r.bucket}/cached-datasets/python-env/; "
        f"{len(r.skipped)} already there"
    )


@task(
    help={
        "run-id": "run id YYYYMMDD-HHMMSS, or 'latest'",
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
    if start:
        code = start_session(target)
        if code:
            raise Exit(code=code)
        return
    out = _console()
    out.print(
        f"run {target.run_id}: instance {target.instance_id} is {target.state} with the debug profile; "
        "connect with:",
        soft_wrap=True,
    )
    out.print(target.command_line, markup=False, soft_wrap=True)


# -------------------------------------------------------------------- demo


@task(
    help={
        "steps": "training steps of the demo run",
        "env": ENV_HELP,
        "dest": "folder that receives {env}/{run_id}/ (default: runs/)",
    }
)
@edge
def demo(c, steps=0, env="dev", dest=None):
    """Local demo: local AWS, provision, launch, monitor, verify, fetch, report."""
    from control.demo import DEMO_STEPS, run_demo

    out = _console()
    printer, closed = ViewPrinter(out), False
    try:
        for ev in run_demo(env=env, steps=int(steps) or DEMO_STEPS, runs_dir=Path(dest) if dest else None):
            if ev.kind == "view":
                printer.show(ev.data)
                continue
            if printer.last is not None and not closed:
                printer.close()
                closed = True
            out.print(f"[bold cyan]>[/] {ev.message}", soft_wrap=True)
            if ev.kind == "verified":
                _print_inventory(out, ev.data.final, "verify")
            elif ev.kind == "audit":
                for line in ev.data.summary().splitlines()[1:]:
                    out.print(f"  {line}", soft_wrap=True, markup=False)
            elif ev.kind == "report":
                m = ev.data.metrics
                if all(isinstance(m.get(k), int | float) for k in ("model_wql", "baseline_wql")):
                    verdict = "beats" if m["model_wql"] < m["baseline_wql"] else "does not beat"
                    out.print(
                        f"the fine-tuned model {verdict} the seasonal-naive baseline: WQL "
                        f"{m['model_wql']:.4f} vs {m['baseline_wql']:.4f}"
                    )
                out.print(
                    f"[green]open {ev.data.index} in a browser[/]; the local AWS keeps running for "
                    "`invoke runs --local` and the aws CLI; stop it with `invoke local.down`",
                    soft_wrap=True,
                )
    finally:
        if printer.live is not None:
            printer.close()


# ------------------------------------------------------------------- local


@task(
    help={
        "env": "env to provision in the local AWS",
        "port": "TCP port on 127.0.0.1 (0: any free one)",
        "debug-profile": "also create the debug instance profile (stack config debug_profile)",
    }
)
@edge
def up(c, env="dev", port=0, debug_profile=False):
    """Start local AWS (moto) in the background, provision an env, stage the synthetic data."""
    from control.localenv import up as local_up

    r = local_up(env=env, port=int(port), debug_profile=bool(debug_profile))
    out = _console()
    out.print(
        f"local AWS {'started' if r.started else 'already running'} at {r.endpoint_url}"
        + (f" (pid {r.pid})" if r.pid else "")
    )
    out.print(
        f"env {r.env}: bucket s3://{r.bucket}; dataset: {r.staged.files} files under "
        f"{r.staged.prefix} ({r.staged.uploaded} uploaded now)"
    )
    which = "" if r.env == "dev" else f" --env={r.env}"
    out.print(
        f'# point the aws CLI and invoke at it, as the env\'s operator:  eval "$(invoke local.env{which})"'
    )
    for key, value in r.exports.items():
        out.print(f"export {key}={value}", markup=False)


@task
@edge
def down(c):
    """Stop local instances and the background local AWS."""
    from control.localenv import down as local_down

    r = local_down()
    out = _console()
    if r.instances_stopped:
        out.print(f"stopped local instances: {', '.join(r.instances_stopped)}")
    out.print(f"local AWS at {r.endpoint_url} stopped" if r.server_stopped else "local AWS was not running")


@task(name="env", help={"env": "env whose operator keys to export"})
@edge
def env_(c, env="dev"):
    """Print `export ...` lines for the local AWS, as the env's operator (use: eval "$(invoke local.env)")."""
    from control.localenv import exports

    out = _console()
    for key, value in exports(env=env).items():
        out.print(f"export {key}={value}", markup=False)


local_ns = Collection("local", up, down, env_)
ns = Collection(launch, doctor, monitor, kill, verify, runs, logs, fetch, report, wheelhouse, demo, debug)
ns.add_collection(local_ns)

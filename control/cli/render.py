"""What each invoke task prints: the result of one ``control/`` call, as tables, lines or JSON.

Each function takes the console and the result object; none of them decides an exit
code (the task does) or does any work beyond formatting.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from common.pricing import PRICE_SOURCE
from control.cli.costs import cost_table
from control.cli.formats import money
from control.cli.live import ViewPrinter
from control.cli.tables import (
    doctor_table,
    inventory_table,
    phases_table,
    plan_table,
    runs_table,
    uploads_table,
)


def _local_flag(local: bool) -> str:
    return " --local" if local else ""


def launch(out: Console, outcome: Any, *, as_json: bool) -> None:
    """The plan of a dry run, or the launched run and the command that follows it."""
    plan = outcome.plan.summary()
    if as_json:
        doc = {"plan": plan, "result": outcome.result.__dict__ if outcome.result else None}
        out.print_json(json.dumps(doc, default=str))
        return
    if outcome.result is None:
        out.print(plan_table(plan))
        out.print(uploads_table(plan))
        out.print("dry run: nothing was created or changed")
        return
    r = outcome.result
    out.print(
        f"[green]launched[/] run [bold]{r.run_id}[/] on {r.instance_id} "
        f"({r.instance_type}, {r.market}, {r.availability_zone}, {money(r.price_per_hour)}/h)"
    )
    if r.skipped:
        out.print(f"unchanged, not uploaded again: {', '.join(r.skipped)}")
    out.print(f"next: invoke monitor --env={r.env}{_local_flag(outcome.plan.local)} --follow")


def doctor(out: Console, report: Any, *, env: str, as_json: bool) -> None:
    """The doctor's checks and whether the env is ready to launch."""
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(doctor_table(report, env))
    failed = ", ".join(x.name for x in report.failed)
    out.print(
        f"[red]{len(report.failed)} check(s) failed[/]: {failed}"
        if failed
        else "[green]ready to launch[/] (warn and unknown do not stop a launch)",
        soft_wrap=True,
    )


def kill(out: Console, r: Any, *, env: str, local: bool) -> None:
    """What ``kill`` did, who wrote cleanup_status.json and how to check it."""
    if r.nothing_to_kill:
        out.print(f"no active run in env {env}: nothing to kill")
        return
    head = f"run [bold]{r.run_id}[/] (was {r.status_before}) after {r.waited_s:.0f} s"
    if r.termination_requested and not r.terminated_by_control:
        # TerminateInstances answered but no describe has seen the instance terminated yet
        out.print(f"[yellow]killed, termination requested[/]: {head}; confirm with invoke verify")
    else:
        out.print(f"[green]killed[/] {head}")
    for action in r.actions:
        out.print(f"  - {action}", soft_wrap=True)
    who = "the instance" if r.cleanup_written_by == "instance" else "this command (the instance could not)"
    out.print(
        f"cleanup_status.json written by {who}; check with: invoke verify --env={env}{_local_flag(local)}"
    )


def verify(out: Console, r: Any, *, env: str, local: bool, as_json: bool) -> None:
    """The inventory before (and after ``--fix``), and whether anything orphaned bills."""
    if as_json:
        doc = {
            "before": r.before.to_dict(),
            "fixed": r.fixed,
            "after": r.after.to_dict() if r.after else None,
        }
        out.print_json(json.dumps(doc))
        return
    out.print(inventory_table(r.before, "inventory"))
    for action in r.fixed:
        # "requested ..." / "asked S3 ...": accepted, not yet confirmed by a describe or a read
        confirmed = not action.startswith(("requested ", "asked "))
        out.print(
            f"[green]fixed[/]: {action}" if confirmed else f"[yellow]not yet confirmed[/]: {action}",
            soft_wrap=True,
        )
    if r.after is not None:
        out.print(inventory_table(r.after, "after --fix"))
    if r.final.clean:
        out.print(f"[green]clean[/]: nothing orphaned bills in env {env}")
    else:
        out.print(
            f"[red]{len(r.final.orphans)} orphaned[/]: remove with "
            f"invoke verify --env={env}{_local_flag(local)} --fix --yes",
            soft_wrap=True,
        )


def runs(out: Console, found: list[Any], *, env: str, as_json: bool) -> None:
    """The runs of an env as a table or a JSON list."""
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in found]))
    else:
        out.print(runs_table(found, env))


def cost(out: Console, report: Any, *, as_json: bool) -> None:
    """``invoke cost``: the runs' costs and savings, a line on what was not priced, the price table."""
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(cost_table(report))
    for sweep_id, total in report.by_sweep().items():
        out.print(f"sweep {sweep_id}: {money(total)} over its members listed")
    if report.unpriced:
        out.print(
            f"[yellow]{report.unpriced} run(s) could not be priced[/] (instance type not in the price table)"
        )
    out.print(f"prices: {PRICE_SOURCE}; spot at the price in effect at launch", soft_wrap=True)


def console_output(out: Console, con: Any) -> None:
    """The live instance's console (``invoke logs --console``)."""
    if con.text:
        out.print(f"--- console of {con.instance_id} ({con.state}): {con.source}", style="bold")
        out.print(con.text, markup=False, soft_wrap=True, highlight=False)
    if con.problem:
        out.print(f"[yellow]{con.problem}[/]", soft_wrap=True)


def logs(out: Console, r: Any) -> None:
    """A run's phases and errors (training.json), then its trainer log."""
    if r.training:
        out.print(phases_table(r.run_id, r.training))
        for e in r.training.get("errors", []):
            out.print(f"[red]{e['error_class']}[/] {e['component']}: {e['message']}", soft_wrap=True)
    if r.text:
        out.print(f"--- {r.source}", style="bold")
        out.print(r.text, markup=False, soft_wrap=True)
    others = [n for n in r.attempts if n != r.attempt]
    if others:
        out.print(
            f"attempt {r.attempt}'s log; the run has logs of attempts {', '.join(map(str, others))} too "
            f"(show one with --attempt=N)",
            soft_wrap=True,
        )
    if r.problem:
        out.print(f"[yellow]{r.problem}[/]", soft_wrap=True)


def fetch(out: Console, r: Any) -> None:
    """What was downloaded and which artifacts are schema-valid."""
    out.print(f"fetched {len(r.files)} files ({r.bytes} bytes) of run {r.run_id} to {r.dest}")
    if r.skipped:
        out.print(f"skipped {len(r.skipped)} checkpoint files (add --checkpoints to download them)")
    out.print(f"schema-valid: {', '.join(r.valid) or 'none found'}")
    for rel, problem in r.invalid.items():
        out.print(f"[red]invalid[/] {rel}: {problem}", soft_wrap=True)


def report(out: Console, r: Any) -> None:
    """Where the HTML report is and what it could not show."""
    out.print(f"report of run {r.run_id}: {r.index}")
    for note in r.notes:
        out.print(f"  not shown: {note}", soft_wrap=True)


def wheelhouse(out: Console, r: Any) -> None:
    """How many of the instance's Python packages were uploaded."""
    out.print(
        f"uploaded {len(r.uploaded)} file(s) to s3://{r.bucket}/cached-datasets/python-env/; "
        f"{len(r.skipped)} already there"
    )


def debug(out: Console, target: Any) -> None:
    """The Session Manager command that opens a shell on a debug run's instance."""
    out.print(
        f"run {target.run_id}: instance {target.instance_id} is {target.state} with the debug profile; "
        "connect with:",
        soft_wrap=True,
    )
    out.print(target.command_line, markup=False, soft_wrap=True)


def exports(out: Console, values: dict[str, str]) -> None:
    """``export KEY=value`` lines for ``eval "$(invoke local.env)"``."""
    for key, value in values.items():
        out.print(f"export {key}={value}", markup=False)


def local_up(out: Console, r: Any) -> None:
    """Where the local AWS runs, what was provisioned, and its operator's exports."""
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
    exports(out, r.exports)


def local_down(out: Console, r: Any) -> None:
    """What ``local.down`` stopped."""
    if r.instances_stopped:
        out.print(f"stopped local instances: {', '.join(r.instances_stopped)}")
    out.print(f"local AWS at {r.endpoint_url} stopped" if r.server_stopped else "local AWS was not running")


def demo(out: Console, events: Any) -> None:
    """Each step of the demo as it happens, the run's live view, and the demo's verdict."""
    from control.demo import verdict

    printer, closed = ViewPrinter(out), False
    try:
        for ev in events:
            if ev.kind == "view":
                printer.show(ev.data)
                continue
            if printer.last is not None and not closed:
                printer.close()
                closed = True
            out.print(f"[bold cyan]>[/] {ev.message}", soft_wrap=True)
            if ev.kind == "verified":
                out.print(inventory_table(ev.data.final, "verify"))
            elif ev.kind == "audit":
                for line in ev.data.summary().splitlines()[1:]:
                    out.print(f"  {line}", soft_wrap=True, markup=False)
            elif ev.kind == "report":
                v = verdict(ev.data)
                if v.judgement:
                    out.print(v.judgement)
                out.print(f"[green]{v.open_report}[/]; {v.afterwards}", soft_wrap=True)
    finally:
        if printer.live is not None:
            printer.close()

"""Rendering of ``invoke sweep``, ``monitor --sweep`` and ``kill --sweep/--run-id`` (rich, or JSON)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from control.cli.formats import money


def _flag(local: bool) -> str:
    return " --local" if local else ""


def _point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in point.items())


def sweep(out: Console, outcome: Any, *, local: bool, as_json: bool) -> None:
    """The plan of a dry run, or every point's submission and the command that follows the sweep."""
    plan = outcome.plan.summary()
    result = outcome.result
    if as_json:
        members = (
            [m.__dict__ | {"submission": m.submission.value} for m in result.members] if result else None
        )
        out.print_json(json.dumps({"plan": plan, "result": members}, default=str))
        return
    table = Table(
        "run id", "point", "job", "lock", title=f"sweep {plan['sweep_id']} in env {plan['env']}",
        title_justify="left",
    )  # fmt: skip
    outcomes = {m.run_id: m for m in result.members} if result else {}
    for m in plan["members"]:
        got = outcomes.get(m["run_id"])
        job = "planned" if got is None else got.job_id or f"{got.submission.value}: {got.reason}"
        table.add_row(m["run_id"], _point(m["point"]), job, m["lock"])
    out.print(table)
    out.print(
        f"queue {plan['job_queue']}, job definition {plan['job_definition']}; manifest {plan['manifest']}"
    )
    if result is None:
        out.print("dry run: nothing was created or changed")
        return
    submitted = sum(1 for m in result.members if m.job_id)
    colour = "green" if result.ok else "yellow"
    out.print(f"[{colour}]submitted {submitted} of {len(plan['members'])} points[/] as AWS Batch jobs")
    for m in result.members:
        if m.reason:
            out.print(f"  - {m.run_id} {m.submission.value}: {m.reason}", soft_wrap=True)
    out.print(f"next: invoke monitor --env={plan['env']}{_flag(local)} --sweep {plan['sweep_id']} --follow")


def sweep_view(out: Console, view: Any, *, as_json: bool) -> None:
    """Every member of a sweep: its run's status, step, cost, and its Batch job beside."""
    if as_json:
        out.print_json(json.dumps(view.to_dict(), default=str))
        return
    table = Table(
        "run id", "point", "status", "step", "cost", "model WQL", "batch job", "job reason",
        title=f"sweep {view.sweep_id} in env {view.env}" + (" (killed)" if view.killed else ""),
        title_justify="left",
    )  # fmt: skip
    for m in view.members:
        step = f"{m.step[0]}/{m.step[1]}" if m.step else "-"
        wql = (m.summary.metrics.get("model_wql") if m.summary else None) or "-"
        job = f"{m.job.status.value} ({m.job.attempts} attempts)" if m.job else (m.job_id or "-")
        table.add_row(
            m.run_id, _point(m.point), m.status, step, money(m.cost_usd), str(wql), job,
            (m.job.reason if m.job else None) or "",
        )  # fmt: skip
    out.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in view.counts().items())
    out.print(f"{counts}; cost so far {money(view.cost_usd)}" + ("" if view.done else "; still going"))


def sweep_kill(out: Console, r: Any, *, local: bool) -> None:
    """What the kill asked of each job and what Batch then showed."""
    what = f"sweep [bold]{r.sweep_id}[/]" if r.manifest_marked else f"member(s) of sweep {r.sweep_id}"
    if not r.members:
        out.print(f"{what}: no submitted member to kill")
        return
    if r.unconfirmed:
        out.print(
            f"[yellow]killed, job stops requested[/]: {what}; DescribeJobs does not yet show "
            f"{', '.join(r.unconfirmed)} ended; confirm with invoke verify",
            soft_wrap=True,
        )
    else:
        out.print(f"[green]killed[/] {what}")
    for m in r.members:
        out.print(f"{m.run_id} (was {m.status_before or 'ended'}):")
        for action in m.actions:
            out.print(f"  - {action}", soft_wrap=True)
    out.print(f"check with: invoke verify --env={r.env}{_flag(local)}")

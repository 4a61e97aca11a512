"""The rich tables of the CLI: launch plan, doctor checks, verify inventory, runs, phases."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from control.cli.formats import duration, metric, money

_STATUS_STYLE = {"ok": "green", "fail": "red", "warn": "yellow", "unknown": "cyan"}


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column key/value table; ``None`` values show as ``-``."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


def plan_table(plan: dict[str, Any]) -> Table:
    """What ``invoke launch --dry-run`` would do, from ``LaunchPlan.summary()``."""
    ud = plan["user_data"]
    return kv_table(
        f"launch plan for run {plan['run_id']} ({'local' if plan['local'] else 'AWS'})",
        [
            (
                "instance",
                f"{plan['instance_type']} {plan['market']} in {plan['availability_zone']} "
                f"({plan['subnet_id']})",
            ),
            ("fallbacks", ", ".join(plan["fallbacks"]) or "none"),
            ("price", f"{money(plan['price_per_hour'])}/h ({plan['price_source']})"),
            ("max runtime", f"{plan['max_runtime_minutes']} min, at most {money(plan['max_cost'])}"),
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


def uploads_table(plan: dict[str, Any]) -> Table:
    """The objects a launch uploads, and why any of them is skipped."""
    table = Table("S3 key", "bytes", "note", title="uploads", title_justify="left")
    for u in plan["uploads"]:
        table.add_row(u["key"], str(u["bytes"]), u["skip"] or "")
    return table


def doctor_table(report: Any, env: str) -> Table:
    """One row per doctor check, its status coloured."""
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
    return table


def inventory_table(inv: Any, title: str) -> Table:
    """What ``verify`` found that bills, orphans in red."""
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
    return table


def runs_table(found: list[Any], env: str) -> Table:
    """The runs of an env, newest first, with their cost and the three models' test WQL.

    ``vs base`` says whether the fine-tuned model beat the base model (zero-shot) on validation.
    """
    table = Table(
        "run id",
        "sweep",
        "status",
        "duration",
        "cost",
        "saved",
        "attempts",
        "instance",
        "model WQL",
        "zero-shot WQL",
        "baseline WQL",
        "vs base",
        "final loss",
        "note",
        title=f"runs in env {env}",
        title_justify="left",
    )
    for r in found:
        m = r.metrics
        table.add_row(
            r.run_id,
            r.sweep_id or "-",
            r.status,
            duration(r.duration_s),
            money(r.cost_usd) + (" so far" if r.active else ""),
            money(r.savings_usd),
            str(r.attempts),
            f"{r.instance_type or '-'} {r.market or ''}",
            *(metric(m.get(k)) or "-" for k in ("model_wql", "zero_shot_wql", "baseline_wql")),
            versus_base_cell(r.beats_zero_shot, r.exported),
            metric(m.get("final_loss")) or "-",
            r.problem or r.last_error or "",
        )
    if not found:
        table.add_row("-", "-", "no runs yet", *["-"] * 10, f"invoke launch --env={env}")
    return table


def versus_base_cell(beats: bool | None, exported: str | None) -> str:
    """The fine-tuned model against the base (zero-shot) on validation, in a narrow cell."""
    if beats is None:
        return "-"
    if beats:
        return "[green]better[/]"
    return "[red]WORSE[/]" + (" (base exported)" if exported == "base" else "")


def phases_table(run_id: str, training: dict[str, Any]) -> Table:
    """The phases of a run from its training.json."""
    table = Table(
        "phase",
        "status",
        "started",
        "duration",
        title=f"run {run_id}: {training.get('completion_status') or training.get('status')}",
        title_justify="left",
    )
    for p in training.get("phases", []):
        dur = p.get("duration_s")
        table.add_row(p["name"], p["status"], p["started_at"], "-" if dur is None else f"{dur:.1f} s")
    return table

"""The cost ledger on the CLI: ``invoke cost``'s table and the one-line ledger monitor and runs show."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from control.cli.formats import duration, money

SPLIT_LABELS = (
    ("boot_setup", "boot"),
    ("data_sync", "sync"),
    ("training", "train"),
    ("evaluation", "eval"),
    ("upload", "upload"),
    ("lost", "lost"),
)


def share(value: float | None) -> str:
    """A fraction as a percentage (``72%``); ``-`` when unknown."""
    return "-" if value is None else f"{100 * value:.0f}%"


def ledger_line(ledger: dict[str, Any] | None, *, live: bool = False) -> str | None:
    """``$0.9180 over 2 attempts (spot, on-demand), saved $0.6060 (40%) vs on-demand; training 72%``."""
    if not ledger:
        return None
    markets = ", ".join(dict.fromkeys(a["market"] for a in ledger["attempts"]))
    n = len(ledger["attempts"])
    line = (
        f"{money(ledger['total_usd'])}{' so far' if live else ''} over {n} attempt{'s' if n != 1 else ''}"
        f" ({markets}), saved {money(ledger['savings_usd'])} ({ledger['savings_pct']:.0f}%) vs on-demand;"
        f" training {share(ledger['training_share'])} of {duration(ledger['billable_s'])} billed"
    )
    if ledger["split_s"]["lost"]:
        line += f", {duration(ledger['split_s']['lost'])} lost to interruptions"
    if ledger.get("max_cost") is not None:
        line += f"; max_cost {money(ledger['max_cost'])}"
    return line


def attempts_table(ledger: dict[str, Any], title: str) -> Table:
    """One row per attempt: where it ran, at what price, for how long, and where the time went."""
    table = Table(
        "#",
        "instance",
        "market",
        "AZ",
        "$/h",
        "billed",
        "cost",
        *(label for _, label in SPLIT_LABELS),
        title=title,
        title_justify="left",
    )
    for a in ledger["attempts"]:
        split = a["split_s"]
        table.add_row(
            str(a["attempt"]),
            a["instance_type"],
            a["market"],
            a["availability_zone"] or "-",
            money(a["price_per_hour"]),
            duration(a["billable_s"]),
            money(a["total_usd"]),
            *(duration(split[key]) for key, _ in SPLIT_LABELS),
        )
    return table


def cost_table(report: Any) -> Table:
    """``invoke cost``: one row per run, newest first, then the totals."""
    table = Table(
        "run id",
        "status",
        "attempts",
        "markets",
        "billed",
        "cost",
        "on-demand",
        "saved",
        "training",
        "source",
        title=f"cost of env {report.env} since {report.since:%Y-%m-%d %H:%M} UTC",
        title_justify="left",
    )
    for r in report.runs:
        table.add_row(
            r.run_id,
            r.status,
            str(r.attempts),
            ", ".join(r.markets) or "-",
            duration(r.billable_s),
            money(r.total_usd),
            money(r.on_demand_usd),
            money(r.savings_usd),
            share(r.training_share),
            r.source,
        )
    if not report.runs:
        table.add_row("-", "no runs in this window", *["-"] * 8)
    table.add_section()
    table.add_row(
        "total",
        "",
        str(sum(r.attempts for r in report.runs)),
        "",
        "",
        money(report.total_usd),
        money(report.on_demand_usd),
        money(report.savings_usd),
        "",
        "",
    )
    return table

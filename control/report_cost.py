"""The report's timeline and cost: phases, attempts and interruption latencies; the ledger.

:func:`plot_timeline` draws each phase as a bar and each attempt (one instance) as a bar
of its own, with every interruption's milestones as vertical lines: the spot notice, the
checkpoint durable in S3, the replacement launched and the first resumed step.
:func:`plot_cost` stacks each attempt's cost by use (boot and setup, data sync, training,
evaluation, upload, lost work) from training.json's ledger; a run from before the ledger
is priced per phase at its launch price. :func:`ledger_html` is the page's tables.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any

from common.ledger import SPLIT
from common.timeutil import parse_iso

MILESTONES = (
    ("notice_at", "notice", "tab:red"),
    ("checkpoint_durable_at", "checkpoint durable", "tab:orange"),
    ("replacement_launched_at", "replacement launched", "tab:blue"),
    ("first_resumed_step_at", "first resumed step", "tab:green"),
)
_PHASE_COLORS = {
    "succeeded": "tab:green",
    "failed": "tab:red",
    "interrupted": "tab:orange",
    "skipped": "0.7",
    "running": "tab:blue",
}


def phase_spans(phases: list[dict[str, Any]]) -> list[tuple[str, datetime, float, str]]:
    """(name, start, seconds, status) of each phase with a readable start."""
    spans = []
    for ph in phases:
        try:
            start = parse_iso(ph["started_at"])
        except (KeyError, ValueError):
            continue
        dur = ph.get("duration_s")
        if dur is None and ph.get("ended_at"):
            dur = (parse_iso(ph["ended_at"]) - start).total_seconds()
        spans.append((str(ph.get("name")), start, float(dur or 0.0), str(ph.get("status"))))
    return spans


def _attempt_spans(training: dict[str, Any]) -> list[tuple[str, datetime, float, str]]:
    ledger = training.get("ledger") or {}
    spans = []
    for a in ledger.get("attempts") or training.get("attempts") or []:
        start = parse_iso(a["launched_at"])
        end = a.get("ended_at") or ledger.get("computed_at")
        seconds = (parse_iso(end) - start).total_seconds() if end else 0.0
        spans.append((f"attempt {a['attempt']} ({a['market']})", start, seconds, "attempt"))
    return spans


def latencies(interruption: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Seconds from the notice to each later milestone (``None`` when not recorded)."""
    notice = interruption.get("notice_at")
    out = []
    for key, label, _ in MILESTONES[1:]:
        at = interruption.get(key)
        out.append((label, (parse_iso(at) - parse_iso(notice)).total_seconds() if notice and at else None))
    return out


def plot_timeline(path: Path, training: dict[str, Any]) -> bool | str:
    """The phases and attempts as bars, interruption milestones as lines; ``True`` once drawn."""
    spans = _attempt_spans(training) + phase_spans(training.get("phases") or [])
    if not spans:
        return "no phases in training.json"
    import matplotlib.pyplot as plt

    t0 = min(s[1] for s in spans)
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(spans) + 1.6))
    for row, (_name, start, dur, status) in enumerate(spans):
        offset = (start - t0).total_seconds()
        color = "0.55" if status == "attempt" else _PHASE_COLORS.get(status, "tab:gray")
        ax.barh(row, max(dur, 0.05), left=offset, color=color)
        ax.text(offset + max(dur, 0.05), row, f" {dur:.1f} s ({status})", va="center", fontsize=8)
    drawn: set[str] = set()
    for interruption in training.get("interruptions") or []:
        for key, label, color in MILESTONES:
            if interruption.get(key):
                x = (parse_iso(interruption[key]) - t0).total_seconds()
                ax.axvline(x, color=color, ls="--", lw=1, label=None if label in drawn else label)
                drawn.add(label)
    if drawn:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(drawn))
    ax.set_yticks(range(len(spans)), [s[0] for s in spans])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run's first attempt or phase started")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_cost(path: Path, training: dict[str, Any], record: dict[str, Any]) -> bool | str:
    """Each attempt's cost stacked by use (the ledger), else each phase at the launch price."""
    ledger = training.get("ledger")
    if not ledger:
        return _plot_phase_cost(path, training.get("phases") or [], record)
    import matplotlib.pyplot as plt

    attempts = ledger["attempts"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bottoms = [0.0] * len(attempts)
    labels = [f"#{a['attempt']} {a['instance_type']} {a['market']}" for a in attempts]
    for use in SPLIT:
        usd = [(a["price_per_hour"] or 0.0) * a["split_s"][use] / 3600.0 for a in attempts]
        if any(usd):
            ax.bar(labels, usd, bottom=bottoms, label=use)
            bottoms = [b + u for b, u in zip(bottoms, usd, strict=True)]
    ax.set_ylabel("USD")
    ax.legend(fontsize=7)
    ax.set_title(
        f"total \\${ledger['total_usd']:.4f} (EBS included), saved \\${ledger['savings_usd']:.4f} "
        f"({ledger['savings_pct']:.0f}%) vs on-demand",  # \$: no mathtext
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_phase_cost(path: Path, phases: list[dict[str, Any]], record: dict[str, Any]) -> bool | str:
    price, spans = record.get("price_per_hour"), phase_spans(phases)
    if price is None:
        return "no price recorded for this run (launch-record.json missing)"
    if not spans:
        return "no phases in training.json"
    import matplotlib.pyplot as plt

    names = [s[0] for s in spans]
    costs = [price * s[2] / 3600.0 for s in spans]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(names, costs, color="tab:purple")
    for i, c in enumerate(costs):
        ax.text(i, c, f"\\${c:.4f}", ha="center", va="bottom", fontsize=8)  # \$: no mathtext
    ax.set_ylabel("USD")
    note = " (list price of the instance type; a local run costs nothing)" if record.get("local") else ""
    ax.set_title(f"at \\${price:.3f}/h, total \\${sum(costs):.4f}{note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}{unit}" if unit == "" else f"{value:.1f}{unit}"
    return html.escape(str(value))


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def ledger_html(training: dict[str, Any]) -> str:
    """The ledger's attempts and totals, and each interruption's latencies, as HTML tables."""
    ledger = training.get("ledger")
    if not ledger:
        return "<h2>Cost ledger</h2><p>not recorded (a run from before the ledger)</p>"
    head = "".join(
        f"<th>{h}</th>" for h in ("#", "instance", "market", "AZ", "$/h", "billed s", "cost", *SPLIT)
    )
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{c}</td>"
            for c in (
                a["attempt"],
                html.escape(a["instance_type"]),
                html.escape(a["market"]),
                html.escape(a["availability_zone"] or "-"),
                _usd(a["price_per_hour"]),
                _cell(a["billable_s"], " s"),
                _usd(a["total_usd"]),
                *(_cell(a["split_s"][k], " s") for k in SPLIT),
            )
        )
        + "</tr>"
        for a in ledger["attempts"]
    )
    share = ledger["training_share"]
    totals = (
        f"<p>Total {_usd(ledger['total_usd'])} over {len(ledger['attempts'])} attempt(s); on-demand "
        f"{_usd(ledger['on_demand_usd'])}; saved {_usd(ledger['savings_usd'])} "
        f"({ledger['savings_pct']:.0f}%). "
        f"Training {'-' if share is None else f'{100 * share:.0f}%'} of {ledger['billable_s']:.0f} billed "
        f"seconds; {ledger['split_s']['lost']:.0f} s of work lost to interruptions."
        + (f" max_cost {_usd(ledger['max_cost'])}." if ledger.get("max_cost") is not None else "")
        + "</p>"
    )
    return f"<h2>Cost ledger</h2><table><tr>{head}</tr>{rows}</table>{totals}{_interruptions_html(training)}"


def _interruptions_html(training: dict[str, Any]) -> str:
    found = training.get("interruptions") or []
    if not found:
        return ""
    labels = [label for _, label, _ in MILESTONES[1:]]
    head = "".join(f"<th>{h}</th>" for h in ("attempt", "notice", *(f"to {x}" for x in labels), "steps lost"))
    rows = "".join(
        f"<tr><td>{i['attempt']}</td><td>{html.escape(i.get('notice_at') or '-')}</td>"
        + "".join(f"<td>{_cell(s, ' s')}</td>" for _, s in latencies(i))
        + f"<td>{_cell(i.get('steps_lost'))}</td></tr>"
        for i in found
    )
    return f"<h3>Interruptions</h3><table><tr>{head}</tr>{rows}</table>"

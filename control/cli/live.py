"""The monitor's view: a live table on a terminal, one line per change in a pipe, or JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from control.cli.costs import ledger_line
from control.cli.formats import duration, metric, money
from control.cli.tables import kv_table
from control.monitor import Outcome

_METRICS = (
    "model_wql",
    "zero_shot_wql",
    "baseline_wql",
    "model_mase",
    "zero_shot_mase",
    "baseline_mase",
    "final_loss",
)


def validation_text(v: Any) -> str | None:
    """Validation WQL: the newest, the best (at its step) and the base model's (zero-shot)."""
    extra = []
    if v.best_val_wql is not None:
        at = f" at step {v.best_step}" if v.best_step is not None else ""
        extra.append(f"best {v.best_val_wql:.4f}{at}")
    if v.zero_shot_val_wql is not None:
        extra.append(f"zero-shot {v.zero_shot_val_wql:.4f}")
    if v.val_wql is not None:
        text = f"{v.val_wql:.4f}" + (f" ({', '.join(extra)})" if extra else "")
    elif extra:
        text = ", ".join(extra)
    else:
        return None
    best, zs = v.best_val_wql, v.zero_shot_val_wql
    if v.beats_zero_shot is None and best is not None and zs is not None and best >= zs:
        text += ": not better than zero-shot yet"
    elif v.beats_zero_shot is not None:
        text += ": beats zero-shot" if v.beats_zero_shot else ": does NOT beat zero-shot"
    return text


def view_table(v: Any) -> Table:
    """The whole of one monitor view as a key/value table."""
    step = f"{v.step}/{v.total_steps}" if v.step is not None else "-"
    rows = [
        ("run", v.run_id),
        ("outcome", v.outcome.value),
        ("phase", v.status),
        ("step", step),
        ("loss", metric(v.loss)),
        ("ETA", duration(v.eta_s) if v.eta_s is not None else None),
        ("validation WQL", validation_text(v)),
        ("elapsed", duration(v.elapsed_s)),
        (
            "cost so far",
            f"{money(v.cost_usd)} at {money(v.price_per_hour)}/h"
            + (" (list price; local run is free)" if v.local else ""),
        ),
        ("ledger", ledger_line(v.ledger, live=v.outcome.value == "running")),
        ("instance", f"{v.instance_id or '-'} {v.instance_type or ''} {v.instance_state or ''}".strip()),
        ("heartbeat", f"{v.heartbeat_age_s:.0f} s ago" if v.heartbeat_age_s is not None else None),
        ("last error", v.last_error),
    ]
    for key in _METRICS:
        if key in v.metrics and v.metrics[key] is not None:
            rows.append((key, f"{v.metrics[key]:.4f}"))
    return kv_table(f"env {v.env}", [(k, x) for k, x in rows if x is not None])


def view_line(v: Any) -> str:
    """One monitor view as one line (``run ... running phase=training step=5/10 ...``)."""
    parts = [f"run {v.run_id}", v.outcome.value, f"phase={v.status}"]
    if v.step is not None:
        parts.append(f"step={v.step}/{v.total_steps}")
    if isinstance(v.loss, int | float):
        parts.append(f"loss={v.loss:.4f}")
    if v.eta_s is not None:
        parts.append(f"eta={duration(v.eta_s)}")
    if v.val_wql is not None:
        parts.append(f"val_wql={v.val_wql:.4f}")
    if v.best_val_wql is not None:
        parts.append(f"best={v.best_val_wql:.4f}" + (f"@{v.best_step}" if v.best_step is not None else ""))
    if v.zero_shot_val_wql is not None:
        parts.append(f"zero_shot={v.zero_shot_val_wql:.4f}")
    parts.append(f"elapsed={duration(v.elapsed_s)}")
    if v.cost_usd is not None:
        parts.append(f"cost={money(v.cost_usd)}")
    if v.attempts:
        parts.append(f"attempts={v.attempts}")
    if v.savings_usd:
        parts.append(f"saved={money(v.savings_usd)}")
    return " ".join(parts)


class ViewPrinter:
    """Shows monitor views: a live table on a terminal, one line per change otherwise."""

    def __init__(self, console: Console, *, as_json: bool = False, err: Console | None = None) -> None:
        self.console, self.as_json, self.err = console, as_json, err or console
        self.last: Any = None
        self.live: Any = None

    def show(self, v: Any) -> None:
        """Show one view (JSON and line modes print only views that changed or ended).

        An env with no run has nothing to show but the advice: :meth:`close` prints it alone.
        """
        self.last = v
        if _no_run(v) and not self.as_json:
            return
        if self.as_json:
            if v.changed or v.outcome.is_final():
                self.console.print_json(json.dumps(v.to_dict()))
        elif self.console.is_terminal:
            if self.live is None:
                from rich.live import Live

                self.live = Live(console=self.console, refresh_per_second=4)
                self.live.start()
            self.live.update(view_table(v))
        elif v.changed or v.outcome.is_final() or v.advice:
            self.console.print(view_line(v), soft_wrap=True)

    def close(self) -> Any:
        """Stop the live view, print the final table and advice; return the last view.

        No run: only the advice, on the error console (it says why the exit code is not 0).
        """
        last = self.last
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif last is not None and not self.as_json and not _no_run(last):
            self.console.print(view_table(last))
        if last is not None and last.advice and not self.as_json:
            out = self.err if _no_run(last) else self.console
            out.print(f"[yellow]{last.advice}[/]", soft_wrap=True)
        return last


def _no_run(v: Any) -> bool:
    """The view of an env without runs: no run id, nothing but advice."""
    return v.outcome is Outcome.NONE

"""An HTML report of one fetched run, with PNG plots (matplotlib, Agg backend).

Plots: the loss curve, the validation curve, forecasts against actuals on the last test
window (the fine-tuned median and 10-90 % band, the zero-shot median of the base model and the
seasonal-naive baseline), the timeline of phases and attempts
with each interruption's latencies, and the cost of each attempt by use
(:mod:`control.report_cost`, which also writes the cost ledger's tables). The three models'
table and the verdict on fine-tuning are :mod:`control.report_eval`'s. Inputs are
the files ``fetch`` put in ``runs/{env}/{run_id}/``; anything missing is left out of
the page with a note rather than failing.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import layout
from common.pricing import PRICE_SOURCE
from common.timeutil import parse_iso
from control.backend import Backend
from control.fetch import DEFAULT_RUNS_DIR, fetch_run, mirror_name, resolve_run_id
from control.report_cost import ledger_html, plot_cost, plot_timeline
from control.report_eval import evaluation_html, evaluation_of, plot_validation, verdict_html

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReportResult:
    """Where the report is and what it holds."""

    run_id: str
    index: Path
    images: tuple[Path, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    metrics: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # training.json's evaluation (None: a run without one)


def _load(path: Path) -> dict[str, Any] | None:
    """A fetched document, or ``None`` when it is missing, not JSON or not a JSON object."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def write_report(run_dir: Path) -> ReportResult:
    """Write ``run_dir/report/index.html`` and its PNGs from the fetched files.

    Args:
        run_dir: where ``fetch`` put the run (``common.layout.local_run_dir``: ``.../{env}/{run_id}``).

    Raises:
        LayoutError: ``run_dir`` does not end in ``{env}/{run_id}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    paths = layout.RunPaths(env=run_dir.parent.name, run_id=run_dir.name)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    training = _load(run_dir / mirror_name(paths, paths.training_log)) or {}
    forecasts = _load(run_dir / mirror_name(paths, paths.forecasts))
    record = _load(run_dir / mirror_name(paths, paths.launch_record)) or {}
    metadata = _load(run_dir / mirror_name(paths, paths.model_metadata)) or {}
    run_id = training.get("run_id") or run_dir.name
    images, sections, notes = _draw(out, training, forecasts, record)
    page = _page(run_id, training, metadata, record, sections, notes)
    index = out / "index.html"
    index.write_text(page, "utf-8")
    return ReportResult(
        run_id=run_id,
        index=index,
        images=tuple(images),
        notes=tuple(notes),
        metrics=dict(training.get("metrics") or {}),
        evaluation=evaluation_of(training),
    )


def _draw(
    out: Path, training: dict[str, Any], forecasts: Any, record: dict[str, Any]
) -> tuple[list[Path], list[str], list[str]]:
    """Every plot into ``out``: the images drawn, their HTML sections, and a note per plot not drawn."""
    notes: list[str] = []
    images: list[Path] = []
    sections: list[str] = []

    def add(name: str, title: str, fn: Any, *args: Any) -> None:
        path = out / name
        try:
            made = fn(path, *args)
        except Exception as exc:  # noqa: BLE001 - a plot of any broken input becomes a note, the rest is drawn
            log.warning("plot %s failed: %s", name, exc)
            made = f"could not draw: {exc}"
        if made is True:
            images.append(path)
            sections.append(f"<h2>{html.escape(title)}</h2><img src='{name}' alt='{html.escape(title)}'>")
        else:
            notes.append(f"{title}: {made}")

    add("loss.png", "Training loss", _plot_loss, training.get("loss_curve") or [])
    if evaluation_of(training) is not None:
        add("validation.png", "Validation WQL: fine-tuned vs zero-shot", plot_validation, training)
        add(
            "forecasts.png",
            "Forecasts on the last test window: fine-tuned, zero-shot and seasonal naive",
            _plot_forecasts,
            forecasts,
        )
    else:
        add("forecasts.png", "Forecasts on held-out series", _plot_forecasts, forecasts)
    add("phases.png", "Timeline: phases, attempts and interruptions", plot_timeline, training)
    add(
        "cost.png",
        "Cost by attempt and use" if training.get("ledger") else "Cost by phase",
        plot_cost,
        training,
        record,
    )
    return images, sections, notes


def _plot_loss(path: Path, curve: list[list[float]]) -> bool | str:
    if not curve:
        return "no loss_curve in training.json"
    import matplotlib.pyplot as plt

    steps = [p[0] for p in curve]
    losses = [p[1] for p in curve]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(steps, losses, lw=1, alpha=0.4, label="loss per step")
    if len(losses) >= 10:
        k = max(len(losses) // 50, 5)
        smooth = [
            sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(steps, smooth, lw=2, label=f"moving average ({k})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _series(item: dict[str, Any], *names: str) -> list[Any] | None:
    for name in names:
        value = item.get(name)
        if isinstance(value, list) and value:
            return [float("nan") if v is None else v for v in value]
    return None


def _items(forecasts: Any) -> list[dict[str, Any]]:
    if isinstance(forecasts, dict):
        for key in ("items", "series", "forecasts"):
            if isinstance(forecasts.get(key), list):
                return forecasts[key]
    return forecasts if isinstance(forecasts, list) else []


def _times(values: list[Any] | None, start: int, n: int) -> list[Any]:
    if values and len(values) == n:
        try:
            return [parse_iso(v) if isinstance(v, str) else v for v in values]
        except ValueError:
            pass
    return list(range(start, start + n))


def _plot_forecasts(path: Path, forecasts: Any) -> bool | str:
    items = _items(forecasts)[:8]
    if not items:
        return f"no {layout.FORECASTS_KEY} (the run did not reach evaluation)"
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False)
    for ax, item in zip(axes.flat, items, strict=False):
        ctx = _series(item, "context_values", "context", "past") or []
        actual = _series(item, "actual", "actuals", "target") or []
        median = _series(item, "median", "q50", "forecast") or []
        n_ctx, n_h = len(ctx), max(len(actual), len(median))
        ctx_t = _times(_series(item, "context_timestamps", "context_index"), 0, n_ctx)
        hor_t = _times(_series(item, "horizon_timestamps", "timestamps", "horizon_index"), n_ctx, n_h)
        ax.plot(ctx_t, ctx, color="0.4", lw=1, label="context")
        if actual:
            ax.plot(hor_t[: len(actual)], actual, color="k", lw=1.5, label="actual")
        lo, hi = _series(item, "q10", "p10", "low"), _series(item, "q90", "p90", "high")
        if lo and hi and len(lo) == len(hi):
            ax.fill_between(
                hor_t[: len(lo)], lo, hi, color="tab:blue", alpha=0.25, label="fine-tuned 10-90 %"
            )
        if median:
            ax.plot(hor_t[: len(median)], median, color="tab:blue", lw=1.5, label="fine-tuned median")
        zero_shot = _series(item, "zero_shot_median")
        if zero_shot:
            ax.plot(
                hor_t[: len(zero_shot)],
                zero_shot,
                color="tab:green",
                lw=1.2,
                ls="-.",
                label="zero-shot median",
            )
        naive = _series(item, "seasonal_naive", "baseline", "naive")
        if naive:
            ax.plot(hor_t[: len(naive)], naive, color="tab:orange", lw=1, ls="--", label="seasonal naive")
        ax.set_title(str(item.get("item_id", "")), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="x", rotation=20)
    for ax in list(axes.flat)[len(items) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _page(
    run_id: str,
    training: dict[str, Any],
    metadata: dict[str, Any],
    record: dict[str, Any],
    sections: list[str],
    notes: list[str],
) -> str:
    metrics = training.get("metrics") or {}
    hyper = metadata.get("hyperparameters") if isinstance(metadata.get("hyperparameters"), dict) else {}
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Run {html.escape(run_id)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}}
th,td{{border:1px solid #ddd;padding:.25em .6em;text-align:left}}
th{{background:#f6f6f6}}img{{max-width:100%}}.good{{color:#176b2c}}.bad{{color:#a11}}
.verdict{{font-size:1.15em}}.alarm{{border:2px solid #a11;background:#fdeaea;padding:.6em 1em}}
caption{{caption-side:bottom;text-align:left;font-size:.85em;color:#555}}</style></head>
<body><h1>Chronos-2 training run {html.escape(run_id)}</h1>
{_table(_summary(run_id, training, record))}
<h2>Metrics</h2>{verdict_html(training)}{evaluation_html(training)}
<h3>All metrics</h3>{_table(sorted(metrics.items()))}
{"".join(sections)}
{ledger_html(training)}
<h2>Hyperparameters</h2>{_table(sorted(hyper.items())) if hyper else "<p>not recorded</p>"}
<h2>Errors</h2><ul>{_errors_html(training.get("errors") or [])}</ul>
{f"<h2>Not shown</h2><ul>{notes_html}</ul>" if notes else ""}
<p><small>Prices: {html.escape(PRICE_SOURCE)}.</small></p>
</body></html>
"""


def _summary(run_id: str, training: dict[str, Any], record: dict[str, Any]) -> list[tuple[str, Any]]:
    summary: list[tuple[str, Any]] = [
        ("run id", run_id),
        ("env", training.get("env", "")),
        ("completion", training.get("completion_status", "unknown")),
        ("exit code", training.get("exit_code", "")),
        (
            "instance",
            f"{record.get('instance_type', '?')} ({record.get('market', '?')}) "
            f"{'local' if record.get('local') else record.get('availability_zone', '')}",
        ),
        ("started", training.get("started_at", "")),
        ("ended", training.get("ended_at", "")),
    ]
    if record.get("price_per_hour") is not None:
        summary.append(("price", f"${record['price_per_hour']}/h ({record.get('price_source', '')})"))
    return summary


def _errors_html(errors: list[dict[str, Any]]) -> str:
    return (
        "".join(
            f"<li>{html.escape(e.get('timestamp', ''))} [{html.escape(e.get('error_class', ''))}] "
            f"{html.escape(e.get('component', ''))}: {html.escape(e.get('message', ''))}</li>"
            for e in errors
        )
        or "<li>none</li>"
    )


def report_run(
    backend: Backend, *, env: str, run_id: str | None, runs_dir: Path | None = None
) -> ReportResult:
    """``invoke report``: fetch the run if it is not here yet, then write its report."""
    _, run_id = resolve_run_id(backend, env, run_id)
    run_dir = layout.local_run_dir(Path(runs_dir or DEFAULT_RUNS_DIR), env, run_id)
    paths = layout.RunPaths(env=env, run_id=run_id)
    if not (run_dir / mirror_name(paths, paths.training_log)).exists():
        fetch_run(backend, env=env, run_id=run_id, dest_root=runs_dir)
    return write_report(run_dir)

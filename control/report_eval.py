"""The report's evaluation: fine-tuned vs zero-shot (the base model) vs seasonal naive.

From training.json's ``evaluation``: the verdict (whether fine-tuning beat the base model on
validation, and what ``models/`` holds), the three models' WQL and MASE overall and per test
window, the first items, the validation curve, and the evaluation's warnings. A run from before
validation has no ``evaluation``: its verdict is the model against seasonal naive, as it was.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from control.runs import versus_base

MODELS = (
    ("fine_tuned", "fine-tuned"),
    ("zero_shot", "zero-shot (base)"),
    ("seasonal_naive", "seasonal naive"),
)
ITEM_ROWS = 20  # items listed in the report; evaluation/metrics.json has every one


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cell(value: Any, best: float | None = None) -> str:
    number = _num(value)
    if number is None:
        return "<td>-</td>"
    text = f"{number:.4f}"
    return f"<td><b>{text}</b></td>" if best is not None and number == best else f"<td>{text}</td>"


def evaluation_of(training: dict[str, Any]) -> dict[str, Any] | None:
    """training.json's ``evaluation``, or ``None`` (a run from before it was recorded)."""
    evaluation = training.get("evaluation")
    return evaluation if isinstance(evaluation, dict) else None


def verdict_html(training: dict[str, Any]) -> str:
    """The verdict: fine-tuned against the base on validation and against seasonal naive on test."""
    metrics = training.get("metrics") or {}
    evaluation = evaluation_of(training)
    if evaluation is None:
        return _legacy_verdict(metrics)
    val = evaluation.get("validation") or {}
    best, zero_shot = _num(val.get("best_wql")), _num(val.get("zero_shot_wql"))
    test = _test_clause(metrics)
    beats = evaluation.get("beats_zero_shot")
    if beats is None:
        text = f"Validation did not measure the base model (zero-shot). {_test_scores(metrics)}".strip()
        return f"<p class='verdict'>{html.escape(text)}</p>"
    if beats:
        scores = f" (WQL {best:.4f} vs {zero_shot:.4f})" if best is not None and zero_shot is not None else ""
        text = f"Fine-tuned beats zero-shot on validation{scores}" + (f" and {test}" if test else "") + "."
        return f"<p class='verdict good'>{html.escape(text)}</p>"
    line = versus_base(False, val_wql=best, zero_shot_val_wql=zero_shot, exported=evaluation.get("exported"))
    line = (line or "")[:1].upper() + (line or "")[1:] + "."
    after = f"<p>{html.escape(_test_scores(metrics))}</p>" if _test_scores(metrics) else ""
    return f"<div class='verdict bad alarm'><strong>{html.escape(line)}</strong>{after}</div>"


def _test_clause(metrics: dict[str, Any]) -> str:
    model, naive = _num(metrics.get("model_wql")), _num(metrics.get("baseline_wql"))
    if model is None or naive is None:
        return ""
    how = "seasonal naive on test" if model < naive else "NOT seasonal naive on test"
    return f"{how} (WQL {model:.4f} vs {naive:.4f})"


def _test_scores(metrics: dict[str, Any]) -> str:
    named = (("fine-tuned", "model_wql"), ("zero-shot", "zero_shot_wql"), ("seasonal naive", "baseline_wql"))
    scores = [
        f"{name} {_num(metrics.get(key)):.4f}" for name, key in named if _num(metrics.get(key)) is not None
    ]
    return f"Test WQL: {', '.join(scores)}." if scores else ""


def _legacy_verdict(metrics: dict[str, Any]) -> str:
    model, naive = _num(metrics.get("model_wql")), _num(metrics.get("baseline_wql"))
    if model is None or naive is None:
        return ""
    better = model < naive
    return (
        f"<p class='{'good' if better else 'bad'}'>Model WQL {model:.4f} vs "
        f"seasonal-naive {naive:.4f}: "
        f"{'the model beats the baseline' if better else 'the baseline is better'}.</p>"
    )


def evaluation_html(training: dict[str, Any]) -> str:
    """The three models' table, the validation summary, the first items and the warnings."""
    evaluation = evaluation_of(training)
    if evaluation is None:
        return ""
    parts = [
        "<h2>Fine-tuned vs zero-shot vs seasonal naive</h2>",
        _windows_table(evaluation),
        f"<p>{html.escape(_validation_text(evaluation))}</p>",
        _items_table(evaluation),
    ]
    warnings = evaluation.get("warnings") or []
    if warnings:
        items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
        parts.append(f"<h3>Warnings</h3><ul class='bad'>{items}</ul>")
    return "".join(parts)


def _windows_table(evaluation: dict[str, Any]) -> str:
    models = evaluation.get("models") or {}
    head = "".join(
        f"<th>{html.escape(label)} WQL</th><th>{html.escape(label)} MASE</th>" for _, label in MODELS
    )
    rows = []
    windows = evaluation.get("windows") or []
    for i, window in enumerate(windows):
        scores = [((models.get(key) or {}).get("windows") or [])[i : i + 1] for key, _ in MODELS]
        scores = [s[0] if s else {} for s in scores]
        span = _span(window)
        rows.append(
            _score_row(f"{window.get('name', i + 1)} ({window.get('items', '?')} items{span})", scores)
        )
    rows.append(
        _score_row(f"all {len(windows)} test windows", [models.get(key) or {} for key, _ in MODELS], True)
    )
    val = evaluation.get("validation") or {}
    best = f" (best, step {val['best_step']})" if val.get("best_step") is not None else ""
    rows.append(
        f"<tr><th>validation{html.escape(best)}</th>"
        + _cell(val.get("best_wql"), _min(val.get("best_wql"), val.get("zero_shot_wql")))
        + "<td>-</td>"
        + _cell(val.get("zero_shot_wql"), _min(val.get("best_wql"), val.get("zero_shot_wql")))
        + "<td>-</td><td>-</td><td>-</td></tr>"
    )
    season = f"MASE season {evaluation.get('season', '?')} ({evaluation.get('season_source', '?')})"
    levels = ", ".join(f"{q:g}" for q in evaluation.get("quantile_levels") or [])
    caption = f"{season}; WQL over the quantiles {levels}" if levels else season
    return (
        f"<table class='models'><caption>{html.escape(caption)}; the lowest of each row in bold</caption>"
        f"<tr><th>window</th>{head}</tr>{''.join(rows)}</table>"
    )


def _span(window: dict[str, Any]) -> str:
    first, last = window.get("first_start"), window.get("last_start")
    if not first:
        return ""
    return f", from {first}" if not last or last == first else f", from {first} .. {last}"


def _min(*values: Any) -> float | None:
    numbers = [n for n in (_num(v) for v in values) if n is not None]
    return min(numbers) if numbers else None


def _score_row(name: str, scores: list[dict[str, Any]], strong: bool = False) -> str:
    best_wql = _min(*(s.get("wql") for s in scores))
    best_mase = _min(*(s.get("mase") for s in scores))
    cells = "".join(_cell(s.get("wql"), best_wql) + _cell(s.get("mase"), best_mase) for s in scores)
    label = f"<b>{html.escape(name)}</b>" if strong else html.escape(name)
    return f"<tr><th>{label}</th>{cells}</tr>"


def _validation_text(evaluation: dict[str, Any]) -> str:
    val = evaluation.get("validation") or {}
    history = val.get("history") or []
    text = f"Validation: {len(history)} scorings"
    if _num(val.get("zero_shot_wql")) is not None:
        text += f", zero-shot WQL {val['zero_shot_wql']:.4f} at step 0"
    if _num(val.get("best_wql")) is not None:
        text += f", best fine-tuned WQL {val['best_wql']:.4f} at step {val.get('best_step')}"
    if val.get("early_stopped"):
        text += f"; early stopping ended training at step {val.get('stopped_at_step')}"
    exported = evaluation.get("exported")
    held = "the base model" if exported == "base" else "the best fine-tuned model"
    return f"{text}. models/ holds {held}."


def _items_table(evaluation: dict[str, Any]) -> str:
    items = evaluation.get("items") or []
    if not items:
        return ""
    shown = items[:ITEM_ROWS]
    more = len(items) > len(shown) or evaluation.get("items_truncated")
    head = "".join(
        f"<th>{html.escape(label)} WQL</th><th>{html.escape(label)} MASE</th>" for _, label in MODELS
    )
    rows = "".join(
        _score_row(str(item.get("item_id", "")), [item.get(key) or {} for key, _ in MODELS]) for item in shown
    )
    note = (
        f"the first {len(shown)} items; evaluation/metrics.json has every item"
        if more
        else f"all {len(shown)} items"
    )
    return (
        f"<h3>Per item, over all test windows</h3><table class='items'>"
        f"<caption>{html.escape(note)}</caption><tr><th>item</th>{head}</tr>{rows}</table>"
    )


def plot_validation(path: Path, training: dict[str, Any]) -> bool | str:
    """Validation WQL over the steps, the zero-shot line, the best step (and the early stop)."""
    val = (evaluation_of(training) or {}).get("validation") or {}
    points = [(p[0], p[1]) for p in val.get("history") or [] if _num(p[1]) is not None]
    if not points:
        return "no validation history in training.json's evaluation"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label="fine-tuned (validation)")
    if _num(val.get("zero_shot_wql")) is not None:
        ax.axhline(val["zero_shot_wql"], color="tab:green", ls="--", label="zero-shot (base)")
    if _num(val.get("best_wql")) is not None and val.get("best_step") is not None:
        ax.plot([val["best_step"]], [val["best_wql"]], "*", color="tab:red", ms=14, label="best (exported)")
    if val.get("early_stopped") and val.get("stopped_at_step") is not None:
        ax.axvline(val["stopped_at_step"], color="0.5", ls=":", label="early stop")
    ax.set_xlabel("step")
    ax.set_ylabel("validation WQL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

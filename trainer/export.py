"""The run's portable models: :func:`export_models`, checked by :func:`smoke_test` before upload.

Layout of the export folder (uploaded as the run's ``models/``)::

    config.json, model.safetensors   the merged model: Chronos2Pipeline.from_pretrained(models/)
    adapter/                         LoRA runs only: adapter_config.json,
                                     adapter_model.safetensors, base_model.json {id, revision}
    README.md                        the model card (:func:`model_card`)

The card's facts (``card``) are plain data: ``data`` (``Dataset.summary()``),
``hyperparameters`` (the run's training settings), ``evaluation`` (training.json's
``evaluation`` record: the three models' scores, validation, which model is exported),
optional ``title`` and ``versions`` (installed versions by default).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.data import EvalSet

logger = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.safetensors")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
ADAPTER_DIRNAME = "adapter"
BASE_MODEL_NAME = "base_model.json"
CARD_NAME = "README.md"
SMOKE_ITEMS = 2
SMOKE_LEVELS = [0.1, 0.5, 0.9]
VERSION_PACKAGES = ("chronos-forecasting", "torch", "transformers", "peft", "huggingface_hub")
_MODEL_NAMES = (
    ("fine_tuned", "fine-tuned"),
    ("zero_shot", "zero-shot (base)"),
    ("seasonal_naive", "seasonal naive"),
)


class ExportError(Exception):
    """The exported models are incomplete or do not load and forecast; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def export_models(
    *, source_dir: Path, adapter_dir: Path | None, base: dict[str, Any], out_dir: Path, card: dict[str, Any]
) -> Path:
    """Write the merged model, the LoRA adapter (if any) and the model card into ``out_dir``.

    Args:
        source_dir: the merged model folder to export (the best fine-tuned model, or the
            base's folder when the base is exported).
        adapter_dir: that model's LoRA adapter alone (``None``: full fine-tuning or base).
        base: the base model (``BaseRef.to_dict()``: base, kind, location, revision).
        out_dir: the export folder (replaced).
        card: the model card's facts (see the module doc).

    Returns:
        ``out_dir``.

    Raises:
        ExportError: a model or adapter file is missing.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    _require(source_dir, MODEL_FILES, "model")
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in sorted(p.name for p in source_dir.iterdir() if p.is_file() and p.name != CARD_NAME):
        shutil.copy2(source_dir / name, staging / name)
    base_record = base_identity(base)
    if adapter_dir is not None:
        _export_adapter(Path(adapter_dir), staging / ADAPTER_DIRNAME, base_record)
    facts = {**card, "base": {**base_record, **dict(base)}, "adapter": adapter_dir is not None}
    (staging / CARD_NAME).write_text(model_card(facts))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    logger.info("exported the models to %s%s", out_dir, " (with the LoRA adapter)" if adapter_dir else "")
    return out_dir


def base_identity(base: Mapping[str, Any]) -> dict[str, Any]:
    """``{"id", "revision", "kind"}`` of a base record (``BaseRef.to_dict()``)."""
    from trainer.base_model import BaseRef

    try:
        model_id = BaseRef.from_dict(base).model_id
    except ValueError:
        model_id = str(base.get("id") or base.get("base") or "unknown")
    return {"id": model_id, "revision": base.get("revision"), "kind": base.get("kind")}


def _export_adapter(adapter_dir: Path, target: Path, base_record: dict[str, Any]) -> None:
    _require(adapter_dir, ADAPTER_FILES, "LoRA adapter")
    target.mkdir()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if base_record["kind"] == "hub":  # loadable anywhere: the Hub id at the pinned commit
        config["base_model_name_or_path"] = base_record["id"]
        config["revision"] = base_record["revision"]
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copy2(adapter_dir / "adapter_model.safetensors", target / "adapter_model.safetensors")
    identity = {"id": base_record["id"], "revision": base_record["revision"]}
    (target / BASE_MODEL_NAME).write_text(json.dumps(identity, indent=2) + "\n")


def _require(folder: Path, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise ExportError(f"cannot export the {what} from {folder}: {', '.join(missing)} missing")


def smoke_test(model_dir: Path, window: EvalSet, *, device: str) -> None:
    """Load ``model_dir`` as a user would and forecast two items of ``window`` with ``predict_df``.

    Each item's context is the end of its past (the model's context length), stamped
    back from its first forecast timestamp (``window.starts``) at ``window.frequency``.

    Raises:
        ExportError: the folder does not load, or the forecasts have the wrong shape,
            timestamps or non-finite values.
    """
    import numpy as np

    model_dir = Path(model_dir)
    pipeline = _load_exported(model_dir, device)
    horizon = int(window.prediction_length)
    df, starts = _smoke_frame(window, context=int(pipeline.model_context_length))
    fail = f"smoke test of the exported model in {model_dir} failed:"
    try:
        out = pipeline.predict_df(
            df, prediction_length=horizon, quantile_levels=SMOKE_LEVELS, freq=window.frequency
        )
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
        raise ExportError(f"{fail} predict_df raised {type(exc).__name__}: {exc}") from exc
    ids = list(starts)
    counts = out["item_id"].astype(str).value_counts().to_dict() if "item_id" in out else {}
    if len(out) != len(ids) * horizon or any(counts.get(i) != horizon for i in ids):
        raise ExportError(f"{fail} expected {len(ids)} items x {horizon} rows, got {counts or len(out)}")
    columns = ["predictions", *(str(q) for q in SMOKE_LEVELS)]
    lacking = [c for c in columns if c not in out]
    if lacking:
        raise ExportError(f"{fail} the forecasts lack columns {lacking}")
    values = out[columns].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ExportError(f"{fail} {int((~np.isfinite(values)).sum())} forecast values are not finite")
    first = out.groupby("item_id")["timestamp"].min()
    wrong = [i for i in ids if first[i] != starts[i]]
    if wrong:
        raise ExportError(f"{fail} forecasts of {wrong} do not start at the window's first timestamp")
    logger.info("smoke test passed: %s forecasts %d items x %d steps", model_dir, len(ids), horizon)


def _load_exported(model_dir: Path, device: str) -> Any:
    from chronos.chronos2 import Chronos2Pipeline

    if not (model_dir / "config.json").is_file():
        raise ExportError(f"smoke test of the exported model failed: {model_dir} has no config.json")
    try:
        pipeline = Chronos2Pipeline.from_pretrained(str(model_dir))
        pipeline.model.to(device)
    except Exception as exc:  # any load failure (OSError, safetensors, shapes, config) is a broken export
        raise ExportError(
            f"smoke test of the exported model failed: Chronos2Pipeline.from_pretrained({str(model_dir)!r}) "
            f"raised {type(exc).__name__}: {exc}"
        ) from exc
    pipeline.model.eval()
    return pipeline


def _smoke_frame(window: EvalSet, *, context: int) -> tuple[Any, dict[str, Any]]:
    """Long data frame (item_id, timestamp, target) of the first items with observed values."""
    import numpy as np
    import pandas as pd

    frames, starts = [], {}
    for i, item in enumerate(window.item_ids):
        past = np.asarray(window.past[i], dtype=np.float64)[-context:]
        if not np.isfinite(past).any():
            continue
        start = pd.Timestamp(window.starts[i])
        if start.tzinfo is not None:  # predict_df takes naive timestamps only (tz-aware: TypeError)
            start = start.tz_convert("UTC").tz_localize(None)
        stamps = pd.date_range(end=start, periods=len(past) + 1, freq=window.frequency)[:-1]
        frames.append(pd.DataFrame({"item_id": str(item), "timestamp": stamps, "target": past}))
        starts[str(item)] = start
        if len(starts) == SMOKE_ITEMS:
            break
    if not starts:
        raise ExportError(
            f"smoke test cannot run: window {getattr(window, 'name', '?')} has no item with data"
        )
    return pd.concat(frames, ignore_index=True), starts


def model_card(facts: Mapping[str, Any]) -> str:
    """The model card (Markdown) of an export: data, windows, settings, metrics, base, versions, usage."""
    data = dict(facts.get("data") or {})
    evaluation = dict(facts.get("evaluation") or {})
    base = dict(facts.get("base") or {})
    lines = [f"# {facts.get('title') or 'Fine-tuned Chronos-2'}", ""]
    lines += _exported_section(evaluation, base)
    lines += ["## Data", ""] + _bullets(
        ("files", _count(data.get("files"))), ("items", data.get("items")), ("rows", data.get("rows")),
        ("frequency", _frequency(data)), ("kept", _drops(data.get("drops"))),
    )  # fmt: skip
    lines += ["## Windows", ""] + _bullets(
        ("horizon (prediction_length)", data.get("prediction_length")),
        ("backtest (test) windows", data.get("backtest_windows")),
        ("validation", "the window of prediction_length just before the test windows"),
        ("training", "everything before the validation window"),
    )
    hyper = dict(facts.get("hyperparameters") or {})
    lines += ["## Hyperparameters", ""] + _bullets(*sorted(hyper.items()))
    lines += _metrics_section(evaluation)
    lines += ["## Base model", ""] + _bullets(
        ("id", base.get("id") or base.get("base")),
        ("kind", base.get("kind")),
        ("revision", base.get("revision")),
    )
    versions = dict(facts.get("versions") or installed_versions())
    lines += ["## Software", ""] + _bullets(*sorted(versions.items()))
    lines += _usage_section(bool(facts.get("adapter")), base)
    return "\n".join(lines).rstrip() + "\n"


def _exported_section(evaluation: dict[str, Any], base: dict[str, Any]) -> list[str]:
    validation = dict(evaluation.get("validation") or {})
    best, zero = validation.get("best_wql"), validation.get("zero_shot_wql")
    scores = f"validation WQL {_num(best)} fine-tuned vs {_num(zero)} zero-shot"
    if evaluation.get("exported") == "base":
        why = f"the base model ({base.get('id') or base.get('base')}): fine-tuning did not beat it ({scores})"
    elif evaluation.get("beats_zero_shot") is False:
        why = f"the fine-tuned model, although it does not beat the base model ({scores})"
    else:
        step = validation.get("best_step")
        at = f" of step {step}" if step is not None else ""
        why = f"the fine-tuned model{at}, best on validation ({scores})"
    lines = ["## Exported model", "", f"This folder holds {why}.", ""]
    lines += [f"> {w}" for w in evaluation.get("warnings") or []]
    return lines + ([""] if evaluation.get("warnings") else [])


def _metrics_section(evaluation: dict[str, Any]) -> list[str]:
    models = dict(evaluation.get("models") or {})
    season = evaluation.get("season")
    lines = [
        "## Metrics (test windows)",
        "",
        f"WQL and MASE (season {season if season else 'n/a'}), lower is better.",
        "",
    ]
    lines += ["| model | WQL | MASE |", "|---|---|---|"]
    for key, label in _MODEL_NAMES:
        scores = dict(models.get(key) or {})
        lines.append(f"| {label} | {_num(scores.get('wql'))} | {_num(scores.get('mase'))} |")
    validation = dict(evaluation.get("validation") or {})
    lines += ["", "Validation WQL: " + _bullet_line(
        ("zero-shot", _num(validation.get("zero_shot_wql"))), ("best", _num(validation.get("best_wql"))),
        ("best step", validation.get("best_step")), ("early stopped", validation.get("early_stopped")),
    ), ""]  # fmt: skip
    return lines


def _usage_section(adapter: bool, base: dict[str, Any]) -> list[str]:
    lines = ["## How to load it", "", "```python", "from chronos import Chronos2Pipeline", "",
             'pipeline = Chronos2Pipeline.from_pretrained("path/to/models")',
             'forecast = pipeline.predict_df(df, prediction_length=H)  # columns item_id, timestamp, target',
             "```", ""]  # fmt: skip
    if adapter:
        base_id = base.get("id") or base.get("location")
        revision = (
            f', revision="{base["revision"]}"' if base.get("kind") == "hub" and base.get("revision") else ""
        )
        lines += ["The LoRA adapter alone, on its base model (`adapter/base_model.json` names it):", "",
                  "```python", "from chronos import Chronos2Pipeline", "from peft import PeftModel", "",
                  f'base = Chronos2Pipeline.from_pretrained("{base_id}"{revision}).model',
                  'model = PeftModel.from_pretrained(base, "path/to/models/adapter").merge_and_unload()',
                  "pipeline = Chronos2Pipeline(model=model)", "```", ""]  # fmt: skip
    return lines


def installed_versions() -> dict[str, str]:
    """Versions of the packages that load and run the model (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in VERSION_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _bullets(*pairs: tuple[str, Any]) -> list[str]:
    return [f"- {key}: {_text(value)}" for key, value in pairs] + [""]


def _bullet_line(*pairs: tuple[str, Any]) -> str:
    return ", ".join(f"{key} {_text(value)}" for key, value in pairs)


def _text(value: Any) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (dict, list, tuple)):
        return f"`{json.dumps(value, default=str)}`"
    return str(value)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _count(files: Any) -> Any:
    return len(files) if isinstance(files, (list, tuple)) else files


def _frequency(data: dict[str, Any]) -> str:
    source = data.get("frequency_source")
    return f"{_text(data.get('frequency'))}{f' ({source})' if source else ''}"


def _drops(drops: Any) -> str:
    if not isinstance(drops, Mapping):
        return "n/a"
    dropped = {
        k: v.get("count", 0) for k, v in dict(drops.get("dropped") or {}).items() if isinstance(v, Mapping)
    }
    parts = [f"{n} {reason.replace('_', ' ')}" for reason, n in dropped.items() if n]
    kept = f"{drops.get('items_kept', '?')} of {drops.get('items_in', '?')} items kept"
    gaps = dict(drops.get("gaps_filled") or {})
    filled = (
        f", {gaps.get('values', 0)} missing values filled in {gaps.get('items', 0)} items"
        if gaps.get("values")
        else ""
    )
    return f"{kept}{' (dropped: ' + ', '.join(parts) + ')' if parts else ''}{filled}"

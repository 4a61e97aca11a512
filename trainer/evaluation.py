"""The ``evaluation`` phase: three models on the test windows, then the export of the chosen one.

It runs under the ``results_sync`` status (:attr:`common.status.Phase.run_status`). In
order: the fine-tuned model (the training child's final model, the best by validation
WQL) and the zero-shot base (the base before any step) are loaded, scored next to
seasonal naive on the same K test windows (:func:`trainer.evaluate.evaluate_models`),
the results go into training.json (``evaluation`` and the flat ``metrics``),
``evaluation/metrics.json`` and ``evaluation/forecasts.json``; then the chosen model
(the base instead only when fine-tuning did not beat it on validation and the spec says
``keep_base_if_worse``) is exported (:mod:`trainer.export`: the merged model, the LoRA
adapter alone, a model card) and smoke-tested; a broken export is a terminal error.
finalize uploads the export folder as the run's ``models/`` and
:func:`model_metadata` describes what produced it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from common.layout import FORECASTS_KEY, METRICS_KEY, RunPaths
from common.timeutil import Clock, iso, utc_now
from schemas import validate
from trainer.context import RunContext
from trainer.errors import TerminalError
from trainer.record import TrainingLog

log = logging.getLogger(__name__)

COMPONENT = "evaluation"
EXPORT_DIR = "export"


def phase(ctx: RunContext, details: dict[str, Any]) -> None:
    """Evaluate, record, export; facts into ``details``, outputs for finalize."""
    from trainer import warmup

    warmup.wait()  # torch and chronos, imported in the background since data sync (trainer.warmup)
    from trainer import evaluate  # torch and chronos: only once there is a model to evaluate

    spec, work, device = ctx.require_spec(), ctx.opts.work, ctx.opts.device
    dataset = ctx.data.dataset
    windows = list(getattr(dataset, "test_windows", ()) or ())
    if not windows:
        raise TerminalError("the data has no test window to evaluate on", component=COMPONENT)
    fine_tuned_dir = ctx.outputs.model_dir or Path()
    pipelines = {
        evaluate.FINE_TUNED: _load_pipeline(fine_tuned_dir, device),
        evaluate.ZERO_SHOT: zero_shot_pipeline(ctx),
    }
    validation = getattr(ctx.data, "validation_result", None)
    result = evaluate.evaluate_models(
        pipelines, windows, mase_season=spec.model.mase_season, validation=validation,
        keep_base_if_worse=spec.model.keep_base_if_worse,
    )  # fmt: skip
    ctx.record.evaluation = result.record
    ctx.record.metrics.update(result.metrics)
    ctx.outputs.forecasts = _write_json(work / FORECASTS_KEY, result.forecasts)
    metrics_path = _write_json(work / METRICS_KEY, result.scores)
    ctx.outputs.evaluation_metrics = metrics_path
    for warning in result.record["warnings"]:
        log.warning("%s", warning)
    metadata = model_metadata(
        paths=ctx.paths, spec=spec, record=ctx.record,
        manifest=ctx.data.manifest.to_dict() if ctx.data.manifest else {},
        base_info={**ctx.data.base_info, **ctx.data.base_ref}, device=device, clock=ctx.deps.clock,
        evaluation=result.record,
    )  # fmt: skip
    exported = result.decision.exported
    if exported == "base":
        source, adapter = base_model_dir(ctx, pipelines[evaluate.ZERO_SHOT]), None
    else:
        source, adapter = fine_tuned_dir, getattr(ctx.data, "adapter_dir", None)
    out_dir = export_and_check(
        source_dir=source, adapter_dir=adapter, base=dict(ctx.data.base_ref), out_dir=work / EXPORT_DIR,
        card=model_card_facts(metadata, result.record, dataset), window=windows[-1], device=device,
    )  # fmt: skip
    ctx.outputs.model_dir = out_dir
    ctx.outputs.model_metadata = metadata
    details.update(
        metrics=result.metrics, forecast_items=len(result.forecasts["items"]),
        metrics_file=str(metrics_path), exported=exported,
        beats_zero_shot=result.decision.beats_zero_shot, warnings=result.record["warnings"],
    )  # fmt: skip


def zero_shot_pipeline(ctx: RunContext) -> Any:
    """The base model before any step, as a ``Chronos2Pipeline`` in eval mode.

    A random-init ``tiny`` base is built with the run's seed, so it is the child's step-0 model.
    """
    from trainer import model as models

    spec = ctx.require_spec()
    ref = ctx.data.base_ref or ctx.data.base_model or spec.model.base  # a resolved BaseRef, or its name
    return models.base_pipeline(ref, ctx.opts.device, seed=spec.model.seed)


def base_model_dir(ctx: RunContext, pipeline: Any) -> Path:
    """A folder holding the base model: its own (bundled, local, Hub snapshot), or the tiny one saved."""
    location = (ctx.data.base_ref or {}).get("location") or ctx.data.base_model
    if location and (Path(location) / "config.json").is_file():
        return Path(location)
    folder = ctx.opts.work / "zero-shot-model"
    pipeline.model.save_pretrained(str(folder))
    return folder


def export_and_check(
    *,
    source_dir: Path,
    adapter_dir: Path | None,
    base: dict[str, Any],
    out_dir: Path,
    card: dict[str, Any],
    window: Any,
    device: str,
) -> Path:
    """Export the model (:func:`trainer.export.export_models`) and smoke-test the folder.

    Raises:
        TerminalError: the export failed or the exported folder does not forecast.
    """
    from trainer import export

    try:
        folder = export.export_models(
            source_dir=Path(source_dir), adapter_dir=Path(adapter_dir) if adapter_dir else None,
            base=base, out_dir=out_dir, card=card,
        )  # fmt: skip
        export.smoke_test(Path(folder), window, device=device)
    except export.ExportError as exc:
        raise TerminalError(f"model export failed: {exc}", component=COMPONENT) from exc
    log.info("exported %s to %s (smoke test passed)", source_dir, folder)
    return Path(folder)


def model_card_facts(metadata: dict[str, Any], record: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """The model card's facts (:func:`trainer.export.model_card`): data, settings, the evaluation record."""
    facts: dict[str, Any] = {
        "title": f"Chronos-2 fine-tuned in run {metadata['run_id']}",
        "run_id": metadata["run_id"],
        "data": dataset.summary() if hasattr(dataset, "summary") else {},
        "windows": metadata.get("windows", {}),
        "hyperparameters": metadata["hyperparameters"],
        "evaluation": record,
        "base_model": metadata["base_model"],
    }
    if any(metadata["versions"].values()):  # else the card states the installed versions
        facts["versions"] = metadata["versions"]
    return facts


def model_metadata(
    *,
    paths: RunPaths,
    spec: Any,
    record: TrainingLog,
    manifest: dict[str, Any],
    base_info: dict[str, Any],
    device: str,
    clock: Clock = utc_now,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """model_metadata.json: what produced the model (schema ``model-metadata``).

    Args:
        base_info: the child's ``BaseModelInfo`` dict, with the resolved base's
            ``BaseRef.to_dict()`` over it (kind, revision).
        evaluation: training.json's ``evaluation`` (what was exported), once it ran.
    """
    m = spec.model
    base_model: dict[str, Any] = {
        "id": m.base,
        "revision": base_info.get("revision"),
        "parameters": int(base_info.get("param_count") or 0),
    }
    kind = base_info.get("kind")
    if kind in ("tiny", "bundled", "local", "hub", "s3"):
        base_model["kind"] = kind
    if base_info.get("dtype"):
        base_model["dtype"] = str(base_info["dtype"])
    doc = {
        "schema_version": 1,
        "run_id": paths.run_id,
        "env": paths.env,
        "created_at": iso(clock()),
        "started_at": record.started_at,
        "base_model": base_model,
        "dataset_manifest": manifest,
        "git_commit": record.git_commit,
        "versions": dict(record.software),
        "hyperparameters": {
            "prediction_length": m.prediction_length,
            "context_length": m.context_length,
            "num_steps": m.num_steps,
            "batch_size": m.batch_size,
            "learning_rate": m.learning_rate,
            "finetune_mode": m.finetune_mode.value,
            "checkpoint_interval": m.checkpoint_interval,
            "seed": m.seed,
            "device": device,
            "eval_interval": m.eval_interval,
            "early_stopping_patience": m.early_stopping_patience,
            "keep_base_if_worse": m.keep_base_if_worse,
            "mase_season": m.mase_season,
            "precision": m.precision,
        },
        "metrics": dict(record.metrics),
        "phase_durations": record.durations(),
        "windows": {
            "prediction_length": m.prediction_length,
            "backtest_windows": m.backtest_windows,
            "validation": bool((evaluation or {}).get("validation", {}).get("history")),
        },
    }
    if evaluation is not None:
        doc["exported"] = evaluation["exported"]
    return validate("model-metadata", doc, source="model_metadata.json")


def _load_pipeline(model_dir: Path, device: str) -> Any:
    from chronos.chronos2 import Chronos2Pipeline

    if not (Path(model_dir) / "config.json").is_file():
        raise TerminalError(f"no trained model to evaluate in {model_dir}", component=COMPONENT)
    pipeline = Chronos2Pipeline.from_pretrained(str(model_dir), device_map=device)
    pipeline.model.eval()
    return pipeline


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path

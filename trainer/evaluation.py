"""The ``evaluation`` phase: the trained model against seasonal naive, forecasts, model_metadata.json.

It runs under the ``results_sync`` status (:attr:`common.status.Phase.run_status`): the
metrics go into training.json, the forecasts to ``evaluation/forecasts.json`` and
:func:`model_metadata` describes what produced the model; finalize uploads them. The
numbers themselves come from :mod:`trainer.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.layout import FORECASTS_KEY, RunPaths
from common.timeutil import Clock, iso, utc_now
from schemas import validate
from trainer.context import RunContext
from trainer.record import TrainingLog


def phase(ctx: RunContext, details: dict[str, Any]) -> None:
    """Evaluate the final model; metrics into ``details`` and training.json, outputs for finalize."""
    from trainer import evaluate  # torch and chronos: only once there is a model to evaluate

    spec, model_dir = ctx.require_spec(), ctx.outputs.model_dir or Path()
    pipeline = evaluate.load_pipeline(model_dir, ctx.opts.device)
    metrics = evaluate.evaluate_model(pipeline, ctx.data.dataset)
    ctx.record.metrics.update(metrics)
    doc = evaluate.forecasts(
        pipeline,
        ctx.data.dataset,
        ctx.data.files,
        item_column=spec.data.item_id_column,
        timestamp_column=spec.data.timestamp_column,
    )
    path = ctx.opts.work / FORECASTS_KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    ctx.outputs.forecasts = path
    details.update(metrics=metrics, forecast_items=len(doc["items"]))
    ctx.outputs.model_metadata = model_metadata(
        paths=ctx.paths,
        spec=spec,
        record=ctx.record,
        manifest=ctx.data.manifest.to_dict() if ctx.data.manifest else {},
        base_info=ctx.data.base_info,
        device=ctx.opts.device,
        clock=ctx.deps.clock,
    )


def model_metadata(
    *,
    paths: RunPaths,
    spec: Any,
    record: TrainingLog,
    manifest: dict[str, Any],
    base_info: dict[str, Any],
    device: str,
    clock: Clock = utc_now,
) -> dict[str, Any]:
    """model_metadata.json: what produced the model (schema ``model-metadata``)."""
    m = spec.model
    doc = {
        "schema_version": 1,
        "run_id": paths.run_id,
        "env": paths.env,
        "created_at": iso(clock()),
        "started_at": record.started_at,
        "base_model": {
            "id": m.base,
            "revision": base_info.get("revision"),
            "parameters": int(base_info.get("param_count") or 0),
        },
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
        },
        "metrics": dict(record.metrics),
        "phase_durations": record.durations(),
    }
    return validate("model-metadata", doc, source="model_metadata.json")

"""The GPU section: the preflight's facts and CUDA training speed, when this machine has a GPU.

On a CUDA machine: the preflight's GPU details (:func:`trainer.preflight.check_gpu`), then
the trainer (:func:`trainer.finetune.train`, ``device="cuda"``) against upstream
``Chronos2Pipeline.fit`` on the same random-init model, data, batch (32), context (2048)
and steps, in fp32, bf16 and fp16, interleaved, for the tiny model and for a model of
Chronos-2's published shape (random weights: no download). Steps/s is timed between the
end of a warm-up step and the last step (``torch.cuda.synchronize`` at both ends, by a
``TrainerCallback`` given to both), peak memory is ``torch.cuda.max_memory_allocated``.
Without a GPU the section is skipped and says how to fill it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.core import Section, Settings, Table, median, ratio

NAME = "gpu"
TITLE = "GPU"
BATCH, CONTEXT, HORIZON = 32, 2048, 24
PRECISIONS = ("fp32", "bf16", "fp16")
TRAINER, UPSTREAM = "trainer", "upstream fit"
DEVICE = "cuda"  # a module setting so a CPU smoke run can drive the same code
# Chronos-2's shape as published in amazon/chronos-2's config.json (random weights here)
CHRONOS2_SHAPE: dict[str, Any] = {"d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12}
CHRONOS2_QUANTILES = [0.01, 0.05, *(round(0.05 * i, 2) for i in range(2, 19)), 0.95, 0.99]
NO_GPU = "no GPU on this machine (torch.cuda.is_available() is False)"
HOW_TO = (
    "to fill this section, run `make bench` (or `.venv/bin/python -m bench --only gpu`) on a GPU "
    "machine with the CUDA build of torch, e.g. a g5.xlarge or g6.xlarge from the Deep Learning AMI; "
    "BENCHMARKS.md is then written with these numbers."
)


def skipped(reason: str = NO_GPU) -> Section:
    """The section where there is no GPU."""
    return Section(
        name=NAME, title=TITLE, skipped=reason, notes=[HOW_TO],
        intro="The preflight's GPU facts, and the trainer's CUDA steps/s against upstream "
        "`Chronos2Pipeline.fit` for the tiny model and a Chronos-2-size model at batch 32 and "
        "context 2048, in fp32, bf16 and fp16, with peak GPU memory.",
    )  # fmt: skip


def run(settings: Settings) -> Section:
    """Measure on the GPU, or say there is none."""
    import torch

    if not torch.cuda.is_available():
        return skipped()
    facts = preflight_facts()
    steps = {"tiny": 20 if settings.quick else 200, "chronos-2 size": 10 if settings.quick else 60}
    warmup = 5 if settings.quick else 10
    data = _inputs(settings.workdir / "data")
    measured: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    errors: list[str] = []
    precisions = [p for p in PRECISIONS if p != "bf16" or torch.cuda.is_bf16_supported()]
    for model, config in (("tiny", _tiny_config()), ("chronos-2 size", chronos2_config())):
        folder = _save_model(config, settings.workdir / model.replace(" ", "-"))
        for _ in range(1 if settings.quick else min(settings.rounds, 2)):
            for precision in precisions:
                for tool in (TRAINER, UPSTREAM):
                    key = (model, precision, tool)
                    try:
                        out = settings.workdir / "out" / f"{model}-{precision}-{tool}".replace(" ", "-")
                        run = _measure(tool, folder, data, precision, steps[model], warmup, out)
                        measured.setdefault(key, []).append(run)
                    except Exception as exc:  # noqa: BLE001 - one failed configuration becomes a note
                        errors.append(f"{model}, {precision}, {tool}: {type(exc).__name__}: {str(exc)[:200]}")
    return build(facts, measured, errors, steps=steps, warmup=warmup)


def preflight_facts() -> dict[str, Any]:
    """What the trainer's preflight records about the GPU (its error message if it fails)."""
    from trainer.errors import TerminalError
    from trainer.preflight import check_gpu

    try:
        return check_gpu()
    except TerminalError as exc:
        return {"gpu_check": f"failed: {exc}"}


def build(
    facts: dict[str, Any],
    measured: dict[tuple[str, str, str], list[dict[str, float]]],
    errors: list[str],
    *,
    steps: dict[str, int],
    warmup: int,
) -> Section:
    """The section from the measurements (pure: the tests feed it numbers).

    ``measured[(model, precision, tool)]``: one ``{"steps_per_s", "peak_bytes", "params"}`` per round.
    """
    pre = Table(title="Preflight (the trainer's GPU check)", columns=["fact", "value"])
    for key in ("gpu", "gpu_memory_mib", "gpu_count", "cuda", "driver_version", "gpu_check"):
        if key in facts:
            pre.add(key, facts[key])
    speed = Table(
        title=f"Training steps/s at batch {BATCH}, context {CONTEXT} "
        "(medians; ratio above 1: the trainer is faster)",
        columns=["model", "parameters", "precision", "trainer steps/s", "upstream steps/s", "ratio",
                 "trainer peak GPU (MiB)", "upstream peak GPU (MiB)"],
    )  # fmt: skip
    for model, precision in dict.fromkeys((m, p) for (m, p, _), runs in measured.items() if runs):
        ours, theirs = (
            measured.get((model, precision, TRAINER), []),
            measured.get((model, precision, UPSTREAM), []),
        )
        ours_s = median([r["steps_per_s"] for r in ours]) if ours else None
        theirs_s = median([r["steps_per_s"] for r in theirs]) if theirs else None
        params = int((ours or theirs)[0]["params"])
        speed.add(
            model, params, precision, ours_s, theirs_s,
            ratio(ours_s, theirs_s) if ours_s is not None and theirs_s else None,
            max(r["peak_bytes"] for r in ours) / 2**20 if ours else None,
            max(r["peak_bytes"] for r in theirs) / 2**20 if theirs else None,
        )  # fmt: skip
    notes = [
        f"steps: {', '.join(f'{m} {n}' for m, n in steps.items())}; steps/s counts the steps after "
        f"the first {warmup} (compilation, allocator warm-up).",
        "both runs use the same random-init weights (saved once) and the same training inputs; upstream "
        "fit is given bf16/fp16/tf32 to match the trainer's plan (`trainer.precision`: tf32 with "
        "bf16/fp16 on sm80+, none in fp32).",
        "the Chronos-2-size model copies the published shape of amazon/chronos-2 (d_model 768, 12 "
        "layers, 12 heads, d_ff 3072) with random weights.",
    ]
    notes += [f"failed: {e}" for e in errors]
    return Section(
        name=NAME, title=TITLE, intro=skipped().intro, tables=[pre, speed], notes=notes,
        skipped=None if measured else "every GPU measurement failed",
    )  # fmt: skip


def chronos2_config(context_length: int = CONTEXT) -> Any:
    """A ``Chronos2CoreConfig`` of Chronos-2's published shape (random weights: 119.5M parameters)."""
    from chronos.chronos2.config import Chronos2CoreConfig

    return Chronos2CoreConfig(
        **CHRONOS2_SHAPE, dropout_rate=0.1, feed_forward_proj="relu",
        chronos_config={
            "context_length": context_length, "input_patch_size": 16, "input_patch_stride": 16,
            "output_patch_size": 16, "quantiles": CHRONOS2_QUANTILES, "use_reg_token": True,
            "use_arcsinh": True, "max_output_patches": 64, "time_encoding_scale": context_length,
        },
        architectures=["Chronos2Model"], chronos_pipeline_class="Chronos2Pipeline",
    )  # fmt: skip


def _tiny_config() -> Any:
    from trainer.model import tiny_config

    return tiny_config(context_length=CONTEXT)


def _save_model(config: Any, folder: Path) -> Path:
    """Random weights of ``config`` saved as a model folder both tools load."""
    from chronos.chronos2 import Chronos2Model

    from trainer.model import seed_everything

    seed_everything(0)
    Chronos2Model(config).save_pretrained(str(folder))
    return folder


def _inputs(folder: Path) -> list[dict[str, Any]]:
    from common.runspec import DataSpec
    from trainer.data import load_dataset
    from trainer.synthetic import generate_dataset

    files = generate_dataset(folder, n_items=64, length=CONTEXT + 8 * HORIZON, items_per_file=64)
    spec = DataSpec.from_dict({"frequency": "h"})
    return load_dataset(files, spec, prediction_length=HORIZON, backtest_windows=1).train_inputs


def _timer(warmup: int, total: int) -> Any:
    """A callback timing the steps after ``warmup`` to ``total`` (CUDA synchronised at both ends)."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        began = ended = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (warmup, total):
                torch.cuda.synchronize()
                if state.global_step == warmup:
                    self.began = time.perf_counter()
                else:
                    self.ended = time.perf_counter()

        def steps_per_s(self) -> float:
            return (total - warmup) / (self.ended - self.began) if self.ended > self.began else 0.0

    return StepTimer()


def _measure(
    tool: str, folder: Path, inputs: list[dict[str, Any]], precision: str, steps: int, warmup: int, out: Path
) -> dict[str, float]:
    """One training run of ``tool``: steps/s after warm-up, peak GPU bytes, parameters."""
    import torch

    timer = _timer(warmup, steps)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    if tool == TRAINER:
        params = _train_trainer(folder, inputs, precision, steps, out, timer)
    else:
        params = _train_upstream(folder, inputs, precision, steps, out, timer)
    peak = torch.cuda.max_memory_allocated()
    return {"steps_per_s": timer.steps_per_s(), "peak_bytes": float(peak), "params": float(params)}


def _train_trainer(
    folder: Path, inputs: list[dict[str, Any]], precision: str, steps: int, out: Path, timer: Any
) -> int:
    from trainer.callbacks import TrainHooks
    from trainer.finetune import train
    from trainer.train_config import GPU_LOG_INTERVAL, TrainConfig

    config = TrainConfig(
        prediction_length=HORIZON, context_length=CONTEXT, num_steps=steps, learning_rate=1e-5,
        output_dir=out, batch_size=BATCH, finetune_mode="full", checkpoint_interval=steps, seed=0,
        eval_interval=steps, early_stopping_patience=None, precision=precision,
        log_interval=GPU_LOG_INTERVAL, device=DEVICE,
    )  # fmt: skip
    result = train(str(folder), inputs, config, hooks=TrainHooks(callbacks=[timer]))
    return result.trainable_params


def _train_upstream(
    folder: Path, inputs: list[dict[str, Any]], precision: str, steps: int, out: Path, timer: Any
) -> int:
    import torch
    from chronos.chronos2 import Chronos2Pipeline

    sm80 = DEVICE == "cuda" and torch.cuda.get_device_capability()[0] >= 8
    flags = {"bf16": precision == "bf16", "fp16": precision == "fp16", "tf32": sm80 and precision != "fp32"}
    pipeline = Chronos2Pipeline.from_pretrained(str(folder), device_map=DEVICE)
    pipeline.fit(
        inputs, prediction_length=HORIZON, context_length=CONTEXT, learning_rate=1e-5, num_steps=steps,
        batch_size=BATCH, output_dir=out, callbacks=[timer], remove_printer_callback=True,
        logging_steps=10, disable_tqdm=True, **flags,
    )  # fmt: skip
    return sum(p.numel() for p in pipeline.model.parameters())

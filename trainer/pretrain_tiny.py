"""Pretrain the tiny Chronos-2 that ships with the project (``trainer/assets/tiny-pretrained``).

``python -m trainer.pretrain_tiny --out trainer/assets/tiny-pretrained [--steps N]``

The tiny config (:func:`trainer.model.tiny_config`, ~54k parameters at d_model 32,
context 128) is trained from a seeded random init on a synthetic corpus generated
here (:func:`synthetic_corpus`): series at hourly, half-hourly, quarter-hourly, daily,
weekly, monthly and quarterly steps with one or two seasonal periods of random shape,
trends, level shifts, AR(1) and random-walk noise, outliers, intermittent counts, a
few with a known-future promotion flag and a past-only covariate, and levels from
1e-2 to 1e5. It uses ``Chronos2Dataset`` and ``Chronos2Trainer`` as fine-tuning does
and saves with ``Chronos2Pipeline.save_pretrained`` plus ``training_info.json``
(corpus recipe, steps, seed, date, final loss). Same arguments, same weights on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "training_info.json"
DEFAULTS: dict[str, Any] = {
    "steps": 4000,
    "batch_size": 64,
    "learning_rate": 2e-3,
    "seed": 0,
    "d_model": 32,
    "n_series": 6000,
    "prediction_length": 64,
    "context_length": 128,
    "min_past": 16,
}
# (name, share of the corpus, seasonal periods in steps, length range)
FREQUENCIES: tuple[tuple[str, float, tuple[int, ...], tuple[int, int]], ...] = (
    ("h", 0.35, (24, 168), (300, 2000)),
    ("30min", 0.1, (48, 336), (300, 2000)),
    ("15min", 0.1, (96,), (300, 2000)),
    ("D", 0.15, (7, 365), (200, 1500)),
    ("W", 0.1, (52,), (150, 600)),
    ("M", 0.1, (12,), (96, 400)),
    ("Q", 0.05, (4,), (96, 200)),
    ("random", 0.05, (), (200, 1500)),
)
RECIPE: dict[str, Any] = {
    "frequencies": {
        name: {"share": share, "periods": list(periods), "length": list(length)}
        for name, share, periods, length in FREQUENCIES
    },  # fmt: skip
    "level": "10 ** U(-2, 5), sign flipped for 5% (zero-crossing additive series)",
    "seasonality": "1-3 harmonics per period, amplitude U(0, 0.5) of the level (10%: none);"
    " 15% multiplicative business-hours/weekday blocks",
    "trend": "linear slope U(-1, 1) of the level over the series (60%), one kink (20%)",
    "level_shifts": "Poisson(0.5) shifts of N(0, 0.3) of the level",
    "noise": "Gaussian, sd 10 ** U(-2.5, -0.5) of the level, AR(1) phi U(0, 0.95) (50%);"
    " random walk (15%); 1% outliers (20% of series)",
    "intermittent": "10%: Poisson counts of the (positive) signal at a low level",
    "covariates": "20%: known-future 0/1 promo lifting the target U(0.1, 0.5) of the level,"
    " and a past-only covariate following the first season",
    "clip_at_zero": "60% of the positive series",
}


def synthetic_corpus(n_series: int, *, seed: int) -> list[dict[str, Any]]:
    """The pretraining corpus: ``n_series`` Chronos-2 input dicts, the same for the same seed.

    Raises:
        ValueError: ``n_series`` is not positive.
    """
    if n_series < 1:
        raise ValueError(f"n_series must be >= 1, got {n_series}")
    rng = np.random.default_rng(seed)
    shares = np.array([share for _, share, _, _ in FREQUENCIES])
    picks = rng.choice(len(FREQUENCIES), size=n_series, p=shares / shares.sum())
    return [_series(rng, FREQUENCIES[int(k)]) for k in picks]


def _series(
    rng: np.random.Generator, frequency: tuple[str, float, tuple[int, ...], tuple[int, int]]
) -> dict[str, Any]:
    _, _, periods, (low, high) = frequency
    if not periods:
        periods = (int(rng.integers(2, 64)),)
    n = int(rng.integers(low, high + 1))
    t = np.arange(n, dtype=np.float64)
    seasonal = _seasonality(rng, t, periods)
    signal = 1.0 + seasonal + _trend(rng, t) + _shifts(rng, n)
    if rng.random() < 0.15:
        signal = signal * _blocks(rng, t, periods[0])
    entry: dict[str, Any] = {}
    if rng.random() < 0.2:
        promo = _promo(rng, n, periods[0])
        signal = signal + rng.uniform(0.1, 0.5) * promo
        past = np.sin(2 * np.pi * t / periods[0] + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.2, n)
        entry["past_covariates"] = {"promo": promo.astype(np.float32), "driver": past.astype(np.float32)}
        entry["future_covariates"] = {"promo": None}
    level = 10 ** rng.uniform(-2, 5)
    if rng.random() < 0.1:
        values = rng.poisson(np.clip(signal, 0, None) * rng.uniform(0.2, 5.0)).astype(np.float64)
    else:
        values = level * (signal + _noise(rng, n))
        if rng.random() < 0.05:
            values = values - level * float(np.mean(signal))
        elif rng.random() < 0.6:
            values = np.clip(values, 0, None)
    entry["target"] = values.astype(np.float32)
    return entry


def _seasonality(rng: np.random.Generator, t: np.ndarray, periods: tuple[int, ...]) -> np.ndarray:
    total = np.zeros_like(t)
    if rng.random() < 0.1:
        return total
    for k, period in enumerate(periods):
        if k > 0 and rng.random() < 0.4:
            continue
        amplitude = rng.uniform(0, 0.5) / (1 + k)
        for h in range(1, int(rng.integers(1, 4)) + 1):
            phase = rng.uniform(0, 2 * np.pi)
            total += amplitude * rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * t / period + phase)
    return total


def _blocks(rng: np.random.Generator, t: np.ndarray, period: int) -> np.ndarray:
    """Opening hours / weekdays: a high share of each period, a low one outside."""
    start, width = rng.uniform(0, period), rng.uniform(0.2, 0.7) * period
    inside = ((t - start) % period) < width
    return np.where(inside, 1.0, rng.uniform(0.05, 0.6))


def _trend(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    if rng.random() >= 0.6:
        return np.zeros_like(t)
    n = len(t)
    trend = rng.uniform(-1, 1) * t / n
    if rng.random() < 0.2:
        kink = int(rng.integers(n // 4, 3 * n // 4))
        trend = trend + rng.uniform(-1, 1) * np.clip(t - kink, 0, None) / n
    return trend


def _shifts(rng: np.random.Generator, n: int) -> np.ndarray:
    shifts = np.zeros(n)
    for _ in range(int(rng.poisson(0.5))):
        shifts[int(rng.integers(1, n)) :] += rng.normal(0, 0.3)
    return shifts


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    scale = 10 ** rng.uniform(-2.5, -0.5)
    eps = rng.normal(0, scale, n)
    if rng.random() < 0.5:
        phi = rng.uniform(0, 0.95)
        for i in range(1, n):
            eps[i] += phi * eps[i - 1]
        eps *= math.sqrt(1 - phi**2)
    if rng.random() < 0.15:
        eps += np.cumsum(rng.normal(0, scale / 3, n))
    if rng.random() < 0.2:
        spikes = rng.random(n) < 0.01
        eps[spikes] += rng.normal(0, 1.0, int(spikes.sum()))
    return eps


def _promo(rng: np.random.Generator, n: int, period: int) -> np.ndarray:
    flags = np.zeros(n)
    k = int(rng.integers(0, 4 * period))
    while k < n:
        run = int(rng.integers(max(1, period // 4), max(2, period) + 1))
        flags[k : k + run] = 1.0
        k += run + int(rng.integers(2 * period, 8 * period + 1))
    return flags


def pretrain(
    out_dir: Path,
    *,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    learning_rate: float = DEFAULTS["learning_rate"],
    seed: int = DEFAULTS["seed"],
    d_model: int = DEFAULTS["d_model"],
    n_series: int = DEFAULTS["n_series"],
) -> Path:
    """Train the tiny model on :func:`synthetic_corpus` and save it to ``out_dir``.

    Returns:
        ``out_dir``, holding ``config.json``, ``model.safetensors`` and ``training_info.json``.
    """
    import torch
    from chronos.chronos2 import Chronos2Model, Chronos2Pipeline

    from trainer.model import seed_everything, tiny_config

    started = time.monotonic()
    corpus = synthetic_corpus(n_series, seed=seed)
    seed_everything(seed)
    model = Chronos2Model(tiny_config(d_model=d_model, context_length=DEFAULTS["context_length"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = fit(
            model, corpus, steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed
        )
    finally:
        torch.set_num_threads(threads)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    Chronos2Pipeline(model=model).save_pretrained(out_dir)
    info = {
        "script": "python -m trainer.pretrain_tiny",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "schedule": "linear decay, 5% warmup, AdamW, weight decay 0.01",
        "d_model": d_model,
        "param_count": sum(p.numel() for p in model.parameters()),
        "prediction_length": DEFAULTS["prediction_length"],
        "context_length": DEFAULTS["context_length"],
        "corpus": {"n_series": n_series, "seed": seed, "recipe": RECIPE},
        "loss": {"first_100": _mean(losses[:100]), "last_100": _mean(losses[-100:])},
        "duration_s": round(time.monotonic() - started, 1),
        "versions": _versions(),
    }
    (out_dir / TRAINING_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    logger.info("saved the pretrained tiny model to %s (loss %.4f -> %.4f)", out_dir,
                info["loss"]["first_100"], info["loss"]["last_100"])  # fmt: skip
    return out_dir


def fit(
    model: Any,
    inputs: list[dict[str, Any]],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    prediction_length: int = DEFAULTS["prediction_length"],
    min_past: int = DEFAULTS["min_past"],
) -> list[float]:
    """Train ``model`` in place on CPU with ``Chronos2Trainer``; returns the loss of every step."""
    import tempfile

    from chronos.chronos2 import preprocess
    from chronos.chronos2.dataset import Chronos2Dataset, DatasetMode
    from chronos.chronos2.trainer import Chronos2Trainer
    from transformers.trainer_callback import PrinterCallback
    from transformers.training_args import TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # preprocess wants one structure per list: prepare each structure apart, keep the order
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, entry in enumerate(inputs):
        groups.setdefault(tuple(sorted(entry.get("past_covariates", {}))), []).append(i)
    prepared: list[Any] = [None] * len(inputs)
    for indices in groups.values():
        converted = preprocess.from_list_of_dicts(
            [inputs[i] for i in indices], prediction_length=prediction_length
        )
        for i, item in zip(indices, converted, strict=True):
            prepared[i] = item
    dataset = Chronos2Dataset(
        inputs=prepared,
        context_length=int(model.chronos_config.context_length),
        prediction_length=prediction_length,
        batch_size=batch_size,
        output_patch_size=int(model.chronos_config.output_patch_size),
        min_past=min_past,
        mode=DatasetMode.TRAIN,
    )
    with tempfile.TemporaryDirectory(prefix="pretrain-tiny-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=max(1, steps // 20),
            weight_decay=0.01,
            max_grad_norm=1.0,
            optim="adamw_torch",
            logging_strategy="steps",
            logging_steps=1,
            disable_tqdm=True,
            report_to="none",
            max_steps=steps,
            dataloader_num_workers=0,
            save_strategy="no",
            eval_strategy="no",
            seed=seed,
            use_cpu=True,
        )
        trainer = Chronos2Trainer(model=model, args=args, train_dataset=dataset)
        trainer.pop_callback(PrinterCallback)
        trainer.train()
    return [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 5) if values else None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("chronos-forecasting", "torch", "transformers")}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--out DIR [--steps N] [--batch-size B] [--lr LR] [--seed S] [--d-model D]``."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer.pretrain_tiny", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to save the model into")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--d-model", type=int, default=DEFAULTS["d_model"])
    parser.add_argument("--n-series", type=int, default=DEFAULTS["n_series"])
    args = parser.parse_args(argv)
    from common.logfmt import configure

    configure()
    pretrain(
        args.out, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        seed=args.seed, d_model=args.d_model, n_series=args.n_series,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

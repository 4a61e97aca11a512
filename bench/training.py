"""Training speed: the trainer against upstream ``Chronos2Pipeline.fit``, and what checkpoints,
validation and CPU threads cost.

Each alternative trains the same model (:func:`trainer.model.tiny_config`, and the shipped
``tiny-pretrained`` base) on the same data, batch, lr, seed and steps, in turn each round,
timed as a whole call. Without validation and with only the final checkpoint both do the same
work, so they must end with the same weights (:func:`bench.weights.compare_weights`, tensor by tensor).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import Section, Settings, Table, median, rate, ratio
from bench.weights import WeightDiff, compare_files, weights_table
from trainer.base_model import BaseRef, ModelLoadError, resolve_base

NAME = "training"
TITLE = "Training speed"
BATCH_SIZE = 32
LEARNING_RATE = 1e-3  # random init and the tiny pretrained base alike (FIELD-NOTES)
PREDICTION_LENGTH = 24
CONTEXT_LENGTH = 128
CHECKPOINT_TARGET = 0.05  # checkpointing overhead under 5%
SPEC_CHECKPOINT_INTERVAL = 100  # the run spec's default checkpoint_interval and eval_interval
TRAINER = "trainer (1 thread, its default)"
UPSTREAM = "upstream fit (1 thread)"
COLUMNS = ["alternative", "median s", "steps/s", "ratio"]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How much one run measures: steps per training, rounds, checkpoints and validations per run."""

    steps: int
    rounds: int
    thread_steps: int
    thread_rounds: int
    side_rounds: int = 1  # fit at default threads, checkpointing and validation (the pair gets ``rounds``)
    fit_default_threads: bool = True
    checkpoints: int = 10
    validations: int = 4


def plan(settings: Settings) -> Plan:
    """Quick: 20 steps, one round, the threads rows at 2 steps (a second thread on a busy machine
    can take seconds a step), fit at torch's default threads left out. Full: 100 steps (over 2 s
    each at ~50 steps/s), ``settings.rounds`` rounds of the trainer against fit (the ratio with a
    target), the other rows at most 3 rounds and the threads rows at most 2 (fit at 2 threads and
    the busy-core rows take 5 to 35 s a run on a loaded machine: the whole bench has 10 minutes)."""
    if settings.quick:
        return Plan(steps=20, rounds=1, thread_steps=2, thread_rounds=1, fit_default_threads=False)
    rounds = max(1, settings.rounds)
    return Plan(
        steps=100, rounds=rounds, thread_steps=100, thread_rounds=min(rounds, 2), side_rounds=min(rounds, 3)
    )


def speed_table(title: str, steps: int, times: Mapping[str, Sequence[float]], *, baseline: str) -> Table:
    """Median seconds, steps/s and each row's speed relative to ``baseline`` (above 1: faster)."""
    table = Table(title=title, columns=list(COLUMNS))
    reference = median(times[baseline])
    for name, values in times.items():
        seconds = median(values)
        table.add(name, seconds, rate(steps, seconds), ratio(reference, seconds))
    return table


def overhead(without: Sequence[float], with_: Sequence[float]) -> float:
    """Extra time of ``with_`` over ``without``, as a fraction of ``without`` (medians)."""
    base = median(without)
    return median(with_) / base - 1 if base > 0 else float("nan")


def round_ratios(baseline: Sequence[float], candidate: Sequence[float]) -> list[float]:
    """``baseline / candidate`` per round (the spread the median hides)."""
    return [ratio(b, c) for b, c in zip(baseline, candidate, strict=True)]


@dataclass(kw_only=True)
class _Runs:
    """Runs one training (the trainer's or upstream fit's) into a fresh folder; returns its weights file."""

    inputs: list[dict[str, Any]]
    window: Any
    workdir: Path
    steps: int
    default_threads: int
    made: list[Path] = field(default_factory=list)

    def _out(self, label: str) -> Path:
        out = self.workdir / f"{len(self.made):04d}-{label}"
        self.made.append(out)
        return out

    def trainer(self, base: str, seed: int, *, threads: int | None = 1, checkpoint_every: int = 0,
                validate_every: int = 0, steps: int = 0) -> Path:  # fmt: skip
        from trainer.finetune import train
        from trainer.train_config import TrainConfig

        steps = steps or self.steps
        config = TrainConfig(
            prediction_length=PREDICTION_LENGTH, context_length=CONTEXT_LENGTH, num_steps=steps,
            learning_rate=LEARNING_RATE, output_dir=self._out("trainer"), batch_size=BATCH_SIZE,
            finetune_mode="full", checkpoint_interval=checkpoint_every or steps, seed=seed,
            eval_interval=validate_every or steps, early_stopping_patience=None, precision="auto",
            log_interval=1, cpu_threads=threads,
        )  # fmt: skip
        result = train(base, self.inputs, config, validation=self.window if validate_every else None)
        if result.final_model_dir is None:
            raise RuntimeError(f"the trainer stopped at step {result.final_step} of {steps}")
        return result.final_model_dir / "model.safetensors"

    def upstream(self, base: BaseRef, seed: int, *, threads: int = 1, steps: int = 0) -> Path:
        import torch
        from chronos.chronos2 import Chronos2Model, Chronos2Pipeline

        from trainer.model import seed_everything, tiny_config

        out = self._out("fit")
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            if base.kind == "tiny":
                seed_everything(seed)
                pipeline = Chronos2Pipeline(model=Chronos2Model(tiny_config()))
            else:
                pipeline = Chronos2Pipeline.from_pretrained(base.location, dtype=torch.float32)
            pipeline.fit(
                self.inputs, prediction_length=PREDICTION_LENGTH, context_length=CONTEXT_LENGTH,
                learning_rate=LEARNING_RATE, num_steps=steps or self.steps, batch_size=BATCH_SIZE,
                output_dir=str(out), remove_printer_callback=True, seed=seed, logging_steps=1,
                disable_tqdm=True,
            )  # fmt: skip
        finally:
            torch.set_num_threads(previous)
        return out / "finetuned-ckpt" / "model.safetensors"

    def warm_up(self, bases: Sequence[BaseRef]) -> None:
        """One step of each alternative, untimed: the first call in a process pays one-time costs."""
        for base in bases:
            self.trainer(base.base, 0, steps=1)
            self.upstream(base, 0, steps=1)
        self.clean()

    def clean(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)
        self.made.clear()


Alternatives = dict[str, Callable[[int], Path]]


def interleaved(
    alternatives: Alternatives,
    rounds: int,
    *,
    compare: Sequence[tuple[str, str]] = (),
    after_round: Callable[[], None] = lambda: None,
    limits: Mapping[str, int] | None = None,
) -> tuple[dict[str, list[float]], dict[tuple[str, str], list[WeightDiff]]]:
    """Time each alternative once per round, in turn, with the round as seed; compare weights of pairs.

    ``limits``: the most rounds an alternative takes part in (its first ones); a pair is compared
    in the rounds both ran.
    """
    times: dict[str, list[float]] = {name: [] for name in alternatives}
    diffs: dict[tuple[str, str], list[WeightDiff]] = {pair: [] for pair in compare}
    for seed in range(rounds):
        weights: dict[str, Path] = {}
        for name, fn in alternatives.items():
            if seed >= (limits or {}).get(name, rounds):
                continue
            started = time.perf_counter()
            weights[name] = fn(seed)
            times[name].append(time.perf_counter() - started)
        for a, b in compare:
            if a in weights and b in weights:
                diffs[(a, b)].append(compare_files(weights[a], weights[b]))
        after_round()
    return times, diffs


def run(settings: Settings) -> Section:
    """The training section (see the module docstring)."""
    try:
        import chronos.chronos2  # noqa: F401
        import torch
    except ImportError as exc:
        return Section(name=NAME, title=TITLE, intro="", skipped=f"chronos cannot be imported: {exc}")
    p = plan(settings)
    runs = _make_runs(settings.workdir, p.steps, torch.get_num_threads())
    section = Section(name=NAME, title=TITLE, intro=_intro(p, runs.default_threads))
    tiny, n = resolve_base("tiny"), runs.default_threads
    try:
        pretrained: BaseRef | None = resolve_base("tiny-pretrained")
    except ModelLoadError as exc:
        pretrained = None
        section.notes.append(f"The tiny pretrained base is not measured: {exc}")
    runs.warm_up([tiny] if pretrained is None else [tiny, pretrained])
    fit_default = f"upstream fit (torch default, {n} threads)"
    ck = f"trainer, checkpoint every {p.steps // p.checkpoints} steps"
    val = f"trainer, validation every {p.steps // p.validations} steps"
    alternatives: Alternatives = {
        TRAINER: lambda s: runs.trainer("tiny", s),
        UPSTREAM: lambda s: runs.upstream(tiny, s),
        fit_default: lambda s: runs.upstream(tiny, s, threads=n),
        ck: lambda s: runs.trainer("tiny", s, checkpoint_every=p.steps // p.checkpoints),
        val: lambda s: runs.trainer("tiny", s, validate_every=p.steps // p.validations),
    }
    if not p.fit_default_threads:
        del alternatives[fit_default]
    pairs = [(TRAINER, b) for b in (UPSTREAM, fit_default) if b in alternatives]
    side = {name: p.side_rounds for name in (fit_default, ck, val)}
    times, diffs = interleaved(alternatives, p.rounds, compare=pairs, after_round=runs.clean, limits=side)
    comparisons = [("tiny (random init)", b, diffs[(a, b)]) for a, b in pairs]
    section.tables.append(speed_table(
        f"Tiny random-init Chronos-2, {p.steps} steps, batch {BATCH_SIZE}: the trainer against upstream fit "
        "(ratio: upstream fit's time / this one's; above 1 is faster than fit)",
        p.steps, {k: times[k] for k in (TRAINER, UPSTREAM, fit_default) if k in times}, baseline=UPSTREAM,
    ))  # fmt: skip
    section.notes += _fit_notes("tiny random-init", times, diffs[pairs[0]], fit_default, explain=True)
    if pretrained is not None:
        pre: Alternatives = {
            TRAINER: lambda s: runs.trainer("tiny-pretrained", s),
            UPSTREAM: lambda s: runs.upstream(pretrained, s),
        }
        pre_times, pre_diffs = interleaved(pre, p.rounds, compare=pairs[:1], after_round=runs.clean)
        section.tables.append(speed_table(
            f"Shipped tiny-pretrained base, fine-tuned {p.steps} steps: the trainer against upstream fit "
            "(ratio: upstream fit's time / this one's)", p.steps, pre_times, baseline=UPSTREAM,
        ))  # fmt: skip
        section.notes += _fit_notes("tiny-pretrained", pre_times, pre_diffs[pairs[0]], None)
        comparisons.append(("tiny-pretrained", UPSTREAM, pre_diffs[pairs[0]]))
    section.tables.append(weights_table(comparisons))
    tables, notes = _overheads(p, times, ck, val)
    section.tables += tables
    section.notes += notes
    section.tables.append(_threads_table(p, runs, section.notes))
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = " (other work shared the machine: the times are noisy)" if load > cores else ""
    section.notes.append(f"Load average at the end: {load:.1f} on {cores} cores{busy}.")
    return section


def _make_runs(workdir: Path, steps: int, default_threads: int) -> _Runs:
    from common.runspec import DataSpec
    from trainer.data import load_dataset
    from trainer.synthetic import generate_dataset

    files = generate_dataset(workdir / "data", seed=0)
    data = load_dataset(
        files, DataSpec.from_dict({"frequency": "h"}), prediction_length=PREDICTION_LENGTH, backtest_windows=1
    )
    return _Runs(inputs=data.train_inputs, window=data.validation, workdir=workdir / "runs", steps=steps,
                 default_threads=default_threads)  # fmt: skip


def _intro(p: Plan, default_threads: int) -> str:
    user = f"a second row runs it at torch's default ({default_threads} threads), as a user would"
    return (
        "The trainer's `trainer.finetune.train` against upstream `Chronos2Pipeline.fit` (chronos) "
        f"on the same model, synthetic data (24 hourly series), batch size {BATCH_SIZE}, learning rate "
        f"{LEARNING_RATE:g}, seed and {p.steps} steps, interleaved in each of {p.rounds} round(s) (the "
        f"other rows in the first {p.side_rounds}, the threads rows in {p.thread_rounds}). Each time "
        "is the whole call (model build, training, final save); the weights both save are compared tensor by "
        "tensor. fit is given what the trainer does on CPU (the same seed, the loss logged every step, no "
        f"progress bar) and one CPU thread like the trainer{'; ' + user if p.fit_default_threads else ''}. "
        "Then the trainer's own costs against its plain run: "
        f"{p.checkpoints} checkpoints per run instead of the final one only, and a validation window scored "
        f"{p.validations} times (plus the zero-shot score before the first step)."
    )


def _fit_notes(model: str, times: Mapping[str, list[float]], diffs: Sequence[WeightDiff],
               default_row: str | None, *, explain: bool = False) -> list[str]:  # fmt: skip
    speed = ratio(median(times[UPSTREAM]), median(times[TRAINER]))
    spread = round_ratios(times[UPSTREAM], times[TRAINER])
    verdict = "met" if speed >= 1.0 else "not met by the median"
    if speed < 1.0 and max(spread) >= 1.0:
        verdict += ", within this run's round-to-round spread"
    if len(spread) > 1:
        verdict += f"; per round {min(spread):.2f}x to {max(spread):.2f}x"
    largest = max((d.max_abs_diff for d in diffs), default=0.0)
    notes = [
        f"{model}: the trainer runs at {speed:.2f}x upstream fit's speed (target at least 1.0x: {verdict}). "
        + (_WHY if explain else "")
        + f"Final weights bit-identical in {sum(d.identical for d in diffs)} of {len(diffs)} round(s) "
        f"(max abs diff {largest:.3g})."
    ]
    if default_row in times:
        notes.append(
            f"Against fit at torch's default threads the trainer's one thread runs at "
            f"{ratio(median(times[default_row]), median(times[TRAINER])):.2f}x its speed; their weights "
            "differ in the last bits (another thread count sums in another order)."
        )
    return notes


_WHY = (
    "Both drive the same transformers Trainer loop over the same Chronos2Dataset; the trainer adds "
    "per-step callbacks (stop and checkpoint requests, the NaN guard) and writes its run settings and "
    "training_info.json, and it trains with the heap frozen (`trainer.finetune.frozen_heap`, `gc.freeze`): "
    "the full garbage collection accelerate runs as the loop starts then scans only what the loop made, not "
    "the 400,000 objects torch, transformers and the model left before it (about 0.2 s a call here). "
)


def _overheads(p: Plan, times: Mapping[str, list[float]], ck: str, val: str) -> tuple[list[Table], list[str]]:
    plain = {"checkpoints": "trainer, final checkpoint only", "validation": "trainer, no validation window"}
    tables = [
        speed_table(f"Checkpointing: {p.checkpoints} checkpoints in {p.steps} steps against only the final "
                    "one (ratio: the plain run's time / this one's)", p.steps,
                    {plain["checkpoints"]: times[TRAINER], ck: times[ck]}, baseline=plain["checkpoints"]),
        speed_table(f"Validation: the validation window scored at step 0 and every "
                    f"{p.steps // p.validations} steps against none (ratio: the plain run's time / this "
                    "one's)", p.steps,
                    {plain["validation"]: times[TRAINER], val: times[val]}, baseline=plain["validation"]),
    ]  # fmt: skip
    base = median(times[TRAINER])
    step_s = base / p.steps
    ck_cost, val_cost = overhead(times[TRAINER], times[ck]), overhead(times[TRAINER], times[val])
    per_ck = max(median(times[ck]) - base, 0.0) / (p.checkpoints - 1)
    per_val = max(median(times[val]) - base, 0.0) / p.validations
    at_default = per_ck / (SPEC_CHECKPOINT_INTERVAL * step_s)
    return tables, [
        f"Checkpointing every {p.steps // p.checkpoints} steps costs {ck_cost:+.1%} (target under 5%: "
        f"{_met(ck_cost < CHECKPOINT_TARGET)} at this frequency); about {per_ck * 1000:.0f} ms per "
        f"checkpoint against {step_s * 1000:.0f} ms per step of this tiny model, so at the run spec's "
        f"default (every {SPEC_CHECKPOINT_INTERVAL} steps) about {at_default:.1%} "
        f"({_met(at_default < CHECKPOINT_TARGET)}). A checkpoint is a fixed cost (weights, optimizer and "
        "RNG state written): the longer the model's steps, the smaller its share.",
        f"Validation costs {val_cost:+.1%} for {p.validations} scorings of the window (plus the zero-shot "
        f"one), about {per_val * 1000:.0f} ms each: the window (24 series) is forecast and scored (WQL and "
        "loss), and a better score saves the weights to best-model/.",
    ]


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _threads_table(p: Plan, runs: _Runs, notes: list[str]) -> Table:
    default = f"trainer, torch default ({runs.default_threads} threads)"
    one = "trainer, 1 thread (its default)"
    pair: Alternatives = {
        default: lambda s: runs.trainer("tiny", s, threads=None, steps=p.thread_steps),
        one: lambda s: runs.trainer("tiny", s, steps=p.thread_steps),
    }
    idle, _ = interleaved(pair, p.thread_rounds, after_round=runs.clean)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded, _ = interleaved(pair, p.thread_rounds, after_round=runs.clean)
    finally:
        busy.kill()
        busy.wait()
    title = f"CPU threads, {p.thread_steps} steps, idle and with one core kept busy by another process"
    table = Table(title=title + " (ratio: torch default threads' time / this one's)", columns=list(COLUMNS))
    speed = {}
    for state, times in (("idle", idle), ("one core busy", loaded)):
        base = median(times[default])
        speed[state] = ratio(base, median(times[one]))
        for name in (default, one):
            seconds = median(times[name])
            table.add(f"{name}, {state}", seconds, rate(p.thread_steps, seconds), ratio(base, seconds))
    notes.append(
        f"One CPU thread (the trainer's default, which local mode keeps) runs this tiny model at "
        f"{speed['idle']:.2f}x the speed of torch's default {runs.default_threads} threads, and at "
        f"{speed['one core busy']:.2f}x while another process holds a core (a second OpenMP thread "
        "spin-waits for a core it does not get)."
    )
    return table

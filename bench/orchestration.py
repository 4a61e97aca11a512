"""Orchestration overhead: a whole local run against the same training alone (issue 14, item 2).

A whole run is what ``invoke launch --local`` starts: the launch (plan, doctor, data check,
RunInstances on moto), the real user data booting a local "instance", the trainer's phases
(preflight, data sync, the training child, evaluation, finalize, cleanup) and its power-off,
timed from the launch call to moto's instance ``terminated``. The training alone is the same
training child (``python -m trainer.train``) on the run's own config file, inputs and base
model, run again here: the ratio of the two is what orchestration costs. The split comes
from the run's training.json (each phase's ``duration_s``, the ledger's ``split_s``), the
first training step from the run's progress file.

The local world and the run's files are :mod:`bench.local_run`'s.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import local_run
from bench.core import Section, Settings, Table, ratio
from common.timeutil import parse_iso, wait_until

log = logging.getLogger(__name__)

TARGET = 1.25  # the bound on whole run / training alone, for 60 s of training
TRAIN_S = {False: 60.0, True: 5.0}  # seconds of training alone: full, quick
QUICK_STEPS = 10  # quick mode skips calibrating: its run is the smallest whole run, ~1 s of steps
QUICK_WINDOWS = 1  # and evaluates one test window (the default is 3)
CALIBRATION_STEPS = 100
MIN_STEPS = 20


# -- the arithmetic ----------------------------------------------------------------------------------
def steps_for(seconds: float, steps_per_s: float, *, minimum: int = MIN_STEPS) -> int:
    """Steps that take about ``seconds`` at ``steps_per_s`` (at least ``minimum``)."""
    if not steps_per_s > 0:
        return minimum
    return max(minimum, round(seconds * steps_per_s))


def phase_split(
    training: dict[str, Any], *, started_at: float, launch_s: float, wall_s: float, train_call_s: float | None
) -> list[tuple[str, float]]:
    """Where a whole run's seconds went, in order; the parts sum to ``wall_s``.

    Args:
        training: the run's training.json (its ``phases``).
        started_at: epoch seconds of the launch call.
        launch_s: how long the launch call took.
        wall_s: launch call to the instance terminated.
        train_call_s: the run's child's ``train()`` call (its result file), ``None`` if unknown.

    Returns:
        ``(part, seconds)``: the launch, boot and setup (launch returned -> the first phase),
        each phase (the training phase split into the ``train()`` call and the rest of the
        phase), and whatever is left (between phases, cleanup, power-off, terminate).
    """
    phases = [p for p in training.get("phases") or [] if p.get("duration_s") is not None]
    rows: list[tuple[str, float]] = [("invoke launch (plan, doctor, data check, RunInstances)", launch_s)]
    if phases:
        first = parse_iso(phases[0]["started_at"]).timestamp()
        rows.append(
            (
                "boot and setup (user data: code bundle, Python check, trainer start)",
                max(0.0, first - started_at - launch_s),
            )
        )
    for p in phases:
        seconds = float(p["duration_s"])
        if p["name"] == "training" and train_call_s is not None:
            rows.append(("training: the child's train() call", min(seconds, train_call_s)))
            rows.append(
                (
                    "training: child start (imports, inputs) and checkpoint flush",
                    max(0.0, seconds - train_call_s),
                )
            )
        else:
            rows.append((str(p["name"]), seconds))
    rows.append(
        (
            "the rest (between phases, cleanup, power-off, terminate)",
            max(0.0, wall_s - sum(s for _, s in rows)),
        )
    )
    return rows


def ledger_split(training: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    """``(use, seconds, share of billable)`` from training.json's ``ledger.split_s``."""
    ledger = training.get("ledger") or {}
    billable = float(ledger.get("billable_s") or 0.0)
    return [
        (use, float(s), float(s) / billable if billable else None)
        for use, s in (ledger.get("split_s") or {}).items()
    ]


def boot_timeline(console: str) -> list[tuple[str, str, float]]:
    """The user data's steps from an instance's console log: ``(from line, to line, seconds)``.

    The lines are the ``bootstrap:`` ones (paths shortened), the last step ends at the
    driver's first line (``trainer.run``); steps under a second (the stamps' resolution)
    are left out.
    """
    stamped: list[tuple[float, str]] = []
    for line in console.splitlines():
        stamp, _, rest = line.partition(" ")
        if rest.startswith("bootstrap: ") or (stamped and "INFO trainer.run: " in rest):
            try:
                at = parse_iso(stamp).timestamp()
            except ValueError:
                continue
            stamped.append((at, rest.replace("INFO trainer.run: ", "trainer: ")))
            if "INFO trainer.run: " in rest:
                break
    words = lambda text: " ".join(w if "/" not in w else "..." for w in text.split())  # noqa: E731
    short = [(at, words(text.removeprefix("bootstrap: "))[:60]) for at, text in stamped]
    return [(a, b, nxt - at) for (at, a), (nxt, b) in zip(short, short[1:], strict=False) if nxt > at]


def overhead(rows: list[tuple[str, float]], *, top: int = 3) -> list[tuple[str, float]]:
    """The biggest parts of a split that are not the training call itself."""
    return sorted((r for r in rows if "train() call" not in r[0]), key=lambda r: -r[1])[:top]


# -- the measurements --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class WholeRun:
    """One whole local run, launch to terminated."""

    launched: local_run.Launched
    wall_s: float
    first_step_s: float | None
    training: dict[str, Any]
    result: dict[str, Any]  # the run's child's result file
    work: Path
    boot: list[tuple[str, str, float]]  # boot_timeline of its console log


def whole_run(
    world: local_run.World,
    steps: int,
    *,
    backtest_windows: int | None = None,
    timeout: float = local_run.RUN_TIMEOUT_S,
) -> WholeRun:
    """Launch a run of ``steps`` steps and follow it until its instance is terminated."""
    spec = local_run.run_spec(steps, backtest_windows=backtest_windows)
    launched = local_run.launch(world, spec, name=f"whole-{steps}")
    wait_until(
        lambda: local_run.instance_state(world, launched.instance_id) == "terminated",
        timeout=timeout,
        what=f"instance {launched.instance_id} to terminate",
    )
    wall = time.monotonic() - launched.started_mono
    work = world.work_dir(launched.instance_id)
    first = local_run.first_step_at(work / "progress.jsonl")
    return WholeRun(
        launched=launched,
        wall_s=wall,
        first_step_s=first - launched.started_at if first is not None else None,
        training=local_run.training_json(world, launched.run_id),
        result=local_run.read_json(work / "result.json"),
        work=work,
        boot=boot_timeline(_text(world.local_dir.instance_dir(launched.instance_id) / "console.log")),
    )


@dataclass(frozen=True, kw_only=True)
class Alone:
    """The training alone: the child process's wall time and its ``train()`` call."""

    process_s: float
    train_s: float
    steps_per_s: float
    final_step: int


def training_alone(config_file: Path, out: Path) -> Alone:
    """``python -m trainer.train`` on a copy of a run's config, outputs under ``out``, fresh.

    Same inputs, validation window, base model and settings as the run; the environment the
    run gives its child (one CPU thread: :func:`trainer.training.child_env`).
    """
    from control.localdir import PROJECT_ROOT
    from trainer.training import child_env

    cfg = json.loads(config_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    cfg["train"]["output_dir"] = str(out / "train")
    cfg.update(
        resume_from=None, progress_path=str(out / "progress.jsonl"), result_path=str(out / "result.json")
    )
    path = out / "train-config.json"
    path.write_text(json.dumps(cfg), "utf-8")
    env = {**os.environ, **child_env(cfg["train"].get("device", "cpu")), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(out / "child.log", "wb") as logf:
        code = subprocess.run(
            [sys.executable, "-m", "trainer.train", "--config", str(path)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    process_s = time.monotonic() - started
    result = local_run.read_json(out / "result.json")
    if code != 0 or not result:
        raise RuntimeError(f"training alone exited {code}: {result.get('error') or (out / 'child.log')}")
    return Alone(
        process_s=process_s,
        train_s=float(result["duration_s"]),
        steps_per_s=float(result["steps_per_s"]),
        final_step=int(result["final_step"]),
    )


def calibrate(world: local_run.World, steps: int) -> float:
    """Steps/s of the run's training loop (its spec, data and base; no validation) over ``steps`` steps.

    Without the validations (at step 0, every ``eval_interval`` and at the end) a short run's
    rate is the steps' own, so the steps chosen from it come close to the seconds asked for.
    """
    from trainer.base_model import resolve_base
    from trainer.finetune import train
    from trainer.train_config import TrainConfig

    scratch = world.local_dir.root / "calibrate"
    files = sorted(world.local_dir.data_dir.rglob("*.parquet"))
    spec, data = local_run.training_data(files, local_run.run_spec(steps), scratch)
    ref = resolve_base(spec.model.base)
    config = TrainConfig.from_spec(spec.model, output_dir=scratch / "train")
    result = train(ref.location, data.train_inputs, config, base_revision=ref.revision)
    return float(result.steps_per_s)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# -- the section -------------------------------------------------------------------------------------
INTRO = (
    "A whole local run (`invoke launch --local`: plan, doctor, data check, RunInstances on moto; the "
    "real user data boots a local instance; preflight, data sync, the training child, evaluation, "
    "finalize, cleanup, power-off) timed from the launch call to moto's instance `terminated`, "
    "against the same training alone: `python -m trainer.train` on the run's own config file, "
    "inputs, validation window and base model, run again right after it. The tiny pretrained "
    "Chronos-2 at batch 32 on the synthetic dataset; full mode picks the steps so that the "
    "training alone takes about 60 s here (steps/s measured first). The split is the run's "
    "training.json (phases' `duration_s`, the ledger's `split_s`); the first step is the run's "
    "progress file. One pair per bench (a whole run takes minutes), so noisy."
)


def run(settings: Settings) -> Section:
    """The orchestration section (see the module docstring)."""
    section = Section(name="orchestration", title="Orchestration overhead", intro=INTRO)
    with local_run.local_world(settings.workdir) as world:
        if settings.quick:
            steps, rate = QUICK_STEPS, None
        else:
            rate = calibrate(world, CALIBRATION_STEPS)
            steps = steps_for(TRAIN_S[False], rate)
        whole = whole_run(world, steps, backtest_windows=QUICK_WINDOWS if settings.quick else None)
        alone = training_alone(whole.work / "train-config.json", settings.workdir / "alone")
    fill(section, whole, alone, steps=steps, calibrated=rate, quick=settings.quick)
    return section


def fill(
    section: Section, whole: WholeRun, alone: Alone, *, steps: int, calibrated: float | None, quick: bool
) -> None:
    """The section's tables and notes from one whole run and its training alone."""
    train_call = whole.result.get("duration_s")
    split = phase_split(
        whole.training,
        started_at=whole.launched.started_at,
        launch_s=whole.launched.launch_s,
        wall_s=whole.wall_s,
        train_call_s=float(train_call) if train_call else None,
    )
    evaluation = sum(s for name, s in split if name == "evaluation")
    summary = Table(
        title=f"Whole run vs training alone ({steps} steps)",
        columns=["measured", "seconds", "vs training alone (x)"],
    )
    summary.add(
        "training alone: the train() call (model load, steps, validations, checkpoints, save)",
        alone.train_s,
        1.0,
    )
    summary.add(
        "training alone: the whole `python -m trainer.train` process",
        alone.process_s,
        ratio(alone.process_s, alone.train_s),
    )
    summary.add(
        "whole local run: launch to instance terminated",
        whole.wall_s,
        ratio(whole.wall_s, alone.train_s),
    )
    summary.add(
        "whole local run less evaluation (test windows, export, smoke test)",
        whole.wall_s - evaluation,
        ratio(whole.wall_s - evaluation, alone.train_s),
    )
    summary.add(
        "launch to the first training step",
        whole.first_step_s,
        ratio(whole.first_step_s, alone.train_s) if whole.first_step_s is not None else None,
    )
    parts = Table(title="Where the whole run's time goes", columns=["part", "seconds", "% of the run"])
    for name, seconds in split:
        parts.add(name, seconds, 100 * seconds / whole.wall_s)
    boot = Table(
        title="Boot and setup, step by step (the instance's console log, 1-s stamps)",
        columns=["from the line", "to the line", "seconds"],
    )
    for start, end, seconds in whole.boot:
        boot.add(start, end, seconds)
    ledger = Table(
        title="The run's ledger (training.json `ledger.split_s`, whole seconds)",
        columns=["use", "seconds", "% of billable"],
    )
    for use, seconds, share in ledger_split(whole.training):
        ledger.add(use, seconds, 100 * share if share is not None else None)
    section.tables += [summary, parts, boot, ledger]
    section.notes += notes(whole, alone, split, steps=steps, calibrated=calibrated, quick=quick)


def notes(
    whole: WholeRun,
    alone: Alone,
    split: list[tuple[str, float]],
    *,
    steps: int,
    calibrated: float | None,
    quick: bool,
) -> list[str]:
    """The verdict on the target and where the overhead goes."""
    overall = ratio(whole.wall_s, alone.train_s)
    met = "met" if overall <= TARGET else "not met"
    out = [
        f"Target (whole run at most {TARGET:.2f}x the training alone, for 60 s of training): **{met}** "
        f"at {overall:.2f}x with {alone.train_s:.0f} s of training; orchestration added "
        f"{whole.wall_s - alone.train_s:.0f} s.",
        "Where it goes, largest first: "
        + "; ".join(f"{name} {seconds:.0f} s" for name, seconds in overhead(split))
        + ".",
    ]
    in_run = whole.result.get("duration_s")
    if in_run:
        out.append(
            f"The run's own train() call took {float(in_run):.0f} s against {alone.train_s:.0f} s alone: "
            "the same work beside the driver (heartbeat, checkpoint uploads) and this machine's noise."
        )
    rate = whole.result.get("steps_per_s")
    if rate:
        out.append(
            f"Steps/s in the run's child {float(rate):.1f}, alone {alone.steps_per_s:.1f} "
            f"(the same training, {steps} steps, once each)."
        )
    if calibrated is not None:
        out.append(
            f"Steps chosen from {calibrated:.1f} steps/s measured over {CALIBRATION_STEPS} steps first."
        )
    if quick:
        out.append(
            f"Quick mode: the smallest real run ({steps} steps, {QUICK_WINDOWS} test window, about a "
            "second of training) beside the other sections (a process of its own), so the fixed costs "
            "dominate and the ratio says nothing about the 60-s target; `make bench` measures that."
        )
    return out

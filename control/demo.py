"""``make demo``: the whole day of a user, locally, in a couple of minutes.

Starts (or reuses) the local AWS, provisions ``dev``, stages the synthetic
dataset, launches a run with :func:`demo_spec`, follows it to the end, verifies
that nothing is left, audits every AWS call both sides made against their IAM
policies as AWS would evaluate them (:mod:`control.local_audit`), fetches the
artifacts and writes the report. It is a
generator of :class:`DemoEvent` so the edge can render each step as it happens;
:func:`verdict` is the demo's final judgement and where its results are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.timeutil import Clock, utc_now
from control import local_audit, localenv
from control.fetch import fetch_run
from control.kill import kill_run
from control.launch import launch
from control.local_backend import LocalBackend
from control.localdir import LocalDir
from control.monitor import Outcome, watch
from control.report import ReportResult, write_report
from control.runs import versus_base
from control.verify import verify

# The demo fine-tunes the shipped tiny *pretrained* Chronos-2 ("auto" in local mode: see
# common.runspec.SMALL_BASE_DEFAULTS) on the synthetic dataset on CPU, validating every
# DEMO_EVAL_INTERVAL steps; the report compares it with the same model zero-shot and with
# seasonal naive. Tune these together: the steps and learning rate at which fine-tuning beats
# zero-shot on the synthetic data within a couple of minutes on 2 CPU cores.
DEMO_BASE = "auto"
DEMO_STEPS = 600
DEMO_BATCH_SIZE = 64
DEMO_LEARNING_RATE: float | str = "auto"  # "auto": the base's fine-tuning rate (SMALL_BASE_DEFAULTS)
DEMO_EVAL_INTERVAL = 100
DEMO_CHECKPOINT_INTERVAL = 200
DEMO_SPEC = """\
# The demo run: the shipped tiny pretrained Chronos-2 fine-tuned on CPU, on the synthetic dataset.
[instance]
types = ["g5.xlarge"]
market = "spot"
max_runtime = "30m"

[model]
base = {base}
num_steps = {steps}
batch_size = {batch_size}
learning_rate = {learning_rate}
eval_interval = {eval_interval}
checkpoint_interval = {checkpoint_interval}
"""


def demo_spec(steps: int = DEMO_STEPS) -> str:
    """The demo's run spec (TOML) with ``steps`` training steps."""
    return DEMO_SPEC.format(
        base=json.dumps(DEMO_BASE),
        steps=steps,
        batch_size=DEMO_BATCH_SIZE,
        learning_rate=json.dumps(DEMO_LEARNING_RATE),
        eval_interval=min(DEMO_EVAL_INTERVAL, steps),
        checkpoint_interval=min(DEMO_CHECKPOINT_INTERVAL, steps),
    )


class DemoFailed(UserError):
    """The demo ran but its run did not succeed or left something behind."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class DemoEvent:
    """One step of the demo: ``kind`` is ``info``, ``launched``, ``view``, ``verified``,
    ``fetched`` or ``report``; ``data`` carries the step's result object."""

    kind: str
    message: str
    data: Any = None


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The demo's last words: how the fine-tuned model did and where to look next."""

    judgement: str | None  # None when the report holds no WQL of the model and the baseline
    open_report: str
    afterwards: str


def verdict(report: ReportResult) -> Verdict:
    """Judge the demo run from its report: fine-tuned vs zero-shot (the base) vs seasonal naive.

    The judgement's lines: the three models' test WQL (or, for a run without a zero-shot score,
    the model against seasonal naive), whether fine-tuning beat the base model on validation,
    and where the exported model and every score are.
    """
    m = report.metrics
    if not all(isinstance(m.get(k), int | float) for k in ("model_wql", "baseline_wql")):
        judgement = None
    elif not isinstance(m.get("zero_shot_wql"), int | float):
        beats = "beats" if m["model_wql"] < m["baseline_wql"] else "does not beat"
        judgement = (
            f"the fine-tuned model {beats} the seasonal-naive baseline: WQL "
            f"{m['model_wql']:.4f} vs {m['baseline_wql']:.4f}"
        )
    else:
        judgement = "\n".join(_three_models(report))
    return Verdict(
        judgement=judgement,
        open_report=f"open {report.index} in a browser",
        afterwards="the local AWS keeps running for `invoke runs --local` and the aws CLI; "
        "stop it with `invoke local.down`",
    )


def _three_models(report: ReportResult) -> list[str]:
    m, ev = report.metrics, report.evaluation or {}
    windows = len(ev.get("windows") or []) or "the"
    lines = [
        f"test WQL over {windows} windows: fine-tuned {m['model_wql']:.4f}, zero-shot (base) "
        f"{m['zero_shot_wql']:.4f}, seasonal naive {m['baseline_wql']:.4f}"
    ]
    val = ev.get("validation") or {}
    line = versus_base(
        ev.get("beats_zero_shot"),
        val_wql=val.get("best_wql"),
        zero_shot_val_wql=val.get("zero_shot_wql"),
        exported=ev.get("exported"),
    )
    lines.append(line or "validation did not compare the fine-tuned model with the base model")
    run_dir = report.index.parent.parent
    held = "the base model" if ev.get("exported") == "base" else "the fine-tuned model"
    scores = run_dir / "evaluation" / "metrics.json"
    lines.append(f"model: {run_dir / 'models'} ({held}); every item and window: {scores}")
    return lines


def run_demo(
    *,
    env: str = "dev",
    steps: int = DEMO_STEPS,
    local_dir: LocalDir | None = None,
    runs_dir: Path | None = None,
    clock: Clock = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    interval_s: float = 1.0,
) -> Iterator[DemoEvent]:
    """Run the demo, yielding events. Raises :class:`UserError` if the run does not succeed."""
    local_dir = local_dir or LocalDir.default()
    t0 = time.monotonic()
    calls = yield from _provision(env, local_dir, clock)
    backend = LocalBackend.open(local_dir)
    spec_path = local_dir.root / "demo-run.toml"
    spec_path.write_text(demo_spec(steps), "utf-8")
    outcome = launch(backend, env=env, spec_path=spec_path, clock=clock)
    result = outcome.result
    if result is None:  # launch without dry_run always launches or raises
        raise DemoFailed("the demo launch returned no run")
    yield DemoEvent(
        kind="launched", message=f"launched run {result.run_id} on {result.instance_id}", data=outcome
    )
    final = yield from _follow(backend, env, clock=clock, sleep=sleep, interval_s=interval_s)
    if final is None:
        raise DemoFailed(f"monitor showed nothing of run {result.run_id}")
    checked = verify(backend, env=env, clock=clock)
    yield DemoEvent(
        kind="verified", message="verify: clean" if checked.final.clean else "verify: orphans", data=checked
    )
    audited = local_audit.audit(local_dir, calls)
    yield DemoEvent(kind="audit", message=audited.summary().splitlines()[0], data=audited)
    fetched = fetch_run(backend, env=env, run_id=result.run_id, dest_root=runs_dir)
    yield DemoEvent(
        kind="fetched", message=f"fetched {len(fetched.files)} files to {fetched.dest}", data=fetched
    )
    report = write_report(fetched.dest)
    yield DemoEvent(
        kind="report", message=f"report: {report.index} ({time.monotonic() - t0:.0f} s)", data=report
    )
    _fail_unless_clean(final, checked, audited, env=env, calls=calls)


def _provision(env: str, local_dir: LocalDir, clock: Clock) -> Generator[DemoEvent, None, Path]:
    """Start the local AWS and provision ``env``; return the audit log of every call after that."""
    up = localenv.up(env=env, local_dir=local_dir)
    # From here on every call is the run's (provisioning stands for `pulumi up`, made with the
    # local AWS's own admin): the operator's and the instance's, audited at the end.
    calls = local_audit.start(local_dir.root / "audit" / f"demo-{clock():%Y%m%d-%H%M%S}.jsonl")
    how = "started" if up.started else "already running"
    yield DemoEvent(kind="info", message=f"local AWS {how} at {up.endpoint_url}", data=up)
    yield DemoEvent(
        kind="info",
        message=(
            f"env {env} provisioned: s3://{up.bucket}; dataset "
            f"{up.staged.files} parquet files under {up.staged.prefix}"
        ),
    )
    return calls


def _follow(
    backend: LocalBackend, env: str, *, clock: Clock, sleep: Callable[[float], None], interval_s: float
) -> Generator[DemoEvent, None, Any]:
    """Follow the run to its end, one ``view`` event per poll; Ctrl-C kills it. Return the last view."""
    final = None
    try:
        for view in watch(backend, env=env, follow=True, interval_s=interval_s, clock=clock, sleep=sleep):
            final = view
            yield DemoEvent(kind="view", message=view.status or "", data=view)
    except KeyboardInterrupt:
        kill_run(backend, env=env, grace_s=30)
        raise
    return final


def _fail_unless_clean(final: Any, checked: Any, audited: Any, *, env: str, calls: Path) -> None:
    """Raise :class:`DemoFailed` unless the run succeeded, left nothing and AWS would allow each call."""
    if final.outcome is not Outcome.SUCCEEDED:
        raise DemoFailed(f"the demo run ended {final.outcome.value}: {final.advice or ''}".rstrip(": "))
    if not checked.final.clean:
        raise DemoFailed(
            f"verify found orphans after the demo; clean them with "
            f"`invoke verify --env={env} --local --fix --yes`"
        )
    if not audited.ok:
        first = audited.findings[0].line()
        raise DemoFailed(
            f"AWS would refuse {len(audited.findings)} call(s) of the demo run, first: {first}; "
            f"all of them in {calls}"
        )

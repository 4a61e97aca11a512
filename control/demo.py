"""``make demo``: the whole day of a user, locally, in a couple of minutes.

Starts (or reuses) the local AWS, provisions ``dev``, stages the synthetic
dataset, launches a run with :data:`DEMO_SPEC`, follows it to the end, verifies
that nothing is left, audits every AWS call both sides made against their IAM
policies as AWS would evaluate them (:mod:`control.local_audit`), fetches the
artifacts and writes the report. It is a
generator of :class:`DemoEvent` so the edge can render each step as it happens;
:func:`verdict` is the demo's final judgement and where its results are.
"""

from __future__ import annotations

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
from control.verify import verify

# The tiny random-init Chronos-2 beats seasonal-naive on the synthetic data after ~1500
# steps at batch 64 (WQL ~0.03 vs ~0.07); that takes well under a minute on 2 CPU cores.
DEMO_STEPS = 1500
DEMO_SPEC = """\
# The demo run: the tiny random-init Chronos-2 on CPU, on the synthetic dataset.
[instance]
types = ["g5.xlarge"]
market = "spot"
max_runtime = "30m"

[model]
base = "tiny"
num_steps = {steps}
batch_size = 64
learning_rate = 0.001
checkpoint_interval = 500
"""


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
    """Judge the demo run from its report: does the fine-tuned model beat seasonal-naive?"""
    m = report.metrics
    judgement = None
    if all(isinstance(m.get(k), int | float) for k in ("model_wql", "baseline_wql")):
        beats = "beats" if m["model_wql"] < m["baseline_wql"] else "does not beat"
        judgement = (
            f"the fine-tuned model {beats} the seasonal-naive baseline: WQL "
            f"{m['model_wql']:.4f} vs {m['baseline_wql']:.4f}"
        )
    return Verdict(
        judgement=judgement,
        open_report=f"open {report.index} in a browser",
        afterwards="the local AWS keeps running for `invoke runs --local` and the aws CLI; "
        "stop it with `invoke local.down`",
    )


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
    spec_path.write_text(DEMO_SPEC.format(steps=steps), "utf-8")
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

"""``make demo``: the whole day of a user, locally, in a couple of minutes.

Starts (or reuses) the local AWS, provisions ``dev``, stages the synthetic
dataset, launches a run with :data:`DEMO_SPEC`, follows it to the end, verifies
that nothing is left, audits every AWS call both sides made against their IAM
policies as AWS would evaluate them (:mod:`control.local_audit`), fetches the
artifacts and writes the report. It is a
generator of :class:`DemoEvent` so the edge can render each step as it happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.timeutil import Clock, utc_now
from control import local_audit, localenv
from control.backend import LocalBackend
from control.fetch import fetch_run
from control.kill import kill_run
from control.launch import launch
from control.localdir import LocalDir
from control.monitor import Outcome, watch
from control.report import write_report
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
    backend = LocalBackend.open(local_dir)
    spec_path = local_dir.root / "demo-run.toml"
    spec_path.write_text(DEMO_SPEC.format(steps=steps), "utf-8")
    outcome = launch(backend, env=env, spec_path=spec_path, clock=clock)
    result = outcome.result
    assert result is not None
    yield DemoEvent(
        kind="launched", message=f"launched run {result.run_id} on {result.instance_id}", data=outcome
    )
    final = None
    try:
        for view in watch(backend, env=env, follow=True, interval_s=interval_s, clock=clock, sleep=sleep):
            final = view
            yield DemoEvent(kind="view", message=view.status or "", data=view)
    except KeyboardInterrupt:
        kill_run(backend, env=env, grace_s=30)
        raise
    assert final is not None
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

"""The driver of ``python -m trainer run``: one run on one instance, boot to poweroff.

It sequences the phase modules and ends every run the same way::

    identify, run spec  trainer.startup      (IMDSv2 -> the state file; user-configs/run-spec.json)
    preflight           trainer.preflight    status initialization
    data_sync           trainer.data_sync    status data_sync
    training            trainer.training     status training (the child: trainer.supervisor)
    evaluation          trainer.evaluation   status results_sync
    results_sync, finalize  trainer.finalize (artifacts, training.json, then _SUCCESS)
    cleanup             trainer.cleanup      (cleanup_status.json, release the lock, poweroff)

As an AWS Batch job (``--batch``, :mod:`trainer.batch_job`) the same phases run; the job's
attempt is recorded at identify, an interruption keeps the member's lock only while Batch has an
attempt left, and nothing powers off (Batch owns the host).

Each phase's status comes from :attr:`common.status.Phase.run_status`, so the state file
and training.json name the same phases. Every state write goes through
:class:`~trainer.transitions.RunState`. The :class:`~trainer.watcher.Watcher` turns a spot
notice, the max-runtime deadline or a kill into a stop request: the child gets SIGTERM
(checkpoint, exit), the checkpoint is uploaded, and the run finalizes ``interrupted`` or
``killed``. Any other failure becomes a terminal record and ``failed``. The exit code is
:meth:`common.exitcodes.ExitCode.for_completion` of how the run ended (see
``common/exitcodes.py``). Clock, monotonic time, sleep and IMDS come from
:class:`~trainer.context.Deps`, so tests drive time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from common.exitcodes import ExitCode
from common.layout import TRAINER_LOG_NAME
from common.logfmt import utc_formatter
from common.status import CompletionStatus, Phase, RunStatus
from common.timeutil import iso
from trainer import batch_job, data_sync, evaluation, keep, lifecycle, preflight, startup, training
from trainer.build_info import build_info
from trainer.cleanup import Cleanup
from trainer.context import Deps, RunContext, RunOptions
from trainer.errors import TrainerError, record_for, retry_policy
from trainer.finalize import COMPLETED, Ending, finalize
from trainer.instance import select_poweroff
from trainer.record import software_versions
from trainer.stopping import Stopped, StopRequest, price_run, run_launched_at
from trainer.sync import AlreadyFinished
from trainer.watcher import Heartbeat, Progress, Watcher, WatchPlan

log = logging.getLogger(__name__)

PhaseBody = Callable[[RunContext, dict[str, Any]], None]
PHASES: tuple[tuple[Phase, PhaseBody], ...] = (
    (Phase.PREFLIGHT, preflight.phase),
    (Phase.DATA_SYNC, data_sync.phase),
    (Phase.TRAINING, training.phase),
    (Phase.EVALUATION, evaluation.phase),
)
"""The driver's phases in order; finalize adds ``results_sync`` and ``finalize``."""

MAX_MARGIN_S = 300.0  # max runtime keeps up to 5 min (10 % of a short run) to checkpoint and finalize


def run(opts: RunOptions, deps: Deps | None = None) -> int:
    """Drive one run; the process exit code (0 only for a normal completion)."""
    return run_driver(Driver(opts, deps or Deps()))


def run_driver(driver: Driver) -> int:
    """Run ``driver`` with its log also going to ``<workdir>/trainer.log`` (UTC timestamps)."""
    work = driver.ctx.opts.work
    work.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(work / TRAINER_LOG_NAME, encoding="utf-8")
    handler.setFormatter(utc_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        return driver.run()
    finally:
        root.removeHandler(handler)
        handler.close()


def runtime_left(total_s: float, *, launched: datetime, now: datetime) -> float:
    """Seconds until the run must stop: max runtime from launch, less the margin to finalize."""
    return total_s - min(MAX_MARGIN_S, 0.1 * total_s) - (now - launched).total_seconds()


class Driver:
    """One run: the phases in order, then finalize and cleanup whatever happened."""

    def __init__(self, opts: RunOptions, deps: Deps) -> None:
        self.ctx = RunContext(opts, deps)
        self.watcher: Watcher | None = None

    @property
    def progress(self) -> Progress:
        """Training progress as the heartbeat reports it."""
        return self.ctx.progress

    def request_stop(self, request: StopRequest) -> None:
        """Ask the run to stop (watcher thread or signal handler); only the first request counts."""
        self.ctx.stops.flip(request)
        if (
            request.source == "spot"
            and self.ctx.stops.request is request
            and self.ctx.attempt.notice_at is None
        ):
            self.ctx.attempt.notice_at = iso(self.ctx.deps.clock())  # the interruption's latency starts here

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> int:
        """Every phase, then :meth:`finish`; the exit code."""
        opts = self.ctx.opts
        log.info(
            "run %s (env %s) on %s%s",
            opts.run_id,
            opts.env,
            opts.device,
            " (local mode)" if opts.local else "",
        )
        self.ctx.record.software = software_versions()
        self.ctx.record.git_commit = build_info().get("git_commit")
        return self.finish(*self._work())

    def _work(self) -> tuple[CompletionStatus, str, str]:
        """Run every phase; how the run ended, the state file's reason and the sentinel's."""
        ctx, step = self.ctx, "identify"
        try:
            startup.identify(ctx)
            step = "run_spec"
            startup.load_spec(ctx)
            self._start_watcher()
            status = RunStatus.INITIALIZATION
            for phase, body in PHASES:
                step = phase.value
                if phase.run_status is not status:
                    ctx.state.advance(phase.run_status)
                    status = phase.run_status
                with ctx.record.phase(phase) as details:
                    body(ctx, details)
                ctx.stops.check()
        except Stopped as stop:
            reason = stop.request.reason
            return CompletionStatus.from_status(stop.stop_status), reason, reason
        except AlreadyFinished as done:  # finalize is a no-op, cleanup releases the lock
            log.warning("run %s is already done: %s; this attempt only cleans up", ctx.opts.run_id, done)
            return CompletionStatus.NORMAL, COMPLETED, COMPLETED
        except Exception as exc:  # noqa: BLE001 - every failure ends as a terminal record and `failed`
            if not isinstance(exc, TrainerError):
                log.exception("%s failed", step)
            record = ctx.errors.add(record_for(exc, component=step, clock=ctx.deps.clock))
            why = f"{record['error_class']} error in {record['component']}: {record['message']}"
            return CompletionStatus.FAILED, record["message"], why
        return CompletionStatus.NORMAL, COMPLETED, COMPLETED

    # -- endings --------------------------------------------------------------------------------
    def finish(self, completion: CompletionStatus, reason: str | None, why: str | None = None) -> int:
        """Final status, finalize, cleanup and poweroff; the exit code.

        An interruption with recoveries left keeps the lock for the recovery handler; one
        past ``max_recoveries`` ends ``failed`` (:func:`trainer.lifecycle.plan_ending`).

        Args:
            completion: how the run ended.
            reason: for the state file's final status.
            why: the sentinel's reason (default: ``reason``, else ``completed``).
        """
        ctx = self.ctx
        ctx.stops.finish()
        if ctx.attempt.foreign:
            return self._power_off_only("the run recovers on another instance")
        plan = lifecycle.plan_ending(ctx, completion, reason, why)
        if ctx.batch_job is not None:  # Batch's attempts, not the recovery handler, resume it
            plan = batch_job.plan_ending(plan, ctx.batch_job, ctx.opts.run_id)
        completion, reason, why = plan.completion, plan.reason, plan.why
        status = ctx.state.final(completion, reason)
        if status is RunStatus.RECOVERING:  # claimed by the handler: the next attempt finalizes
            return self._power_off_only("the recovery handler relaunches the run", ExitCode.INTERRUPTED)
        if status is RunStatus.KILLED and completion in (
            CompletionStatus.INTERRUPTED,
            CompletionStatus.NORMAL,
        ):
            # SIGTERM from a terminate after `invoke kill`, or a kill the last phase did not hear
            completion = CompletionStatus.KILLED
            why = ctx.state.kill_reason() or why  # the sentinel says who killed it, not "SIGTERM"
        snap = lifecycle.end_attempt(ctx, CompletionStatus.INTERRUPTED if plan.exhausted else completion)
        kept = (
            batch_job.keep_lock(snap, plan, ctx.batch_job, ctx.opts.run_id)
            if ctx.batch_job is not None
            else lifecycle.keep_lock(snap, plan, ctx.opts.run_id)
        )
        exit_code = ExitCode.for_completion(completion)
        ctx.outputs.trainer_log_key = ctx.paths.trainer_log_of(ctx.attempt.number)  # never an earlier one's
        result = finalize(
            transfers=ctx.transfers,
            paths=ctx.paths,
            record=ctx.record,
            outputs=ctx.outputs,
            ending=Ending(
                status=status,
                completion=completion,
                exit_code=exit_code,
                reason=why or reason or COMPLETED,
                attempt=ctx.attempt.number,
            ),
            lock_path=ctx.opts.work / "finalize.lock",
            clock=ctx.deps.clock,
        )
        if not result.succeeded:
            exit_code = exit_code or ExitCode.FAILED
            if status is RunStatus.RESULTS_SYNC:
                ctx.state.final(CompletionStatus.FAILED, f"finalize failed: {result.error}")
        if self.watcher is not None:
            self.watcher.stop()
        if kept is None:
            lifecycle.notify(ctx, completion, why or reason, snap)
        self._cleanup(completion, keep_lock=kept).run()
        ctx.transfers.close()
        log.info("run %s ended: %s (exit %d)", ctx.opts.run_id, completion.value, exit_code)
        return int(exit_code)

    def _power_off_only(self, why: str, code: ExitCode = ExitCode.FAILED) -> int:
        """An instance whose run recovers elsewhere: power off, touching neither state nor outputs
        (the run's training.json, sentinel and cleanup_status.json are the next attempt's)."""
        ctx, opts = self.ctx, self.ctx.opts
        if self.watcher is not None:
            self.watcher.stop()
        poweroff = ctx.deps.poweroff or select_poweroff(local=opts.local, ec2=ctx.ec2, batch=opts.batch)
        log.warning("instance %s powers off: %s", ctx.instance_id, why)
        poweroff(ctx.instance_id)
        ctx.transfers.close()
        return int(code)

    def _cleanup(self, completion: CompletionStatus, *, keep_lock: str | None = None) -> Cleanup:
        ctx, opts, deps = self.ctx, self.ctx.opts, self.ctx.deps
        poweroff = keep.for_run(  # a failed run with keep_on_failure stays up for debugging first
            deps.poweroff or select_poweroff(local=opts.local, ec2=ctx.ec2, batch=opts.batch),
            spec=ctx.spec,
            completion=completion,
            run=keep.KeptRun(
                store=ctx.store,
                ec2=ctx.ec2,
                run_id=opts.run_id,
                env=opts.env,
                region=opts.region,
                local=opts.local,
            ),
            until=self.watcher.deadline if self.watcher else None,
            monotonic=deps.monotonic,
            sleep=deps.sleep,
        )
        return Cleanup(
            store=ctx.store,
            paths=ctx.paths,
            transfers=ctx.transfers,
            ec2=ctx.ec2,
            instance_id=ctx.instance_id,
            poweroff=poweroff,
            retrier=ctx.retrier.with_policy(retry_policy(opts.retry, max_retries=3)),
            errors=ctx.errors,
            trainer_log=ctx.outputs.trainer_log,
            trainer_log_key=ctx.outputs.trainer_log_key,
            clock=deps.clock,
            keep_lock=keep_lock,
        )

    # -- the watcher ----------------------------------------------------------------------------
    def _start_watcher(self) -> None:
        ctx, opts = self.ctx, self.ctx.opts
        heartbeat = Heartbeat(
            ctx.store,
            opts.run_id,
            ctx.progress,
            interval_s=opts.heartbeat_interval_s,
            monotonic=ctx.deps.monotonic,
        )
        deadline, minutes = self.deadline()
        self.watcher = Watcher(
            run_id=opts.run_id,
            imds=ctx.imds,
            store=ctx.store,
            on_stop=self.request_stop,
            plan=WatchPlan(
                deadline=deadline,
                max_runtime_min=minutes,
                spot_interval_s=opts.spot_interval_s,
                state_interval_s=opts.state_interval_s,
                budget=price_run(ctx),
            ),
            heartbeat=heartbeat,
            monotonic=ctx.deps.monotonic,
        ).start()

    def deadline(self) -> tuple[float, float]:
        """Monotonic time to stop at (launch + max runtime, less a margin), and the max runtime in minutes."""
        ctx = self.ctx
        if ctx.opts.max_runtime_s is not None:
            return ctx.deps.monotonic() + ctx.opts.max_runtime_s, ctx.opts.max_runtime_s / 60
        total_s = ctx.require_spec().instance.max_runtime_minutes * 60.0
        launched = self._launched_at()
        left = runtime_left(total_s, launched=launched, now=ctx.deps.clock())
        return ctx.deps.monotonic() + left, total_s / 60

    def _launched_at(self) -> datetime:
        """When launch took the lock (:func:`trainer.stopping.run_launched_at`: the state file,
        else the launch record, else the run id's second; never now)."""
        launched, source = run_launched_at(self.ctx)
        if source != "state file":
            log.warning("max runtime counted from the %s: launched %s", source, iso(launched))
        return launched

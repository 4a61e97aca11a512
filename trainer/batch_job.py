"""A run as an AWS Batch job (``python -m trainer run --batch``): who runs it, its attempts, no poweroff.

A sweep member runs as one Batch job (:mod:`infra.spec.batch`). What differs from a run on its
own instance:

- Identity: the job (``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JOB_ATTEMPT``, ``AWS_BATCH_CE_NAME``: the
  variables Batch sets in every job's container, AWS Batch User Guide, "Automated job retries" and
  "Job environment variables"), and the host from IMDS when it answers (the host template's hop
  limit 2 lets a container reach it). Without IMDS (local mode) the instance id is
  ``batch:<job id>``, the type the job definition's ``CHRONOS_INSTANCE_TYPE``, the market read
  off the compute environment's name.
- The state file and lock are the member's own (``RunPaths.state``, the trainer's StateStore).
- Attempts: Batch retries a job its host lost or the trainer ended ``interrupted`` (the job
  definition's retry strategy). The next attempt finds the state of the previous one (working,
  or ``interrupted`` with the lock kept) and takes it over the way the recovery handler does:
  one claim (``recovering``, one more recovery, the previous attempt ended), its own attempt
  recorded, then :func:`trainer.lifecycle.resume_recovered` moves it back to ``initialization``
  and the data sync resumes from the newest complete checkpoint. The lock is kept at
  ``interrupted`` only while Batch has attempts left (``CHRONOS_BATCH_ATTEMPTS``); the recovery
  handler leaves runs with a ``batch`` block to Batch.
- No poweroff (:class:`trainer.instance.BatchOwnsTheHost`): Batch owns the host and scales the
  compute environment back to 0 vCPUs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from common import attempts as att
from common.pricing import launch_price
from common.state_doc import Snapshot
from common.status import CompletionStatus, Market, RunStatus
from common.timeutil import iso
from trainer.errors import TerminalError
from trainer.instance import IMDSError, InstanceIdentity

log = logging.getLogger(__name__)

JOB_ID_VAR = "AWS_BATCH_JOB_ID"
ATTEMPT_VAR = "AWS_BATCH_JOB_ATTEMPT"
COMPUTE_ENV_VAR = "AWS_BATCH_CE_NAME"
ATTEMPTS_VAR = "CHRONOS_BATCH_ATTEMPTS"  # the job definition's retry attempts (infra.spec.batch)
INSTANCE_TYPE_VAR = "CHRONOS_INSTANCE_TYPE"  # the one type the compute environments launch
UNKNOWN_ZONE = "unknown"


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """The job this process is, from the variables Batch sets in its container."""

    job_id: str
    attempt: int
    attempts: int
    compute_environment: str
    instance_type: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> BatchJob:
        """The job's facts (an empty ``job_id`` outside Batch: :func:`take_over` refuses it)."""
        env = os.environ if environ is None else environ
        return cls(
            job_id=env.get(JOB_ID_VAR, "").strip(),
            attempt=_int(env.get(ATTEMPT_VAR), 1),
            attempts=_int(env.get(ATTEMPTS_VAR), 1),
            compute_environment=env.get(COMPUTE_ENV_VAR, ""),
            instance_type=env.get(INSTANCE_TYPE_VAR, "") or "unknown",
        )

    @property
    def retries_left(self) -> bool:
        """Whether Batch would run another attempt after this one."""
        return self.attempt < self.attempts

    @property
    def market(self) -> Market:
        """Spot or on-demand, read off the compute environment's name (``chronos-{env}-batch-spot``)."""
        return Market.SPOT if "spot" in self.compute_environment else Market.ON_DEMAND


def _int(raw: str | None, default: int) -> int:
    try:
        return max(int(raw or default), 1)
    except ValueError:
        return default


class BatchMetadata:
    """The metadata source of a Batch job: the host's IMDS when it answers, the job's facts otherwise.

    Args:
        imds: the IMDSv2 client (:class:`trainer.instance.IMDS`).
        job: this job.
    """

    def __init__(self, imds: Any, job: BatchJob) -> None:
        self.imds, self.job = imds, job
        self.reachable: bool | None = None  # unknown until identity() asked

    def identity(self) -> InstanceIdentity:
        try:
            ident = self.imds.identity()
        except IMDSError as exc:
            self.reachable = False
            log.info("no IMDS for job %s (%s): identified by the job", self.job.job_id, exc)
            return InstanceIdentity(
                instance_id=f"batch:{self.job.job_id}",
                instance_type=self.job.instance_type,
                availability_zone=UNKNOWN_ZONE,
                market=self.job.market,
            )
        self.reachable = True
        return ident

    def spot_action(self) -> dict[str, Any] | None:
        return self.imds.spot_action() if self.reachable else None

    def rebalance(self) -> dict[str, Any] | None:
        return self.imds.rebalance() if self.reachable else None


def take_over(ctx: Any, job: BatchJob, ident: InstanceIdentity) -> None:
    """Record this job's attempt in the member's state; a retry first claims the previous one's.

    The first attempt (no attempt recorded yet) only adds itself. A later one claims the run
    (``recovering``, trigger ``instance-ended``: the host it ran on is gone or the trainer
    stopped for its notice), then adds itself, so :func:`trainer.lifecycle.resume_recovered`
    finds it recovering on this host.

    Raises:
        TerminalError: not a Batch job, or the run ended (failed, killed) so nothing is left to resume.
        NotHeldError: the lock is gone or another run's.
    """
    if not job.job_id:
        raise TerminalError(
            f"--batch needs {JOB_ID_VAR}: run it as an AWS Batch job (invoke sweep submits them)",
            component="identify",
        )
    now = iso(ctx.deps.clock())
    price = launch_price(None, ident.instance_type, ident.availability_zone, ident.market.value, local=True)
    event_id = f"batch:{job.job_id}:{job.attempt}"

    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        current = att.current_attempt(doc)
        if current is not None and (current.get("instance_id"), current.get("launched_at")) == (
            ident.instance_id,
            now,
        ):
            return doc  # this very write landed already (re-applied after a conflict)
        status = RunStatus(doc["status"])
        if current is not None and status is not RunStatus.RECOVERING:
            if not status.can_become(RunStatus.RECOVERING):
                raise TerminalError(
                    f"run {ctx.opts.run_id} is {status.value}: "
                    f"Batch attempt {job.attempt} has nothing to resume",
                    component="identify",
                )
            doc = att.claim(doc, trigger=att.Trigger.INSTANCE_ENDED, event_id=event_id, now=now)
        number = int(doc.get("attempt") or 0) + 1 if current is not None else 1
        attempt = att.new_attempt(
            attempt=number,
            instance_id=ident.instance_id,
            instance_type=ident.instance_type,
            market=ident.market.value,
            availability_zone=ident.availability_zone,
            price_per_hour=price.usd_per_hour,
            price_source=price.source,
            launched_at=now,
        )
        return att.add_attempt(doc, attempt)

    snap: Snapshot = ctx.state.call(lambda: ctx.store.update(ctx.opts.run_id, mutate))
    log.info(
        "batch job %s attempt %d of %d: run attempt %s on %s (%s)",
        job.job_id,
        job.attempt,
        job.attempts,
        snap.doc.get("attempt"),
        ident.instance_id,
        snap.status.value,
    )


def plan_ending(plan: Any, job: BatchJob, run_id: str) -> Any:
    """An interruption on Batch's last attempt fails the run: no attempt would resume it.

    ``plan`` is :func:`trainer.lifecycle.plan_ending`'s; the spec's ``max_recoveries`` (when
    above 0) still ends a run sooner, as it does a run on its own instance.
    """
    if plan.completion is not CompletionStatus.INTERRUPTED or job.retries_left:
        return plan
    reason = f"interrupted on the last of AWS Batch's {job.attempts} attempts of run {run_id}"
    log.warning("%s: it fails", reason)
    return replace(plan, completion=CompletionStatus.FAILED, reason=reason, why=reason, exhausted=True)


def keep_lock(snap: Snapshot | None, plan: Any, job: BatchJob, run_id: str) -> str | None:
    """Why cleanup leaves the member's lock for Batch's next attempt; ``None``: release it."""
    if snap is None or snap.run_id != run_id or snap.status is not RunStatus.INTERRUPTED:
        return None
    if plan.completion is not CompletionStatus.INTERRUPTED or not job.retries_left:
        return None
    return f"left for AWS Batch's retry (attempt {job.attempt + 1} of {job.attempts})"

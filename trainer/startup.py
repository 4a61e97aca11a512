"""Before any phase: which instance this is (IMDSv2) and which run it trains (the run spec).

:func:`identify` asks IMDS who this machine is, records it in training.json and writes
it into the state file (a run that no longer holds the lock is terminal: this instance
was launched for it, and someone cleared it since). :func:`load_spec` reads and
validates ``user-configs/run-spec.json``.
"""

from __future__ import annotations

import json
import logging

from common import runspec
from common.errors import ConfigError
from common.state_store import NotHeldError
from trainer import batch_job, lifecycle
from trainer.context import RunContext
from trainer.errors import TerminalError, TrainerError

log = logging.getLogger(__name__)


def identify(ctx: RunContext) -> None:
    """IMDS identity -> training.json's ``instance`` and the state file's instance fields.

    A run the recovery handler relaunched on this instance moves from ``recovering`` back to
    ``initialization`` first (:func:`trainer.lifecycle.resume_recovered`). A Batch job records its
    attempt first, claiming the state a previous attempt left (:func:`trainer.batch_job.take_over`).

    Raises:
        IMDSError: IMDS did not answer.
        TerminalError: the state file no longer belongs to this run.
    """
    ident = ctx.imds.identity()
    ctx.instance_id = ident.instance_id
    job = ctx.batch_job
    ctx.record.instance = {
        "instance_id": ident.instance_id,
        "instance_type": ident.instance_type,
        "market": ident.market.value,
        "availability_zone": ident.availability_zone,
        "image_id": ident.image_id,
        "gpu": None,
        "local": ctx.opts.local,
    }
    log.info(
        "instance %s (%s, %s, %s)",
        ident.instance_id,
        ident.instance_type,
        ident.availability_zone,
        ident.market.value,
    )
    if job is not None:  # the job's attempt, claiming a previous attempt's state first
        try:
            batch_job.take_over(ctx, job, ident)
        except NotHeldError as exc:
            raise TerminalError(
                f"{exc}: Batch job {job.job_id} was submitted for a run that no longer holds the lock",
                component="identify",
            ) from None
    lifecycle.resume_recovered(ctx, ident.instance_id)
    try:
        ctx.state.call(
            lambda: ctx.store.set_instance(
                ctx.opts.run_id,
                instance_id=ident.instance_id,
                instance_type=ident.instance_type,
                availability_zone=ident.availability_zone,
                market=ident.market.value,
            )
        )
    except NotHeldError as exc:
        raise TerminalError(
            f"{exc}: this instance was launched for a run that no longer holds the lock",
            component="identify",
        ) from None
    ctx.store.holder = ident.instance_id  # from now on a run taken over by a later attempt is not ours


def load_spec(ctx: RunContext) -> None:
    """Read and validate the run spec into ``ctx.spec`` (resolved for local mode or AWS).

    Raises:
        TerminalError: the run spec is missing, unreadable or invalid.
    """
    key = ctx.paths.run_spec
    where = f"s3://{ctx.opts.bucket}/{key}"
    try:
        doc = json.loads(ctx.transfers.get_bytes(key, component="run_spec"))
        ctx.spec = runspec.from_dict(doc, source=where).resolved(local=ctx.opts.local)
    except TrainerError:
        raise
    except ConfigError as exc:
        raise TerminalError(f"invalid run spec: {exc}", component="run_spec") from None
    except Exception as exc:  # noqa: BLE001 - any other read or parse error is terminal, with its text
        raise TerminalError(f"cannot read the run spec {where}: {exc}", component="run_spec") from None
    ctx.progress.update(total_steps=ctx.spec.model.num_steps)

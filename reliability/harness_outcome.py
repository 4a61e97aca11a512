"""The fault matrix's outcome side: what was uploaded before a fault, and how the run ended.

:func:`snapshot` (before the fault) takes every immutable artifact's sha256; :func:`settle`
(after) waits for the run to end and returns the :class:`Outcome`, counting every check.
Re-exported by :mod:`reliability.harness`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common import layout
from common.status import RunStatus
from common.timeutil import wait_until
from reliability import record

if TYPE_CHECKING:
    from reliability.harness import Run, World

SETTLE_S = 420.0  # a whole run plus its recoveries on 2 loaded cores
LINGER_S = 60.0  # how long a final lock of a run that no longer bills may wait for the handler


# -- what was uploaded before the fault ------------------------------------------------------------
MUTABLE = (
    "training.json",
    "cleanup_status.json",
    "trainer.log",
    "_SUCCESS",
    "_FAILED_UPLOAD",
    # rewritten by every launch of the run (a resume records its own instance and request)
    "launch-record.json",
    "launch-request.json",
    # exported with the model by each attempt that finishes training; it names that attempt's
    # work folder (train_config), so two attempts differ (the weights beside it are checked)
    "training_info.json",
    # written by each finalize: its created_at and phase durations are that attempt's
    "model_metadata.json",
)


def snapshot(world: World, run_id: str) -> dict[str, str]:
    """sha256 of every immutable artifact of ``run_id`` in S3 now: user configs, model files,
    metrics, and each *complete* checkpoint (its ``trainer_state.json`` is written last).

    Mutable documents (training.json, cleanup_status.json, the logs, the sentinels, the launch
    record and request, the model's training_info.json and model_metadata.json: see
    :data:`MUTABLE`) are rewritten
    by a later attempt by design and are not artifacts here.
    """
    paths = layout.RunPaths(env=world.env, run_id=run_id)
    keys: list[str] = []
    for prefix in (paths.prefix, paths.logs):
        for page in world.s3.get_paginator("list_objects_v2").paginate(Bucket=world.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
    complete = {k.rsplit("/", 1)[0] for k in keys if k.endswith("/" + layout.TRAINER_STATE_NAME)}
    out: dict[str, str] = {}
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if name in MUTABLE or name.endswith(".log"):
            continue
        if key.startswith(paths.checkpoints) and key.rsplit("/", 1)[0] not in complete:
            continue
        out[key] = _sha256(world, key) or ""
    return out


def _state(world: World) -> dict[str, Any] | None:
    """The env's state document; ``{"corrupt": <reason>}`` for one that does not read (a fault)."""
    from common.errors import CorruptStateError

    try:
        return world.state()
    except CorruptStateError as exc:
        return {"corrupt": exc.reason}


def _sha256(world: World, key: str) -> str | None:
    try:
        body = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    except world.s3.exceptions.NoSuchKey:
        return None
    return hashlib.sha256(body).hexdigest()


def newest_checkpoint(manifest: dict[str, str], paths: layout.RunPaths) -> int | None:
    """The newest complete checkpoint step in a :func:`snapshot`."""
    steps = [
        layout.checkpoint_step(k[len(paths.checkpoints) :].split("/")[0])
        for k in manifest
        if k.startswith(paths.checkpoints) and k.endswith("/" + layout.TRAINER_STATE_NAME)
    ]
    return max((s for s in steps if s is not None), default=None)


# -- the outcome -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How a run ended after a fault, as the user and ``verify`` see it."""

    run_id: str
    status: str  # the run's status as `invoke runs` shows it (succeeded, failed, killed ...)
    message: str  # what the user reads: the run's reason and problem, the last error
    state: dict[str, Any] | None  # the env's state document after the run (None: lock released;
    # {"corrupt": reason}: a state file that does not read)
    training: dict[str, Any] | None
    sentinel: dict[str, Any] | None
    cleanup: dict[str, Any] | None
    orphans: list[str]  # what `verify` calls orphaned
    checked: int  # artifacts of the snapshot compared
    lost: list[str]  # artifacts of the snapshot missing or changed
    resumed_from_step: int | None
    newest_before: int | None  # the newest complete checkpoint in S3 at the fault
    instances: list[str] = field(default_factory=list)

    @property
    def resume_used_newest(self) -> bool:
        """True when a resume started from the newest complete checkpoint there was."""
        return self.resumed_from_step == self.newest_before


def settle(
    world: World,
    run: Run,
    *,
    before: dict[str, str] | None = None,
    timeout: float = SETTLE_S,
    row: str | None = None,
    planted: tuple[str, ...] = (),
) -> Outcome:
    """Wait for ``run`` to end (lock released or left by it, nothing of it billing), then look.

    Every check counts: ``verify``'s orphans (:data:`record.Total.ORPHANS_FOUND`, 0 too; not those
    of a kind in ``planted``, the row's own fault that its test asserts and then fixes), the
    snapshot's artifacts checked and lost.

    Raises:
        TimeoutError: the run did not end within ``timeout`` (the consoles' tails attached).
    """
    from control.runs import read_run
    from control.verify import verify

    left_since: dict[str, float] = {}

    def ended() -> bool:
        if world.billing(run.run_id):
            return False
        doc = _state(world)
        if doc is None or doc.get("run_id") != run.run_id:
            return True
        if not RunStatus(doc["status"]).is_terminal():
            return False
        # a final lock with nothing of the run billing: its instance died before its cleanup
        # removed it, and the recovery handler releases it once it sees the instance gone (its
        # gone grace and a tick); a lock still there after LINGER_S stays (the outcome shows it)
        first = left_since.setdefault(f"{doc['status']} {doc.get('instance_id')}", time.monotonic())
        return time.monotonic() - first >= LINGER_S

    try:
        wait_until(ended, timeout, f"run {run.run_id} to end", every=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nstate: {world.state()}\n{world.logs()}") from None
    state = _state(world)
    readable = state if state is not None and "corrupt" not in state else None
    summary = read_run(world.s3, world.bucket, world.env, run.run_id, state=readable)
    result = verify(world.backend, env=world.env)
    orphans = [f"{f.kind} {f.resource} ({f.detail})" for f in result.final.orphans]
    record.count(record.Total.ORPHANS_FOUND, sum(f.kind not in planted for f in result.final.orphans))
    before = before or {}
    lost = sorted(k for k, digest in before.items() if _sha256(world, k) != digest)
    record.count(record.Total.ARTIFACTS_CHECKED, len(before))
    record.count(record.Total.ARTIFACTS_LOST, len(lost))
    training = world.get_json(run.paths.training_log)
    sentinel = world.get_json(run.paths.success) or world.get_json(run.paths.failed_upload)
    words = [summary.reason, summary.problem, summary.last_error]
    outcome = Outcome(
        run_id=run.run_id,
        status=summary.status,
        message="; ".join(w for w in words if w),
        state=state,
        training=training,
        sentinel=sentinel,
        cleanup=world.get_json(run.paths.cleanup_status),
        orphans=orphans,
        checked=len(before),
        lost=lost,
        resumed_from_step=(training or {}).get("resumed_from_step"),
        newest_before=newest_checkpoint(before, run.paths),
        instances=world.instances(run.run_id),
    )
    if row is not None:
        record.note(row, f"ended {outcome.status}: {outcome.message or '(no message)'}")
    return outcome

"""Apply a sweep plan: the manifest, then per point its spec, its lock and its Batch job.

Order, so that nothing is left that nobody knows about:

1. the manifest, created with ``PutObject IfNoneMatch="*"`` (a second sweep of the same second
   gets 412 and writes nothing), every point ``planned``;
2. the code bundle (unless unchanged and uploaded) and the grid file beside the manifest;
3. per point: its ``run-spec.json``, its lock (``StateStore.acquire`` at the member's own state
   key: a held lock skips the point with its run id, nothing of it written), then SubmitJob;
   the job id goes into the member's state (one conditional update) and the manifest. A
   SubmitJob refusal releases that point's lock, marks it ``failed`` with the reason, and stops
   the sweep there: the later points stay ``planned`` (what failed one fails the next);
4. the manifest again (``IfMatch`` its own ETag) with every point's outcome.

A job whose SubmitJob answered is never left without its id in the manifest: the manifest is
rewritten even when a later step raises.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common.aws import error_code, http_status
from common.errors import LockHeldError
from common.state_store import StateStore
from common.timeutil import Clock, utc_now
from control.launch_plan import Upload
from control.sweep_plan import MemberPlan, Submission, SweepPlan
from schemas import validate

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class MemberOutcome:
    run_id: str
    submission: Submission
    job_id: str | None = None
    reason: str | None = None


@dataclass(kw_only=True)
class SweepResult:
    """What the submit did, point by point."""

    sweep_id: str
    manifest_key: str
    members: list[MemberOutcome] = field(default_factory=list)

    def count(self, what: Submission) -> int:
        return sum(1 for m in self.members if m.submission is what)

    @property
    def ok(self) -> bool:
        """Every point was submitted."""
        return all(m.submission is Submission.SUBMITTED for m in self.members)


def apply_sweep(plan: SweepPlan, *, s3: Any, batch: Any, clock: Clock = utc_now) -> SweepResult:
    """Write and submit everything ``plan`` decided (see the module docstring for the order).

    Raises:
        SweepIdTakenError: the manifest key was taken meanwhile (nothing written).
    """
    from control.sweep import SweepIdTakenError

    manifest = json.loads(json.dumps(plan.manifest))
    etag = _put_manifest(s3, plan, manifest, create=True)
    if etag is None:
        raise SweepIdTakenError(env=plan.env, sweep_id=plan.sweep_id)
    result = SweepResult(sweep_id=plan.sweep_id, manifest_key=plan.manifest_key)
    try:
        for upload in (plan.code_upload, plan.grid_upload):
            if upload is not None and upload.skip_reason is None:
                _put(s3, plan.bucket, upload)
        for member in plan.members:
            if _killed(s3, plan) is not None:  # `kill --sweep` ran meanwhile: submit no more
                result.members.append(
                    MemberOutcome(
                        run_id=member.run_id,
                        submission=Submission.SKIPPED,
                        reason="the sweep was killed while it was being submitted",
                    )  # fmt: skip
                )
                continue
            outcome = _submit_member(plan, member, s3=s3, batch=batch, clock=clock)
            result.members.append(outcome)
            if outcome.submission is Submission.FAILED:
                break
    finally:
        _record(manifest, result)
        _finish_manifest(s3, plan, manifest, etag)
    return result


def _killed(s3: Any, plan: SweepPlan) -> dict[str, Any] | None:
    """The manifest as a kill left it (``killed_at`` set), else ``None``."""
    doc = json.loads(s3.get_object(Bucket=plan.bucket, Key=plan.manifest_key)["Body"].read())
    return doc if doc.get("killed_at") else None


def _finish_manifest(s3: Any, plan: SweepPlan, manifest: dict[str, Any], etag: str | None) -> None:
    """The manifest with every point's outcome; a kill's mark written meanwhile is kept (re-read on 412)."""
    for _ in range(5):
        try:
            _put_manifest(s3, plan, manifest, etag=etag)
            return
        except ClientError as exc:
            if http_status(exc) not in (409, 412):
                raise
        got = s3.get_object(Bucket=plan.bucket, Key=plan.manifest_key)
        current = json.loads(got["Body"].read())
        manifest["killed_at"], manifest["kill_reason"] = current.get("killed_at"), current.get("kill_reason")
        etag = got["ETag"]
    log.warning(
        "sweep %s: the manifest kept changing; its members' outcomes were not all written", plan.sweep_id
    )


def _submit_member(
    plan: SweepPlan, member: MemberPlan, *, s3: Any, batch: Any, clock: Clock
) -> MemberOutcome:
    store = StateStore(s3, plan.bucket, plan.env, run_id=member.run_id, clock=clock)
    for upload in member.uploads:
        _put(s3, plan.bucket, upload)
    try:
        store.acquire(dict(member.state_doc))
    except LockHeldError as exc:
        log.warning("sweep %s: %s skipped: its lock is held (%s)", plan.sweep_id, member.run_id, exc)
        return MemberOutcome(
            run_id=member.run_id, submission=Submission.SKIPPED, reason=f"its lock {store.location} is held"
        )
    try:
        answer = batch.submit_job(**member.submit_request)
    except (ClientError, BotoCoreError) as exc:
        reason = (
            f"SubmitJob refused it: {error_code(exc) if isinstance(exc, ClientError) else ''} {exc}".strip()
        )
        store.release(member.run_id)  # no job: the lock must not wait for one
        return MemberOutcome(run_id=member.run_id, submission=Submission.FAILED, reason=reason)
    job_id = answer["jobId"]

    def with_job(doc: dict[str, Any]) -> dict[str, Any]:
        doc["batch"] = {**doc["batch"], "job_id": job_id}
        return doc

    store.update(member.run_id, with_job)
    log.info("sweep %s: %s submitted as job %s", plan.sweep_id, member.run_id, job_id)
    return MemberOutcome(run_id=member.run_id, submission=Submission.SUBMITTED, job_id=job_id)


def _record(manifest: dict[str, Any], result: SweepResult) -> None:
    outcomes = {m.run_id: m for m in result.members}
    for entry in manifest["members"]:
        outcome = outcomes.get(entry["run_id"])
        if outcome is not None:
            entry.update(job_id=outcome.job_id, submission=outcome.submission.value, reason=outcome.reason)


def _put(s3: Any, bucket: str, upload: Upload) -> None:
    s3.put_object(Bucket=bucket, Key=upload.key, Body=upload.body, ContentType=upload.content_type)


def _put_manifest(
    s3: Any, plan: SweepPlan, manifest: dict[str, Any], *, create: bool = False, etag: str | None = None
) -> str | None:
    """Write the manifest conditionally; its ETag, or ``None`` when the create found one there."""
    validate("sweep", manifest, source=plan.manifest_key)
    condition = {"IfNoneMatch": "*"} if create else {"IfMatch": etag} if etag else {}
    try:
        answer = s3.put_object(
            Bucket=plan.bucket,
            Key=plan.manifest_key,
            Body=json.dumps(manifest, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
            **condition,
        )
    except ClientError as exc:
        if create and http_status(exc) in (409, 412):
            return None
        raise
    return answer.get("ETag")

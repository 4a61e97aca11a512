"""AWS Batch jobs of sweep members: their status, and how to stop one.

- :class:`JobStatus` is Batch's job state, answering its own questions (``is_active``,
  ``is_final``, ``cancels``: whether CancelJob still stops it).
- :func:`describe_jobs` reads many jobs in pages of 100 ids (DescribeJobs' limit); an id Batch
  no longer knows is simply absent from the answer, never an error.
- :func:`stop_job` sends CancelJob or TerminateJob, whichever the job's state needs, and reads
  the job again: the record holds what was requested and what was then observed (issue 13's
  requested-vs-observed records).
- :func:`active_jobs` lists a queue's jobs that are not finished, state by state (ListJobs
  without a status lists only RUNNING jobs).

AWS Batch API Reference (https://docs.aws.amazon.com/batch/latest/APIReference/): API_SubmitJob.html,
API_DescribeJobs.html ("A list of up to 100 job IDs"), API_ListJobs.html ("If you don't specify a
status, only RUNNING jobs are returned"), API_CancelJob.html ("Jobs that progressed to the STARTING
or RUNNING state aren't canceled. However, the API operation still succeeds"), API_TerminateJob.html
(STARTING/RUNNING -> FAILED); job states: https://docs.aws.amazon.com/batch/latest/userguide/job_states.html
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

DESCRIBE_PAGE = 100  # DescribeJobs: "A list of up to 100 job IDs" (API_DescribeJobs.html)


class JobStatus(enum.StrEnum):
    """A Batch job's state. Legal moves: SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING ->
    SUCCEEDED | FAILED; any state before STARTING -> FAILED on CancelJob; STARTING/RUNNING -> FAILED
    on TerminateJob; a retry (the job definition's retry strategy) moves FAILED attempts back to
    RUNNABLE inside one job, which stays the same job id."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    def is_active(self) -> bool:
        """Queued or on a host: it holds (or will take) capacity."""
        return not self.is_final()

    def cancels(self) -> bool:
        """CancelJob stops it. CancelJob on a STARTING or RUNNING job "still succeeds, even if no
        job is canceled" (API Reference, CancelJob): those need TerminateJob."""
        return self in (JobStatus.SUBMITTED, JobStatus.PENDING, JobStatus.RUNNABLE)

    def on_host(self) -> bool:
        return self in (JobStatus.STARTING, JobStatus.RUNNING)


ACTIVE_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s.is_active())


@dataclass(frozen=True, kw_only=True)
class JobFacts:
    """What DescribeJobs says of one job."""

    job_id: str
    status: JobStatus
    reason: str | None = None  # statusReason: why it is where it is (e.g. a cancel's reason)
    attempts: int = 0
    created_at_ms: int | None = None
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None
    compute_environment: str | None = None
    parameters: Mapping[str, str] | None = None

    @classmethod
    def from_detail(cls, job: Mapping[str, Any]) -> JobFacts:
        attempts = job.get("attempts") or []
        return cls(
            job_id=job["jobId"],
            status=JobStatus(job["status"]),
            reason=job.get("statusReason"),
            attempts=len(attempts),
            created_at_ms=job.get("createdAt"),
            started_at_ms=job.get("startedAt"),
            stopped_at_ms=job.get("stoppedAt"),
            parameters=job.get("parameters"),
        )


def describe_jobs(batch: Any, job_ids: Iterable[str]) -> dict[str, JobFacts]:
    """``{job_id: facts}`` of every job Batch still knows among ``job_ids`` (pages of 100).

    A job Batch forgot (finished long ago) or never had is absent: DescribeJobs answers
    only the jobs it finds.
    """
    ids = sorted({i for i in job_ids if i})
    found: dict[str, JobFacts] = {}
    for start in range(0, len(ids), DESCRIBE_PAGE):
        page = ids[start : start + DESCRIBE_PAGE]
        for job in batch.describe_jobs(jobs=page).get("jobs", []):
            facts = JobFacts.from_detail(job)
            found[facts.job_id] = facts
    return found


@dataclass(frozen=True, kw_only=True)
class StopRecord:
    """One stop of one job: what was asked of Batch and what it answered when read again.

    ``requested``: ``cancel`` | ``terminate`` | ``none`` (already finished, or unknown to Batch);
    ``before``/``observed``: the job's status before and right after (``None``: unknown to Batch).
    On AWS a stopped job reaches FAILED within seconds to minutes; ``observed`` is the state
    at the moment it was read, so a job still RUNNING there is "termination requested", not done.
    """

    job_id: str
    requested: str
    before: JobStatus | None
    observed: JobStatus | None
    error: str | None = None

    @property
    def stopped(self) -> bool:
        return self.observed is not None and self.observed.is_final()

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "requested": self.requested,
            "before": self.before.value if self.before else None,
            "observed": self.observed.value if self.observed else None,
            "error": self.error,
        }


def stop_job(batch: Any, job_id: str, *, reason: str, before: JobFacts | None = None) -> StopRecord:
    """Stop one job with the call its state needs, then read it again.

    CancelJob for SUBMITTED/PENDING/RUNNABLE, TerminateJob for STARTING/RUNNING (CancelJob
    would answer 200 and leave it running), nothing for a finished or unknown job. ``reason``
    is at most 1024 characters (API Reference, CancelJob/TerminateJob: reason) and is what
    later DescribeJobs calls show as ``statusReason``.
    """
    if before is None:
        before = describe_jobs(batch, [job_id]).get(job_id)
    if before is None or before.status.is_final():
        return StopRecord(
            job_id=job_id,
            requested="none",
            before=before and before.status,
            observed=before and before.status,
        )
    call = batch.cancel_job if before.status.cancels() else batch.terminate_job
    requested = "cancel" if before.status.cancels() else "terminate"
    error = None
    try:
        call(jobId=job_id, reason=reason[:1024])
    except (ClientError, BotoCoreError) as exc:  # recorded beside what a describe then saw
        error = f"{type(exc).__name__}: {exc}"
        log.warning("%s of job %s failed: %s", requested, job_id, error)
    after = describe_jobs(batch, [job_id]).get(job_id)
    return StopRecord(
        job_id=job_id, requested=requested, before=before.status, observed=after and after.status, error=error
    )


def active_jobs(batch: Any, job_queue: str) -> list[dict[str, Any]]:
    """Every not-finished job of ``job_queue`` (its summaries), listed state by state.

    ListJobs with no ``jobStatus`` "returns only RUNNING jobs" (API Reference, ListJobs), so
    each active state is asked for on its own.
    """
    found: list[dict[str, Any]] = []
    for status in ACTIVE_STATUSES:
        token = None
        while True:
            kwargs = {"jobQueue": job_queue, "jobStatus": status.value}
            if token:
                kwargs["nextToken"] = token
            page = batch.list_jobs(**kwargs)
            found += page.get("jobSummaryList", [])
            token = page.get("nextToken")
            if not token:
                break
    return found

"""The ``batch`` client of local mode: moto's Batch API, with the local executor's word on each job.

moto (``use_docker: false``) marks every submitted job SUCCEEDED at once and never runs it; the
local executor (:mod:`control.local_batch`) really runs it and keeps the record of what happened.
This client is what :meth:`control.local_backend.LocalBackend.client` hands out for ``"batch"``,
so the sweep code (submit, monitor, kill, verify) is the same code on AWS and locally:

- ``submit_job``: moto's SubmitJob, then :func:`control.local_batch.execute` starts the job;
- ``describe_jobs``: moto's answer, each job's ``status``/``statusReason``/``attempts`` replaced
  by the local record's when this machine ran it (a job it never ran keeps moto's answer);
- ``list_jobs``: the queue's jobs by the record's status (moto's own filter would say SUCCEEDED);
- ``cancel_job`` / ``terminate_job``: moto's call, and the local executor stops the job (no
  retry; a running attempt gets SIGTERM, then SIGKILL after the grace);
- anything else: moto's client as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control.localdir import LocalDir


def _executor() -> Any:
    from control import local_batch  # the local executor (imported when a job is touched)

    return local_batch


class LocalBatchClient:
    """moto's boto3 Batch client with the local executor behind it (see the module docstring)."""

    def __init__(
        self,
        batch: Any,
        *,
        local_dir: LocalDir,
        endpoint_url: str,
        region: str,
        env_vars: Callable[[], dict[str, str]],
        identities_path: Path | None = None,
    ) -> None:
        self._batch, self._local_dir = batch, local_dir
        self._endpoint_url, self._region = endpoint_url, region
        self._env_vars, self._identities = env_vars, identities_path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def submit_job(self, **request: Any) -> dict[str, Any]:
        answer = self._batch.submit_job(**request)
        _executor().execute(
            answer["jobId"],
            local_dir=self._local_dir,
            endpoint_url=self._endpoint_url,
            region=self._region,
            env_vars=self._env_vars(),
            identities_path=self._identities,
        )
        return answer

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        answer = copy.deepcopy(self._batch.describe_jobs(jobs=jobs))
        answer["jobs"] = [self._overlay(job) for job in answer.get("jobs", [])]
        return answer

    def list_jobs(  # noqa: N803 - boto3's names
        self, *, jobQueue: str, jobStatus: str = "RUNNING", nextToken: str | None = None, **_: Any
    ) -> dict[str, Any]:
        """Every job of the queue whose (local) status is ``jobStatus``; one page (moto does not page)."""
        listed: list[dict[str, Any]] = []
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"):
            listed += self._batch.list_jobs(jobQueue=jobQueue, jobStatus=status).get("jobSummaryList", [])
        seen: set[str] = set()
        out = []
        for job in (self._overlay(j) for j in listed):
            if job["jobId"] not in seen and job["status"] == jobStatus:
                seen.add(job["jobId"])
                out.append(job)
        return {"jobSummaryList": out}

    def cancel_job(self, *, jobId: str, reason: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        answer = self._batch.cancel_job(jobId=jobId, reason=reason)
        _executor().terminate(jobId, local_dir=self._local_dir, reason=reason)
        return answer

    def terminate_job(self, *, jobId: str, reason: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        answer = self._batch.terminate_job(jobId=jobId, reason=reason)
        _executor().terminate(jobId, local_dir=self._local_dir, reason=reason)
        return answer

    def _overlay(self, job: dict[str, Any]) -> dict[str, Any]:
        record = _executor().status(job["jobId"], local_dir=self._local_dir)
        if not record:
            return job
        job = dict(job)
        job["status"] = record.get("status") or job.get("status")
        job["statusReason"] = record.get("status_reason")
        job["attempts"] = [
            {
                "startedAt": a.get("started_at"),
                "stoppedAt": a.get("stopped_at"),
                "reason": a.get("status_reason"),
            }
            for a in record.get("attempts") or []
        ]
        return job

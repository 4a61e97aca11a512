"""The runner of one local Batch job: ``python -m control.local_batch_runner --job-id ID ...``.

Started detached by :func:`control.local_batch.execute`; plays AWS Batch for that one job (what
it reads, runs, retries and records is in :mod:`control.local_batch`). Its log is the job's
``job.log`` (the attempts' output too, as CloudWatch would hold it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from common import logfmt
from common.aws import client as make_client
from common.timeutil import iso, utc_now
from control import local_batch
from control.local_instance import SHUTDOWN_GRACE_S, signal_group
from control.localdir import LocalDir
from infra.spec import batch as spec_batch
from localaws import audit

log = logging.getLogger("control.local_batch_runner")

# Nothing listens on the discard port: IMDS refuses at once, the job identifies itself by its id.
NO_IMDS = "http://127.0.0.1:9"
_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """What Batch would run for the job, read off DescribeJobs and DescribeJobDefinitions."""

    job_id: str
    command: list[str]
    environment: dict[str, str]
    job_role_arn: str
    retry_strategy: dict[str, Any]
    attempts: int
    timeout_s: float | None
    compute_environment: str
    queue: str

    @classmethod
    def from_described(
        cls, job: Mapping[str, Any], definition: Mapping[str, Any], compute_environment: str
    ) -> JobPlan:
        """The plan of a described job (moto merges the definition's parameters and environment
        into the job's; the definition's are the fallback)."""
        container = definition.get("containerProperties") or {}
        parameters = {**(definition.get("parameters") or {}), **(job.get("parameters") or {})}
        command = (job.get("container") or {}).get("command") or container.get("command") or []
        environment = {e["name"]: e["value"] for e in container.get("environment", [])}
        environment.update(
            {e["name"]: e["value"] for e in (job.get("container") or {}).get("environment", [])}
        )
        strategy = job.get("retryStrategy") or definition.get("retryStrategy") or {"attempts": 1}
        timeout = (job.get("timeout") or definition.get("timeout") or {}).get("attemptDurationSeconds")
        return cls(
            job_id=str(job["jobId"]),
            command=spec_batch.substitute(command, parameters),
            environment=environment,
            job_role_arn=str(container.get("jobRoleArn") or ""),
            retry_strategy=dict(strategy),
            attempts=int(strategy.get("attempts") or 1),
            timeout_s=float(timeout) if timeout else None,
            compute_environment=compute_environment,
            queue=str(job.get("jobQueue", "")).rsplit("/", 1)[-1],
        )


def describe(batch: Any, job_id: str) -> JobPlan:
    """Read the job, its definition and its queue's first (spot) environment from the local AWS."""
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    (definition,) = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
    (queue,) = batch.describe_job_queues(jobQueues=[job["jobQueue"]])["jobQueues"]
    first = min(queue["computeEnvironmentOrder"], key=lambda o: o["order"])["computeEnvironment"]
    return JobPlan.from_described(job, definition, first.rsplit("/", 1)[-1])


def job_credentials(
    plan: JobPlan, region: str, endpoint_url: str, identities_path: Path | None
) -> dict[str, str]:
    """The job role's credentials, assumed as the env's instance host (or this process's own keys).

    With the IAM call audit on (``CHRONOS_IAM_AUDIT_LOG``) the key is recorded with its role, so
    the audit judges the job's calls by the job role's policy.
    """
    session = boto3.Session(region_name=region)
    if identities_path is not None and identities_path.is_file():
        from localaws import identities

        recorded = identities.load(identities_path)
        env_ids = recorded.envs.get(plan.environment.get("CHRONOS_ENV", "")) if recorded else None
        if env_ids is not None:
            session = env_ids.instance_host.session(region)
    sts = make_client(session, "sts", endpoint_url=endpoint_url)
    session_name = f"batch-{plan.job_id}"[:64]
    answer = sts.assume_role(RoleArn=plan.job_role_arn, RoleSessionName=session_name)
    creds = answer["Credentials"]
    if os.environ.get(audit.ENV_VAR):
        audit.record_credentials(
            access_key_id=creds["AccessKeyId"],
            role_arn=plan.job_role_arn,
            role_id=answer["AssumedRoleUser"]["AssumedRoleId"].split(":", 1)[0],
            session_name=session_name,
        )
    return {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }


def attempt_environment(
    plan: JobPlan,
    attempt: int,
    *,
    app: Path,
    endpoint_url: str,
    credentials: Mapping[str, str],
    python: str = sys.executable,
) -> dict[str, str]:
    """The container's environment on this machine: the job's, the job role's keys, Batch's variables."""
    base = {
        k: v for k, v in os.environ.items() if k not in _CREDENTIAL_VARS and not k.startswith("AWS_BATCH_")
    }
    return {
        **base,
        **plan.environment,
        **credentials,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_BATCH_JOB_ID": plan.job_id,
        "AWS_BATCH_JOB_ATTEMPT": str(attempt),
        "AWS_BATCH_CE_NAME": plan.compute_environment,
        "AWS_BATCH_JQ_NAME": plan.queue,
        "CHRONOS_APP": str(app),
        "CHRONOS_PYTHON": python,
        # a host's IMDS a test serves (localaws.imds.FakeIMDS: spot notices), else none at all
        "CHRONOS_IMDS_ENDPOINT": os.environ.get("CHRONOS_IMDS_ENDPOINT") or NO_IMDS,
    }


class Runner:
    """Batch's attempts of one job, recorded in ``.local/batch/{job_id}.json``."""

    def __init__(self, plan: JobPlan, *, local_dir: LocalDir, endpoint_url: str, credentials: Any) -> None:
        self.plan, self.local_dir, self.endpoint_url = plan, local_dir, endpoint_url
        self.credentials = credentials  # () -> dict: fresh keys per attempt
        self._python: str | None = None

    def python(self) -> str:
        """The container image's Python: this venv's; with the IAM call audit on, an image-like
        venv of it whose start-up installs the audit (as a local instance's AMI Python does)."""
        if self._python is None:
            self._python = sys.executable
            if os.environ.get(audit.ENV_VAR):
                from control.local_machine import make_ami_python

                image = local_batch.job_dir(self.local_dir, self.plan.job_id) / "image"
                self._python = str(make_ami_python(image, audit=True))
        return self._python

    def _record(self) -> dict[str, Any]:
        return local_batch.status(self.plan.job_id, local_dir=self.local_dir) or {}

    def _terminate_reason(self) -> str | None:
        path = local_batch.terminate_file(self.local_dir, self.plan.job_id)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def run(self) -> int:
        """Every attempt Batch would make; 0 when the job SUCCEEDED."""
        for attempt in range(1, self.plan.attempts + 1):
            rc, reason, retryable = self._attempt(attempt)
            if rc == 0 and reason == local_batch.CONTAINER_EXITED:
                self._end("SUCCEEDED", reason)
                return 0
            decision = spec_batch.retry_decision(self.plan.retry_strategy, exit_code=rc, status_reason=reason)
            if not retryable or decision != "RETRY" or attempt == self.plan.attempts:
                self._end("FAILED", reason)
                return 1
            log.info("attempt %d ended (%s, exit %s): retried", attempt, reason, rc)
        return 1  # not reached: the last attempt ends above

    def _attempt(self, attempt: int) -> tuple[int | None, str, bool]:
        """Run one attempt; its exit code, status reason and whether Batch may retry it."""
        if (reason := self._terminate_reason()) is not None:
            return None, reason, False
        app = local_batch.job_dir(self.local_dir, self.plan.job_id) / f"attempt-{attempt}"
        env = attempt_environment(
            self.plan,
            attempt,
            app=app,
            endpoint_url=self.endpoint_url,
            credentials=self.credentials(),
            python=self.python(),
        )
        log_path = Path(self._record().get("log") or app / "job.log")
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                self.plan.command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        entry = {"attempt": attempt, "pid": proc.pid, "started_at": iso(utc_now()), "stopped_at": None}
        self._set_attempt(entry)
        local_batch.update(self.local_dir, self.plan.job_id, status="RUNNING")
        rc, timed_out = self._wait(proc)
        terminated = self._terminate_reason()
        if local_batch.host_terminated_file(self.local_dir, self.plan.job_id, attempt).exists():
            reason, rc, retryable = (
                local_batch.HOST_TERMINATED.format(instance=f"local-{self.plan.job_id[:8]}"),
                None,
                True,
            )
        elif timed_out:
            reason, retryable = local_batch.TIMED_OUT, False  # Batch does not retry a timed-out job
        elif terminated is not None:
            reason, retryable = terminated, False
        else:
            reason, retryable = local_batch.CONTAINER_EXITED, True
        self._set_attempt({**entry, "stopped_at": iso(utc_now()), "exit_code": rc, "status_reason": reason})
        return rc, reason, retryable

    def _wait(self, proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
        deadline = None if self.plan.timeout_s is None else time.monotonic() + self.plan.timeout_s
        while True:
            try:
                return proc.wait(timeout=local_batch.POLL_S), False
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    signal_group(proc.pid, signal.SIGTERM)
                    try:
                        return proc.wait(timeout=SHUTDOWN_GRACE_S), True
                    except subprocess.TimeoutExpired:
                        signal_group(proc.pid, signal.SIGKILL)
                        return proc.wait(), True

    def _set_attempt(self, entry: dict[str, Any]) -> None:
        attempts = [a for a in self._record().get("attempts", []) if a.get("attempt") != entry["attempt"]]
        local_batch.update(self.local_dir, self.plan.job_id, attempts=[*attempts, entry])

    def _end(self, status: str, reason: str) -> None:
        local_batch.update(
            self.local_dir, self.plan.job_id, status=status, status_reason=reason, stopped_at=iso(utc_now())
        )
        log.info("job %s %s: %s", self.plan.job_id, status, reason)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m control.local_batch_runner")
    p.add_argument("--job-id", required=True)
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--local-dir", type=Path, required=True)
    p.add_argument("--identities", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logfmt.configure(logging.INFO, sys.stderr)
    local_dir = LocalDir(args.local_dir)
    local_batch.update(local_dir, args.job_id, runner_pid=os.getpid())
    try:
        batch = make_client(boto3.Session(region_name=args.region), "batch", endpoint_url=args.endpoint_url)
        plan = describe(batch, args.job_id)
        creds = lambda: job_credentials(plan, args.region, args.endpoint_url, args.identities)  # noqa: E731
        return Runner(plan, local_dir=local_dir, endpoint_url=args.endpoint_url, credentials=creds).run()
    except Exception as exc:  # noqa: BLE001 - a runner that cannot run its job says so in the record
        log.exception("local batch job %s could not run", args.job_id)
        local_batch.update(local_dir, args.job_id, status="FAILED", status_reason=f"local runner: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

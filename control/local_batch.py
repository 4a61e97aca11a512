"""Local AWS Batch: a submitted job's container command, run as a local process under the job role.

In local mode ``invoke sweep --local`` submits jobs to moto's Batch. moto is told never to run a
container (``{"batch": {"use_docker": false}}``, :func:`infra.local_batch.moto_without_docker`)
and then marks every job SUCCEEDED by itself within a second, whatever happened: **moto's job
status means nothing here; this module's record does.** After SubmitJob the local backend calls
:func:`execute`, which starts a detached job runner (``python -m control.local_batch_runner``,
:mod:`control.local_batch_runner`) that plays Batch for that one job:

- reads the job as Batch would run it (DescribeJobs: the job definition's command and
  environment with the container overrides, the parameters with the definition's defaults;
  DescribeJobDefinitions: the job role, the retry strategy, the timeout), substitutes each
  ``Ref::name`` in the command (:func:`infra.spec.batch.substitute`);
- runs the command (``bash -c <trainer/batch_entry.sh> ...``) in its own process group with the
  job role's credentials (AssumeRole as the env's instance-host principal, session name the job
  id, as local instances run under the instance role), ``AWS_BATCH_JOB_ID``,
  ``AWS_BATCH_JOB_ATTEMPT``, ``AWS_BATCH_CE_NAME`` (the spot environment: the queue's first),
  and ``CHRONOS_APP`` (a folder per attempt standing for the container's ``/opt/chronos``);
- retries as the job definition's ``evaluateOnExit`` says (:func:`infra.spec.batch.retry_decision`),
  up to its attempts; ends an attempt past ``attemptDurationSeconds`` (SIGTERM, then SIGKILL;
  a timed-out job is not retried, as on Batch).

The API (what the local backend, kill and verify call):

- :func:`execute` ``(job_id, *, local_dir, endpoint_url, region, env_vars, ...) -> pid``: start
  the runner for a job just submitted;
- :func:`status` ``(job_id, *, local_dir) -> dict | None``: the record,
  ``.local/batch/{job_id}.json``: ``status`` (``SUBMITTED`` -> ``RUNNING`` -> ``SUCCEEDED`` |
  ``FAILED``, the Batch names), ``status_reason``, ``attempts`` (each ``attempt``, ``pid``,
  ``started_at``, ``stopped_at``, ``exit_code``, ``status_reason``), ``runner_pid``, ``log``;
- :func:`terminate` ``(job_id, *, local_dir, reason) -> bool``: TerminateJob/CancelJob: no retry,
  the running attempt gets SIGTERM (the trainer checkpoints), SIGKILL after the grace;
- :func:`interrupt` ``(job_id, *, local_dir) -> bool``: the host is reclaimed under the job (a
  spot interruption without notice): the attempt is SIGKILLed and ends with status reason
  ``Host EC2 (instance ...) terminated.``, which the retry strategy retries;
- :func:`wait` ``(job_id, *, local_dir, timeout_s) -> dict``: until the record is final.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from common.timeutil import iso, utc_now
from control.local_instance import SHUTDOWN_GRACE_S, group_alive, signal_group, spawn_detached
from control.localdir import LocalDir, pid_alive, read_json, write_json

log = logging.getLogger(__name__)

RUNNER_MODULE = "control.local_batch_runner"
FINAL = frozenset({"SUCCEEDED", "FAILED"})
HOST_TERMINATED = "Host EC2 (instance {instance}) terminated."
CONTAINER_EXITED = "Essential container in task exited"
TIMED_OUT = "Job attempt duration exceeded timeout"
POLL_S = 0.2


def jobs_dir(local_dir: LocalDir) -> Path:
    """``.local/batch/``: one record (and one folder) per job."""
    return Path(local_dir.root) / "batch"


def record_path(local_dir: LocalDir, job_id: str) -> Path:
    return jobs_dir(local_dir) / f"{job_id}.json"


def job_dir(local_dir: LocalDir, job_id: str) -> Path:
    return jobs_dir(local_dir) / job_id


def execute(
    job_id: str,
    *,
    local_dir: LocalDir,
    endpoint_url: str,
    region: str,
    env_vars: dict[str, str],
    identities_path: Path | None = None,
    python: str = sys.executable,
) -> int:
    """Start the runner of ``job_id`` (just submitted to the local AWS); its pid.

    Args:
        job_id: the job moto answered SubmitJob with.
        local_dir: the local-mode folder (the record goes to ``.local/batch/``).
        endpoint_url, region: the local AWS.
        env_vars: the runner's environment: credentials allowed DescribeJobs and
            DescribeJobDefinitions (the operator's), and AssumeRole on the job role when no
            identities are recorded (IAM enforcement off).
        identities_path: the env identities; the instance host assumes the job role.
        python: the interpreter of the runner and of the job (the venv's: ``CHRONOS_PYTHON``).
    """
    folder = job_dir(local_dir, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "job.log"
    cmd = [python, "-m", RUNNER_MODULE, "--job-id", job_id, "--endpoint-url", endpoint_url]
    cmd += ["--region", region, "--local-dir", str(local_dir.root)]
    if identities_path is not None:
        cmd += ["--identities", str(identities_path)]
    write_json(
        record_path(local_dir, job_id),
        {
            "job_id": job_id,
            "status": "SUBMITTED",
            "status_reason": None,
            "attempts": [],
            "runner_pid": None,
            "log": str(log_path),
            "submitted_at": iso(utc_now()),
        },
    )
    proc = spawn_detached(cmd, env_vars=env_vars, log_path=log_path)  # it records its own pid
    log.info("local batch job %s: runner pid %d", job_id, proc.pid)
    return proc.pid


def status(job_id: str, *, local_dir: LocalDir) -> dict[str, Any] | None:
    """The job's record (``None``: this machine never ran it)."""
    return read_json(record_path(local_dir, job_id))


def update(local_dir: LocalDir, job_id: str, **fields: Any) -> dict[str, Any]:
    """The record with ``fields`` set. Only the runner writes it once it runs; requests from
    outside (:func:`terminate`, :func:`interrupt`) are files of their own beside it, so no
    read-modify-write of two processes loses one."""
    doc = status(job_id, local_dir=local_dir) or {"job_id": job_id}
    doc.update(fields)
    write_json(record_path(local_dir, job_id), doc)
    return doc


def terminate_file(local_dir: LocalDir, job_id: str) -> Path:
    """Its text: the reason of a TerminateJob (the runner retries nothing once it exists)."""
    return job_dir(local_dir, job_id) / "terminate-requested"


def host_terminated_file(local_dir: LocalDir, job_id: str, attempt: int) -> Path:
    """Exists once the host of ``attempt`` was reclaimed under it (:func:`interrupt`)."""
    return job_dir(local_dir, job_id) / f"host-terminated-{attempt}"


def _current_pid(doc: dict[str, Any]) -> int | None:
    attempts = doc.get("attempts") or []
    if not attempts or attempts[-1].get("stopped_at"):
        return None
    pid = attempts[-1].get("pid")
    return int(pid) if pid else None


def terminate(job_id: str, *, local_dir: LocalDir, reason: str = "Terminated by the user") -> bool:
    """Stop the job with no retry; True when a running attempt was signalled."""
    doc = status(job_id, local_dir=local_dir)
    if doc is None or doc.get("status") in FINAL:
        return False
    terminate_file(local_dir, job_id).write_text(reason, encoding="utf-8")
    pid = _current_pid(doc)
    if pid is None:
        return False
    signal_group(pid, signal.SIGTERM)  # the trainer's on_signal: checkpoint, then exit
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if group_alive(pid):
        signal_group(pid, signal.SIGKILL)
    return True


def interrupt(job_id: str, *, local_dir: LocalDir) -> bool:
    """The host vanishes under the running attempt (SIGKILL, no notice); True when one ran."""
    doc = status(job_id, local_dir=local_dir)
    pid = None if doc is None else _current_pid(doc)
    if doc is None or pid is None:
        return False
    host_terminated_file(local_dir, job_id, int(doc["attempts"][-1]["attempt"])).touch()
    signal_group(pid, signal.SIGKILL)
    return True


def wait(job_id: str, *, local_dir: LocalDir, timeout_s: float) -> dict[str, Any]:
    """The record once final.

    Raises:
        TimeoutError: still running after ``timeout_s`` (or its runner died: the record says so).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        doc = status(job_id, local_dir=local_dir) or {}
        if doc.get("status") in FINAL:
            return doc
        runner = doc.get("runner_pid")
        if runner and not pid_alive(int(runner)) and _still_open(job_id, local_dir):
            raise TimeoutError(f"the runner of local batch job {job_id} died; see {doc.get('log')}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"local batch job {job_id} still {doc.get('status')} after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def _still_open(job_id: str, local_dir: LocalDir) -> bool:
    """Not final on a fresh read (the runner may have written its end just before exiting)."""
    return (status(job_id, local_dir=local_dir) or {}).get("status") not in FINAL


def stop_all(local_dir: LocalDir) -> int:
    """Terminate every job still running (``invoke local.down``); how many were."""
    stopped = 0
    for path in sorted(jobs_dir(local_dir).glob("*.json")) if jobs_dir(local_dir).is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            stopped += terminate(path.stem, local_dir=local_dir, reason="local AWS shut down")
    return stopped

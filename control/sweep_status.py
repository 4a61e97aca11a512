"""A sweep as it stands: its manifest, each member's state and records, and its Batch job beside.

A member's status is, in order: its live state file (``RunPaths.state``: the run is going), else
what its records say (``control.runs.read_run``: training.json, the sentinel), else what its job
says (a job queued or never started leaves no record: ``queued (RUNNABLE)``; a job that ended
without records: ``failed`` with Batch's reason). Batch's status is shown beside it, never in its
place: in local mode moto marks every job SUCCEEDED at once (``use_docker: false``), so the
member's own records are what say what happened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from common import layout
from common.exitcodes import ExitCode
from common.state_store import StateStore
from common.timeutil import Clock, utc_now
from control.backend import Backend, check_env
from control.runs import SUCCEEDED, UNKNOWN, RunSummary, read_run
from control.s3io import common_prefixes, get_json
from control.sweep_jobs import JobFacts, describe_jobs

STALE = "stale"
ENDED = frozenset({SUCCEEDED, "failed", "killed", "interrupted", "invalid", "cancelled", STALE})


@dataclass(frozen=True, kw_only=True)
class MemberView:
    """One member: its point, how it was submitted, its run's status and its job's."""

    run_id: str
    number: int
    point: Mapping[str, Any]
    submission: str
    job_id: str | None
    job: JobFacts | None
    live: Mapping[str, Any] | None  # its state document while it runs
    summary: RunSummary | None
    killed: bool = False  # its sweep was killed (the manifest's killed_at)

    @property
    def status(self) -> str:
        if self.live is not None:
            if self.job is not None and self.job.status.is_final():
                return STALE  # the job ended and left its lock: `invoke verify --fix` clears it
            return str(self.live["status"])
        if self.summary is not None and self.summary.status != UNKNOWN:
            return self.summary.status
        if self.submission != "submitted":
            return self.submission  # skipped, failed (SubmitJob), planned (never submitted)
        if self.killed:
            return "killed"  # stopped before it wrote records (a job cancelled while queued)
        if self.job is None:
            return UNKNOWN
        if self.job.status.is_active():
            return "queued" if self.job.status.cancels() else "starting"
        return "cancelled" if self.job.status.value == "FAILED" and self.job.attempts == 0 else "failed"

    @property
    def ended(self) -> bool:
        return self.status in ENDED or self.submission in ("skipped", "failed", "planned")

    @property
    def cost_usd(self) -> float | None:
        return None if self.summary is None else self.summary.cost_usd

    @property
    def step(self) -> tuple[int, int] | None:
        if self.live is None:
            return None
        progress = self.live.get("progress") or {}
        return int(progress.get("step") or 0), int(progress.get("total_steps") or 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "number": self.number,
            "point": dict(self.point),
            "submission": self.submission,
            "status": self.status,
            "state": str(self.live["status"]) if self.live else None,
            "job_id": self.job_id,
            "job_status": self.job.status.value if self.job else None,
            "job_reason": self.job.reason if self.job else None,
            "job_attempts": self.job.attempts if self.job else None,
            "step": list(self.step) if self.step else None,
            "cost_usd": self.cost_usd,
            "metrics": dict(self.summary.metrics) if self.summary else {},
        }


@dataclass(frozen=True, kw_only=True)
class SweepView:
    """A sweep and every member, as read at one moment."""

    env: str
    sweep_id: str
    manifest: Mapping[str, Any] = field(repr=False)
    members: tuple[MemberView, ...]

    @property
    def killed(self) -> bool:
        return bool(self.manifest.get("killed_at"))

    @property
    def done(self) -> bool:
        return all(m.ended for m in self.members)

    @property
    def cost_usd(self) -> float:
        return round(sum(m.cost_usd or 0.0 for m in self.members), 4)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.members:
            out[m.status] = out.get(m.status, 0) + 1
        return dict(sorted(out.items()))

    @property
    def exit_code(self) -> ExitCode:
        """OK while running or when every member succeeded; KILLED for a killed sweep; else FAILED."""
        if not self.done or all(m.status == SUCCEEDED for m in self.members):
            return ExitCode.OK
        return ExitCode.KILLED if self.killed else ExitCode.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "sweep_id": self.sweep_id,
            "submitted_at": self.manifest.get("submitted_at"),
            "killed_at": self.manifest.get("killed_at"),
            "keys": list(self.manifest.get("keys", [])),
            "done": self.done,
            "counts": self.counts(),
            "cost_usd": self.cost_usd,
            "members": [m.to_dict() for m in self.members],
        }


def read_manifest(s3: Any, bucket: str, env: str, sweep_id: str) -> dict[str, Any] | None:
    """The sweep's manifest, validated; ``None`` when the env has no such sweep.

    Raises:
        DocumentError: the manifest is not a valid sweep document.
    """
    return get_json(s3, bucket, layout.sweep_manifest_key(env, sweep_id), "sweep")


def sweep_ids(s3: Any, bucket: str, env: str) -> list[str]:
    """Every sweep id of ``env``, oldest first."""
    found = []
    for prefix in common_prefixes(s3, bucket, layout.sweeps_root(env)):
        name = prefix.rstrip("/").rsplit("/", 1)[-1]
        try:
            layout.parse_sweep_id(name)
        except layout.LayoutError:
            continue
        found.append(name)
    return sorted(found)


def view_of(
    s3: Any, batch: Any, bucket: str, env: str, manifest: Mapping[str, Any], *, clock: Clock = utc_now
) -> SweepView:
    """Every member's state, records and job, read now."""
    entries = list(manifest["members"])
    jobs = describe_jobs(batch, [e["job_id"] for e in entries if e.get("job_id")])
    members = []
    for entry in entries:
        run_id = entry["run_id"]
        snap = StateStore(s3, bucket, env, run_id=run_id).read()
        live = snap.doc if snap is not None else None
        summary = (
            None if entry["submission"] != "submitted" else read_run(s3, bucket, env, run_id, clock=clock)
        )
        killed = bool(manifest.get("killed_at"))
        if live is None and summary is not None and summary.status == UNKNOWN and not killed:
            paths = layout.RunPaths(env=env, run_id=run_id)
            cleanup = get_json(s3, bucket, paths.cleanup_status, "cleanup-status") or {}
            killed = cleanup.get("written_by") == "control"  # invoke kill --run-id stopped it first
        members.append(
            MemberView(
                run_id=run_id,
                number=entry["number"],
                point=entry["point"],
                submission=entry["submission"],
                job_id=entry.get("job_id"),
                job=jobs.get(entry.get("job_id") or ""),
                live=live,
                summary=summary,
                killed=killed,
            )
        )
    return SweepView(env=env, sweep_id=manifest["sweep_id"], manifest=manifest, members=tuple(members))


def sweep_view(backend: Backend, *, env: str, sweep_id: str, clock: Clock = utc_now) -> SweepView:
    """``invoke monitor --sweep ID`` once: the sweep as it stands.

    Raises:
        ConfigError: a bad sweep id, or none such in the env (with how to list them).
    """
    from common.errors import ConfigError

    check_env(env)
    try:
        layout.parse_sweep_id(sweep_id)
    except layout.LayoutError as exc:
        raise ConfigError(f"--sweep: {exc}") from None
    outputs = backend.stack_outputs(env)
    s3 = backend.clients().s3
    key = layout.sweep_manifest_key(env, sweep_id)
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{key}"):
        manifest = read_manifest(s3, outputs.bucket, env, sweep_id)
    if manifest is None:
        raise ConfigError(
            f"no sweep {sweep_id} in env {env!r} (no s3://{outputs.bucket}/{key}); "
            f"list the runs with `invoke runs --env={env}` (a member's run id starts with its sweep id)"
        )
    with backend.errors("batch:DescribeJobs", f"the jobs of sweep {sweep_id}"):
        return view_of(s3, backend.client("batch"), outputs.bucket, env, manifest, clock=clock)


def watch_sweep(
    backend: Backend,
    *,
    env: str,
    sweep_id: str,
    follow: bool = False,
    interval_s: float = 5.0,
    sleep: Any = None,
    clock: Clock = utc_now,
) -> Iterator[SweepView]:
    """Yield the sweep's view; with ``follow`` again every ``interval_s`` until every member ended."""
    import time

    pause = sleep or time.sleep
    while True:
        view = sweep_view(backend, env=env, sweep_id=sweep_id, clock=clock)
        yield view
        if not follow or view.done:
            return
        pause(interval_s)

"""Run history from what runs leave in S3: logs, sentinels, launch records, the live state.

A run is known by its log folder ``{env}/logs/{run_id}/`` or its output prefix
``{env}/YYYY/MM/DD-HHMMSS/`` (a launch writes ``user-configs/`` there before the
instance boots, so even a run that died in bootstrap is listed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common import layout
from common import ledger as costs
from common.state_store import StateStore
from common.status import CompletionStatus, RunStatus
from common.timeutil import Clock, parse_iso, utc_now
from control.backend import Backend, check_env
from control.run_facts import launch_facts as _launch_facts
from control.run_facts import quiet_json as _quiet_json
from control.run_facts import volume_gb
from control.s3io import DocumentError, common_prefixes, get_json

SUCCEEDED = "succeeded"
FAILED_UPLOAD = "failed_upload"  # the sentinel status of _FAILED_UPLOAD
_COMPLETION_TO_STATUS = {
    CompletionStatus.NORMAL: SUCCEEDED,
    CompletionStatus.FAILED: "failed",
    CompletionStatus.KILLED: "killed",
    CompletionStatus.INTERRUPTED: "interrupted",
}
UNKNOWN = "unknown"


def status_of_completion(completion: str | None) -> str:
    """The history status of a run that ended with ``completion`` (``unknown`` for anything else)."""
    try:
        return _COMPLETION_TO_STATUS[CompletionStatus(completion)]
    except ValueError:
        return UNKNOWN


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One run as the history shows it.

    ``status`` is ``succeeded | failed | killed | interrupted`` for an ended run,
    the live state (``training`` ...) for the active one, ``unknown`` when the
    run left no log and ``invalid`` when its log fails the schema. ``reason`` is
    why it ended, as its sentinel says (completed, spot notice, max runtime ...).
    """

    run_id: str
    env: str
    status: str
    active: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    instance_id: str | None = None
    instance_type: str | None = None
    market: str | None = None
    price_per_hour: float | None = None
    exit_code: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    last_error: str | None = None
    problem: str | None = None
    reason: str | None = None
    ledger: dict[str, Any] | None = None  # training.json's ledger, or the live run's priced so far
    interruptions: list[dict[str, Any]] = field(default_factory=list)
    # training.json's evaluation: did the fine-tuned model beat the base (zero-shot) on validation
    # (None: not measured, or a run from before validation), what models/ holds, the best step
    beats_zero_shot: bool | None = None
    exported: str | None = None  # "fine_tuned" | "base"
    best_step: int | None = None
    early_stopped: bool = False
    stopped_at_step: int | None = None
    sweep_id: str | None = None  # the sweep this run is a member of (its run id is {sweep_id}-NNN)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max((self.ended_at - self.started_at).total_seconds(), 0.0)

    @property
    def cost_usd(self) -> float | None:
        """The ledger's total; for a run without one, its price times its duration (an estimate)."""
        if self.ledger is not None:
            return float(self.ledger["total_usd"])
        if self.duration_s is None or self.price_per_hour is None:
            return None
        return round(self.price_per_hour * self.duration_s / 3600.0, 4)

    @property
    def savings_usd(self) -> float | None:
        return None if self.ledger is None else float(self.ledger["savings_usd"])

    @property
    def attempts(self) -> int:
        return len(self.ledger["attempts"]) if self.ledger else (1 if self.instance_id else 0)

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def zero_shot_wql(self) -> float | None:  # the base model's test WQL
        return _number(self.metrics.get("zero_shot_wql"))

    @property
    def val_wql(self) -> float | None:  # the best fine-tuned validation WQL
        return _number(self.metrics.get("val_wql"))

    @property
    def zero_shot_val_wql(self) -> float | None:
        return _number(self.metrics.get("zero_shot_val_wql"))

    @property
    def versus_base(self) -> str | None:
        """One sentence on the fine-tuned model against the base on validation (None: not measured)."""
        return versus_base(
            self.beats_zero_shot,
            val_wql=self.val_wql,
            zero_shot_val_wql=self.zero_shot_val_wql,
            exported=self.exported,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "env": self.env,
            "status": self.status,
            "active": self.active,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_s": self.duration_s,
            "instance_id": self.instance_id,
            "instance_type": self.instance_type,
            "market": self.market,
            "price_per_hour": self.price_per_hour,
            "cost_usd": self.cost_usd,
            "exit_code": self.exit_code,
            "metrics": self.metrics,
            "errors": self.errors,
            "last_error": self.last_error,
            "problem": self.problem,
            "reason": self.reason,
            "attempts": self.attempts,
            "savings_usd": self.savings_usd,
            "ledger": self.ledger,
            "interruptions": self.interruptions,
            "zero_shot_wql": self.zero_shot_wql,
            "val_wql": self.val_wql,
            "zero_shot_val_wql": self.zero_shot_val_wql,
            "beats_zero_shot": self.beats_zero_shot,
            "exported": self.exported,
            "best_step": self.best_step,
            "early_stopped": self.early_stopped,
            "stopped_at_step": self.stopped_at_step,
            "versus_base": self.versus_base,
            "sweep_id": self.sweep_id,
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def versus_base(
    beats: bool | None,
    *,
    val_wql: float | None,
    zero_shot_val_wql: float | None,
    exported: str | None,
) -> str | None:
    """The fine-tuned model against the base (zero-shot) on validation, in one sentence; ``None``
    when not measured (``beats``: ``evaluation.beats_zero_shot``, ``exported``: what models/ holds)."""
    if beats is None:
        return None
    scores = (
        f": WQL {val_wql:.4f} vs {zero_shot_val_wql:.4f}"
        if val_wql is not None and zero_shot_val_wql is not None
        else ""
    )
    if beats:
        return f"the fine-tuned model beats the base model (zero-shot) on validation{scores}"
    held = (
        "the base model (keep_base_if_worse)"
        if exported == "base"
        else "the fine-tuned model anyway (set keep_base_if_worse = true to export the base)"
    )
    return (
        f"the fine-tuned model does NOT beat the base model (zero-shot) on validation{scores}; "
        f"models/ holds {held}"
    )


def run_ids(s3: Any, bucket: str, env: str) -> list[str]:
    """Every run id of ``env`` found in S3, oldest first."""
    ids: set[str] = set()
    for prefix in common_prefixes(s3, bucket, layout.logs_root(env)):
        ids.add(prefix.rstrip("/").rsplit("/", 1)[1])
    for year in common_prefixes(s3, bucket, f"{env}/"):
        if not year.rstrip("/").rsplit("/", 1)[1].isdigit():
            continue
        for month in common_prefixes(s3, bucket, year):
            for run in common_prefixes(s3, bucket, month):
                try:
                    ids.add(layout.RunPaths.from_prefix(run).run_id)
                except layout.LayoutError:
                    continue
    valid = []
    for run_id in ids:
        try:
            layout.parse_run_id(run_id)
        except layout.LayoutError:
            continue
        valid.append(run_id)
    return sorted(valid)


def read_run(
    s3: Any,
    bucket: str,
    env: str,
    run_id: str,
    *,
    state: dict[str, Any] | None = None,
    clock: Clock = utc_now,
) -> RunSummary:
    """Summarise one run from its documents (``state``: the live state if it is this run's; a
    sweep member's own state file is read here)."""
    paths = layout.RunPaths(env=env, run_id=run_id)
    base = {**_launch_facts(s3, bucket, paths), "sweep_id": paths.sweep_id}
    if paths.sweep_id is not None and (state is None or state.get("run_id") != run_id):
        snap = StateStore(s3, bucket, env, run_id=run_id).read()
        state = snap.doc if snap is not None else None
    if state is not None and state.get("run_id") == run_id:
        return _live(base, state, clock, volume_gb=volume_gb(s3, bucket, paths))
    try:
        training = get_json(s3, bucket, paths.training_log, "training")
        sentinel = read_sentinel(s3, bucket, paths)
    except DocumentError as exc:
        return RunSummary(**base, status="invalid", problem=str(exc))
    cleanup = _quiet_json(s3, bucket, paths.cleanup_status, "cleanup-status")
    ended = _ended_at(training, sentinel, cleanup)
    if training is not None:
        return _from_training(base, training, sentinel, ended)
    if sentinel is not None:
        return RunSummary(
            **base,
            **_sentinel_facts(sentinel),
            status=status_of_completion(sentinel["completion_status"]),
            ended_at=ended,
            exit_code=sentinel.get("exit_code"),
        )
    if cleanup and cleanup.get("written_by") == "recovery" and cleanup.get("reason"):
        # the recovery handler ended a run whose instance died before it wrote any log
        return RunSummary(
            **base,
            status=status_of_completion("failed"),
            ended_at=ended,
            problem=f"ended by the recovery handler: {cleanup['reason']}; its checkpoints stay: "
            f"`invoke launch --env={env} --resume {run_id}` continues it",
        )
    return RunSummary(
        **base,
        status=UNKNOWN,
        ended_at=ended,
        problem="no training.json or _SUCCESS: the run ended before it wrote its logs"
        if cleanup
        else "no log yet",
    )


def read_sentinel(s3: Any, bucket: str, paths: layout.RunPaths) -> dict[str, Any] | None:
    """The run's ``_SUCCESS``, else its ``_FAILED_UPLOAD`` (the same shape), validated; ``None``: neither.

    Raises:
        DocumentError: the sentinel fails schema ``sentinel``.
    """
    for key in (paths.success, paths.failed_upload):
        doc = get_json(s3, bucket, key, "sentinel")
        if doc is not None:
            return doc
    return None


def _sentinel_facts(sentinel: dict[str, Any] | None) -> dict[str, Any]:
    """Why the run ended, and (``_FAILED_UPLOAD``) that its artifacts are incomplete."""
    if sentinel is None:
        return {}
    facts: dict[str, Any] = {"reason": sentinel["reason"]}
    if sentinel["status"] == FAILED_UPLOAD:
        facts["problem"] = f"_FAILED_UPLOAD: the run's artifacts are incomplete: {sentinel['reason']}"
    return facts


def live_ledger(state: dict[str, Any], *, volume_gb: float, now: datetime) -> dict[str, Any] | None:
    """The active run's attempts priced up to ``now`` (``None`` before any attempt is recorded)."""
    attempts = costs.attempts_of(state)
    if not attempts:
        return None
    return costs.ledger(attempts, volume_gb=volume_gb, now=now).to_dict()


def _live(base: dict[str, Any], state: dict[str, Any], clock: Clock, *, volume_gb: float) -> RunSummary:
    err = state.get("last_error") or {}
    now = clock()
    return RunSummary(
        **{
            **base,
            "instance_id": state.get("instance_id") or base.get("instance_id"),
            "instance_type": state.get("instance_type") or base.get("instance_type"),
            "price_per_hour": state.get("price_per_hour", base.get("price_per_hour")),
            "market": state.get("market"),
        },
        status=str(state["status"]),
        active=True,
        ended_at=now,
        last_error=err.get("message"),
        ledger=live_ledger(state, volume_gb=volume_gb, now=now),
    )


def _from_training(
    base: dict[str, Any], training: dict[str, Any], sentinel: dict[str, Any] | None, ended: datetime | None
) -> RunSummary:
    completion = training.get("completion_status") or (sentinel or {}).get("completion_status")
    errors = training.get("errors", [])
    inst = training.get("instance", {})
    return RunSummary(
        **{
            **base,
            "instance_id": base.get("instance_id") or inst.get("instance_id"),
            "instance_type": base.get("instance_type") or inst.get("instance_type"),
            "market": base.get("market") or inst.get("market"),
        },
        **_sentinel_facts(sentinel),
        status=status_of_completion(completion),
        ended_at=ended,
        exit_code=training.get("exit_code"),
        metrics=dict(training.get("metrics", {})),
        errors=len(errors),
        last_error=errors[-1]["message"] if errors else None,
        ledger=training.get("ledger"),
        interruptions=list(training.get("interruptions") or []),
        **_evaluation_facts(training.get("evaluation")),
    )


def _evaluation_facts(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The summary's fields from training.json's ``evaluation`` (none for a run without one)."""
    if not isinstance(evaluation, dict):
        return {}
    val = evaluation.get("validation") or {}
    return {
        "beats_zero_shot": evaluation.get("beats_zero_shot"),
        "exported": evaluation.get("exported"),
        "best_step": val.get("best_step"),
        "early_stopped": bool(val.get("early_stopped")),
        "stopped_at_step": val.get("stopped_at_step"),
    }


def _ended_at(
    training: dict[str, Any] | None, sentinel: dict[str, Any] | None, cleanup: dict[str, Any] | None
) -> datetime | None:
    for doc, key in ((cleanup, "completed_at"), (training, "ended_at"), (sentinel, "finalized_at")):
        if doc and doc.get(key):
            return parse_iso(doc[key])
    return None


def list_runs(backend: Backend, *, env: str, limit: int = 20, clock: Clock = utc_now) -> list[RunSummary]:
    """``invoke runs``: the newest ``limit`` runs of ``env``, newest first."""
    check_env(env)
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    s3 = backend.clients().s3
    with backend.errors("s3:ListBucket", f"s3://{outputs.bucket}/{env}/"):
        snap = StateStore(s3, outputs.bucket, env).read()
        ids = run_ids(s3, outputs.bucket, env)
        if snap is not None and snap.run_id not in ids:
            ids.append(snap.run_id)
        state = snap.doc if snap else None
        return [
            read_run(s3, outputs.bucket, env, r, state=state, clock=clock)
            for r in sorted(ids, reverse=True)[:limit]
        ]


def is_live(status: str) -> bool:
    """True for a status the state file holds while the run is going."""
    return status in {s.value for s in RunStatus}

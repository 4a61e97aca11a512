"""A sweep member as an AWS Batch job: its identity, its attempts in the member's own state, no poweroff."""

from __future__ import annotations

from typing import Any

import pytest

from common import attempts as att
from common.layout import RunPaths
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import CompletionStatus, Market, RunStatus
from trainer import batch_job, startup
from trainer.context import Deps, RunContext, RunOptions
from trainer.errors import TerminalError
from trainer.instance import BatchOwnsTheHost, IMDSError, InstanceIdentity, select_poweroff
from trainer.lifecycle import EndPlan

RUN_ID = "20261201-210000-002"
NOW = "2026-12-01T21:00:00Z"


class NoIMDS:
    """What a container without a reachable IMDS sees (local mode)."""

    def identity(self) -> InstanceIdentity:
        raise IMDSError("IMDSv2 token request to http://127.0.0.1:9 failed: connection refused")

    def spot_action(self) -> dict[str, Any] | None:
        raise AssertionError("no spot poll without IMDS")

    rebalance = spot_action


class HostIMDS:
    """A Batch host's IMDS, reached from the container (hop limit 2)."""

    def __init__(self, notice: dict[str, Any] | None = None) -> None:
        self.notice = notice

    def identity(self) -> InstanceIdentity:
        return InstanceIdentity(
            instance_id="i-0batchhost",
            instance_type="g5.xlarge",
            availability_zone="us-east-1b",
            market=Market.SPOT,
        )

    def spot_action(self) -> dict[str, Any] | None:
        return self.notice

    def rebalance(self) -> dict[str, Any] | None:
        return None


def _environ(monkeypatch: pytest.MonkeyPatch, attempt: int, attempts: int = 3) -> None:
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "0f9c-job")
    monkeypatch.setenv("AWS_BATCH_JOB_ATTEMPT", str(attempt))
    monkeypatch.setenv("AWS_BATCH_CE_NAME", "chronos-dev-batch-spot")
    monkeypatch.setenv("CHRONOS_BATCH_ATTEMPTS", str(attempts))
    monkeypatch.setenv("CHRONOS_INSTANCE_TYPE", "g5.xlarge")


def _ctx(local_aws: Any, bucket: str, imds: Any) -> RunContext:
    opts = RunOptions(
        bucket=bucket, env="dev", run_id=RUN_ID, endpoint_url=local_aws.endpoint_url, batch=True
    )
    return RunContext(opts, Deps(imds=imds))


def _lock(local_aws: Any, bucket: str) -> StateStore:
    store = StateStore(local_aws.client("s3"), bucket, "dev", run_id=RUN_ID)
    doc = new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=100, now=NOW)
    store.acquire({**doc, **att.policy(max_recoveries=0, max_runtime_minutes=60)})
    return store


def test_the_first_attempt_records_itself_in_the_members_own_state(local_aws, bucket, monkeypatch):
    _environ(monkeypatch, attempt=1)
    store = _lock(local_aws, bucket)
    ctx = _ctx(local_aws, bucket, NoIMDS())
    startup.identify(ctx)
    doc = store.read().doc
    assert store.key == RunPaths(env="dev", run_id=RUN_ID).state == ctx.store.key
    assert store.key.startswith("dev/sweeps/20261201-210000/runs/")
    assert doc["status"] == "initialization" and doc["instance_id"] == "batch:0f9c-job"
    [attempt] = doc["attempts"]
    assert (attempt["attempt"], attempt["market"], attempt["instance_type"]) == (1, "spot", "g5.xlarge")
    assert attempt["price_source"] == "on-demand-table"  # an upper bound: the job may not read spot prices
    assert not ctx.attempt.resumed_recovery
    assert ctx.imds.spot_action() is None  # no IMDS: no spot poll (and no error every 2 s)


def _previous_attempt_ended(store: StateStore, status: RunStatus, instance_id: str = "i-0gone") -> None:
    def mutate(doc):
        first = att.new_attempt(
            attempt=1,
            instance_id=instance_id,
            instance_type="g5.xlarge",
            market="spot",
            availability_zone="us-east-1a",
            price_per_hour=1.0,
            price_source="on-demand-table",
            launched_at=NOW,
        )
        return att.add_attempt(doc, first)

    store.update(RUN_ID, mutate)
    store.transition(RUN_ID, RunStatus.DATA_SYNC)
    store.transition(RUN_ID, RunStatus.TRAINING)
    if status is not RunStatus.TRAINING:
        store.transition(RUN_ID, status, reason="spot interruption notice")


@pytest.mark.parametrize(
    ("left", "end"), [(RunStatus.INTERRUPTED, "interrupted"), (RunStatus.TRAINING, "vanished")]
)
def test_a_retried_job_takes_the_run_over_and_resumes_it(local_aws, bucket, monkeypatch, left, end):
    """Attempt 2 finds attempt 1's state (interrupted with the lock kept, or a host that vanished
    mid-training): it claims it, records itself, and the run is back at initialization."""
    _environ(monkeypatch, attempt=2)
    store = _lock(local_aws, bucket)
    _previous_attempt_ended(store, left)
    ctx = _ctx(local_aws, bucket, HostIMDS())
    startup.identify(ctx)
    doc = store.read().doc
    assert doc["status"] == "initialization"
    assert [s["status"] for s in doc["history"]][-2:] == ["recovering", "initialization"]
    assert doc["recoveries"] == 1 and doc["attempt"] == 2 and doc["instance_id"] == "i-0batchhost"
    assert [a["end"] for a in doc["attempts"]] == [end, None]
    assert [h["reason"] for h in doc["history"] if h["status"] == "recovering"] == ["instance-ended"]
    assert ctx.attempt.resumed_recovery and ctx.attempt.number == 2


def test_a_retry_of_a_killed_run_has_nothing_to_resume(local_aws, bucket, monkeypatch):
    _environ(monkeypatch, attempt=2)
    store = _lock(local_aws, bucket)
    _previous_attempt_ended(store, RunStatus.TRAINING)
    store.request_kill(RUN_ID, reason="killed by operator")
    with pytest.raises(TerminalError, match="is killed: Batch attempt 2 has nothing to resume"):
        startup.identify(_ctx(local_aws, bucket, HostIMDS()))


def test_without_a_batch_job_id_the_run_stops_in_one_line(local_aws, bucket, monkeypatch):
    monkeypatch.delenv("AWS_BATCH_JOB_ID", raising=False)
    _lock(local_aws, bucket)
    with pytest.raises(TerminalError, match="--batch needs AWS_BATCH_JOB_ID"):
        startup.identify(_ctx(local_aws, bucket, NoIMDS()))


def test_the_host_imds_gives_identity_and_spot_notices_inside_the_container() -> None:
    notice = {"action": "terminate", "time": "2026-12-01T21:30:00Z"}
    job = batch_job.BatchJob(
        job_id="j",
        attempt=1,
        attempts=3,
        compute_environment="chronos-dev-batch-spot",
        instance_type="g5.xlarge",
    )
    metadata = batch_job.BatchMetadata(HostIMDS(notice), job)
    assert metadata.identity().instance_id == "i-0batchhost"
    assert metadata.spot_action() == notice


def _interrupted() -> EndPlan:
    return EndPlan(completion=CompletionStatus.INTERRUPTED, reason="spot", why="spot", recoverable=False)


def test_an_interruption_keeps_the_lock_only_while_batch_has_an_attempt_left() -> None:
    from common.state_doc import Snapshot

    snap = Snapshot({"run_id": RUN_ID, "status": "interrupted"}, "etag")
    second = batch_job.BatchJob(
        job_id="j", attempt=2, attempts=3, compute_environment="x-spot", instance_type="t"
    )
    assert (
        batch_job.keep_lock(snap, _interrupted(), second, RUN_ID)
        == "left for AWS Batch's retry (attempt 3 of 3)"
    )
    last = batch_job.BatchJob(
        job_id="j", attempt=3, attempts=3, compute_environment="x-spot", instance_type="t"
    )
    plan = batch_job.plan_ending(_interrupted(), last, RUN_ID)
    assert plan.completion is CompletionStatus.FAILED and plan.exhausted
    assert plan.reason == f"interrupted on the last of AWS Batch's 3 attempts of run {RUN_ID}"
    assert batch_job.keep_lock(snap, plan, last, RUN_ID) is None
    assert batch_job.plan_ending(_interrupted(), second, RUN_ID) == _interrupted()


def test_a_batch_job_never_powers_off(monkeypatch) -> None:
    ran = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: ran.append(a))
    poweroff = select_poweroff(local=False, ec2=None, batch=True)
    assert isinstance(poweroff, BatchOwnsTheHost)
    result = poweroff("i-0batchhost")
    assert result.succeeded and result.method == "none (AWS Batch owns the host)" and ran == []


def test_without_imds_a_retry_on_the_same_job_identity_still_takes_over(local_aws, bucket, monkeypatch):
    """Locally every attempt of a job is ``batch:<job id>``: attempt 2 must not take attempt 1's
    record for its own (it did, and the run then failed 'illegal transition training -> data_sync')."""
    _environ(monkeypatch, attempt=2)
    store = _lock(local_aws, bucket)
    _previous_attempt_ended(store, RunStatus.TRAINING, instance_id="batch:0f9c-job")
    startup.identify(_ctx(local_aws, bucket, NoIMDS()))
    doc = store.read().doc
    assert doc["status"] == "initialization" and doc["attempt"] == 2 and doc["recoveries"] == 1
    assert [a["end"] for a in doc["attempts"]] == ["vanished", None]

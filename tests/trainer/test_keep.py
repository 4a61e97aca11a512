"""trainer.keep: a failed instance stays up keep_on_failure minutes, and no longer than it may."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.runspec import from_dict
from common.status import CompletionStatus
from trainer.instance import PoweroffResult
from trainer.keep import KeepOnFailure, KeptRun, WaitEnds, connect_hint, for_run

INSTANCE = "i-0aaaaaaaaaaaaaaaa"


class FakeTime:
    """A monotonic clock that only ``sleep`` advances."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class RecordingPoweroff:
    name: str = "api"
    calls: list[tuple[str | None, float]] = field(default_factory=list)
    clock: FakeTime | None = None

    def __call__(self, instance_id: str | None) -> PoweroffResult:
        self.calls.append((instance_id, self.clock.now if self.clock else 0.0))
        return PoweroffResult(succeeded=True, method="ec2:TerminateInstances")


@dataclass
class Snap:
    doc: dict[str, Any]


class FakeStore:
    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.fail = False

    def read(self) -> Snap | None:
        if self.fail:
            raise RuntimeError("S3 is down")
        return Snap(self.doc) if self.doc is not None else None


class FakeEc2:
    def __init__(self) -> None:
        self.state = "running"
        self.fail = False

    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803
        if self.fail:
            raise RuntimeError("throttled")
        instance = {"InstanceId": InstanceIds[0], "State": {"Name": self.state}}
        return {"Reservations": [{"Instances": [instance]}]}


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def world(clock: FakeTime) -> tuple[FakeStore, FakeEc2, RecordingPoweroff]:
    return FakeStore(), FakeEc2(), RecordingPoweroff(clock=clock)


def keeper(
    clock: FakeTime, world: tuple, *, minutes: float = 30, until: float | None = None, on_poll: Any = None
) -> KeepOnFailure:
    store, ec2, inner = world
    ends = WaitEnds(store=store, ec2=ec2, run_id="20260101-000000")

    def checking(instance_id: str | None) -> str | None:
        if on_poll is not None:
            on_poll(clock.now)
        return ends(instance_id)

    return KeepOnFailure(
        inner=inner,
        minutes=minutes,
        until=until,
        ends=checking,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        poll_s=15.0,
    )


def test_a_failed_instance_stays_up_keep_on_failure_minutes_then_powers_off(clock, world) -> None:
    keep = keeper(clock, world, minutes=30)
    result = keep(INSTANCE)
    inner = world[2]
    assert result.succeeded
    assert inner.calls == [(INSTANCE, 1000.0 + 30 * 60)]
    assert keep.waited_s == 30 * 60
    assert keep.ended_by == "keep_on_failure elapsed"
    assert max(clock.sleeps) <= 15.0  # it keeps looking for a kill or a terminate
    assert "keep_on_failure 30 min" in keep.name and keep.name.startswith("api")


def test_the_wait_never_outlasts_the_max_runtime_deadline(clock, world) -> None:
    keep = keeper(clock, world, minutes=30, until=1000.0 + 600)
    keep(INSTANCE)
    assert world[2].calls == [(INSTANCE, 1600.0)]
    assert keep.ended_by == "max runtime"


def test_a_deadline_already_past_powers_off_at_once(clock, world) -> None:
    keep = keeper(clock, world, minutes=30, until=900.0)
    keep(INSTANCE)
    assert world[2].calls == [(INSTANCE, 1000.0)]
    assert clock.sleeps == []


def test_a_kill_in_the_state_file_ends_the_wait(clock, world) -> None:
    store = world[0]

    def kill_after_two_minutes(now: float) -> None:
        if now >= 1120:
            store.doc = {"run_id": "20260101-000000", "status": "killed"}

    keep = keeper(clock, world, on_poll=kill_after_two_minutes)
    keep(INSTANCE)
    assert world[2].calls == [(INSTANCE, 1120.0)]
    assert keep.ended_by == "the run was killed"


def test_another_runs_state_does_not_end_the_wait(clock, world) -> None:
    world[0].doc = {"run_id": "20260102-000000", "status": "killed"}
    keep = keeper(clock, world, minutes=2)
    keep(INSTANCE)
    assert keep.ended_by == "keep_on_failure elapsed"


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "stopping", "stopped"])
def test_a_terminated_instance_ends_the_wait(clock, world, state: str) -> None:
    ec2 = world[1]

    def terminate_after_a_minute(now: float) -> None:
        if now >= 1060:
            ec2.state = state

    keep = keeper(clock, world, on_poll=terminate_after_a_minute)
    keep(INSTANCE)
    assert world[2].calls == [(INSTANCE, 1060.0)]
    assert keep.ended_by == f"instance {INSTANCE} is {state}"


def test_failing_checks_neither_end_the_wait_nor_crash_the_poweroff(clock, world) -> None:
    world[0].fail = world[1].fail = True
    keep = keeper(clock, world, minutes=1)
    assert keep(INSTANCE).succeeded
    assert keep.ended_by == "keep_on_failure elapsed"


# ------------------------------------------------------------------ for_run


def _spec(**instance: Any) -> Any:
    return from_dict({"instance": instance})


@pytest.mark.parametrize(
    "completion", [CompletionStatus.NORMAL, CompletionStatus.KILLED, CompletionStatus.INTERRUPTED]
)
def test_only_failed_runs_are_kept(world, completion: CompletionStatus) -> None:
    store, ec2, inner = world
    wrapped = for_run(
        inner,
        spec=_spec(debug=True),
        completion=completion,
        run=KeptRun(store=store, ec2=ec2, run_id="r", env="dev", region="us-east-1"),
        until=None,
    )
    assert wrapped is inner


def test_no_keep_time_or_no_spec_powers_off_at_once(world) -> None:
    store, ec2, inner = world
    common = {
        "completion": CompletionStatus.FAILED,
        "run": KeptRun(store=store, ec2=ec2, run_id="r", env="dev", region="us-east-1"),
        "until": None,
    }
    assert for_run(inner, spec=_spec(), **common) is inner  # debug off: keep 0
    assert for_run(inner, spec=None, **common) is inner  # the spec never loaded


def test_a_failed_debug_run_is_kept_and_says_how_to_connect(clock, world, caplog) -> None:
    store, ec2, inner = world
    caplog.set_level(logging.INFO, logger="trainer.keep")
    wrapped = for_run(
        inner,
        spec=_spec(debug=True),
        completion=CompletionStatus.FAILED,
        run=KeptRun(store=store, ec2=ec2, run_id="20260101-000000", env="dev", region="eu-west-1"),
        until=None,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    assert isinstance(wrapped, KeepOnFailure) and wrapped.minutes == 30
    wrapped(INSTANCE)
    text = caplog.text
    assert "stays up 30 min" in text
    assert f"aws ssm start-session --target {INSTANCE} --region eu-west-1" in text
    assert "invoke debug 20260101-000000 --env=dev" in text
    assert inner.calls == [(INSTANCE, 1000.0 + 1800)]


def test_the_connect_line_without_debug_or_locally_points_at_the_console() -> None:
    plain = connect_hint(run_id="r1", env="dev", region="us-east-1", debug=False)(INSTANCE)
    assert "invoke logs r1 --env=dev --console" in plain and "ssm" not in plain
    local = connect_hint(run_id="r1", env="dev", region="us-east-1", debug=True, local=True)(INSTANCE)
    assert "--console --local" in local

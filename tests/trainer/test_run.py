"""The driver's truths: phase names agree with the state machine; exit codes are common/exitcodes.py's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from common.exitcodes import ExitCode
from common.status import CompletionStatus, Phase, RunStatus
from trainer import training
from trainer.errors import TerminalError
from trainer.run import PHASES
from trainer.stopping import Stopped, StopRequest, StopSwitch


def test_a_phase_named_like_a_status_runs_under_that_status():
    for phase in Phase:
        if phase.value in RunStatus.__members__.values():
            assert phase.run_status is RunStatus(phase.value), phase
    assert Phase.PREFLIGHT.run_status is RunStatus.INITIALIZATION
    assert {Phase.EVALUATION.run_status, Phase.FINALIZE.run_status} == {RunStatus.RESULTS_SYNC}


def test_the_drivers_phases_walk_the_state_machine_in_order():
    """Every status change the driver makes between phases is a legal transition, in the normal order."""
    status, seen = RunStatus.INITIALIZATION, [RunStatus.INITIALIZATION]
    for phase, _body in PHASES:
        if phase.run_status is not status:
            assert status.can_become(phase.run_status) and status.next_phase() is phase.run_status
            status = phase.run_status
            seen.append(status)
    assert seen == [RunStatus.INITIALIZATION, RunStatus.DATA_SYNC, RunStatus.TRAINING, RunStatus.RESULTS_SYNC]
    # finalize records results_sync and finalize next, still under results_sync, then cleanup
    assert Phase.RESULTS_SYNC.run_status is status and status.can_become(RunStatus.CLEANUP)
    assert [p for p, _ in PHASES] + [Phase.RESULTS_SYNC, Phase.FINALIZE, Phase.CLEANUP] == list(Phase)


def test_the_trainer_exits_with_the_common_codes():
    assert {c: int(ExitCode.for_completion(c)) for c in CompletionStatus} == {
        CompletionStatus.NORMAL: 0,
        CompletionStatus.FAILED: 1,
        CompletionStatus.INTERRUPTED: 3,
        CompletionStatus.KILLED: 4,
    }


def _ctx(tmp_path: Path, stop: StopRequest | None = None) -> Any:
    stops = StopSwitch()
    if stop is not None:
        stops.flip(stop)
    return SimpleNamespace(stops=stops, opts=SimpleNamespace(work=tmp_path))


SPOT = StopRequest(status=RunStatus.INTERRUPTED, reason="spot interruption notice", source="spot")


@pytest.mark.parametrize("code", [ExitCode.STOPPED, -15, 143])
def test_a_child_that_stopped_on_request_stops_the_run(tmp_path: Path, code: int):
    with pytest.raises(Stopped) as info:
        training.outcome(_ctx(tmp_path, SPOT), int(code), {})
    assert info.value.stop_status is RunStatus.INTERRUPTED


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (ExitCode.USAGE, "invalid training config: "),
        (ExitCode.BAD_DATA, "invalid training data: "),
        (ExitCode.STOPPED, "training stopped without a stop request: "),
        (ExitCode.FAILED, "training process failed (exit 1): "),
        (-9, "training process failed (exit -9): "),
    ],
)
def test_every_other_child_exit_is_a_terminal_error_that_says_why(tmp_path: Path, code: int, message: str):
    with pytest.raises(TerminalError) as info:
        training.outcome(_ctx(tmp_path), int(code), {"error": "item_000: duplicate timestamp"})
    assert str(info.value) == message + "item_000: duplicate timestamp"
    assert info.value.component == "training" and info.value.details == {"exit_code": int(code)}


def test_a_bad_data_exit_is_terminal_even_after_a_stop_request(tmp_path: Path):
    with pytest.raises(TerminalError, match="invalid training data"):
        training.outcome(_ctx(tmp_path, SPOT), int(ExitCode.BAD_DATA), {})


class _NoIMDS:
    """An injected metadata service that never answers (as when the hop limit is too low)."""

    def identity(self) -> Any:
        from trainer.instance import IMDSError

        raise IMDSError("IMDSv2 token request to http://169.254.169.254 failed: timed out")

    def spot_action(self) -> None:
        return None

    def rebalance(self) -> None:
        return None


class _Poweroff:
    name = "test"

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def __call__(self, instance_id: str | None) -> Any:
        from trainer.instance import PoweroffResult

        self.calls.append(instance_id)
        return PoweroffResult(succeeded=True, method="test")


def test_an_injected_imds_and_clock_drive_the_run_and_a_silent_imds_fails_it_with_logs(
    local_aws: Any, bucket: str, tmp_path: Path, clock: Any
):
    import json

    from common.layout import RunPaths
    from common.timeutil import iso
    from trainer.context import Deps, RunOptions
    from trainer.run import run

    s3, poweroff = local_aws.client("s3"), _Poweroff()
    opts = RunOptions(bucket=bucket, env="dev", run_id="20261125-140502", workdir=tmp_path / "work")
    code = run(opts, Deps(s3=s3, ec2=local_aws.client("ec2"), imds=_NoIMDS(), clock=clock, poweroff=poweroff))
    assert code == ExitCode.FAILED and poweroff.calls == [None]
    paths = RunPaths(env="dev", run_id="20261125-140502")
    training = json.loads(s3.get_object(Bucket=bucket, Key=paths.training_log)["Body"].read())
    [record] = training["errors"][:1]
    assert record["component"] == "identify" and "IMDSv2 token request" in record["message"]
    assert training["started_at"] == training["ended_at"] == iso(clock.now)  # the injected clock
    done = json.loads(s3.get_object(Bucket=bucket, Key=paths.success)["Body"].read())
    assert done["completion_status"] == "failed" and done["exit_code"] == 1
    assert done["reason"].startswith("terminal error in identify: IMDSError: IMDSv2 token request")
    assert done["finalized_at"] == iso(clock.now)


class _Store:
    def __init__(self, doc: dict[str, Any] | None, fail: bool = False) -> None:
        self.doc, self.fail = doc, fail

    def read(self) -> Any:
        if self.fail:
            raise ConnectionError("S3 unreachable")
        return None if self.doc is None else SimpleNamespace(doc=self.doc, run_id=self.doc["run_id"])


@pytest.mark.parametrize(
    ("doc", "fail", "expected"),
    [
        ({"run_id": "20261201-101010", "kill_reason": "killed by alice"}, False, "killed by alice"),
        ({"run_id": "20261201-101010"}, False, None),
        ({"run_id": "20261201-090000", "kill_reason": "another run's"}, False, None),
        (None, False, None),
        (None, True, None),
    ],
)
def test_a_sigterm_after_invoke_kill_ends_with_the_kill_reason(doc: Any, fail: bool, expected: Any):
    """The sentinel of a run killed by `invoke kill` says the kill's reason even when SIGTERM came first."""
    from trainer.transitions import RunState

    state = RunState(store=_Store(doc, fail), run_id="20261201-101010", retrier=None, stops=StopSwitch(),
                     errors=None)  # fmt: skip
    assert state.kill_reason() == expected

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

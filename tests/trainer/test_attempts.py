"""The trainer's side of recovery: the policy, how an attempt ends, what an interruption cost."""

from __future__ import annotations

from common.status import CompletionStatus
from trainer.attempts import Policy, attempt_end, interruption, merge_interruptions


def attempt(n: int, *, launched: str, notice: str | None = None, end: str | None = None) -> dict:
    return {
        "attempt": n,
        "instance_id": f"i-{n:017x}",
        "instance_type": "g5.xlarge",
        "market": "spot",
        "availability_zone": "us-east-1a",
        "price_per_hour": 0.4,
        "price_source": "spot-history",
        "launched_at": launched,
        "ended_at": None,
        "end": end,
        "notice_at": notice,
    }


def test_no_policy_recorded_means_no_recovery_and_no_failure():
    policy = Policy.of({"status": "training"})
    assert not policy.may_recover and not policy.exhausted


def test_recoveries_left_may_recover_and_spent_ones_fail_with_the_count():
    assert Policy.of({"recoveries": 0, "max_recoveries": 1}).may_recover
    spent = Policy.of({"recoveries": 1, "max_recoveries": 1})
    assert spent.exhausted and not spent.may_recover
    assert spent.exhausted_reason() == "interrupted 2 times; max_recoveries is 1"
    assert Policy.of({"recoveries": 3, "max_recoveries": 3}).exhausted_reason() == (
        "interrupted 4 times; max_recoveries is 3"
    )


def test_attempt_end_names_how_the_instance_ended():
    assert attempt_end(CompletionStatus.NORMAL, None) == "completed"
    assert attempt_end(CompletionStatus.INTERRUPTED, "spot") == "interrupted"
    assert attempt_end(CompletionStatus.INTERRUPTED, "max_runtime") == "max_runtime_exceeded"
    assert attempt_end(CompletionStatus.KILLED, "state") == "killed"
    assert attempt_end(CompletionStatus.FAILED, None) == "failed"


def test_the_resuming_attempt_measures_notice_checkpoint_relaunch_and_first_step():
    attempts = [
        attempt(1, launched="2026-11-25T14:00:00Z", notice="2026-11-25T14:10:00Z", end="interrupted"),
        attempt(2, launched="2026-11-25T14:10:30Z"),
    ]
    found = interruption(
        attempts,
        attempt=2,
        checkpoint_durable_at="2026-11-25T14:10:04Z",
        first_resumed_step_at="2026-11-25T14:11:40Z",
        step_reached=260,
        resumed_from_step=260,
    )
    assert found == {
        "attempt": 1,
        "notice_at": "2026-11-25T14:10:00Z",
        "checkpoint_durable_at": "2026-11-25T14:10:04Z",
        "replacement_launched_at": "2026-11-25T14:10:30Z",
        "first_resumed_step_at": "2026-11-25T14:11:40Z",
        "steps_lost": 0,
    }


def test_a_vanished_instance_loses_the_steps_since_its_last_checkpoint():
    attempts = [
        attempt(1, launched="2026-11-25T14:00:00Z", end="vanished"),
        attempt(2, launched="2026-11-25T14:06:00Z"),
    ]
    found = interruption(
        attempts,
        attempt=2,
        checkpoint_durable_at=None,
        first_resumed_step_at=None,
        step_reached=137,
        resumed_from_step=120,
    )
    assert found is not None and found["notice_at"] is None and found["steps_lost"] == 17


def test_the_first_attempt_resumes_from_no_interruption():
    assert (
        interruption(
            [attempt(1, launched="2026-11-25T14:00:00Z")],
            attempt=1,
            checkpoint_durable_at=None,
            first_resumed_step_at=None,
            step_reached=0,
            resumed_from_step=None,
        )
        is None
    )


def test_interruptions_carry_the_earlier_ones_and_replace_a_repeat():
    first = {"attempt": 1, "steps_lost": 0}
    second = {"attempt": 2, "steps_lost": 3}
    assert merge_interruptions([first], second) == [first, second]
    assert merge_interruptions([first, {"attempt": 2, "steps_lost": None}], second) == [first, second]
    assert merge_interruptions([first], None) == [first]

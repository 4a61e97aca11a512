from common.status import CompletionStatus, RunStatus

WORKING = [RunStatus.INITIALIZATION, RunStatus.DATA_SYNC, RunStatus.TRAINING, RunStatus.RESULTS_SYNC]


def test_the_happy_path_is_legal_step_by_step():
    s = RunStatus.INITIALIZATION
    seen = [s]
    while s.next_phase():
        assert s.can_become(s.next_phase())
        s = s.next_phase()
        seen.append(s)
    assert seen[-1] is RunStatus.CLEANUP and seen[-1].is_terminal()


def test_any_working_phase_can_fail_be_killed_or_interrupted_then_only_clean_up():
    """An interrupted run may also be recovered, or failed when it may not recover again."""
    resumable = {RunStatus.INTERRUPTED: {RunStatus.RECOVERING, RunStatus.FAILED}}
    for s in WORKING:
        for stop in (RunStatus.FAILED, RunStatus.KILLED, RunStatus.INTERRUPTED):
            assert s.can_become(stop)
            assert stop.is_final() and not stop.is_terminal()
            expected = {RunStatus.CLEANUP} | resumable.get(stop, set())
            assert {t for t in RunStatus if stop.can_become(t)} == expected


def test_no_going_back_and_no_skipping():
    assert not RunStatus.TRAINING.can_become(RunStatus.DATA_SYNC)
    assert not RunStatus.INITIALIZATION.can_become(RunStatus.TRAINING)
    assert not RunStatus.KILLED.can_become(RunStatus.TRAINING)
    assert not any(RunStatus.CLEANUP.can_become(t) for t in RunStatus)


def test_completion_status_follows_the_stop():
    assert CompletionStatus.from_status(RunStatus.KILLED) is CompletionStatus.KILLED
    assert CompletionStatus.from_status(RunStatus.RESULTS_SYNC) is CompletionStatus.NORMAL


def test_recovering_is_entered_from_any_working_phase_or_interrupted():
    for s in [*WORKING, RunStatus.INTERRUPTED]:
        assert s.can_become(RunStatus.RECOVERING)
    for s in (RunStatus.FAILED, RunStatus.KILLED, RunStatus.CLEANUP):
        assert not s.can_become(RunStatus.RECOVERING)


def test_recovering_leads_only_to_a_fresh_start_failed_or_killed():
    assert [t for t in RunStatus if RunStatus.RECOVERING.can_become(t)] == [
        RunStatus.INITIALIZATION,
        RunStatus.FAILED,
        RunStatus.KILLED,
    ]


def test_recovering_is_neither_working_nor_final():
    """No instance works for it (no heartbeat expected), yet it will train again and kill applies."""
    r = RunStatus.RECOVERING
    assert not r.is_active() and not r.is_final() and not r.is_terminal() and r.is_recovering()
    assert all(s.is_active() and not s.is_final() for s in WORKING)
    assert RunStatus.INTERRUPTED.is_final() and RunStatus.CLEANUP.is_final()

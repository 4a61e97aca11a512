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
    for s in WORKING:
        for stop in (RunStatus.FAILED, RunStatus.KILLED, RunStatus.INTERRUPTED):
            assert s.can_become(stop)
            assert stop.is_final() and not stop.is_terminal()
            assert [t for t in RunStatus if stop.can_become(t)] == [RunStatus.CLEANUP]


def test_no_going_back_and_no_skipping():
    assert not RunStatus.TRAINING.can_become(RunStatus.DATA_SYNC)
    assert not RunStatus.INITIALIZATION.can_become(RunStatus.TRAINING)
    assert not RunStatus.KILLED.can_become(RunStatus.TRAINING)
    assert not any(RunStatus.CLEANUP.can_become(t) for t in RunStatus)


def test_completion_status_follows_the_stop():
    assert CompletionStatus.from_status(RunStatus.KILLED) is CompletionStatus.KILLED
    assert CompletionStatus.from_status(RunStatus.RESULTS_SYNC) is CompletionStatus.NORMAL

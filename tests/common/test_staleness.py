"""The one staleness policy: its thresholds, and which judgement wins."""

from __future__ import annotations

from common.staleness import STALENESS, Stale, StalenessPolicy


def test_the_thresholds_are_the_documented_ones():
    assert (STALENESS.heartbeat_s, STALENESS.no_instance_s, STALENESS.gone_grace_s) == (300.0, 300.0, 20.0)
    assert StalenessPolicy() == STALENESS


def test_each_threshold_is_exclusive_of_a_healthy_age():
    assert not STALENESS.heartbeat_stale(300) and STALENESS.heartbeat_stale(300.5)
    assert not STALENESS.launch_stale(300) and STALENESS.launch_stale(300.5)
    assert not STALENESS.gone_stale(19.9) and STALENESS.gone_stale(20)


def test_a_gone_instance_is_judged_by_its_grace_only():
    judge = STALENESS.judge
    assert judge(instance_id="i-1", gone_for_s=5, since_launch_s=9999, heartbeat_age_s=9999) is None
    assert judge(instance_id="i-1", gone_for_s=20, since_launch_s=0, heartbeat_age_s=0) is Stale.INSTANCE_GONE


def test_no_instance_comes_before_an_old_heartbeat():
    judge = STALENESS.judge
    assert (
        judge(instance_id=None, gone_for_s=None, since_launch_s=301, heartbeat_age_s=9999)
        is Stale.NO_INSTANCE
    )
    assert (
        judge(instance_id=None, gone_for_s=None, since_launch_s=100, heartbeat_age_s=301)
        is Stale.NO_HEARTBEAT
    )
    assert (
        judge(instance_id="i-1", gone_for_s=None, since_launch_s=9999, heartbeat_age_s=301)
        is Stale.NO_HEARTBEAT
    )
    assert judge(instance_id="i-1", gone_for_s=None, since_launch_s=9999, heartbeat_age_s=300) is None


def test_the_heartbeat_threshold_spans_many_beats_of_the_trainer():
    """A run is stale only after ten or more missed beats at the trainer's default interval."""
    from trainer.context import RunOptions

    interval = RunOptions.__dataclass_fields__["heartbeat_interval_s"].default
    assert STALENESS.heartbeat_s >= 10 * interval

"""The local event pump: the events AWS would send the recovery handler, each once."""

from __future__ import annotations

from dataclasses import dataclass

from control.local_recovery import EventSource, Pump
from control.localdir import LocalDir, write_json
from localaws.imds import FakeIMDS


@dataclass
class Seen:
    instance_id: str
    state: str
    env: str | None = "dev"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminated_instance_of_the_env_ends_once_and_others_never():
    source = EventSource(env="dev")
    listing = [Seen("i-1", "running"), Seen("i-2", "terminated"), Seen("i-3", "terminated", env="prod")]
    [event] = source.ended(listing)
    assert (event.kind, event.instance_id, event.env) == ("instance_ended", "i-2", "dev")
    assert event.event_id == "local-instance_ended-i-2"
    assert source.ended(listing) == []  # already sent
    [later] = source.ended([Seen("i-1", "terminated")])
    assert later.instance_id == "i-1"


def test_the_schedule_ticks_at_once_then_every_tick():
    clock = Clock()
    source = EventSource(env="dev", tick_s=5.0, monotonic=clock)
    [first] = source.tick()
    assert first.kind == "schedule" and first.instance_id is None and first.env == "dev"
    assert source.tick() == []
    clock.now += 5.0
    [second] = source.tick()
    assert second.event_id != first.event_id


def test_kinds_left_out_are_never_sent():
    source = EventSource(env="dev", kinds=frozenset({"schedule"}))
    assert source.ended([Seen("i-2", "terminated")]) == [] and source.noticed(["i-2"]) == []
    assert len(source.tick()) == 1


class FakeCloud:
    def __init__(self, listing: list[Seen]) -> None:
        self.listing = listing

    def project_instances(self) -> list[Seen]:
        return self.listing


def test_a_fake_imds_notice_becomes_one_spot_warning_then_the_end_an_instance_ended(tmp_path):
    local_dir = LocalDir(tmp_path)
    handled = []
    with FakeIMDS(instance_id="i-1") as imds:
        write_json(local_dir.instance_file("i-1"), {"instance_id": "i-1", "env": "dev", "imds_url": imds.url})
        cloud = FakeCloud([Seen("i-1", "running")])
        pump = Pump(
            source=EventSource(env="dev", kinds=frozenset({"spot_warning", "instance_ended"})),
            cloud=cloud,
            handle=lambda e: handled.append((e.kind, e.instance_id)) or [],
            local_dir=local_dir,
        )
        assert pump.step() == []
        imds.set_spot_notice()
        pump.step()
        pump.step()
        cloud.listing = [Seen("i-1", "terminated")]
        pump.step()
    assert handled == [("spot_warning", "i-1"), ("instance_ended", "i-1")]


def test_a_failing_handler_does_not_stop_the_pump(tmp_path):
    def boom(event):
        raise RuntimeError("handler bug")

    pump = Pump(
        source=EventSource(env="dev", kinds=frozenset({"schedule"})),
        cloud=FakeCloud([]),
        handle=boom,
        local_dir=LocalDir(tmp_path),
    )
    assert len(pump.step()) == 1

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common import layout
from common.layout import LayoutError, RunPaths


def test_run_id_is_utc_start_time():
    cet = timezone(timedelta(hours=1))
    assert layout.new_run_id(datetime(2026, 11, 25, 15, 5, 2, tzinfo=cet)) == "20261125-140502"
    assert layout.parse_run_id("20261125-140502") == datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2026-11-25", "20261325-140502", "20261125-1405", ""])
def test_bad_run_ids_are_refused_with_the_format(bad):
    with pytest.raises(LayoutError, match="YYYYMMDD-HHMMSS"):
        layout.parse_run_id(bad)


def test_run_keys_follow_the_documented_layout():
    p = RunPaths(env="dev", run_id="20261125-140502")
    assert p.prefix == "dev/2026/11/25-140502/"
    assert p.checkpoints == "dev/2026/11/25-140502/checkpoints/"
    assert p.success == "dev/2026/11/25-140502/_SUCCESS"
    assert p.model_metadata == "dev/2026/11/25-140502/model_metadata.json"
    assert p.training_log == "dev/logs/20261125-140502/training.json"
    assert p.cleanup_status == "dev/logs/20261125-140502/cleanup_status.json"
    assert p.state == layout.state_key("dev") == "dev/system-state.json"
    assert RunPaths.from_prefix(p.models + "model.safetensors") == p


@pytest.mark.parametrize("env", ["Dev", "d", "dev_1", "a" * 17, "1dev", "dev\n"])
def test_bad_env_names_are_refused(env):
    with pytest.raises(LayoutError, match="lowercase"):
        layout.state_key(env)


@pytest.mark.row("records-run-id-distinct")
def test_a_run_id_already_used_in_the_env_is_refused_with_what_to_do():
    from common.errors import UserError

    now = datetime(2026, 11, 25, 14, 5, 2, 700_000, tzinfo=UTC)
    used = {"20261125-140502"}  # an earlier launch in this second already wrote its outputs
    with pytest.raises(layout.RunIdTakenError) as info:
        layout.new_run_id(now, env="dev", taken=used.__contains__)
    message = str(info.value)
    assert isinstance(info.value, UserError)  # one clear line at the CLI edge, never a traceback
    assert "20261125-140502" in message and "env 'dev'" in message and "launch again" in message
    # the next second is free: a launch then gets its own id
    assert (
        layout.new_run_id(now + timedelta(seconds=1), env="dev", taken=used.__contains__) == "20261125-140503"
    )
    assert layout.new_run_id(now) == "20261125-140502"  # nothing to check against: the start second


# -- sweep members: run ids {sweep_id}-NNN, their own locks, the sweep manifest ------------------


def test_a_sweep_member_run_id_is_its_sweep_second_and_its_point_number():
    assert layout.member_run_id("20261201-210502", 3) == "20261201-210502-003"
    assert layout.member_run_id("20261201-210502", 999) == "20261201-210502-999"
    assert layout.parse_run_id("20261201-210502-003") == datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC)
    assert layout.sweep_of("20261201-210502-003") == "20261201-210502"
    assert layout.sweep_of("20261201-210502") is None
    assert layout.member_number("20261201-210502-042") == 42
    assert layout.member_number("20261201-210502") is None


@pytest.mark.parametrize("number", [0, 1000, -1, True, 1.0])
def test_a_member_number_outside_1_to_999_is_refused(number):
    with pytest.raises(LayoutError, match="between 1 and 999"):
        layout.member_run_id("20261201-210502", number)


@pytest.mark.parametrize(
    "bad", ["20261201-210502-000", "20261201-210502-1", "20261201-210502-1000", "20261201-210502-",
            "20261201-210502-0a1", "20261201-210502-٣٣٣", "20261399-210502-001"],
)  # fmt: skip
def test_bad_member_run_ids_are_refused_with_both_forms(bad):
    with pytest.raises(LayoutError, match="YYYYMMDD-HHMMSS-NNN"):
        layout.parse_run_id(bad)


@pytest.mark.parametrize("bad", ["20261201-210502-001", "2026-12-01", ""])
def test_a_sweep_id_is_a_bare_second(bad):
    with pytest.raises(LayoutError, match="sweep id"):
        layout.parse_sweep_id(bad)
    with pytest.raises(LayoutError):
        layout.sweep_manifest_key("dev", bad)


def test_member_keys_follow_the_documented_layout():
    p = RunPaths(env="dev", run_id="20261201-210502-007")
    assert p.sweep_id == "20261201-210502"
    assert p.prefix == "dev/2026/12/01-210502-007/"
    assert p.run_spec == "dev/2026/12/01-210502-007/user-configs/run-spec.json"
    assert p.training_log == "dev/logs/20261201-210502-007/training.json"
    # each member holds its own lock; the env's one lock stays the single run's
    assert p.state == "dev/sweeps/20261201-210502/runs/20261201-210502-007/system-state.json"
    assert p.state != layout.state_key("dev")
    assert RunPaths(env="dev", run_id="20261201-210502").sweep_id is None
    assert layout.sweep_manifest_key("dev", "20261201-210502") == "dev/sweeps/20261201-210502/sweep.json"
    assert layout.member_states_prefix("dev", "20261201-210502") == "dev/sweeps/20261201-210502/runs/"
    assert layout.member_of_state_key(p.state) == ("dev", "20261201-210502-007")


def test_from_prefix_tells_a_member_from_the_single_run_of_the_same_second():
    member = RunPaths(env="dev", run_id="20261201-210502-007")
    single = RunPaths(env="dev", run_id="20261201-210502")
    assert RunPaths.from_prefix(member.checkpoints + "checkpoint-10/") == member
    assert RunPaths.from_prefix(member.prefix.rstrip("/")) == member
    assert RunPaths.from_prefix(single.success) == single
    with pytest.raises(LayoutError, match="run prefix"):
        RunPaths.from_prefix("dev/2026/12/01-210502-000/x")


@pytest.mark.parametrize(
    "key", ["dev/system-state.json", "dev/sweeps/20261201-210502/sweep.json",
            "dev/sweeps/20261201-210502/runs/20261201-210503-001/system-state.json",  # another sweep's id
            "dev/sweeps/20261201-210502/runs/20261201-210502/system-state.json"],
)  # fmt: skip
def test_only_a_member_state_key_names_a_member(key):
    assert layout.member_of_state_key(key) is None


def test_local_mirror_accepts_member_run_ids(tmp_path):
    assert (
        layout.local_run_dir(tmp_path, "dev", "20261201-210502-001")
        == tmp_path / "dev" / "20261201-210502-001"
    )


def test_the_schema_run_id_rule_is_the_layout_rule():
    from schemas import SchemaValidationError, schema_for, validate

    defs = schema_for("defs")["$defs"]
    assert defs["run_id"]["pattern"] == layout.RUN_ID_PATTERN
    assert defs["sweep_id"]["pattern"] == layout.SWEEP_ID_PATTERN
    doc = schema_for("system-state")["examples"][0]
    for good in ("20261201-210502", "20261201-210502-001", "20261201-210502-999"):
        validate("system-state", {**doc, "run_id": good})
    for bad in ("20261201-210502-000", "20261399-210502-001", "29991301-000000-001"):
        with pytest.raises(SchemaValidationError, match="run_id"):
            validate("system-state", {**doc, "run_id": bad})

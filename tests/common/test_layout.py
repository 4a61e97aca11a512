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

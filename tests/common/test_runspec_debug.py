"""The run spec's debug fields: ``instance.debug`` and ``instance.keep_on_failure``."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.runspec import from_dict


def _instance(**fields: object) -> dict:
    return {"instance": fields}


def test_off_by_default_and_nothing_is_kept() -> None:
    spec = from_dict({})
    assert spec.instance.debug is False
    assert spec.instance.keep_on_failure_minutes == 0
    assert "debug" in spec.to_dict()["instance"]
    assert "keep_on_failure" not in spec.to_dict()["instance"]  # the default, left to follow debug


def test_debug_keeps_a_failed_instance_30_minutes_by_default() -> None:
    spec = from_dict(_instance(debug=True))
    assert (spec.instance.debug, spec.instance.keep_on_failure_minutes) == (True, 30)


@pytest.mark.parametrize(("value", "minutes"), [("45m", 45), ("1h", 60), (0, 0), (10, 10)])
def test_keep_on_failure_takes_durations_and_minutes(value: object, minutes: int) -> None:
    spec = from_dict(_instance(debug=True, keep_on_failure=value))
    assert spec.instance.keep_on_failure_minutes == minutes


def test_keep_on_failure_without_debug_is_honoured() -> None:
    assert from_dict(_instance(keep_on_failure="5m")).instance.keep_on_failure_minutes == 5


def test_the_default_stays_under_a_short_max_runtime() -> None:
    spec = from_dict(_instance(debug=True, max_runtime="20m"))
    assert spec.instance.keep_on_failure_minutes == 19


@pytest.mark.parametrize("value", ["4h", 240, "5h"])
def test_keep_on_failure_must_end_before_max_runtime(value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        from_dict(_instance(debug=True, max_runtime="4h", keep_on_failure=value))
    message = str(raised.value)
    assert "$.instance.keep_on_failure" in message and "less than max_runtime (240 min)" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"debug": "yes"}, "$.instance.debug"),
        ({"keep_on_failure": -1}, "$.instance.keep_on_failure"),
        ({"keep_on_failure": "half an hour"}, "$.instance.keep_on_failure"),
    ],
)
def test_wrong_types_name_their_json_path(fields: dict, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace("$", r"\$").replace(".", r"\.")):
        from_dict(_instance(**fields))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"debug": True},
        {"debug": True, "keep_on_failure": 12},
        {"keep_on_failure": 3},
        {"debug": True, "keep_on_failure": 30},
    ],
)
def test_the_stored_spec_round_trips(fields: dict) -> None:
    spec = from_dict(_instance(**fields))
    assert from_dict(spec.to_dict()) == spec

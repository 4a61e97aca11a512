"""Loading and validating long-format parquet data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from common.runspec import DataSpec
from trainer.data import Dataset, load_dataset
from trainer.data_validation import DataValidationError
from trainer.inputs_file import load_inputs, save_inputs

H = 4
SPEC = DataSpec.from_dict({"frequency": "h"})
START = np.datetime64("2024-03-01T00:00:00", "s")


def _write(path: Path, rows: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)
    return path


def _series(item: str, n: int, *, offset: int = 0) -> dict[str, list]:
    hours = np.arange(offset, offset + n)
    return {
        "item_id": [item] * n,
        "timestamp": list(START + hours * np.timedelta64(1, "h")),
        "target": [float(10 + h % 5) for h in hours],
    }


def _concat(*parts: dict[str, list]) -> dict[str, list]:
    return {k: sum((p[k] for p in parts), []) for k in parts[0]}


def _load(files: list[Path], spec: DataSpec = SPEC, *, horizon: int = H, min_past: int = 2) -> Dataset:
    return load_dataset(files, spec, prediction_length=horizon, min_past=min_past)


def _error(files: list[Path], spec: DataSpec = SPEC, *, horizon: int = H) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        _load(files, spec, horizon=horizon)
    assert "\n" not in str(info.value)
    return info.value


def test_synthetic_data_loads_and_splits_the_tail(small_files, small_spec) -> None:
    ds = load_dataset(small_files, small_spec, prediction_length=24)
    assert ds.frequency == "h" and len(ds.item_ids) == 8 and ds.n_rows == 8 * 24 * 14
    first = ds.train_inputs[0]
    assert first["target"].shape == (24 * 14 - 24,)
    assert set(first["past_covariates"]) == {"temperature", "promo"}
    assert first["future_covariates"] == {"promo": None}
    ev = ds.eval_set
    assert ev.future.shape == (8, 24)
    assert ev.inputs[0]["future_covariates"]["promo"].shape == (24,)
    assert "temperature" not in ev.inputs[0]["future_covariates"]
    np.testing.assert_array_equal(ev.past[0], first["target"])
    assert ds.summary()["items"] == 8


def test_items_spanning_files_are_joined_in_time_order(tmp_path: Path) -> None:
    late = _write(tmp_path / "a.parquet", _concat(_series("x", 6, offset=6), _series("y", 12)))
    early = _write(tmp_path / "b.parquet", _series("x", 6))
    ds = _load([late, early])
    assert ds.item_ids == ("x", "y")
    np.testing.assert_array_equal(
        np.concatenate([ds.eval_set.past[0], ds.eval_set.future[0]]),
        [10 + h % 5 for h in range(12)],
    )


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    rows = _series("a", 12)
    del rows["target"]
    path = _write(tmp_path / "2024" / "03" / "part-000.parquet", rows)
    error = _error([path])
    assert str(path) in str(error) and "target" in str(error)
    assert error.file == path


def test_missing_covariate_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.parquet", _series("a", 12))
    spec = DataSpec.from_dict({"known_covariates": ["promo"]})
    assert "promo" in str(_error([path], spec))


def test_duplicate_timestamp_names_file_and_item(tmp_path: Path) -> None:
    rows = _concat(_series("good", 12), _series("dup", 6), _series("dup", 7, offset=5))
    path = _write(tmp_path / "d.parquet", rows)
    error = _error([path])
    message = str(error)
    assert "duplicate" in message and str(path) in message and "dup" in message
    assert error.item == "dup"


def test_unsorted_timestamps_name_file_and_item(tmp_path: Path) -> None:
    rows = _concat(_series("ok", 12), _series("late", 6, offset=6), _series("late", 6))
    path = _write(tmp_path / "u.parquet", rows)
    message = str(_error([path]))
    assert "not sorted" in message and str(path) in message and "late" in message


def test_duplicate_across_files_names_both(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.parquet", _series("x", 12))
    b = _write(tmp_path / "b.parquet", _series("x", 2, offset=11))
    message = str(_error([a, b]))
    assert "duplicate" in message and str(a) in message and str(b) in message and "x" in message


def test_gap_names_item_and_time(tmp_path: Path) -> None:
    rows = _concat(_series("gappy", 5), _series("gappy", 10, offset=6))
    path = _write(tmp_path / "g.parquet", rows)
    message = str(_error([path]))
    assert "gap" in message and "gappy" in message and "2024-03-01T04:00:00" in message


def test_irregular_step_for_a_calendar_frequency(tmp_path: Path) -> None:
    months = [np.datetime64(f"2024-{m:02d}-01") for m in range(1, 13)]
    months[5] = np.datetime64("2024-06-15")
    rows = {"item_id": ["m"] * 12, "timestamp": np.array(months, "datetime64[s]"), "target": [1.0] * 12}
    path = _write(tmp_path / "m.parquet", rows)
    spec = DataSpec.from_dict({"frequency": "MS"})
    assert "m" in str(_error([path], spec, horizon=2))
    months[5] = np.datetime64("2024-06-01")
    rows["timestamp"] = np.array(months, "datetime64[s]")
    assert _load([_write(tmp_path / "ok.parquet", rows)], spec, horizon=2).frequency == "MS"


def test_too_short_names_item_and_min_length(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.parquet", _concat(_series("long", 12), _series("short", 9)))
    error = _error([path])
    assert error.item == "short"
    assert "short" in str(error) and "9 observations" in str(error)
    assert "at least 10 are needed" in str(error)  # tail 4 + horizon 4 + min_past 2


def test_frequency_inferred_when_not_given(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.parquet", _series("a", 12))
    spec = dataclasses.replace(SPEC, frequency=None)
    assert _load([path], spec).frequency == "h"


def test_null_timestamp_and_non_numeric_target(tmp_path: Path) -> None:
    rows = _series("n", 12)
    rows["timestamp"][3] = None
    assert "null timestamp" in str(_error([_write(tmp_path / "n.parquet", rows)]))
    rows = _series("t", 12)
    rows["target"] = [str(v) for v in rows["target"]]
    assert "expected numbers" in str(_error([_write(tmp_path / "t.parquet", rows)]))


def test_no_files_and_unreadable_file(tmp_path: Path) -> None:
    assert "no parquet" in str(_error([]))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert str(bad) in str(_error([bad]))


def test_spec_and_horizon_reject_bad_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.parquet", _series("a", 12))
    with pytest.raises(ValueError, match="prediction_length"):
        _load([path], horizon=0)
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(SPEC, past_covariates=("target",))
    with pytest.raises(ConfigError, match=r"\$\.data: .*twice"):
        DataSpec.from_dict({"past_covariates": ["target"]})
    with pytest.raises(ValueError, match="frequency"):
        _load([path], dataclasses.replace(SPEC, frequency="fortnightly"))
    spec = DataSpec.from_dict({"known_covariates": ["k"]})
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="horizon"):
        DataSpec.from_dict({"horizon": 3})


def test_the_data_spec_defaults_are_the_schemas() -> None:
    """One DataSpec, filled from schemas/run-spec.schema.json (no defaults of its own)."""
    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas/run-spec.schema.json").read_text())
    defaults = {k: v["default"] for k, v in schema["properties"]["data"]["properties"].items()}
    assert DataSpec.from_dict({}).to_dict() == defaults
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(DataSpec))


def test_inputs_round_trip_through_npz(small_files, small_spec, tmp_path: Path) -> None:
    inputs = load_dataset(small_files, small_spec, prediction_length=24).train_inputs
    loaded = load_inputs(save_inputs(inputs, tmp_path / "inputs.npz"))
    assert len(loaded) == len(inputs)
    for a, b in zip(inputs, loaded, strict=True):
        np.testing.assert_array_equal(a["target"], b["target"])
        for name in a["past_covariates"]:
            np.testing.assert_array_equal(a["past_covariates"][name], b["past_covariates"][name])
        assert b["future_covariates"] == {"promo": None}
    with pytest.raises(DataValidationError):
        load_inputs(tmp_path / "missing.npz")


def test_daily_data(tmp_path: Path) -> None:
    from trainer.synthetic import generate_dataset

    files = generate_dataset(tmp_path, n_items=2, length=60, freq="D", with_covariates=False)
    daily = DataSpec.from_dict({"frequency": "D"})
    assert load_dataset(files, daily, prediction_length=7).frequency == "D"
    assert "2D" in str(_error(files, DataSpec.from_dict({"frequency": "2D"}), horizon=7))

"""Loading long-format parquet data: what is refused, what is repaired and counted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from common.runspec import DataSpec
from trainer.data import Dataset, load_dataset
from trainer.data_validation import DataValidationError
from trainer.inputs_file import load_inputs, save_inputs

H = 4
K = 1
NEEDED = (K + 1) * H + H + 2  # 14 steps: K test windows, validation, one training window (min_past 2)
SPEC = DataSpec.from_dict({"frequency": "h"})
START = np.datetime64("2024-03-01T00:00:00", "s")


def _write(path: Path, rows: dict[str, list], *, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path, row_group_size=row_group_size)
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


def _load(files: list[Path], spec: DataSpec = SPEC, *, horizon: int = H, windows: int = K) -> Dataset:
    return load_dataset(files, spec, prediction_length=horizon, backtest_windows=windows, min_past=2)


def _error(files: list[Path], spec: DataSpec = SPEC, *, horizon: int = H) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        _load(files, spec, horizon=horizon)
    assert "\n" not in str(info.value)
    return info.value


def _whole(ds: Dataset, item: int = 0) -> np.ndarray:
    """An item's series on the grid: the last test window's context and future."""
    last = ds.test_windows[-1]
    return np.concatenate([last.past[item], last.future[item]])


def test_synthetic_data_loads_and_splits(small_files, small_spec) -> None:
    ds = load_dataset(small_files, small_spec, prediction_length=24, backtest_windows=3)
    assert ds.frequency == "h" and len(ds.item_ids) == 8 and ds.n_rows == 8 * 24 * 14
    first = ds.train_inputs[0]
    assert first["target"].shape == (24 * 14 - 4 * 24,)
    assert set(first["past_covariates"]) == {"temperature", "promo"}
    assert first["future_covariates"] == {"promo": None}
    assert [w.name for w in ds.test_windows] == ["test-1", "test-2", "test-3"]
    for window in (ds.validation, *ds.test_windows):
        assert window.future.shape == (8, 24) and window.future.dtype == np.float32
        assert window.inputs[0]["future_covariates"]["promo"].shape == (24,)
        assert "temperature" not in window.inputs[0]["future_covariates"]
    np.testing.assert_array_equal(ds.validation.past[0], first["target"])
    summary = ds.summary()
    assert summary["items"] == 8 and summary["backtest_windows"] == 3
    assert summary["frequency_source"] == "spec" and summary["drops"]["items_kept"] == 8


def test_items_spanning_files_are_joined_in_time_order(tmp_path: Path) -> None:
    late = _write(tmp_path / "a.parquet", _concat(_series("x", 8, offset=8), _series("y", 16)))
    early = _write(tmp_path / "b.parquet", _series("x", 8))
    ds = _load([late, early])
    assert ds.item_ids == ("x", "y")
    np.testing.assert_array_equal(_whole(ds), [10 + h % 5 for h in range(16)])
    assert ds.drops["unsorted_items"] == 0  # each file was in time order


def test_unsorted_rows_are_sorted_and_counted(tmp_path: Path) -> None:
    rows = _concat(_series("ok", 16), _series("late", 8, offset=8), _series("late", 8))
    rows = _concat(rows, _series("rev", 1, offset=15), _series("rev", 15))
    path = _write(tmp_path / "u.parquet", rows, row_group_size=7)  # read a row group at a time
    assert pq.ParquetFile(path).num_row_groups == 7
    ds = _load([path])
    assert ds.drops["unsorted_items"] == 2
    for item in range(3):
        np.testing.assert_array_equal(_whole(ds, item), [10 + h % 5 for h in range(16)])


def test_gaps_are_filled_with_nan_and_counted(tmp_path: Path) -> None:
    rows = _concat(_series("gappy", 5), _series("gappy", 10, offset=7), _series("full", 17))
    rows["price"] = [float(v) for v in range(len(rows["target"]))]
    rows["day"] = ["mon"] * len(rows["target"])
    spec = DataSpec.from_dict({"frequency": "h", "past_covariates": ["price"], "known_covariates": ["day"]})
    ds = _load([_write(tmp_path / "g.parquet", rows)], spec)
    assert ds.item_ids == ("full", "gappy")
    series = _whole(ds, 1)
    assert (
        series.shape == (17,)
        and np.isnan(series[5:7]).all()
        and not np.isnan(np.delete(series, [5, 6])).any()
    )
    assert ds.drops["gaps_filled"] == {"items": 1, "values": 2}
    train = ds.train_inputs[1]
    assert np.isnan(train["past_covariates"]["price"][5:7]).all()
    assert list(train["past_covariates"]["day"][4:8]) == ["mon", "", "", "mon"]


def test_an_item_with_too_many_missing_values_is_dropped(tmp_path: Path) -> None:
    sparse = _concat(_series("sparse", 4), _series("sparse", 12, offset=8))  # 4 of 20 steps missing
    sparse["target"][6] = float("nan")  # and one NaN in the data: 5 of 20 = 25% > 20%
    rows = _concat(_series("good", 20), sparse)
    ds = _load([_write(tmp_path / "n.parquet", rows)])
    assert ds.item_ids == ("good",)
    assert ds.drops["dropped"]["too_many_nan"] == {"count": 1, "examples": ["sparse (25% missing)"]}
    relaxed = dataclasses.replace(SPEC, max_nan_fraction=0.3)
    assert _load([tmp_path / "n.parquet"], relaxed).item_ids == ("good", "sparse")


def test_short_series_are_dropped_with_examples(tmp_path: Path) -> None:
    shorts = [_series(f"s{i}", NEEDED - 1 - i) for i in range(6)]
    path = _write(tmp_path / "s.parquet", _concat(_series("long", NEEDED), *shorts))
    ds = _load([path])
    assert ds.item_ids == ("long",)
    dropped = ds.drops["dropped"]["too_short"]
    assert dropped["count"] == 6 and len(dropped["examples"]) == 5
    assert dropped["examples"][0] == f"s0 ({NEEDED - 1} of {NEEDED} steps)"
    assert ds.drops["items_in"] == 7 and ds.drops["items_kept"] == 1


def test_fewer_than_min_items_fails_with_the_counts(tmp_path: Path) -> None:
    rows = _concat(_series("a", 20), _series("b", 5), _concat(_series("c", 3), _series("c", 3, offset=17)))
    path = _write(tmp_path / "m.parquet", rows)
    assert _load([path]).item_ids == ("a",)
    message = str(_error([path], dataclasses.replace(SPEC, min_items=2)))
    assert "only 1 of 3 item(s) are usable" in message and "min_items is 2" in message
    assert "1 too short" in message and "b (5 of 14 steps)" in message
    assert "1 with more than 20%" in message and "c (70% missing)" in message


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
    rows = _concat(_series("good", 16), _series("dup", 6), _series("dup", 11, offset=5))
    path = _write(tmp_path / "d.parquet", rows)
    error = _error([path])
    message = str(error)
    assert "duplicate" in message and str(path) in message and "dup" in message
    assert error.item == "dup"


def test_duplicate_across_files_names_both(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.parquet", _series("x", 16))
    b = _write(tmp_path / "b.parquet", _series("x", 2, offset=15))
    message = str(_error([a, b]))
    assert "duplicate" in message and str(a) in message and str(b) in message and "x" in message


def test_a_timestamp_off_the_grid_names_item_file_and_time(tmp_path: Path) -> None:
    rows = _series("odd", 16)
    rows["timestamp"][4] = START + np.timedelta64(270, "m")  # 04:30 on an hourly grid
    path = _write(tmp_path / "g.parquet", rows)
    error = _error([path])
    assert "odd" in str(error) and str(path) in str(error) and "2024-03-01T04:30:00" in str(error)
    assert "not on the 'h' grid" in str(error) and error.item == "odd"


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


@pytest.mark.parametrize(("freq", "expected"), [("h", "h"), ("D", "D"), ("W", "W"), ("30min", "30min")])
def test_frequency_auto_is_inferred(tmp_path: Path, freq: str, expected: str) -> None:
    times = pd.date_range("2024-01-07", periods=40, freq=freq).to_numpy()
    rows = {"item_id": ["a"] * 40, "timestamp": times, "target": np.arange(40.0)}
    gappy = {"item_id": ["b"] * 38, "timestamp": np.delete(times, [20, 21]), "target": np.arange(38.0)}
    spec = DataSpec.from_dict({"frequency": "auto"})
    assert spec.frequency is None
    ds = _load([_write(tmp_path / "a.parquet", rows)], spec)
    assert ds.frequency == expected and ds.frequency_source == "inferred"
    ds = _load([_write(tmp_path / "a.parquet", gappy)], spec)  # gaps: still inferred, then filled
    assert ds.frequency == expected and ds.drops["gaps_filled"] == {"items": 1, "values": 2}


def test_daily_data_across_dst_changes_is_regular(tmp_path: Path) -> None:
    """Local midnight in Europe/Berlin is 23 h, 24 h or 25 h apart in UTC: still daily, no gaps."""
    times = pd.date_range("2024-03-20", "2024-11-05", freq="D", tz="Europe/Berlin")
    rows = {
        "item_id": ["a"] * len(times),
        "timestamp": pa.array(times),
        "target": np.arange(len(times), 0.0, -1),
    }
    path = _write(tmp_path / "berlin.parquet", rows)
    assert pq.read_schema(path).field("timestamp").type.tz == "Europe/Berlin"
    for frequency in ("D", "auto"):
        ds = _load([path], DataSpec.from_dict({"frequency": frequency}), horizon=7, windows=3)
        assert ds.frequency == "D" and ds.drops["gaps_filled"]["values"] == 0
        assert ds.n_rows == len(times) and _whole(ds).size == len(times)
    assert ds.test_windows[-1].starts == ("2024-10-29T23:00:00Z",)  # CET midnight, after October
    assert ds.validation.starts == ("2024-10-08T22:00:00Z",)  # CEST midnight


def test_hourly_tz_aware_data_across_dst_is_regular(tmp_path: Path) -> None:
    times = pd.date_range("2024-03-30", "2024-04-01", freq="h", tz="Europe/Berlin")
    rows = {
        "item_id": ["a"] * len(times),
        "timestamp": pa.array(times),
        "target": np.arange(len(times), 0.0, -1),
    }
    ds = _load([_write(tmp_path / "h.parquet", rows)], DataSpec.from_dict({"frequency": "auto"}))
    assert ds.frequency == "h" and ds.drops["gaps_filled"]["values"] == 0


def test_null_timestamp_and_non_numeric_target(tmp_path: Path) -> None:
    rows = _series("n", 16)
    rows["timestamp"][3] = None
    assert "null timestamp" in str(_error([_write(tmp_path / "n.parquet", rows)]))
    rows = _series("t", 16)
    rows["target"] = [str(v) for v in rows["target"]]
    path = _write(tmp_path / "t.parquet", rows)
    error = _error([path])
    assert "expected numbers" in str(error) and "target" in str(error) and error.file == path


def test_wrong_types_name_the_file_and_column(tmp_path: Path) -> None:
    rows = _series("a", 16)
    rows["timestamp"] = [float(h) for h in range(16)]
    path = _write(tmp_path / "f.parquet", rows)
    error = _error([path])
    assert "column timestamp has type double, expected a timestamp" in str(error) and error.file == path
    rows = _series("a", 16)
    rows["item_id"] = [7] * 16  # integer ids are ids
    assert _load([_write(tmp_path / "i.parquet", rows)]).item_ids == ("7",)


def test_no_files_and_unreadable_file(tmp_path: Path) -> None:
    assert "no parquet" in str(_error([]))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert str(bad) in str(_error([bad]))


def test_spec_and_horizon_reject_bad_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.parquet", _series("a", 16))
    with pytest.raises(ValueError, match="prediction_length"):
        _load([path], horizon=0)
    with pytest.raises(ValueError, match="backtest_windows"):
        _load([path], windows=0)
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
    inputs = load_dataset(small_files, small_spec, prediction_length=24, backtest_windows=3).train_inputs
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
    assert load_dataset(files, daily, prediction_length=7, backtest_windows=3).frequency == "D"
    assert "2D" in str(_error(files, DataSpec.from_dict({"frequency": "2D"}), horizon=7))
